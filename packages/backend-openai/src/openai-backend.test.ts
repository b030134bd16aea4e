import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, LlmqError, resolveCapabilities, silentLogger, type AdapterContext, type GenerateOutput, type GenerationRequest } from '@llmq/core';
import { startFaultServer, type FaultServer } from '@llmq/testing';
import { openAiBackend, openAiConfigSchema, type OpenAiBackend } from './index.js';

const KEY = 'sk-test-123';
const ctx: AdapterContext = { logger: silentLogger, signal: new AbortController().signal, configDir: '.', env: { TEST_OPENAI_KEY: KEY } };

let server: FaultServer;

beforeAll(async () => {
  server = await startFaultServer({ apiKey: KEY });
});
afterAll(async () => {
  await server.close();
});
afterEach(() => {
  server.resetCounters();
  expect(server.pending, 'every scripted fault was used').toBe(0);
});

function backend(options: Record<string, unknown> = {}, at: FaultServer = server): OpenAiBackend {
  const config = openAiConfigSchema.parse({ base_url: `${at.url}/v1`, api_key_env: 'TEST_OPENAI_KEY', ...options });
  return openAiBackend.create({ name: 'remote', config, concurrency: 4 }, ctx) as OpenAiBackend;
}

interface Run {
  out: GenerateOutput;
  tokens: string[];
}

async function run(b: OpenAiBackend, request: Omit<GenerationRequest, 'model'>, signal = new AbortController().signal, tokens: string[] = []): Promise<Run> {
  const out = await b.generate({
    jobId: 'job-1',
    attempt: 1,
    model: 'llmq-model',
    request: { model: 'llmq-model', ...request },
    signal,
    logger: silentLogger,
    onToken: (t) => tokens.push(t),
  });
  return { out, tokens };
}

/** Runs a request expected to fail; returns the error and the tokens seen before it. */
async function failure(b: OpenAiBackend, request: Omit<GenerationRequest, 'model'>, signal?: AbortSignal): Promise<{ err: unknown; tokens: string[] }> {
  const tokens: string[] = [];
  try {
    const { out } = await run(b, request, signal, tokens);
    throw new Error(`expected a failure, got a result: ${JSON.stringify(out)}`);
  } catch (err) {
    return { err, tokens };
  }
}

const chat = { messages: [{ role: 'system' as const, content: 'be brief' }, { role: 'user' as const, content: 'hello brave new world' }] };

