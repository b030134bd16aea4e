import OpenAI from 'openai';
import {
  defineBackend,
  LlmqError,
  type AdapterContext,
  type Backend,
  type FinishReason,
  type GenerateInput,
  type GenerateOutput,
  type GenerationRequest,
  type Logger,
} from '@llmq/core';
import { openAiCapabilities, openAiConfigSchema, type OpenAiConfig } from './config.js';
import { abortError, toLlmqError } from './errors.js';

/** What `top_p: 0` is sent as (see commonBody). */
const TOP_P_ZERO = 1e-9;

/** setTimeout's ceiling: the SDK's timeout when the job's own signal is meant to govern. */
const NO_TIMEOUT_MS = 2_147_483_647;

type Body = Record<string, unknown>;
type UsageOut = GenerateOutput['usage'];

function finishReason(reason: string | null | undefined): FinishReason {
  // content_filter, tool_calls and the like are still the end of an answer, not a cut.
  return reason === 'length' ? 'length' : 'stop';
}

/**
 * Rough token counts for servers that report no usage: about four characters a token for the
 * prompt (what OpenAI's own guidance says of English text) and, when streaming, one token per
 * content chunk (servers send a chunk per token). Good enough for rate limits and billing
 * estimates; never presented as exact.
 */
function estimateUsage(request: GenerationRequest, text: string, chunks: number | undefined): UsageOut {
  const promptChars = request.prompt?.length ?? (request.messages ?? []).reduce((n, m) => n + m.content.length, 0);
  const prompt = Math.ceil(promptChars / 4);
  const completion = chunks ?? Math.ceil(text.length / 4);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function toUsage(usage: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number } | null | undefined): UsageOut | undefined {
  if (!usage || typeof usage.prompt_tokens !== 'number' || typeof usage.completion_tokens !== 'number') return undefined;
  return { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, total_tokens: usage.total_tokens ?? usage.prompt_tokens + usage.completion_tokens };
}

/** A backend for any OpenAI-compatible API (OpenAI, vLLM, llama.cpp's server, an llmq gateway…). */
export class OpenAiBackend implements Backend {
  readonly name: string;
  private readonly config: OpenAiConfig;
  private readonly client: OpenAI;
  private readonly logger: Logger;

  constructor(name: string, config: OpenAiConfig, ctx: AdapterContext) {
    this.name = name;
    this.config = config;
    this.logger = ctx.logger;
    let apiKey: string | undefined;
    if (config.api_key_env !== undefined) {
      apiKey = ctx.env[config.api_key_env];
      if (apiKey === undefined || apiKey === '') {
        throw new LlmqError('ERR_CONFIG_INVALID', `backend "${name}": environment variable ${config.api_key_env} (named by api_key_env) is not set`, { param: 'api_key_env' });
      }
    }
    const sdkLog = (level: 'warn' | 'error') => (message: string) => this.logger[level]({ backend: name }, `openai sdk: ${message}`);
    this.client = new OpenAI({
      baseURL: config.base_url,
      // The SDK insists on a key; without one we send a placeholder and strip the header below.
      apiKey: apiKey ?? 'none',
      // Explicit nulls: the SDK would otherwise read OPENAI_* variables from the process env.
      organization: config.organization ?? null,
      project: null,
      adminAPIKey: null,
      webhookSecret: null,
      // llmq's queue retries with backoff and rate-limit awareness; the SDK must not retry too.
      maxRetries: 0,
      timeout: config.request_timeout_ms > 0 ? config.request_timeout_ms : NO_TIMEOUT_MS,
      defaultHeaders: { ...(apiKey === undefined ? { Authorization: null } : {}), ...config.headers },
      logLevel: 'warn',
      logger: { error: sdkLog('error'), warn: sdkLog('warn'), info: () => {}, debug: () => {} },
    });
  }

