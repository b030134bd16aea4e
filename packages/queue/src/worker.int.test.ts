/**
 * A failure's `details` (e.g. llama.cpp's prompt_tokens / context_size) on a real redis-server:
 * the worker keeps them with the failed job, sends them in the `failed` event and the DLQ entry,
 * and the producer's job view shows them. BullMQ itself keeps only the failure's message.
 */
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type ResolvedConfig } from '@llmq/config';
import { LlmqError, silentLogger, type Backend, type JobEvent, type JobView, type Logger } from '@llmq/core';
import { memoryLogger, startRedis, type TestRedis } from '@llmq/testing';
import { createRedis } from './connection.js';
import { ControlListener } from './control.js';
import { EventHub, EventPublisher } from './events.js';
import { keys as makeKeys, type Keys } from './keys.js';
import { getMetrics } from './metrics.js';
import { Producer } from './producer.js';
import { ModelWorker } from './worker.js';

/** Fails every call with the error the test sets; records the calls. */
class FailingBackend implements Backend {
  calls = 0;
  constructor(
    readonly name: string,
    private readonly error: () => Error,
  ) {}
  async generate(): Promise<never> {
    this.calls++;
    throw this.error();
  }
  async check(): Promise<void> {}
  async close(): Promise<void> {}
}

let redis: TestRedis;
const open: Redis[] = [];
const closers: (() => Promise<unknown>)[] = [];

function connect(role: 'worker' | 'subscriber' | 'producer'): Redis {
  const r = createRedis(redis.url, role);
  r.on('error', () => undefined);
  open.push(r);
  return r;
}

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  for (const r of open) r.disconnect();
  await redis?.stop();
});

/** A worker for one model on a fresh prefix, with a producer and an event hub beside it. */
async function setUp(model: string, error: () => Error, attempts = 1, registry = new Registry(), logger: Logger = silentLogger) {
  const prefix = `llmq-test-${Math.random().toString(36).slice(2, 10)}`;
  // A retry waits 200 ms, as any real backoff does, so the client's re-announced watch (a few ms
  // after the failed event) reaches the worker first. At 0 the retry can run and fail before it
  // does: the worker then answers the watch with a terminal status only, from which a front door
  // reads the stored outcome, and the second failed event this test follows never goes out.
  const config: ResolvedConfig = loadConfig({ inline: { redis: { url: redis.url, prefix }, queue: { backoff_ms: 200 }, models: [{ name: model, backend: 'echo', attempts }] }, env: {} });
  const keys: Keys = makeKeys(prefix);
  const connection = connect('worker');
  const publisher = new EventPublisher(connection, keys, silentLogger, 0);
  const control = new ControlListener(connect('subscriber'), { cancelChannel: keys.cancelChannel, watchChannel: keys.watchChannel, publish: (id, e) => publisher.publish(id, e), logger: silentLogger });
  await control.whenReady();
  const backend = new FailingBackend(model, error);
  const modelConfig = config.models[0]!;
  const worker = new ModelWorker({ config, model: modelConfig, backend, connection, publisher, control, metrics: getMetrics(registry), logger, keys, workerId: 'w1' });
  closers.push(() => worker.close(1_000));
  const producer = new Producer(config, connect('producer'), silentLogger);
  closers.push(() => producer.close());
  const hub = new EventHub(connect('subscriber'), keys, silentLogger);
  return { producer, hub, backend };
}

