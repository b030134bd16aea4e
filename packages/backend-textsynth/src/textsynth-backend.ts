import {
  defineBackend,
  LlmqError,
  type AdapterContext,
  type Backend,
  type FinishReason,
  type GenerateInput,
  type GenerateOutput,
  type GenerationRequest,
} from '@llmq/core';
import { resolveServers, textSynthCapabilities, textSynthConfigSchema, type TextSynthConfig } from './config.js';
import { httpError, parseChunk, readJsonStream, toFinishReason, toRequest, wantsJson, type Endpoint, type TsChunk } from './protocol.js';
import { ServerPool, type PoolStats } from './server-pool.js';

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new LlmqError('ERR_JOB_CANCELLED', 'aborted');
}

/** fetch's `TypeError: fetch failed` hides the useful part (ECONNREFUSED, …) in its cause. */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { code?: unknown; message?: unknown } | undefined;
  const code = typeof cause?.code === 'string' ? cause.code : undefined;
  return code ? `${err.message} (${code})` : err.message;
}

/** Codes that say the server, not the request, was at fault: another server may do better. */
function isServerFault(err: LlmqError): boolean {
  return err.code === 'ERR_BACKEND_UNAVAILABLE' || err.code === 'ERR_BACKEND_STREAM_CUT';
}

/** What one request to one server produced. */
interface Answer {
  text: string;
  finish: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

/**
 * Rough counts for a server that reports none: about four characters a token for the prompt, and
 * one token per streamed chunk (ts_server streams a chunk per token) or four characters a token.
 */
function estimatePromptTokens(request: GenerationRequest): number {
  const chars = request.prompt?.length ?? (request.messages ?? []).reduce((n, m) => n + m.content.length, 0);
  return Math.ceil(chars / 4);
}

/** The seed of JSON try `t`: the job's own first, then another one each time. */
function seedFor(base: number | undefined, t: number): number | undefined {
  if (t === 0) return base;
  if (base !== undefined) return (base + t) % 2 ** 32;
  return 1 + Math.floor(Math.random() * 0x7ffffffe);
}

/**
 * A backend for a cluster of TextSynth ts_servers serving one engine. Requests go to the
 * least-loaded healthy server under its cap; one that fails through the server's fault before any
 * token was passed on is tried again on another server within the same job attempt.
 */
export class TextSynthBackend implements Backend {
  readonly name: string;
  private readonly config: TextSynthConfig;
  private readonly pool: ServerPool;
  private readonly headers: Record<string, string>;

