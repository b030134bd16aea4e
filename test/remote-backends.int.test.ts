import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultServer, type FaultServer } from '@llmq/testing';
import { readSse, startStack, type Stack } from './helpers/stack.js';

/**
 * Stack A's workers drive remote backends: a second llmq (stack B) over real HTTP through its
 * OpenAI and TextSynth front doors, and a fault-injecting server for what those cannot produce.
 */
describe('remote backends through the worker', () => {
  let b: Stack;
  let a: Stack;
  let fault: FaultServer;
  beforeAll(async () => {
    b = await startStack({ config: { models: [{ name: 'echo', backend: 'echo', concurrency: 8 }, { name: 'echo-slow', backend: 'echo', concurrency: 4, options: { tokens_per_second: 40 } }] } });
    fault = await startFaultServer();
    a = await startStack({
      config: {
        queue: { backoff_ms: 50, lock_duration_ms: 3_000, stalled_interval_ms: 1_000, max_stalled_count: 10 },
        models: [
          { name: 'via-openai', backend: 'openai', concurrency: 4, options: { base_url: `${b.url}/v1`, model: 'echo-slow' } },
          { name: 'via-openai-sync', backend: 'openai', concurrency: 4, options: { base_url: `${b.url}/v1`, model: 'echo', stream: false } },
          { name: 'via-textsynth', backend: 'textsynth', concurrency: 4, options: { url: b.url, engine: 'echo-slow' } },
          { name: 'faulty', backend: 'openai', concurrency: 1, attempts: 3, options: { base_url: `${fault.url}/v1`, model: 'm' } },
          { name: 'with-fallback', backend: 'openai', concurrency: 1, attempts: 2, fallbacks: ['via-openai-sync'], options: { base_url: `${fault.url}/v1`, model: 'm' } },
        ],
      },
    });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await fault?.close();
  });

  it('openai backend against a second llmq gateway: chat and completion, tokens streamed, usage recorded', async () => {
    const job = await a.http('POST', '/v1/jobs', { model: 'via-openai', messages: [{ role: 'user', content: 'red green blue' }], max_tokens: 6 });
    const events = await readSse(`${a.url}/v1/jobs/${job.body.id}/events`);
    const tokens = events.filter((e) => e.event === 'token');
    expect(tokens.length).toBeGreaterThan(1);
    const final = events.at(-1)!;
    expect(final.event).toBe('completed');
    expect(final.data.result.text).toBe('red green blue red green blue');
    expect(final.data.result.usage).toEqual({ prompt_tokens: 3, completion_tokens: 6, total_tokens: 9 });
    const completion = await a.http('POST', '/v1/jobs', { model: 'via-openai-sync', prompt: 'one two three' });
    const done = await a.waitFor(completion.body.id, ['completed']);
    expect(done.result).toMatchObject({ text: 'one two three', finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 3 } });
  });

  it("textsynth backend against llmq's TextSynth front door", async () => {
    const job = await a.http('POST', '/v1/jobs', { model: 'via-textsynth', prompt: 'x y z', max_tokens: 5 });
    const done = await a.waitFor(job.body.id, ['completed']);
    expect(done.result).toMatchObject({ text: 'x y z x y', finish_reason: 'length', usage: { prompt_tokens: 3, completion_tokens: 5 } });
  });

  it('429 with Retry-After slows the queue and the job waits instead of failing', async () => {
    fault.resetCounters();
    fault.script({ type: 'rate_limit', retryAfter: '1' });
    const started = Date.now();
    const job = await a.http('POST', '/v1/jobs', { model: 'faulty', prompt: 'after the limit' });
    const done = await a.waitFor(job.body.id, ['completed'], 15_000);
    expect(done.result.text).toBe('after the limit');
    expect(done.attempts).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(fault.count('generate')).toBe(2);
  });

  it('retries 5xx and a cut stream, never storing a partial answer', async () => {
    fault.script({ type: 'status', status: 500 }, { type: 'cut', afterChunks: 1, how: 'end' });
    const job = await a.http('POST', '/v1/jobs', { model: 'faulty', prompt: 'alpha beta gamma delta' });
    const done = await a.waitFor(job.body.id, ['completed'], 15_000);
    expect(done.attempts).toBe(3);
    expect(done.result.text).toBe('alpha beta gamma delta');
  });

  it('does not retry auth or bad-request errors', async () => {
    fault.script({ type: 'status', status: 401, message: 'bad key' });
    const job = await a.http('POST', '/v1/jobs', { model: 'faulty', prompt: 'p' });
    const failed = await a.waitFor(job.body.id, ['failed']);
    expect(failed.attempts).toBe(1);
    expect(failed.error.code).toBe('ERR_BACKEND_AUTH');
    fault.script({ type: 'context_length' });
    const long = await a.http('POST', '/v1/jobs', { model: 'faulty', prompt: 'p' });
    const f2 = await a.waitFor(long.body.id, ['failed']);
    expect(f2.error.code).toBe('ERR_BACKEND_CONTEXT_LENGTH');
    expect(f2.attempts).toBe(1);
  });

  it('insufficient_quota pauses the queue until resumed, and the job then completes', async () => {
    fault.script({ type: 'quota' });
    const job = await a.http('POST', '/v1/jobs', { model: 'faulty', prompt: 'quota test' });
    let paused = false;
    for (let i = 0; i < 100 && !paused; i++) {
      paused = (await a.http('GET', '/v1/queues')).body.data.find((q: any) => q.model === 'faulty').paused;
      if (!paused) await new Promise((r) => setTimeout(r, 50));
    }
    expect(paused).toBe(true);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await a.http('GET', `/v1/jobs/${job.body.id}`)).body.status).toBe('queued');
    const metrics = await fetch(`${a.url}/metrics`).then((r) => r.text());
    expect(metrics).toContain('llmq_queue_paused{model="faulty"} 1');
    expect((await a.http('POST', '/v1/queues/faulty/resume')).status).toBe(200);
    const done = await a.waitFor(job.body.id, ['completed'], 15_000);
    expect(done.result.text).toBe('quota test');
  });

  it('falls back to the next model after the last retryable failure, or at once on context length', async () => {
    fault.resetCounters();
    fault.script({ type: 'status', status: 503 }, { type: 'status', status: 503 });
    const job = await a.http('POST', '/v1/jobs', { model: 'with-fallback', prompt: 'fall back please' });
    const done = await a.waitFor(job.body.id, ['completed'], 15_000);
    expect(done.result).toMatchObject({ text: 'fall back please', model: 'via-openai-sync' });
    expect(done.attempts).toBe(2);
    expect(fault.count('generate')).toBe(2);
    fault.script({ type: 'context_length' });
    const long = await a.http('POST', '/v1/jobs', { model: 'with-fallback', prompt: 'too long here' });
    const d2 = await a.waitFor(long.body.id, ['completed'], 15_000);
    expect(d2.result.model).toBe('via-openai-sync');
    expect(d2.attempts).toBe(1);
  });
});