describe('openai backend: answers', () => {
  it('streams a chat answer token by token, with usage from the server', async () => {
    const { out, tokens } = await run(backend(), chat);
    expect(tokens).toEqual(['hello', ' brave', ' new', ' world']);
    expect(out).toEqual({ text: 'hello brave new world', finish_reason: 'stop', usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 } });
    const [req] = server.requests;
    expect(req?.route).toBe('openai.chat');
    expect(req?.headers['authorization']).toBe(`Bearer ${KEY}`);
    expect(req?.body).toMatchObject({ model: 'llmq-model', stream: true, stream_options: { include_usage: true }, messages: chat.messages });
  });

  it('streams a completion, and reports finish_reason length', async () => {
    const { out, tokens } = await run(backend({ model: 'remote-id' }), { prompt: 'one two three', max_tokens: 5 });
    expect(tokens.join('')).toBe('one two three one two');
    expect(out.finish_reason).toBe('length');
    expect(out.usage).toEqual({ prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
    expect(server.requests[0]).toMatchObject({ route: 'openai.completions', body: { model: 'remote-id', prompt: 'one two three', max_tokens: 5 } });
  });

  it('without streaming, calls onToken once with the whole text', async () => {
    const b = backend({ stream: false });
    const c = await run(b, chat);
    expect(c.tokens).toEqual(['hello brave new world']);
    expect(c.out).toEqual({ text: 'hello brave new world', finish_reason: 'stop', usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 } });
    const p = await run(b, { prompt: 'a b', max_tokens: 3 });
    expect(p.tokens).toEqual(['a b a']);
    expect(p.out.finish_reason).toBe('length');
    expect(server.requests.map((r) => [r.route, (r.body as { stream?: unknown }).stream])).toEqual([
      ['openai.chat', false],
      ['openai.completions', false],
    ]);
  });

  it('estimates usage when the server sends none', async () => {
    server.script({ type: 'ok', usage: false }, { type: 'ok', usage: false });
    const streamed = await run(backend(), { prompt: 'twelve chars', max_tokens: 3 });
    // ceil(12 / 4) prompt tokens; one completion token per streamed chunk.
    expect(streamed.out.usage).toEqual({ prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 });
    const whole = await run(backend({ stream: false }), { prompt: 'twelve chars' });
    expect(whole.out.usage).toEqual({ prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 });
  });

  it('sends top_p 0 as a nucleus so small it keeps one token, which every server takes', async () => {
    await run(backend(), { ...chat, top_p: 0 });
    expect((server.requests[0]?.body as Record<string, unknown>).top_p).toBe(1e-9);
  });

  it('maps generation parameters, and sends extras only when configured', async () => {
    const request = {
      ...chat,
      max_tokens: 2,
      temperature: 0.5,
      top_p: 0.9,
      seed: 7,
      stop: ['\n'],
      presence_penalty: 0.1,
      frequency_penalty: 0.2,
      top_k: 40,
      repeat_penalty: 1.1,
      response_format: { type: 'json_schema' as const, json_schema: { schema: { type: 'object' } } },
    };
    await run(backend(), request);
    const plain = server.requests[0]?.body as Record<string, unknown>;
    expect(plain).toMatchObject({
      max_tokens: 2,
      temperature: 0.5,
      top_p: 0.9,
      seed: 7,
      stop: ['\n'],
      presence_penalty: 0.1,
      frequency_penalty: 0.2,
      response_format: { type: 'json_schema', json_schema: { name: 'response', schema: { type: 'object' } } },
    });
    expect(plain).not.toHaveProperty('top_k');
    expect(plain).not.toHaveProperty('repeat_penalty');

    await run(backend({ extra_params: ['top_k', 'repeat_penalty'], repeat_penalty_field: 'repetition_penalty', max_tokens_field: 'max_completion_tokens' }), request);
    const extra = server.requests[1]?.body as Record<string, unknown>;
    expect(extra).toMatchObject({ top_k: 40, repetition_penalty: 1.1, max_completion_tokens: 2 });
    expect(extra).not.toHaveProperty('max_tokens');
  });

  it('declares exactly the parameters it sends', () => {
    const caps = (o: Record<string, unknown>) => resolveCapabilities(openAiBackend, openAiConfigSchema.parse(o));
    expect(caps({}).params).not.toContain('top_k');
    expect(caps({ extra_params: ['top_k', 'min_p'] }).params).toEqual(expect.arrayContaining(['top_k', 'min_p', 'max_tokens', 'response_format']));
    expect(caps({ mode: 'chat' })).toMatchObject({ chat: true, completion: false });
    expect(caps({ mode: 'completion' })).toMatchObject({ chat: false, completion: true });
    expect(caps({})).toMatchObject({ chat: true, completion: true });
  });

  it('refuses a prompt in chat mode without calling the server', async () => {
    const { err } = await failure(backend({ mode: 'chat' }), { prompt: 'hi' });
    expect(errorCode(err)).toBe('ERR_REQUEST_UNSUPPORTED_PARAM');
    expect(isRetryable(err)).toBe(false);
    expect(server.requests).toHaveLength(0);
  });

  it('sends configured headers and no Authorization when api_key_env is left out', async () => {
    const open = await startFaultServer();
    try {
      await run(backend({ api_key_env: undefined, headers: { 'x-team': 'search' }, organization: 'org-1' }, open), chat);
      const headers = open.requests[0]?.headers ?? {};
      expect(headers['authorization']).toBeUndefined();
      expect(headers['x-team']).toBe('search');
      expect(headers['openai-organization']).toBe('org-1');
    } finally {
      await open.close();
    }
  });

  it('fails at creation when the key variable is not set', () => {
    const config = openAiConfigSchema.parse({ base_url: `${server.url}/v1`, api_key_env: 'NOT_SET_ANYWHERE' });
    expect(() => openAiBackend.create({ name: 'remote', config, concurrency: 1 }, ctx)).toThrow(/NOT_SET_ANYWHERE/);
  });

  it('rejects unknown config keys', () => {
    expect(openAiConfigSchema.safeParse({ base_url: 'http://x/v1', api_key: 'sk' }).success).toBe(false);
  });
});