  async check(): Promise<void> {
    if (this.config.check === 'none') return;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new LlmqError('ERR_BACKEND_UNAVAILABLE', `GET /models took longer than ${this.config.check_timeout_ms} ms`)), this.config.check_timeout_ms);
    timer.unref();
    try {
      await this.client.models.list({ signal: controller.signal, timeout: this.config.check_timeout_ms });
    } catch (err) {
      throw toLlmqError(err, controller.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {}

  async generate(input: GenerateInput): Promise<GenerateOutput> {
    const { request, signal } = input;
    if (signal.aborted) throw abortError(signal);
    const chat = this.useChat(request);
    const body = chat ? this.chatBody(input) : this.completionBody(input);
    const log = input.logger.child({ backend: this.name, endpoint: chat ? 'chat' : 'completions', stream: this.config.stream });
    log.debug('openai request');
    try {
      return this.config.stream ? await this.streamed(chat, body, input) : await this.whole(chat, body, input);
    } catch (err) {
      const mapped = toLlmqError(err, signal);
      if (mapped instanceof LlmqError) log.debug({ code: mapped.code, details: mapped.details }, 'openai request failed');
      throw mapped;
    }
  }

  private useChat(request: GenerationRequest): boolean {
    const { mode } = this.config;
    if (request.messages !== undefined) {
      if (mode === 'completion') throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `backend "${this.name}" is in completion mode and takes "prompt", not "messages"`, { param: 'messages' });
      return true;
    }
    if (mode === 'chat') throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `backend "${this.name}" is in chat mode and takes "messages", not "prompt"`, { param: 'prompt' });
    return false;
  }

  /** Fields shared by both endpoints; unset parameters are left out so server defaults apply. */
  private commonBody(input: GenerateInput, maxTokensField: string): Body {
    const r = input.request;
    const body: Body = { model: this.config.model ?? input.model };
    const set = (key: string, value: unknown) => {
      if (value !== undefined) body[key] = value;
    };
    set(maxTokensField, r.max_tokens);
    set('temperature', r.temperature);
    // 0 ("only the most likely token") is refused by some OpenAI-compatible servers (vLLM wants
    // more than 0): a tiny nucleus keeps the same one token everywhere.
    set('top_p', r.top_p === 0 ? TOP_P_ZERO : r.top_p);
    set('seed', r.seed);
    set('stop', r.stop);
    set('presence_penalty', r.presence_penalty);
    set('frequency_penalty', r.frequency_penalty);
    if (r.response_format !== undefined) {
      const rf = r.response_format;
      // OpenAI requires a schema name; llmq makes it optional.
      body['response_format'] = rf.type === 'json_schema' ? { type: 'json_schema', json_schema: { ...rf.json_schema, name: rf.json_schema.name ?? 'response' } } : rf;
    }
    for (const extra of this.config.extra_params) {
      set(extra === 'repeat_penalty' ? this.config.repeat_penalty_field : extra, r[extra]);
    }
    return body;
  }

  private chatBody(input: GenerateInput): Body {
    const body = this.commonBody(input, this.config.max_tokens_field);
    body['messages'] = (input.request.messages ?? []).map((m) => ({ role: m.role, content: m.content }));
    return body;
  }

  private completionBody(input: GenerateInput): Body {
    const body = this.commonBody(input, 'max_tokens');
    body['prompt'] = input.request.prompt ?? '';
    return body;
  }

  private async whole(chat: boolean, body: Body, input: GenerateInput): Promise<GenerateOutput> {
    const { signal } = input;
    let text: string;
    let finish: string | null | undefined;
    let usage: UsageOut | undefined;
    // The SDK reports trouble before the status line as APIError; a TypeError (socket closed) or
    // SyntaxError (truncated JSON) comes from reading a body that was cut short.
    const bodyCut = (err: unknown): never => {
      if (!signal.aborted && (err instanceof TypeError || err instanceof SyntaxError)) {
        throw new LlmqError('ERR_BACKEND_STREAM_CUT', `the answer was cut short: ${err.message}`, { cause: err });
      }
      throw err;
    };
    if (chat) {
      const res = await this.client.chat.completions.create({ ...body, stream: false } as unknown as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, { signal }).catch(bodyCut);
      const choice = res.choices?.[0];
      if (!choice) throw new LlmqError('ERR_BACKEND_FAILED', 'the backend answered without choices');
      text = choice.message?.content ?? '';
      finish = choice.finish_reason;
      usage = toUsage(res.usage);
    } else {
      const res = await this.client.completions.create({ ...body, stream: false } as unknown as OpenAI.Completions.CompletionCreateParamsNonStreaming, { signal }).catch(bodyCut);
      const choice = res.choices?.[0];
      if (!choice) throw new LlmqError('ERR_BACKEND_FAILED', 'the backend answered without choices');
      text = choice.text ?? '';
      finish = choice.finish_reason;
      usage = toUsage(res.usage);
    }
    if (signal.aborted) throw abortError(signal);
    if (text !== '') input.onToken(text);
    // A whole body arrived, so a missing finish_reason (some servers omit it) is still an end.
    return { text, finish_reason: finishReason(finish), usage: usage ?? estimateUsage(input.request, text, undefined) };
  }

  private async streamed(chat: boolean, body: Body, input: GenerateInput): Promise<GenerateOutput> {
    const { signal } = input;
    const params = { ...body, stream: true, stream_options: { include_usage: true } };
    const stream = chat
      ? await this.client.chat.completions.create(params as unknown as OpenAI.Chat.ChatCompletionCreateParamsStreaming, { signal })
      : await this.client.completions.create(params as unknown as OpenAI.Completions.CompletionCreateParamsStreaming, { signal });
    let text = '';
    let chunks = 0;
    let finish: string | null = null;
    let usage: UsageOut | undefined;
    try {
      for await (const chunk of stream as AsyncIterable<OpenAI.Chat.ChatCompletionChunk | OpenAI.Completions.Completion>) {
        const fromChunk = toUsage(chunk.usage);
        if (fromChunk) usage = fromChunk;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        const piece = 'delta' in choice ? choice.delta?.content : (choice as OpenAI.Completions.CompletionChoice).text;
        if (typeof piece === 'string' && piece !== '') {
          text += piece;
          chunks++;
          input.onToken(piece);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    } catch (err) {
      if (signal.aborted) throw abortError(signal);
      // The answer was complete before the break (only the usage chunk or [DONE] was lost).
      if (finish !== null) {
        input.logger.debug({ backend: this.name, err: String(err) }, 'stream broke after finish_reason; keeping the answer');
      } else {
        const mapped = toLlmqError(err, signal);
        if (mapped instanceof LlmqError && mapped.code !== 'ERR_BACKEND_FAILED' && mapped.code !== 'ERR_BACKEND_UNAVAILABLE') throw mapped;
        throw new LlmqError('ERR_BACKEND_STREAM_CUT', `the stream broke after ${chunks} chunks: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { chunks } });
      }
    }
    // The SDK ends iteration quietly when our signal aborts it.
    if (signal.aborted) throw abortError(signal);
    if (finish === null) {
      throw new LlmqError('ERR_BACKEND_STREAM_CUT', `the stream ended after ${chunks} chunks without a finish_reason`, { details: { chunks } });
    }
    return { text, finish_reason: finishReason(finish), usage: usage ?? estimateUsage(input.request, text, chunks) };
  }
}

/** The `openai` backend: any OpenAI-compatible API through the official SDK. */
export const openAiBackend = defineBackend<OpenAiConfig>({
  kind: 'backend',
  type: 'openai',
  configSchema: openAiConfigSchema,
  capabilities: openAiCapabilities,
  create({ name, config }, ctx) {
    return new OpenAiBackend(name, config, ctx);
  },
});
