import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { loadConfig } from '@llmq/config';
import { LlmqError, defineBackend, silentLogger, sleep, type GenerateInput } from '@llmq/core';
import { BUILTIN_DEFINITIONS, createPlatform, type Platform } from '@llmq/platform';
import { startRedis, type TestRedis } from '@llmq/testing';
import { startWorker, type WorkerHandle } from '@llmq/worker';
import { serveGateway, type ServedGateway } from '@llmq/gateway';

/** Waits `ms`, or rejects with the abort's reason when the job is cancelled meanwhile. */
async function sleepOrAbort(ms: number, signal: AbortSignal): Promise<void> {
  await sleep(ms, signal);
  if (signal.aborted) throw signal.reason as Error;
}

/**
 * Does what the prompt (or last message) names, so one model covers each retry case:
 * `stream-then-fail` streams part of an answer on attempt 1 and then fails retryably;
 * `fail-then-stream` fails retryably on attempt 1 before any text; `fail-slowly` waits 300 ms
 * before that failure. Later attempts answer "second answer". It also says which named template
 * it was given (it knows only "phi3").
 */
const scripted = defineBackend<Record<string, never>>({
  kind: 'backend',
  type: 'test-front-door',
  configSchema: z.strictObject({}),
  capabilities: { params: ['max_tokens'], chat: true, completion: true, templates: true, findTemplate: (name) => (name === 'phi3' ? undefined : ['phi3']) },
  create({ name }) {
    return {
      name,
      async check() {},
      async close() {},
      async generate(input: GenerateInput) {
        const script = input.request.prompt ?? input.request.messages?.at(-1)?.content ?? '';
        if (input.attempt === 1 && script === 'stream-then-fail') {
          input.onToken('partial');
          input.onToken(' answer');
          // Longer than worker.stream_flush_ms: the tokens reach the client before the failure.
          await sleepOrAbort(200, input.signal);
          throw new LlmqError('ERR_BACKEND_UNAVAILABLE', 'scripted failure after streaming');
        }
        if (input.attempt === 1 && script === 'fail-slowly') await sleepOrAbort(300, input.signal);
        if (input.attempt === 1 && (script === 'fail-then-stream' || script === 'fail-slowly')) throw new LlmqError('ERR_BACKEND_UNAVAILABLE', 'scripted failure before any text');
        const text = input.request.template === undefined ? 'second answer' : `template=${input.request.template}`;
        input.onToken(text);
        return { text, finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 2 } };
      },
    };
  },
});

/** Splits an SSE body into its `data:` payloads (JSON where it parses). */
function dataLines(raw: string): unknown[] {
  return raw
    .split('\n\n')
    .flatMap((block) => block.split('\n').filter((l) => l.startsWith('data: ')))
    .map((l) => {
      const data = l.slice('data: '.length);
      try {
        return JSON.parse(data) as unknown;
      } catch {
        return data;
      }
    });
}

/** Named SSE events of a body, as `GET /v1/jobs/:id/events` sends them. */
function sseEvents(raw: string): { event: string; data: any }[] {
  return raw
    .split('\n\n')
    .filter((b) => b.includes('event: '))
    .map((b) => ({ event: /^event: (.*)$/m.exec(b)![1]!, data: JSON.parse(/^data: (.*)$/m.exec(b)![1]!) }));
}

