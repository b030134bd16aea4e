import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, LlmqError, silentLogger, type AdapterContext, type GenerateOutput, type GenerationRequest } from '@llmq/core';
import { startFaultServer, type Fault, type FaultServer } from '@llmq/testing';
import { textSynthBackend, textSynthConfigSchema, type TextSynthBackend } from './index.js';

const KEY = 'ts-key-1';
const ctx: AdapterContext = { logger: silentLogger, signal: new AbortController().signal, configDir: '.', env: { TS_KEY: KEY } };

let server: FaultServer;
const open: TextSynthBackend[] = [];

beforeAll(async () => {
  server = await startFaultServer({ apiKey: KEY });
});
afterAll(async () => {
  await server.close();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
  server.resetCounters();
  expect(server.pending, 'every scripted fault was used').toBe(0);
});

function backend(options: Record<string, unknown> = {}): TextSynthBackend {
  const config = textSynthConfigSchema.parse({ url: server.url, engine: 'eng', api_key_env: 'TS_KEY', ...options });
  const b = textSynthBackend.create({ name: 'ts', config, concurrency: 4 }, ctx) as TextSynthBackend;
  open.push(b);
  return b;
}

async function run(b: TextSynthBackend, request: Omit<GenerationRequest, 'model'>, signal = new AbortController().signal, tokens: string[] = []): Promise<{ out: GenerateOutput; tokens: string[] }> {
  const out = await b.generate({ jobId: 'j', attempt: 1, model: 'llmq-model', request: { model: 'llmq-model', ...request }, signal, logger: silentLogger, onToken: (t) => tokens.push(t) });
  return { out, tokens };
}

async function failure(b: TextSynthBackend, request: Omit<GenerationRequest, 'model'>, signal?: AbortSignal): Promise<{ err: unknown; tokens: string[] }> {
  const tokens: string[] = [];
  try {
    const { out } = await run(b, request, signal, tokens);
    throw new Error(`expected a failure, got ${JSON.stringify(out)}`);
  } catch (err) {
    return { err, tokens };
  }
}

const generations = () => server.requests.filter((r) => r.route === 'textsynth.completions' || r.route === 'textsynth.chat');

describe('textsynth backend: answers', () => {
  it('streams a completion token by token, with the server token counts', async () => {
    const { out, tokens } = await run(backend(), { prompt: 'one two three', max_tokens: 4 });
    expect(tokens).toEqual(['one', ' two', ' three', ' one']);
    expect(out).toEqual({ text: 'one two three one', finish_reason: 'length', usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } });
    const [req] = generations();
    expect(req).toMatchObject({ path: '/v1/engines/eng/completions', body: { prompt: 'one two three', max_tokens: 4, stream: true } });
    expect(req?.headers['authorization']).toBe(`Bearer ${KEY}`);
  });

  it('sends chat as alternating strings plus system, to /chat', async () => {
    const { out } = await run(backend(), {
      messages: [
        { role: 'system', content: 'be kind' },
        { role: 'user', content: 'hi there' },
        { role: 'assistant', content: 'hello' },
        { role: 'user', content: 'say it back' },
      ],
    });
    expect(generations()[0]).toMatchObject({ path: '/v1/engines/eng/chat', body: { system: 'be kind', messages: ['hi there', 'hello', 'say it back'] } });
    expect(out.finish_reason).toBe('stop');
    // The fault server echoes the last user turn.
    expect(out.text).toBe('say it back');
  });

  it('uses the llmq model name as engine by default', async () => {
    await run(backend({ engine: undefined }), { prompt: 'x' });
    expect(generations()[0]?.path).toBe('/v1/engines/llmq-model/completions');
  });

  it('without streaming, calls onToken once with the whole text', async () => {
    const { out, tokens } = await run(backend({ stream: false }), { prompt: 'a b c' });
    expect(tokens).toEqual(['a b c']);
    expect(out).toEqual({ text: 'a b c', finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 } });
    expect(generations()[0]?.body).toMatchObject({ stream: false });
  });

  it('estimates usage when the server reports none', async () => {
    server.script({ type: 'ok', usage: false });
    const { out } = await run(backend(), { prompt: 'twelve chars', max_tokens: 2 });
    expect(out.usage).toEqual({ prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 });
  });

  it('maps repeat_penalty to repetition_penalty and the JSON schema to schema', async () => {
    server.script({ type: 'ok', text: '{"x": 1}' });
    await run(backend(), { prompt: 'p', repeat_penalty: 1.3, top_k: 5, seed: 3, response_format: { type: 'json_schema', json_schema: { schema: { type: 'object' } } } });
    expect(generations()[0]?.body).toMatchObject({ repetition_penalty: 1.3, top_k: 5, seed: 3, schema: { type: 'object' } });
  });

  it('refuses more than five stop strings without calling a server', async () => {
    const { err } = await failure(backend(), { prompt: 'p', stop: ['a', 'b', 'c', 'd', 'e', 'f'] });
    expect(err).toMatchObject({ code: 'ERR_REQUEST_UNSUPPORTED_PARAM', param: 'stop' });
    expect(isRetryable(err)).toBe(false);
    expect(generations()).toHaveLength(0);
  });

  it('config needs exactly one of url and servers', () => {
    expect(textSynthConfigSchema.safeParse({ engine: 'e' }).success).toBe(false);
    expect(textSynthConfigSchema.safeParse({ url: 'http://a', servers: [{ url: 'http://b' }] }).success).toBe(false);
    expect(textSynthConfigSchema.safeParse({ servers: [{ url: 'http://b' }, { url: 'http://b/' }] }).success).toBe(false);
    expect(textSynthConfigSchema.safeParse({ url: 'http://a', extra: 1 }).success).toBe(false);
  });
});