describe('openai backend: errors', () => {
  const cases: { name: string; fault: Parameters<FaultServer['script']>[0]; code: string; retryable: boolean; details?: Record<string, unknown> }[] = [
    { name: '400', fault: { type: 'status', status: 400, code: 'invalid_value', message: 'bad top_p' }, code: 'ERR_BACKEND_BAD_REQUEST', retryable: false, details: { status: 400, backend_code: 'invalid_value' } },
    { name: '400 context_length_exceeded', fault: { type: 'context_length' }, code: 'ERR_BACKEND_CONTEXT_LENGTH', retryable: false },
    { name: '400 context length by message only', fault: { type: 'status', status: 400, message: "This model's maximum context length is 4096 tokens" }, code: 'ERR_BACKEND_CONTEXT_LENGTH', retryable: false },
    { name: '400 from an llmq gateway (its own code)', fault: { type: 'status', status: 400, code: 'ERR_BACKEND_CONTEXT_LENGTH', message: 'does not fit' }, code: 'ERR_BACKEND_CONTEXT_LENGTH', retryable: false },
    { name: '403', fault: { type: 'status', status: 403, message: 'region not allowed' }, code: 'ERR_BACKEND_AUTH', retryable: false },
    { name: '429 Retry-After seconds', fault: { type: 'rate_limit', retryAfter: '2' }, code: 'ERR_BACKEND_RATE_LIMITED', retryable: true, details: { status: 429, retry_after_ms: 2000 } },
    { name: '429 retry-after-ms', fault: { type: 'rate_limit', retryAfter: null, headers: { 'retry-after-ms': '750' } }, code: 'ERR_BACKEND_RATE_LIMITED', retryable: true, details: { retry_after_ms: 750 } },
    { name: '429 x-ratelimit-reset-tokens', fault: { type: 'rate_limit', retryAfter: null, headers: { 'x-ratelimit-reset-tokens': '6m0s', 'x-ratelimit-remaining-tokens': '0' } }, code: 'ERR_BACKEND_RATE_LIMITED', retryable: true, details: { retry_after_ms: 360_000 } },
    { name: '429 insufficient_quota', fault: { type: 'quota' }, code: 'ERR_BACKEND_QUOTA', retryable: false, details: { status: 429, backend_code: 'insufficient_quota' } },
    { name: '500', fault: { type: 'status', status: 500 }, code: 'ERR_BACKEND_UNAVAILABLE', retryable: true, details: { status: 500 } },
    { name: '503', fault: { type: 'status', status: 503 }, code: 'ERR_BACKEND_UNAVAILABLE', retryable: true },
    { name: 'connection reset', fault: { type: 'reset' }, code: 'ERR_BACKEND_UNAVAILABLE', retryable: true },
  ];

  for (const stream of [true, false]) {
    for (const c of cases) {
      it(`${c.name} → ${c.code}${stream ? '' : ' (not streaming)'}`, async () => {
        server.script(c.fault);
        const { err } = await failure(backend({ stream }), chat);
        expect(err).toBeInstanceOf(LlmqError);
        expect(errorCode(err)).toBe(c.code);
        expect(isRetryable(err)).toBe(c.retryable);
        if (c.details) expect((err as LlmqError).details).toMatchObject(c.details);
        // The SDK's own retries are off: one request, whatever the outcome.
        expect(server.count('generate')).toBe(1);
      });
    }
  }

  it('429 with an HTTP-date Retry-After', async () => {
    const at = new Date(Date.now() + 5000).toUTCString();
    server.script({ type: 'rate_limit', retryAfter: at });
    const { err } = await failure(backend(), chat);
    const wait = (err as LlmqError).details?.['retry_after_ms'] as number;
    expect(wait).toBeGreaterThan(3000);
    expect(wait).toBeLessThanOrEqual(5000);
  });

  it('401 (a wrong key) → ERR_BACKEND_AUTH, not retried', async () => {
    const b = openAiBackend.create({ name: 'remote', config: openAiConfigSchema.parse({ base_url: `${server.url}/v1`, api_key_env: 'WRONG' }), concurrency: 1 }, { ...ctx, env: { WRONG: 'sk-wrong' } });
    const { err } = await failure(b as OpenAiBackend, chat);
    expect(errorCode(err)).toBe('ERR_BACKEND_AUTH');
    expect(isRetryable(err)).toBe(false);
    expect(String(err)).not.toContain('sk-wrong');
  });

  it('a dead server → ERR_BACKEND_UNAVAILABLE', async () => {
    const gone = await startFaultServer();
    await gone.close();
    const { err } = await failure(backend({}, gone), chat);
    expect(errorCode(err)).toBe('ERR_BACKEND_UNAVAILABLE');
    expect(isRetryable(err)).toBe(true);
  });

  for (const how of ['destroy', 'end', 'error'] as const) {
    it(`a stream cut mid-answer (${how}) → ERR_BACKEND_STREAM_CUT and no result`, async () => {
      server.script({ type: 'cut', afterChunks: 2, how });
      const { err, tokens } = await failure(backend(), { prompt: 'a b c d e f g h' });
      expect(errorCode(err)).toBe('ERR_BACKEND_STREAM_CUT');
      expect(isRetryable(err)).toBe(true);
      expect(tokens.length).toBeLessThanOrEqual(2);
    });
  }

  for (const how of ['destroy', 'end'] as const) {
    it(`a non-streamed body cut mid-answer (${how}) → ERR_BACKEND_STREAM_CUT, no result`, async () => {
      server.script({ type: 'cut', how });
      const { err, tokens } = await failure(backend({ stream: false }), chat);
      expect(errorCode(err)).toBe('ERR_BACKEND_STREAM_CUT');
      expect(isRetryable(err)).toBe(true);
      expect(tokens).toEqual([]);
    });
  }
});