describe('gateway front doors (OpenAI, TextSynth) and the job event stream', () => {
  let redis: TestRedis;
  let gateway: ServedGateway;
  let worker: WorkerHandle;
  let url: string;
  let platform: Platform;
  const post = async (path: string, body: unknown) => {
    const res = await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, type: res.headers.get('content-type') ?? '', raw: await res.text() };
  };
  const job = async (id: string) => (await (await fetch(`${url}/v1/jobs/${id}`)).json()) as any;
  const waitFor = async (id: string, status: string) => {
    const deadline = Date.now() + 10_000;
    let last: any;
    while (Date.now() < deadline) {
      last = await job(id);
      if (last.status === status) return last;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`job ${id} not ${status} in 10 s; last: ${JSON.stringify(last)}`);
  };

  beforeAll(async () => {
    redis = await startRedis();
    const config = loadConfig({
      inline: {
        log_level: 'warn',
        redis: { url: redis.url, prefix: `t${Math.random().toString(36).slice(2, 8)}` },
        gateway: { port: 0, host: '127.0.0.1' },
        worker: { watchdog_ms: 0 },
        queue: { backoff_ms: 50, attempts: 3 },
        models: [
          { name: 'echo', backend: 'echo', concurrency: 4 },
          { name: 'echo-slow', backend: 'echo', concurrency: 4, options: { tokens_per_second: 20 } },
          { name: 'scripted', backend: 'test-front-door', concurrency: 4 },
          { name: 'primary', backend: 'test-front-door', concurrency: 4, attempts: 1, fallbacks: ['echo'] },
          // Its file is not there: the worker skips it and says why (see the test at the end).
          { name: 'unpulled', backend: 'llama-cpp', options: { model_path: '/nonexistent/llmq-test/unpulled.gguf', model_uri: 'hf:example/unpulled-GGUF/unpulled.gguf' } },
        ],
      },
      env: {},
    });
    platform = await createPlatform(config, { builtins: [...BUILTIN_DEFINITIONS, scripted] });
    gateway = await serveGateway({ platform, logger: silentLogger, registry: new Registry() });
    url = gateway.url;
    worker = await startWorker({ platform, logger: silentLogger, registry: new Registry(), env: {} });
  });
  afterAll(async () => {
    await worker?.close(1_000);
    await gateway?.close();
    await redis?.stop();
  });

  it('ends an OpenAI stream with an error, and cancels the job, when an attempt fails after text was streamed', async () => {
    // The user's repro: a slow model and a short timeout_ms (ERR_JOB_TIMEOUT is retried).
    const r = await post('/v1/completions', { model: 'echo-slow', prompt: 'a b c d e f g h', max_tokens: 40, timeout_ms: 300, stream: true });
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^text\/event-stream/);
    const data = dataLines(r.raw);
    const chunks = data.filter((d): d is { id: string; choices: { text: string }[] } => typeof d === 'object' && d !== null && 'choices' in d);
    const text = chunks.map((c) => c.choices[0]!.text).join('');
    expect(text.length).toBeGreaterThan(0);
    // One attempt's text, not every attempt's one after the other.
    expect('a b c d e f g h a b c d e f g h'.startsWith(text)).toBe(true);
    expect(data).not.toContain('[DONE]');
    const last = data.at(-1) as { error: { code: string; message: string; type: string } };
    const jobId = chunks[0]!.id.replace(/^cmpl-/, '');
    expect(last.error).toMatchObject({ code: 'ERR_JOB_TIMEOUT', type: 'timeout_error' });
    expect(last.error.message).toContain(`job ${jobId}: attempt 1 failed with ERR_JOB_TIMEOUT`);
    expect(last.error.message).toMatch(/after streaming began; the text streamed so far is incomplete/);
    const view = await waitFor(jobId, 'cancelled');
    expect(view.attempts).toBeLessThanOrEqual(2);
  });

  it('retries unseen when no text was streamed yet, and without streaming answers with the last attempt', async () => {
    const streamed = await post('/v1/chat/completions', { model: 'scripted', messages: [{ role: 'user', content: 'fail-then-stream' }], stream: true });
    const data = dataLines(streamed.raw);
    const text = data.map((d) => (d as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content ?? '').join('');
    expect(text).toBe('second answer');
    expect(data.at(-1)).toBe('[DONE]');
    const plain = await post('/v1/completions', { model: 'scripted', prompt: 'stream-then-fail' });
    expect(plain.status).toBe(200);
    const body = JSON.parse(plain.raw) as { id: string; choices: { text: string }[] };
    expect(body.choices[0]!.text).toBe('second answer');
    expect(await job(body.id.replace(/^cmpl-/, ''))).toMatchObject({ status: 'completed', attempts: 2 });
  });

  it('ends a TextSynth stream with its error object, and cancels the job, when an attempt fails after text was streamed', async () => {
    const r = await post('/v1/engines/scripted/completions', { prompt: 'stream-then-fail', stream: true });
    expect(r.status).toBe(200);
    const parts = r.raw.split('\n\n').filter(Boolean).map((p) => JSON.parse(p) as { text?: string; error?: string });
    expect(parts.slice(0, -1).map((p) => p.text).join('')).toBe('partial answer');
    const error = parts.at(-1)!.error!;
    expect(error).toMatch(/^job (\S+): attempt 1 failed with ERR_BACKEND_UNAVAILABLE \(scripted failure after streaming\) after streaming began; the text streamed so far is incomplete/);
    await waitFor(/^job (\S+):/.exec(error)![1]!, 'cancelled');
  });

  it('does not append a fallback model\'s answer to text the primary already streamed', async () => {
    const r = await post('/v1/chat/completions', { model: 'primary', messages: [{ role: 'user', content: 'stream-then-fail' }], stream: true });
    const data = dataLines(r.raw);
    const text = data.map((d) => (d as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content ?? '').join('');
    expect(text).toBe('partial answer');
    const last = data.at(-1) as { error: { message: string } };
    expect(last.error.message).toMatch(/attempt 1 started over \(on a fallback model or another worker\) after streaming began/);
  });

  it('tells a GET /v1/jobs/:id/events client when a fallback model starts the answer over, and sends each status once', async () => {
    const enqueued = await post('/v1/jobs', { model: 'primary', prompt: 'stream-then-fail' });
    const { id } = JSON.parse(enqueued.raw) as { id: string };
    const events = sseEvents(await (await fetch(`${url}/v1/jobs/${id}/events`)).text());
    const final = events.at(-1)!;
    expect(final).toMatchObject({ event: 'completed', data: { result: { text: 'stream-then-fail', model: 'echo' } } });
    // What a client rebuilds from the tokens by their offsets is the answer, not the primary's
    // streamed text with the fallback's tail after it.
    let text = '';
    for (const e of events) if (e.event === 'token') text = text.slice(0, e.data.offset) + e.data.text;
    expect(text).toBe('stream-then-fail');
    const statuses = events.filter((e) => e.event === 'status').map((e) => e.data);
    const restart = statuses.findIndex((s) => s.restarted === true);
    expect(restart).toBeGreaterThan(0);
    expect(statuses[restart]).toMatchObject({ status: 'active', attempts: 1 });
    // The primary's text came before the restart, the fallback's after it.
    const order = events.map((e) => (e.event === 'token' ? `token@${e.data.offset}` : e.data.restarted ? 'restart' : e.event));
    expect(order.indexOf('token@0')).toBeLessThan(order.indexOf('restart'));
    expect(order.lastIndexOf('token@0')).toBeGreaterThan(order.indexOf('restart'));
    // The stored state and the worker's own `active` for the same run are one event, not two.
    for (let i = 1; i < statuses.length; i++) expect(statuses[i]).not.toEqual(statuses[i - 1]);
  });

  it('counts jobs enqueued through the OpenAI and TextSynth front doors in llmq_jobs_enqueued_total', async () => {
    await post('/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'hi' }] });
    await post('/v1/completions', { model: 'echo', prompt: 'hi', stream: true });
    await post('/v1/engines/echo/completions', { prompt: 'hi' });
    await post('/v1/jobs', { model: 'echo', prompt: 'hi' });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toContain('llmq_jobs_enqueued_total{model="echo",source="openai"} 2');
    expect(metrics).toContain('llmq_jobs_enqueued_total{model="echo",source="textsynth"} 1');
    expect(metrics).toContain('llmq_jobs_enqueued_total{model="echo",source="http"} 1');
  });

  it('takes a named template on POST /v1/completions, as on chat and /v1/jobs', async () => {
    const r = await post('/v1/completions', { model: 'scripted', prompt: 'hello', template: 'phi3' });
    expect(r.status).toBe(200);
    expect((JSON.parse(r.raw) as { choices: { text: string }[] }).choices[0]!.text).toBe('template=phi3');
    const unknown = await post('/v1/completions', { model: 'scripted', prompt: 'hello', template: 'nope' });
    expect(unknown.status).toBe(400);
    expect(JSON.parse(unknown.raw)).toMatchObject({ error: { param: 'template', message: expect.stringMatching(/nope.*phi3/) } });
  });

  it('names the attempt count "attempts", as documented, on every status event of GET /v1/jobs/:id/events', async () => {
    const enqueued = await post('/v1/jobs', { model: 'scripted', prompt: 'fail-slowly' });
    const { id } = JSON.parse(enqueued.raw) as { id: string };
    const events = sseEvents(await (await fetch(`${url}/v1/jobs/${id}/events`)).text());
    expect(events.at(-1)).toMatchObject({ event: 'completed' });
    const statuses = events.filter((e) => e.event === 'status').map((e) => e.data);
    // The first comes from the stored job, the rest live from the worker: one field for both.
    expect(statuses.length).toBeGreaterThanOrEqual(3);
    expect(statuses.map((s) => typeof s.attempts)).toEqual(statuses.map(() => 'number'));
    // The name live events used to send stays, for clients that read it.
    expect(statuses.map((s) => s.attempt)).toEqual(statuses.map((s) => s.attempts));
    expect(statuses.find((s) => s.will_retry)).toMatchObject({ status: 'queued', attempts: 1 });
    expect(statuses.at(-1)).toMatchObject({ status: 'active', attempts: 2 });
  });

  it('answers a model no worker can serve with the worker\'s reason, not with a wait until the timeout', async () => {
    // The synchronous front doors: 503 naming the fix, before anything is enqueued, from the
    // gateway's first request on (it reads the workers' reports then).
    const started = Date.now();
    const first = await post('/v1/chat/completions', { model: 'unpulled', messages: [{ role: 'user', content: 'hi' }] });
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(first.status).toBe(503);
    const error = (JSON.parse(first.raw) as { error: { code: string; message: string; param: string } }).error;
    expect(error).toMatchObject({ code: 'ERR_MODEL_NOT_SERVED', param: 'model' });
    expect(error.message).toContain('no worker serves model "unpulled"');
    expect(error.message).toContain('ERR_MODEL_FILE_MISSING');
    expect(error.message).toContain('llmq model pull hf:example/unpulled-GGUF/unpulled.gguf');
    expect(error.message).toContain('Nothing was enqueued');
    // TextSynth's door too.
    const queuedBefore = (await (await fetch(`${url}/v1/queues`)).json()) as { data: { model: string; waiting: number }[] };
    const ts = await post('/v1/engines/unpulled/completions', { prompt: 'hi' });
    expect(ts.status).toBe(503);
    expect(ts.raw).toContain('Nothing was enqueued');
    // POST /v1/jobs still queues (a worker that can serve it may start) and says why none does now.
    const queued = await post('/v1/jobs', { model: 'unpulled', prompt: 'hi' });
    expect(queued.status).toBe(202);
    expect(JSON.parse(queued.raw)).toMatchObject({ status: 'queued', warning: expect.stringContaining('ERR_MODEL_FILE_MISSING') });
    // So does the job, to whoever looks at it or follows it.
    const queuedId = (JSON.parse(queued.raw) as { id: string }).id;
    expect(await job(queuedId)).toMatchObject({ status: 'queued', warning: expect.stringContaining('the job waits until a worker serves the model') });
    const stream = new AbortController();
    const events = await fetch(`${url}/v1/jobs/${queuedId}/events`, { signal: stream.signal });
    const reader = events.body!.getReader();
    const firstEvent = new TextDecoder().decode((await reader.read()).value);
    stream.abort();
    expect(sseEvents(firstEvent)[0]).toMatchObject({ event: 'status', data: { status: 'queued', warning: expect.stringContaining('ERR_MODEL_FILE_MISSING') } });
    const queues = (await (await fetch(`${url}/v1/queues`)).json()) as { data: { model: string; waiting: number; workers: number; not_served: unknown }[] };
    const row = queues.data.find((q) => q.model === 'unpulled')!;
    expect(row).toMatchObject({ workers: 0, not_served: { code: 'ERR_MODEL_FILE_MISSING', worker: worker.workerId } });
    expect(row.waiting).toBe(queuedBefore.data.find((q) => q.model === 'unpulled')!.waiting + 1);
    expect(queues.data.find((q) => q.model === 'echo')).toMatchObject({ not_served: null });
    // A served model is not held up by any of it.
    expect((await post('/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'hi' }] })).status).toBe(200);
  });

  it('tells a synchronous client at once from a new gateway\'s first request (or its first after a quiet spell), and within seconds when the report comes after the enqueue', async () => {
    const fresh = await serveGateway({ platform, logger: silentLogger, registry: new Registry() });
    const post = (body: unknown) => fetch(`${fresh.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const waiting = async () => ((await (await fetch(`${url}/v1/queues`)).json()) as { data: { model: string; waiting: number }[] }).data.find((q) => q.model === 'unpulled')!.waiting;
    try {
      const before = await waiting();
      // A gateway that has read no report yet (as after a quiet spell of over 5 s) reads them before enqueueing.
      let started = Date.now();
      const atOnce = await post({ model: 'unpulled', prompt: 'hi' });
      expect(Date.now() - started).toBeLessThan(1_500);
      expect(atOnce.status).toBe(503);
      expect(((await atOnce.json()) as { error: { message: string } }).error.message).toMatch(/ERR_MODEL_FILE_MISSING.*Nothing was enqueued\.$/);
      expect(await waiting()).toBe(before);

      // A report that comes only after the job was enqueued (a worker starting meanwhile) is
      // found by the wait's poll, every 2 s: the job is cancelled and the client told. Another new
      // gateway, whose first read finds no report: the worker repeats its report every 30 s, so
      // it is taken away only right before the request.
      const later = await serveGateway({ platform, logger: silentLogger, registry: new Registry() });
      const redisKey = `${platform.config.redis.prefix}:_unserved:unpulled`;
      const connection = later.gateway.producer.connection;
      const report = await connection.get(redisKey);
      expect(report).not.toBeNull();
      let res: Response;
      let elapsed: number;
      try {
        await connection.del(redisKey);
        started = Date.now();
        const pending = fetch(`${later.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'unpulled', prompt: 'hi' }) });
        await sleep(300);
        expect(await waiting()).toBe(before + 1);
        await connection.set(redisKey, report!, 'PX', 90_000);
        res = await pending;
        elapsed = Date.now() - started;
      } finally {
        // Whatever happened, the next tests find the report and no extra gateway.
        await connection.set(redisKey, report!, 'PX', 90_000);
        await later.close();
      }
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/ERR_MODEL_FILE_MISSING.*The job was cancelled\.$/);
      expect(elapsed).toBeGreaterThan(1_500);
      expect(elapsed).toBeLessThan(5_000);
      // Cancelled, not left waiting for a worker.
      expect(await waiting()).toBe(before);
    } finally {
      await fresh.close();
    }
  });
});
