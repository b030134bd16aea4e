import { LlmqError, retryAfterMs, type ErrorCode, type FinishReason, type GenerationRequest, type Message } from '@llmq/core';
import { MAX_STOP } from './config.js';

/**
 * The ts_server wire format: request bodies, answers, streamed chunks and error bodies.
 * ts_server's source is not public; what is here is pinned by the contract tests.
 */

export type Endpoint = 'completions' | 'chat';

/**
 * ts_server's chat takes user/assistant turns as alternating strings (a user turn first) and one
 * `system` string. System messages are gathered into `system`; consecutive turns of one role are
 * joined by a blank line; a conversation opening with the assistant gets an empty user turn.
 */
export function toChat(messages: readonly Message[]): { system?: string; messages: string[] } {
  const system = messages.filter((m) => m.role === 'system').map((m) => m.content);
  const turns: string[] = [];
  let last: 'user' | 'assistant' | undefined;
  for (const m of messages) {
    if (m.role === 'system') continue;
    if (last === undefined && m.role === 'assistant') turns.push('');
    if (m.role === last) turns[turns.length - 1] += `\n\n${m.content}`;
    else turns.push(m.content);
    last = m.role;
  }
  return system.length > 0 ? { system: system.join('\n\n'), messages: turns } : { messages: turns };
}

/** The endpoint and JSON body for a request; `seed` overrides the request's own. */
export function toRequest(request: GenerationRequest, options: { stream: boolean; seed: number | undefined }): { endpoint: Endpoint; body: Record<string, unknown> } {
  const body: Record<string, unknown> = {};
  let endpoint: Endpoint;
  if (request.messages !== undefined) {
    endpoint = 'chat';
    Object.assign(body, toChat(request.messages));
  } else {
    endpoint = 'completions';
    body['prompt'] = request.prompt ?? '';
  }
  const set = (key: string, value: unknown) => {
    if (value !== undefined) body[key] = value;
  };
  set('max_tokens', request.max_tokens);
  set('temperature', request.temperature);
  if (request.top_p === 0) {
    // "Only the most likely token": said as top_k 1, which ts_server surely takes (its top_p range
    // is not documented to include 0).
    body['top_k'] = 1;
  } else {
    set('top_k', request.top_k);
    set('top_p', request.top_p);
  }
  set('seed', options.seed);
  if (request.stop !== undefined) {
    const stops = Array.isArray(request.stop) ? request.stop : [request.stop];
    if (stops.length > MAX_STOP) {
      throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `stop: ts_server takes at most ${MAX_STOP} stop strings, got ${stops.length}`, { param: 'stop' });
    }
    body['stop'] = request.stop;
  }
  set('presence_penalty', request.presence_penalty);
  set('frequency_penalty', request.frequency_penalty);
  set('repetition_penalty', request.repeat_penalty);
  const rf = request.response_format;
  if (rf?.type === 'json_schema') body['schema'] = rf.json_schema.schema;
  else if (rf?.type === 'json_object') body['schema'] = { type: 'object' };
  body['stream'] = options.stream;
  return { endpoint, body };
}