  constructor(name: string, config: TextSynthConfig, ctx: AdapterContext) {
    this.name = name;
    this.config = config;
    let apiKey: string | undefined;
    if (config.api_key_env !== undefined) {
      apiKey = ctx.env[config.api_key_env];
      if (apiKey === undefined || apiKey === '') {
        throw new LlmqError('ERR_CONFIG_INVALID', `backend "${name}": environment variable ${config.api_key_env} (named by api_key_env) is not set`, { param: 'api_key_env' });
      }
    }
    this.headers = { ...(apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` }), ...config.headers };
    const logger = ctx.logger;
    this.pool = new ServerPool(resolveServers(config), {
      logger,
      probe: (url, signal) => this.probe(url, signal),
      healthCheckIntervalMs: config.health_check_interval_ms,
      healthCheckTimeoutMs: config.health_check_timeout_ms,
    });
    this.pool.start();
  }

  /** Per-server counters (requests, failures, in flight, health) and the number waiting for a slot. */
  stats(): PoolStats {
    return this.pool.stats();
  }

  /** Probes every server now; throws unless at least one is healthy. */
  async check(): Promise<void> {
    await this.pool.checkAll();
    const { servers } = this.pool.stats();
    if (!servers.some((s) => s.healthy)) {
      throw new LlmqError('ERR_BACKEND_UNAVAILABLE', `no ts_server is healthy: ${servers.map((s) => `${s.url} (${s.last_error ?? 'down'})`).join(', ')}`, {
        details: { servers: servers.map((s) => s.url) },
      });
    }
  }

  async close(): Promise<void> {
    this.pool.close();
  }

  async generate(input: GenerateInput): Promise<GenerateOutput> {
    const { request, signal } = input;
    if (signal.aborted) throw abortError(signal);
    const json = wantsJson(request);
    const tries = json ? this.config.json_retries + 1 : 1;
    const log = input.logger.child({ backend: this.name });
    let promptTokens = 0;
    let completionTokens = 0;
    for (let t = 0; t < tries; t++) {
      const { endpoint, body } = toRequest(request, { stream: this.config.stream, seed: seedFor(request.seed, t) });
      // A JSON answer is passed on only once it parses, so a rejected try never reaches onToken.
      const answer = await this.onCluster(input, endpoint, body, !json);
      // Every try consumed tokens on a server; usage says so.
      promptTokens += answer.promptTokens;
      completionTokens += answer.completionTokens;
      const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
      if (!json) return { text: answer.text, finish_reason: answer.finish, usage };
      try {
        JSON.parse(answer.text);
      } catch {
        log.debug({ try: t + 1, of: tries }, 'ts_server answer is not valid JSON; trying another seed');
        continue;
      }
      if (answer.text !== '') input.onToken(answer.text);
      return { text: answer.text, finish_reason: answer.finish, usage };
    }
    throw new LlmqError('ERR_BACKEND_FAILED', `the answer was not valid JSON after ${tries} tries with different seeds`, { details: { tries } });
  }

  /** One request, on as many servers as `retry_other_server` allows. */
  private async onCluster(input: GenerateInput, endpoint: Endpoint, body: Record<string, unknown>, passTokens: boolean): Promise<Answer> {
    const { signal } = input;
    const tried = new Set<string>();
    let lastError: LlmqError | undefined;
    const giveUp = (last: LlmqError) =>
      new LlmqError('ERR_BACKEND_UNAVAILABLE', `failed on ${tried.size} ts_server(s); last: ${last.detail}`, { cause: last, details: { servers_tried: tried.size, last_code: last.code } });

    while (tried.size <= this.config.retry_other_server) {
      let lease;
      try {
        lease = await this.pool.acquire(tried, signal);
      } catch (err) {
        if (lastError && !signal.aborted) throw giveUp(lastError);
        throw err;
      }
      tried.add(lease.url);
      let passed = 0;
      let consumerError: { error: unknown } | undefined;
      const onPiece = (piece: string) => {
        if (!passTokens) return;
        passed++;
        try {
          input.onToken(piece);
        } catch (error) {
          consumerError = { error };
          throw error;
        }
      };
      try {
        const answer = await this.once(lease.url, input, endpoint, body, onPiece);
        lease.release('ok');
        return answer;
      } catch (err) {
        if (signal.aborted) {
          lease.release('other');
          throw abortError(signal);
        }
        // The caller's onToken threw: not the server's fault.
        if (consumerError) {
          lease.release('other');
          throw consumerError.error;
        }
        const error = err instanceof LlmqError ? err : new LlmqError('ERR_BACKEND_FAILED', describe(err), { cause: err });
        const fault = isServerFault(error);
        lease.release(fault ? 'failed' : 'other', error.detail);
        // Tokens already reached the client: another server's answer would not continue them.
        if (!fault || passed > 0) throw error;
        lastError = error;
        input.logger.warn({ backend: this.name, server: lease.url, code: error.code }, 'ts_server request failed; trying another server');
      }
    }
    throw giveUp(lastError ?? new LlmqError('ERR_BACKEND_UNAVAILABLE', 'no server tried'));
  }

  private async once(url: string, input: GenerateInput, endpoint: Endpoint, body: Record<string, unknown>, onPiece: (piece: string) => void): Promise<Answer> {
    const { signal, request } = input;
    const engine = this.config.engine ?? input.model;
    const target = `${url}/v1/engines/${encodeURIComponent(engine)}/${endpoint}`;
    let res: Response;
    try {
      res = await fetch(target, { method: 'POST', headers: { 'content-type': 'application/json', ...this.headers }, body: JSON.stringify(body), signal });
    } catch (err) {
      if (signal.aborted) throw abortError(signal);
      throw new LlmqError('ERR_BACKEND_UNAVAILABLE', `cannot reach ${url}: ${describe(err)}`, { cause: err, details: { server: url } });
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      throw httpError(res.status, res.headers, text, url).error;
    }

    const cut = (err: unknown, chunks: number) => {
      if (signal.aborted) return abortError(signal);
      if (err instanceof LlmqError) return err;
      return new LlmqError('ERR_BACKEND_STREAM_CUT', `the answer from ${url} broke after ${chunks} chunks: ${describe(err)}`, { cause: err, details: { server: url, chunks } });
    };
    let text = '';
    let chunks = 0;
    let end: TsChunk | undefined;
    try {
      if (body['stream'] !== true) {
        const whole = parseChunk(await res.json());
        if (whole.error !== undefined) throw new LlmqError('ERR_BACKEND_UNAVAILABLE', `${url} reported: ${whole.error}`, { details: { server: url } });
        text = whole.text;
        end = whole;
        if (text !== '') onPiece(text);
      } else {
        if (!res.body) throw new TypeError('no body');
        for await (const value of readJsonStream(res.body)) {
          const chunk = parseChunk(value);
          if (chunk.error !== undefined) throw new LlmqError('ERR_BACKEND_STREAM_CUT', `${url} reported inside the stream: ${chunk.error}`, { details: { server: url, chunks } });
          if (chunk.text !== '') {
            text += chunk.text;
            chunks++;
            onPiece(chunk.text);
          }
          if (chunk.reachedEnd) {
            end = chunk;
            break;
          }
        }
      }
    } catch (err) {
      throw cut(err, chunks);
    }
    if (signal.aborted) throw abortError(signal);
    if (!end) {
      throw new LlmqError('ERR_BACKEND_STREAM_CUT', `the stream from ${url} ended after ${chunks} chunks without reached_end`, { details: { server: url, chunks } });
    }
    if (end.truncatedPrompt) input.logger.warn({ backend: this.name, server: url }, 'ts_server truncated the prompt to fit its context');
    const promptTokens = end.inputTokens ?? estimatePromptTokens(request);
    const completionTokens = end.outputTokens ?? (body['stream'] === true ? chunks : Math.ceil(text.length / 4));
    return { text, finish: toFinishReason(end.finishReason), promptTokens, completionTokens };
  }

  /** Alive when the server gives any HTTP answer below 500 on `health_check_path`. */
  private async probe(url: string, signal: AbortSignal): Promise<void> {
    const res = await fetch(`${url}${this.config.health_check_path}`, { headers: this.headers, signal });
    await res.body?.cancel().catch(() => {});
    if (res.status >= 500) throw new Error(`GET ${this.config.health_check_path} answered ${res.status}`);
  }
}

/** The `textsynth` backend: a cluster of TextSynth ts_servers. */
export const textSynthBackend = defineBackend<TextSynthConfig>({
  kind: 'backend',
  type: 'textsynth',
  configSchema: textSynthConfigSchema,
  capabilities: textSynthCapabilities,
  create({ name, config }, ctx) {
    return new TextSynthBackend(name, config, ctx);
  },
});
