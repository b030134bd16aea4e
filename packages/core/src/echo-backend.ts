import { z } from 'zod';
import { defineBackend, type Backend, type GenerateInput, type GenerateOutput } from './adapters.js';
import { LlmqError } from './errors.js';
import type { GenerationRequest } from './schemas.js';

export const echoConfigSchema = z.strictObject({
  /**
   * Wait before the first token.
   * @defaultValue 0
   */
  delay_ms: z.int().min(0).max(3_600_000).default(0),
  /**
   * Token rate; 0 emits every token at once.
   * @defaultValue 0
   */
  tokens_per_second: z.number().min(0).max(1_000_000).default(0),
});
export type EchoConfig = z.infer<typeof echoConfigSchema>;

/** Whitespace-separated words of the text the echo backend answers. */
function words(text: string): string[] {
  return text.split(/\s+/).filter((w) => w.length > 0);
}

/** JavaScript's `\s`, by char code. */
function isSpace(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    (c > 127 && (c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff))
  );
}

/**
 * What {@link echoPlan} answers without `max_tokens`, streamed as it is found: each word is a
 * slice of the prompt (with the single space before it when there is one), and the answer is the
 * prompt itself when its words are already separated by single spaces. Same tokens, same text,
 * a fraction of the allocations (this is the path `npm run bench` measures).
 */
function echoAtOnce(request: GenerationRequest, onToken: (piece: string) => void): GenerateOutput {
  const source = promptText(request);
  const n = source.length;
  let words = 0;
  // While the words are single-space separated, the answer is source[base, end); after that, a string built piece by piece.
  let base = 0;
  let end = 0;
  let built: string | undefined;
  let i = 0;
  while (i < n) {
    const gap = i;
    while (i < n && isSpace(source.charCodeAt(i))) i++;
    if (i === n) break;
    const start = i;
    while (i < n && !isSpace(source.charCodeAt(i))) i++;
    let piece: string;
    if (words === 0) {
      base = start;
      piece = source.slice(start, i);
    } else if (start - gap === 1 && source.charCodeAt(gap) === 32) {
      piece = source.slice(gap, i);
    } else {
      piece = ' ' + source.slice(start, i);
      built ??= source.slice(base, end);
    }
    if (built === undefined) end = i;
    else built += piece;
    words++;
    onToken(piece);
  }
  let text: string;
  if (words === 0) {
    text = 'echo';
    onToken(text);
  } else text = built ?? (base === 0 && end === n ? source : source.slice(base, end));
  const promptTokens = request.prompt !== undefined ? words : promptTokenCount(request);
  return { text, finish_reason: 'stop', usage: { prompt_tokens: promptTokens, completion_tokens: Math.max(1, words) } };
}

function promptText(request: GenerationRequest): string {
  if (request.prompt !== undefined) return request.prompt;
  const messages = request.messages ?? [];
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m && m.role === 'user') return m.content;
  }
  return messages.at(-1)?.content ?? '';
}

function promptTokenCount(request: GenerationRequest): number {
  if (request.prompt !== undefined) return words(request.prompt).length;
  return (request.messages ?? []).reduce((n, m) => n + words(m.content).length, 0);
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new LlmqError('ERR_JOB_CANCELLED', 'aborted');
}

function sleepOrThrow(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError(signal));
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The answer echo gives: the prompt's words, cycled to `max_tokens` when it is set, else once.
 * Deterministic, so tests and benchmarks can predict it.
 */
export function echoPlan(request: GenerationRequest, source: string[] = words(promptText(request))): { tokens: string[]; finish: 'stop' | 'length' } {
  const base = source.length > 0 ? source : ['echo'];
  const limit = request.max_tokens;
  const count = limit === undefined ? base.length : limit;
  const tokens: string[] = [];
  for (let i = 0; i < count; i++) tokens.push((i === 0 ? '' : ' ') + base[i % base.length]);
  return { tokens, finish: limit === undefined ? 'stop' : 'length' };
}

export class EchoBackend implements Backend {
  readonly name: string;
  private readonly config: EchoConfig;

  constructor(name: string, config: EchoConfig) {
    this.name = name;
    this.config = config;
  }

  async check(): Promise<void> {}
  async close(): Promise<void> {}

  async generate(input: GenerateInput): Promise<GenerateOutput> {
    const { request } = input;
    if (this.config.delay_ms === 0 && this.config.tokens_per_second === 0 && request.stop === undefined && request.max_tokens === undefined) {
      // Fast path (benchmarks, `echo`): the words at once, one token callback per word. Nothing
      // here waits, so the signal is not read (a host may make it lazily); the host checks it after.
      return echoAtOnce(request, input.onToken);
    }
    const source = words(promptText(request));
    const promptTokens = request.prompt !== undefined ? source.length : promptTokenCount(request);
    const { tokens, finish } = echoPlan(request, source);
    const stops = request.stop === undefined ? [] : Array.isArray(request.stop) ? request.stop : [request.stop];
    const interval = this.config.tokens_per_second > 0 ? 1000 / this.config.tokens_per_second : 0;
    if (this.config.delay_ms === 0 && interval === 0 && stops.length === 0) {
      for (const token of tokens) input.onToken(token);
      return { text: tokens.join(''), finish_reason: finish, usage: { prompt_tokens: promptTokens, completion_tokens: tokens.length } };
    }
    const { signal } = input;
    if (this.config.delay_ms > 0) await sleepOrThrow(this.config.delay_ms, signal);
    else if (signal.aborted) throw abortError(signal);
    const started = performance.now();
    let text = '';
    let produced = 0;
    for (const token of tokens) {
      if (interval > 0) {
        const due = started + produced * interval - performance.now();
        if (due > 0) await sleepOrThrow(due, signal);
      }
      if (signal.aborted) throw abortError(signal);
      const next = text + token;
      if (stops.length > 0) {
        let cut = -1;
        for (const s of stops) {
          const at = next.indexOf(s);
          if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        if (cut >= 0) {
          const kept = next.slice(0, cut);
          if (kept.length > text.length) input.onToken(kept.slice(text.length));
          return { text: kept, finish_reason: 'stop', usage: { prompt_tokens: promptTokens, completion_tokens: produced } };
        }
      }
      text = next;
      produced++;
      input.onToken(token);
    }
    return { text, finish_reason: finish, usage: { prompt_tokens: promptTokens, completion_tokens: produced } };
  }
}

/** Built-in backend that answers with the prompt's words; for trying llmq, tests and benchmarks. */
export const echoBackend = defineBackend<EchoConfig>({
  kind: 'backend',
  type: 'echo',
  configSchema: echoConfigSchema,
  capabilities: {
    params: ['max_tokens', 'stop', 'temperature', 'top_p', 'top_k', 'seed'],
    chat: true,
    completion: true,
  },
  create({ name, config }) {
    return new EchoBackend(name, config);
  },
});