/** Enqueues a job, following its events as a front door does, until it failed for good. */
async function runToFailure(s: Awaited<ReturnType<typeof setUp>>, model: string) {
  const id = `job_${Math.random().toString(36).slice(2)}`;
  const events: JobEvent[] = [];
  let done!: () => void;
  const ended = new Promise<void>((resolve) => (done = resolve));
  const unsubscribe = await s.hub.subscribe(id, (e) => {
    events.push(e);
    if (e.type === 'failed' && !e.will_retry) done();
    // A retry may run after the watch was forgotten: re-announce it, as the gateway does.
    if (e.type === 'failed' && e.will_retry) void s.producer.watch(id);
  });
  await s.producer.watch(id);
  await s.producer.enqueue({ model, prompt: 'a prompt that must not show up in details' }, { id });
  await Promise.race([ended, new Promise((_, reject) => setTimeout(() => reject(new Error(`no final failed event; got ${JSON.stringify(events)}`)), 15_000))]);
  unsubscribe();
  let view: JobView | null = null;
  for (let i = 0; i < 100 && view?.status !== 'failed'; i++) {
    view = await s.producer.getJob(id);
    if (view?.status !== 'failed') await new Promise((r) => setTimeout(r, 50));
  }
  return { id, events, view: view!, dlq: await s.producer.getDlq(id) };
}

describe('failure details', () => {
  it('a context-length error keeps prompt_tokens and context_size on the failed job, its failed event and its DLQ entry', async () => {
    const contextError = () =>
      new LlmqError('ERR_BACKEND_CONTEXT_LENGTH', 'the prompt has 5000 tokens; the context holds 4096', {
        details: { prompt_tokens: 5000, context_size: 4096, tokens: { nested: 'dropped' } },
      });
    const s = await setUp('ctx', contextError, 3);
    const { events, view, dlq } = await runToFailure(s, 'ctx');
    const expected = { message: 'the prompt has 5000 tokens; the context holds 4096', code: 'ERR_BACKEND_CONTEXT_LENGTH', details: { prompt_tokens: 5000, context_size: 4096 } };
    // Not retryable: one attempt, in spite of attempts: 3.
    expect(s.backend.calls).toBe(1);
    expect(view.status).toBe('failed');
    expect(view.error).toEqual(expected);
    expect(events.filter((e) => e.type === 'failed')).toEqual([{ type: 'failed', error: expected, attempt: 1, will_retry: false }]);
    expect(dlq?.error).toEqual(expected);
    expect(JSON.stringify(view)).not.toContain('must not show up');
  });

  it('a retried error sends its details with each attempt, and a failure without details shows none', async () => {
    let call = 0;
    const s = await setUp('flaky', () => (++call === 1 ? new LlmqError('ERR_BACKEND_UNAVAILABLE', 'down', { details: { status: 503 } }) : new LlmqError('ERR_BACKEND_UNAVAILABLE', 'still down')), 2);
    const { events, view } = await runToFailure(s, 'flaky');
    expect(events.filter((e) => e.type === 'failed')).toEqual([
      { type: 'failed', error: { message: 'down', code: 'ERR_BACKEND_UNAVAILABLE', details: { status: 503 } }, attempt: 1, will_retry: true },
      { type: 'failed', error: { message: 'still down', code: 'ERR_BACKEND_UNAVAILABLE' }, attempt: 2, will_retry: false },
    ]);
    expect(view.error).toEqual({ message: 'still down', code: 'ERR_BACKEND_UNAVAILABLE' });
  });
});

describe('metrics', () => {
  it('counts a cancellation in jobs_cancelled_total only, and logs it at info: a failure alert must not fire on it', async () => {
    const registry = new Registry();
    const logger = memoryLogger();
    const s = await setUp('gone', () => new LlmqError('ERR_JOB_CANCELLED', 'cancelled by request'), 1, registry, logger);
    const { id } = await s.producer.enqueue({ model: 'gone', prompt: 'x' });
    let view: JobView | null = null;
    for (let i = 0; i < 100 && view?.status !== 'cancelled'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      view = await s.producer.getJob(id);
    }
    expect(view?.status).toBe('cancelled');
    const text = await registry.metrics();
    expect(text).toContain('llmq_jobs_cancelled_total{model="gone"} 1');
    expect(text).not.toMatch(/llmq_jobs_failed_total\{[^}]*\} [1-9]/);
    expect(logger.entries.filter((e) => e.level === 'warn' || e.level === 'error')).toEqual([]);
    expect(logger.entries.find((e) => e.msg === 'job cancelled')).toMatchObject({ level: 'info', obj: { code: 'ERR_JOB_CANCELLED' } });
  });
});