describe('textsynth backend: JSON answers', () => {
  const schema = { response_format: { type: 'json_schema' as const, json_schema: { schema: { type: 'object' } } } };

  it('retries an answer that does not parse with another seed, and passes on only the valid one', async () => {
    server.script({ type: 'ok', text: 'not { json' }, { type: 'ok', text: '{"ok": true}' });
    const { out, tokens } = await run(backend(), { prompt: 'give json', seed: 41, ...schema });
    expect(out.text).toBe('{"ok": true}');
    expect(tokens).toEqual(['{"ok": true}']);
    expect(generations().map((r) => (r.body as { seed?: number }).seed)).toEqual([41, 42]);
    // Both tries consumed tokens.
    expect(out.usage.completion_tokens).toBe(5);
  });

  it('gives up after json_retries with a retryable failure', async () => {
    server.script({ type: 'ok', text: 'nope', times: 3 });
    const { err, tokens } = await failure(backend({ json_retries: 2 }), { prompt: 'give json', ...schema });
    expect(errorCode(err)).toBe('ERR_BACKEND_FAILED');
    expect(isRetryable(err)).toBe(true);
    expect(tokens).toEqual([]);
    const seeds = generations().map((r) => (r.body as { seed?: number }).seed);
    expect(seeds).toHaveLength(3);
    expect(seeds[0]).toBeUndefined();
    expect(new Set(seeds.slice(1)).size).toBe(2);
  });
});