/** Whether the request asks for a JSON answer (which is then validated and retried). */
export function wantsJson(request: GenerationRequest): boolean {
  return request.response_format?.type === 'json_schema' || request.response_format?.type === 'json_object';
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** One answer object (a whole answer, or one streamed chunk). */
export interface TsChunk {
  text: string;
  reachedEnd: boolean;
  finishReason: string | undefined;
  inputTokens: number | undefined;
  outputTokens: number | undefined;
  truncatedPrompt: boolean;
  /** An error reported inside a 200 answer or stream. */
  error: string | undefined;
}

export function parseChunk(value: unknown): TsChunk {
  if (!isObj(value)) throw new TypeError('answer is not a JSON object');
  const raw = value['text'];
  // `text` is an array when n > 1; llmq always asks for one.
  const text = typeof raw === 'string' ? raw : Array.isArray(raw) && typeof raw[0] === 'string' ? raw[0] : '';
  const num = (key: string) => (typeof value[key] === 'number' ? (value[key] as number) : undefined);
  const error = value['error'];
  return {
    text,
    reachedEnd: value['reached_end'] === true,
    finishReason: typeof value['finish_reason'] === 'string' ? value['finish_reason'] : undefined,
    inputTokens: num('input_tokens'),
    outputTokens: num('output_tokens'),
    truncatedPrompt: value['truncated_prompt'] === true,
    error: error === undefined || error === null ? undefined : typeof error === 'string' ? error : isObj(error) && typeof error['message'] === 'string' ? error['message'] : JSON.stringify(error),
  };
}

export function toFinishReason(reason: string | undefined): FinishReason {
  return reason === 'length' ? 'length' : 'stop';
}

/**
 * The JSON values of a ts_server stream: objects each followed by a blank line (not SSE).
 * A last object without its blank line is still read.
 */
export async function* readJsonStream(body: AsyncIterable<Uint8Array>): AsyncGenerator<unknown> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const part = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (part !== '') yield JSON.parse(part) as unknown;
    }
  }
  buffer += decoder.decode();
  if (buffer.trim() !== '') yield JSON.parse(buffer) as unknown;
}

/** Message, code and type from an error body in ts_server's (`{ status, error }`) or OpenAI's shape. */
function describeErrorBody(text: string): { message: string; code: string | undefined; type: string | undefined } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { message: text.trim().slice(0, 500), code: undefined, type: undefined };
  }
  const s = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  if (isObj(value)) {
    const err = value['error'];
    if (isObj(err)) return { message: s(err['message']) ?? JSON.stringify(err).slice(0, 500), code: s(err['code']), type: s(err['type']) };
    return { message: s(err) ?? s(value['message']) ?? text.slice(0, 500), code: s(value['code']), type: s(value['type']) };
  }
  return { message: text.slice(0, 500), code: undefined, type: undefined };
}

const CONTEXT_MESSAGE = /context length|context window|maximum context|too many tokens|prompt is too long|prompt too long/i;

/**
 * An llmq error for a non-2xx answer. `serverFault` says whether another server might do better
 * (5xx, 408): those count against the server's health and may be retried elsewhere.
 */
export function httpError(status: number, headers: Headers, bodyText: string, url: string): { error: LlmqError; serverFault: boolean } {
  const { message, code: backendCode, type: backendType } = describeErrorBody(bodyText);
  const details: Record<string, unknown> = { status, server: url };
  if (backendCode !== undefined) details['backend_code'] = backendCode;
  if (backendType !== undefined) details['backend_type'] = backendType;
  const make = (code: ErrorCode, extra: Record<string, unknown> = {}) => new LlmqError(code, `${status} from ${url}: ${message}`, { details: { ...details, ...extra } });
  // ERR_BACKEND_*: an llmq gateway's TextSynth front door in front of the model, saying it in llmq's codes.
  const quota = backendCode === 'insufficient_quota' || backendType === 'insufficient_quota' || backendCode === 'ERR_BACKEND_QUOTA';
  if (quota) return { error: make('ERR_BACKEND_QUOTA'), serverFault: false };
  if (status === 429) {
    const wait = retryAfterMs(headers);
    return { error: make('ERR_BACKEND_RATE_LIMITED', wait === undefined ? {} : { retry_after_ms: wait }), serverFault: false };
  }
  if (status === 401 || status === 403) return { error: make('ERR_BACKEND_AUTH'), serverFault: false };
  if (status === 408 || status >= 500) return { error: make('ERR_BACKEND_UNAVAILABLE'), serverFault: true };
  const context = backendCode === 'context_length_exceeded' || backendCode === 'ERR_BACKEND_CONTEXT_LENGTH' || CONTEXT_MESSAGE.test(message);
  return { error: make(context ? 'ERR_BACKEND_CONTEXT_LENGTH' : 'ERR_BACKEND_BAD_REQUEST'), serverFault: false };
}