describe('openai backend: abort', () => {
  for (const stream of [true, false]) {
    it(`a hung server + abort → rejects promptly with signal.reason${stream ? '' : ' (not streaming)'}`, async () => {
      server.script({ type: 'hang' });
      const controller = new AbortController();
      const reason = new LlmqError('ERR_JOB_TIMEOUT', 'job ran longer than 150 ms');
      setTimeout(() => controller.abort(reason), 150);
      const started = Date.now();
      const { err } = await failure(backend({ stream }), chat, controller.signal);
      expect(err).toBe(reason);
      expect(Date.now() - started).toBeLessThan(2000);
    });
  }

  it('aborting mid-stream rejects with signal.reason, not a partial answer', async () => {
    server.script({ type: 'ok', tokenDelayMs: 50 });
    const controller = new AbortController();
    const reason = new LlmqError('ERR_JOB_CANCELLED', 'cancelled by client');
    const tokens: string[] = [];
    const pending = run(backend(), { prompt: 'w '.repeat(40) }, controller.signal, tokens);
    setTimeout(() => controller.abort(reason), 200);
    await expect(pending).rejects.toBe(reason);
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.length).toBeLessThan(40);
  });

  it('an abort that is not an Error rejects with ERR_JOB_CANCELLED', async () => {
    server.script({ type: 'hang' });
    const controller = new AbortController();
    setTimeout(() => controller.abort('bye'), 50);
    const { err } = await failure(backend(), chat, controller.signal);
    expect(errorCode(err)).toBe('ERR_JOB_CANCELLED');
  });
});

describe('openai backend: check()', () => {
  it('asks GET /v1/models', async () => {
    await backend().check();
    expect(server.requests.map((r) => r.route)).toEqual(['openai.models']);
  });

  it('fails with ERR_BACKEND_AUTH on a wrong key', async () => {
    const b = await openAiBackend.create({ name: 'remote', config: openAiConfigSchema.parse({ base_url: `${server.url}/v1`, api_key_env: 'WRONG' }), concurrency: 1 }, { ...ctx, env: { WRONG: 'nope' } });
    await expect(b.check()).rejects.toMatchObject({ code: 'ERR_BACKEND_AUTH' });
  });

  it('gives up after check_timeout_ms on a hung server', async () => {
    server.script({ type: 'hang', on: 'openai.models' });
    const started = Date.now();
    await expect(backend({ check_timeout_ms: 200 }).check()).rejects.toMatchObject({ code: 'ERR_BACKEND_UNAVAILABLE' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('does nothing with check: none', async () => {
    await backend({ check: 'none' }).check();
    expect(server.requests).toHaveLength(0);
  });
});