describe('textsynth backend: errors', () => {
  const cases: { name: string; fault: Fault; code: string; retryable: boolean; details?: Record<string, unknown> }[] = [
    { name: '400', fault: { type: 'status', status: 400, message: 'invalid top_k' }, code: 'ERR_BACKEND_BAD_REQUEST', retryable: false },
    { name: '400 context length', fault: { type: 'context_length' }, code: 'ERR_BACKEND_CONTEXT_LENGTH', retryable: false },
    { name: '403', fault: { type: 'status', status: 403 }, code: 'ERR_BACKEND_AUTH', retryable: false },
    { name: '429 Retry-After', fault: { type: 'rate_limit', retryAfter: '4' }, code: 'ERR_BACKEND_RATE_LIMITED', retryable: true, details: { retry_after_ms: 4000 } },
    { name: '429 insufficient_quota', fault: { type: 'quota' }, code: 'ERR_BACKEND_QUOTA', retryable: false },
    { name: '500 on the only server', fault: { type: 'status', status: 500 }, code: 'ERR_BACKEND_UNAVAILABLE', retryable: true },
    { name: 'reset on the only server', fault: { type: 'reset' }, code: 'ERR_BACKEND_UNAVAILABLE', retryable: true },
  ];
  for (const c of cases) {
    it(`${c.name} → ${c.code}`, async () => {
      server.script(c.fault);
      const { err } = await failure(backend(), { prompt: 'hello' });
      expect(err).toBeInstanceOf(LlmqError);
      expect(errorCode(err)).toBe(c.code);
      expect(isRetryable(err)).toBe(c.retryable);
      if (c.details) expect((err as LlmqError).details).toMatchObject(c.details);
      expect(generations()).toHaveLength(1);
    });
  }

  it('401 (a wrong key) → ERR_BACKEND_AUTH', async () => {
    const b = textSynthBackend.create({ name: 'ts', config: textSynthConfigSchema.parse({ url: server.url, engine: 'eng', api_key_env: 'K' }), concurrency: 1 }, { ...ctx, env: { K: 'wrong' } }) as TextSynthBackend;
    open.push(b);
    const { err } = await failure(b, { prompt: 'x' });
    expect(errorCode(err)).toBe('ERR_BACKEND_AUTH');
    expect(isRetryable(err)).toBe(false);
  });

  for (const how of ['destroy', 'end', 'error'] as const) {
    it(`a stream cut after tokens (${how}) → ERR_BACKEND_STREAM_CUT, no result`, async () => {
      server.script({ type: 'cut', afterChunks: 2, how });
      const { err, tokens } = await failure(backend(), { prompt: 'a b c d e f' });
      expect(errorCode(err)).toBe('ERR_BACKEND_STREAM_CUT');
      expect(isRetryable(err)).toBe(true);
      expect(tokens.length).toBeLessThanOrEqual(2);
    });
  }

  it('a non-streamed answer cut short → retryable, no result', async () => {
    server.script({ type: 'cut' });
    const { err, tokens } = await failure(backend({ stream: false }), { prompt: 'a b' });
    expect(isRetryable(err)).toBe(true);
    // One server only, so the cut becomes "no server left": still no partial answer.
    expect(errorCode(err)).toBe('ERR_BACKEND_UNAVAILABLE');
    expect((err as LlmqError).details).toMatchObject({ last_code: 'ERR_BACKEND_STREAM_CUT' });
    expect(tokens).toEqual([]);
  });
});

describe('textsynth backend: abort', () => {
  for (const stream of [true, false]) {
    it(`a hung server + abort → rejects promptly with signal.reason${stream ? '' : ' (not streaming)'}`, async () => {
      server.script({ type: 'hang' });
      const controller = new AbortController();
      const reason = new LlmqError('ERR_JOB_TIMEOUT', 'too slow');
      setTimeout(() => controller.abort(reason), 150);
      const started = Date.now();
      const { err } = await failure(backend({ stream }), { prompt: 'x' }, controller.signal);
      expect(err).toBe(reason);
      expect(Date.now() - started).toBeLessThan(2000);
    });
  }

  it('aborting mid-stream rejects with signal.reason and leaves the server healthy', async () => {
    server.script({ type: 'ok', tokenDelayMs: 40 });
    const b = backend();
    const controller = new AbortController();
    const reason = new Error('shutdown');
    setTimeout(() => controller.abort(reason), 150);
    const { err, tokens } = await failure(b, { prompt: 'w '.repeat(30) }, controller.signal);
    expect(err).toBe(reason);
    expect(tokens.length).toBeGreaterThan(0);
    expect(b.stats().servers[0]).toMatchObject({ healthy: true, failures: 0, in_flight: 0 });
  });
});
