import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { LlmqError, errorCode } from '@llmq/core';
import { PulsarAckRegistry } from './ack-registry.js';
import { pulsarSourceConfigSchema, type PulsarSourceConfigInput } from './config.js';
import { loadPulsarClient } from './driver.js';
import { createPulsarSink } from './sink.js';
import { createPulsarSource, pulsarSource, type PulsarSource } from './source.js';
import { eventually, memoryLogger, testContext } from './test/context.js';
import { FakePulsar } from './test/fake-pulsar.js';

const TOPIC = 'persistent://public/default/llm-requests';
const base = {
  service_url: 'pulsar://broker:6650',
  topic: TOPIC,
  subscription: 'llmq',
  receive_timeout_ms: 20,
  batch_wait_ms: 2,
  restart_backoff_ms: 10,
  nack_redelivery_ms: 5,
} satisfies PulsarSourceConfigInput;

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function startSource(broker: FakePulsar, overrides: Partial<PulsarSourceConfigInput> = {}, t = testContext(), acks = new PulsarAckRegistry()) {
  const config = pulsarSourceConfigSchema.parse({ ...base, ...overrides });
  const source = await createPulsarSource({ name: 'requests', config }, t.ctx, { loadModule: async () => broker.module, acks });
  open.push(source);
  await source.start();
  return { source, t, acks };
}

const request = { model: 'echo', prompt: 'hello there', max_tokens: 5 };

describe('pulsar source', () => {
  it('subscribes Shared with the dead-letter policy, initial subscription and timeouts', async () => {
    const broker = new FakePulsar();
    await startSource(broker, { dead_letter: { max_redeliver_count: 3 }, ack_timeout_ms: 30_000, receiver_queue_size: 50 });
    const subscribe = broker.calls.find((c) => c.op === 'subscribe');
    expect(subscribe?.args[0]).toMatchObject({
      topic: TOPIC,
      subscription: 'llmq',
      subscriptionType: 'Shared',
      subscriptionInitialPosition: 'Earliest',
      ackTimeoutMs: 30_000,
      nAckRedeliverTimeoutMs: 5,
      receiverQueueSize: 50,
      deadLetterPolicy: { deadLetterTopic: `${TOPIC}-llmq-DLQ`, maxRedeliverCount: 3, initialSubscriptionName: 'llmq-dlq' },
    });
    const client = broker.calls.find((c) => c.op === 'Client');
    expect(client?.args[0]).toMatchObject({ serviceUrl: 'pulsar://broker:6650', operationTimeoutSeconds: 30 });
  });

  it('passes an explicit dead-letter topic and initial subscription through', async () => {
    const broker = new FakePulsar();
    await startSource(broker, { dead_letter: { topic: 'persistent://public/default/dlq', max_redeliver_count: 7, initial_subscription_name: 'ops' } });
    expect(broker.calls.find((c) => c.op === 'subscribe')?.args[0]).toMatchObject({
      deadLetterPolicy: { deadLetterTopic: 'persistent://public/default/dlq', maxRedeliverCount: 7, initialSubscriptionName: 'ops' },
    });
  });

  it('enqueues pulsar:<topic>:<messageId> with the payload as the request and the properties on the ref', async () => {
    const broker = new FakePulsar();
    const { t } = await startSource(broker);
    const id = broker.publish(TOPIC, request, { reply_to: 'persistent://public/default/replies', correlation_id: 'c-1', tenant: 'acme' });
    await eventually(() => expect(t.enqueue.jobs.size).toBe(1));
    const job = t.enqueue.jobs.get(`pulsar:${TOPIC}:${id}`);
    expect(job?.request).toEqual(request);
    expect(job?.source).toMatchObject({
      type: 'pulsar',
      name: 'requests',
      ref: { topic: TOPIC, message_id: id, subscription: 'llmq', redelivery_count: 0, properties: { reply_to: 'persistent://public/default/replies', correlation_id: 'c-1', tenant: 'acme' } },
    });
  });

  it('acks only after enqueue resolved', async () => {
    const broker = new FakePulsar();
    const { t } = await startSource(broker);
    t.enqueue.hold();
    const id = broker.publish(TOPIC, request);
    try {
      await eventually(() => expect(t.enqueue.waiting()).toBe(1));
      await new Promise((r) => setTimeout(r, 30));
      expect(broker.calls.some((c) => c.op === 'acknowledge')).toBe(false);
    } finally {
      t.enqueue.release();
    }
    await eventually(() => expect(broker.acked(TOPIC, 'llmq')).toEqual([id]));
    const ackIndex = broker.calls.findIndex((c) => c.op === 'acknowledge');
    expect(ackIndex).toBeGreaterThan(-1);
    expect(t.enqueue.durable).toEqual([`pulsar:${TOPIC}:${id}`]);
  });

  it('nacks when enqueue fails, and the redelivered message is enqueued and acked', async () => {
    const broker = new FakePulsar();
    const t = testContext();
    t.enqueue.failNext(1);
    await startSource(broker, {}, t);
    const id = broker.publish(TOPIC, request);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq')).toEqual([id]));
    expect(broker.calls.filter((c) => c.op === 'negativeAcknowledge').map((c) => c.args[0])).toEqual([id]);
    const acks = broker.calls.filter((c) => c.op === 'acknowledge');
    const nackIndex = broker.calls.findIndex((c) => c.op === 'negativeAcknowledge');
    expect(broker.calls.indexOf(acks[0]!)).toBeGreaterThan(nackIndex);
    // Same message, same job id: the retry collapses onto one job.
    expect(t.enqueue.batches).toEqual([[`pulsar:${TOPIC}:${id}`], [`pulsar:${TOPIC}:${id}`]]);
    expect(t.enqueue.jobs.get(`pulsar:${TOPIC}:${id}`)?.source.ref).toMatchObject({ redelivery_count: 1 });
    expect(t.logger.entries.some((e) => e.level === 'error' && /nacking/.test(e.msg))).toBe(true);
  });

  it('sends an invalid payload to the dead-letter topic at once and acks it, never enqueueing it', async () => {
    const broker = new FakePulsar();
    const { t } = await startSource(broker);
    const notJson = broker.publish(TOPIC, Buffer.from('{not json'), { k: 'v' });
    const noPrompt = broker.publish(TOPIC, { model: 'echo' });
    const good = broker.publish(TOPIC, request);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq').sort()).toEqual([notJson, noPrompt, good].sort()));
    expect([...t.enqueue.jobs.keys()]).toEqual([`pulsar:${TOPIC}:${good}`]);
    const dlq = broker.topics.get(`${TOPIC}-llmq-DLQ`) ?? [];
    expect(dlq.map((m) => m.properties.ORIGIN_MESSAGE_ID).sort()).toEqual([notJson, noPrompt].sort());
    expect(dlq.find((m) => m.properties.ORIGIN_MESSAGE_ID === notJson)?.properties).toMatchObject({ k: 'v', REAL_TOPIC: TOPIC, llmq_error_code: 'ERR_REQUEST_INVALID', llmq_error: expect.stringContaining('not JSON') });
    expect(dlq.find((m) => m.properties.ORIGIN_MESSAGE_ID === noPrompt)?.properties.llmq_error).toMatch(/prompt/);
    expect(dlq.find((m) => m.properties.ORIGIN_MESSAGE_ID === notJson)?.data.toString()).toBe('{not json');
    expect(broker.calls.some((c) => c.op === 'negativeAcknowledge')).toBe(false);
  });

  it('dead-letters a message whose job the queue refuses for good, and acks the rest of its batch', async () => {
    const broker = new FakePulsar();
    const t = testContext();
    t.enqueue.refuse((job) => (job.request.model === 'nope' ? new LlmqError('ERR_MODEL_NOT_FOUND', 'model "nope" does not exist') : undefined));
    const good = broker.publish(TOPIC, request);
    const bad = broker.publish(TOPIC, { ...request, model: 'nope' });
    await startSource(broker, {}, t);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq').sort()).toEqual([good, bad].sort()));
    expect([...t.enqueue.jobs.keys()]).toEqual([`pulsar:${TOPIC}:${good}`]);
    const dlq = broker.topics.get(`${TOPIC}-llmq-DLQ`) ?? [];
    expect(dlq.map((m) => m.properties)).toEqual([expect.objectContaining({ ORIGIN_MESSAGE_ID: bad, llmq_error_code: 'ERR_MODEL_NOT_FOUND', llmq_error: 'model "nope" does not exist' })]);
    expect(broker.calls.some((c) => c.op === 'negativeAcknowledge')).toBe(false);
  });

  it('nacks an invalid payload when the dead-letter send fails, so the broker policy takes over', async () => {
    const broker = new FakePulsar();
    broker.failNext('send', new Error('Failed to send message: TimeOut'), 100);
    const { t } = await startSource(broker, { dead_letter: { max_redeliver_count: 2 } });
    const bad = broker.publish(TOPIC, 'nope');
    // The broker's policy dead-letters it after max_redeliver_count nacks: no endless loop.
    await eventually(() => expect((broker.topics.get(`${TOPIC}-llmq-DLQ`) ?? []).map((m) => m.properties.ORIGIN_MESSAGE_ID)).toEqual([bad]));
    expect(broker.calls.filter((c) => c.op === 'negativeAcknowledge').length).toBe(3);
    expect(t.enqueue.jobs.size).toBe(0);
  });

  it('fills in the configured model and timeout, a payload model wins', async () => {
    const broker = new FakePulsar();
    const { t } = await startSource(broker, { model: 'default-model', timeout_ms: 9000 });
    const a = broker.publish(TOPIC, { prompt: 'p' });
    const b = broker.publish(TOPIC, { prompt: 'p', model: 'own', timeout_ms: 5 });
    await eventually(() => expect(t.enqueue.jobs.size).toBe(2));
    expect(t.enqueue.jobs.get(`pulsar:${TOPIC}:${a}`)?.request).toEqual({ model: 'default-model', prompt: 'p', timeout_ms: 9000 });
    expect(t.enqueue.jobs.get(`pulsar:${TOPIC}:${b}`)?.request).toEqual({ model: 'own', prompt: 'p', timeout_ms: 5 });
  });

  it('batches messages into one enqueue call', async () => {
    const broker = new FakePulsar();
    for (let i = 0; i < 25; i++) broker.publish(TOPIC, { ...request, prompt: `p${i}` });
    const { t } = await startSource(broker, { batch_size: 10 });
    await eventually(() => expect(t.enqueue.jobs.size).toBe(25));
    expect(t.enqueue.batches.map((b) => b.length)).toEqual([10, 10, 5]);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq')).toHaveLength(25));
  });

  it('closes consumer and client and makes no calls afterwards; unacked messages go back to the broker', async () => {
    const broker = new FakePulsar();
    const { source } = await startSource(broker);
    await source.close();
    expect(broker.calls.map((c) => c.op)).toEqual(expect.arrayContaining(['consumer.close', 'client.close']));
    const calls = broker.calls.length;
    await new Promise((r) => setTimeout(r, 60));
    expect(broker.calls.length).toBe(calls);
  });

  it('reads the token from the environment and never logs it', async () => {
    const broker = new FakePulsar();
    const t = testContext({ PULSAR_TOKEN: 'eyJhbGciOi.secret-token' });
    const { source } = await startSource(broker, { token_env: 'PULSAR_TOKEN' }, t);
    expect(broker.calls.find((c) => c.op === 'AuthenticationToken')?.args[0]).toEqual({ token: 'eyJhbGciOi.secret-token' });
    broker.publish(TOPIC, request);
    await eventually(() => expect(t.enqueue.jobs.size).toBe(1));
    await source.close();
    expect(JSON.stringify(t.logger.entries)).not.toContain('secret-token');
  });

  it('names an unset token variable', async () => {
    const broker = new FakePulsar();
    const config = pulsarSourceConfigSchema.parse({ ...base, token_env: 'NOPE_TOKEN' });
    const err = await createPulsarSource({ name: 'requests', config }, testContext().ctx, { loadModule: async () => broker.module }).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_CONFIG_INVALID');
    expect(String(err)).toMatch(/token_env names NOPE_TOKEN, which is not set/);
  });
});

describe('pulsar source: ack after the sink', () => {
  async function sinkFor(broker: FakePulsar, acks: PulsarAckRegistry) {
    const sink = await createPulsarSink(
      { name: 'replies', config: { service_url: 'pulsar://broker:6650', topic: 'replies', reply_to_property: 'reply_to', correlation_id_property: 'correlation_id', max_producers: 8, send_timeout_ms: 1000, operation_timeout_ms: 30_000 } },
      { logger: memoryLogger(), signal: new AbortController().signal, configDir: '.', env: {} },
      { loadModule: async () => broker.module, acks },
    );
    open.push(sink);
    return sink;
  }

  it('holds the ack until the pulsar sink in this process wrote the result', async () => {
    const broker = new FakePulsar();
    const acks = new PulsarAckRegistry();
    const sink = await sinkFor(broker, acks);
    const { t, source } = await startSource(broker, { ack: 'after_sink' }, testContext(), acks);
    const id = broker.publish(TOPIC, request);
    const jobId = `pulsar:${TOPIC}:${id}`;
    await eventually(() => expect(t.enqueue.jobs.has(jobId)).toBe(true));
    await new Promise((r) => setTimeout(r, 40));
    expect(broker.acked(TOPIC, 'llmq')).toEqual([]);
    expect(source.status().awaiting_sink).toBe(1);

    const job = t.enqueue.jobs.get(jobId)!;
    const now = Date.now();
    await sink.write({
      jobId,
      model: 'echo',
      request: job.request,
      result: { text: 'hi', finish_reason: 'stop', usage: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 }, model: 'echo', started_at: now, completed_at: now + 5 },
      source: job.source,
      signal: new AbortController().signal,
      logger: memoryLogger(),
    });
    await eventually(() => expect(broker.acked(TOPIC, 'llmq')).toEqual([id]));
    // The reply went out before the ack.
    const sendIndex = broker.calls.findIndex((c) => c.op === 'send' && c.args[0] === 'replies');
    const ackIndex = broker.calls.findIndex((c) => c.op === 'acknowledge');
    expect(sendIndex).toBeGreaterThan(-1);
    expect(ackIndex).toBeGreaterThan(sendIndex);
    expect(source.status().awaiting_sink).toBe(0);
  });

  it('acks after enqueue, with one warning, when no pulsar sink runs in this process', async () => {
    const broker = new FakePulsar();
    const { t } = await startSource(broker, { ack: 'after_sink' });
    const a = broker.publish(TOPIC, request);
    const b = broker.publish(TOPIC, request);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq').sort()).toEqual([a, b].sort()));
    expect(t.logger.entries.filter((e) => e.level === 'warn' && /after_sink needs a pulsar sink in this process/.test(e.msg))).toHaveLength(1);
  });

  it('acks anyway after after_sink_timeout_ms when no sink wrote the result', async () => {
    const broker = new FakePulsar();
    const acks = new PulsarAckRegistry();
    await sinkFor(broker, acks);
    const { t } = await startSource(broker, { ack: 'after_sink', after_sink_timeout_ms: 1000 }, testContext(), acks);
    const id = broker.publish(TOPIC, request);
    await eventually(() => expect(t.enqueue.jobs.size).toBe(1));
    await new Promise((r) => setTimeout(r, 500));
    expect(broker.acked(TOPIC, 'llmq')).toEqual([]);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq')).toEqual([id]), 3000);
    expect(t.logger.entries.some((e) => e.level === 'warn' && /no sink wrote the result in time/.test(e.msg))).toBe(true);
  });

  it('acks a redelivered message at once when its job already existed', async () => {
    const broker = new FakePulsar();
    const acks = new PulsarAckRegistry();
    await sinkFor(broker, acks);
    const t = testContext();
    const { source } = await startSource(broker, { ack: 'after_sink' }, t, acks);
    const id = broker.publish(TOPIC, request);
    await eventually(() => expect(t.enqueue.jobs.size).toBe(1));
    // The connector dies before the result: the message returns to the subscription.
    await source.close();
    expect(acks.size).toBe(0);
    const second = await startSource(broker, { ack: 'after_sink' }, t, acks);
    await eventually(() => expect(broker.acked(TOPIC, 'llmq')).toEqual([id]));
    expect(second.source.status().awaiting_sink).toBe(0);
  });
});

function pulsarClientInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('pulsar-client');
    return true;
  } catch {
    return false;
  }
}

describe('pulsar definitions without pulsar-client', () => {
  it.skipIf(pulsarClientInstalled())('import without pulsar-client installed, and creating one says how to install it', async () => {
    expect(pulsarSource.type).toBe('pulsar');
    const config = pulsarSourceConfigSchema.parse(base);
    const err = await Promise.resolve()
      .then(() => pulsarSource.create({ name: 'requests', config }, testContext().ctx))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(errorCode(err)).toBe('ERR_DEPENDENCY_MISSING');
    const message = String((err as Error).message);
    expect(message).toMatch(/pulsar-client is not installed/);
    expect(message).toContain('npm install pulsar-client');
    expect(message).toMatch(/Pulsar C\+\+ client library/);
    expect(message).toContain('https://pulsar.apache.org/docs/client-libraries-node/');
  });

  it('tells a broken native install apart from a missing package', async () => {
    const err = await loadPulsarClient(async () => {
      throw new Error('libpulsar.so.3: cannot open shared object file: No such file or directory');
    }).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_DEPENDENCY_MISSING');
    expect(String(err)).toMatch(/installed but could not be loaded \(libpulsar\.so\.3/);
    expect(String(err)).toContain('npm install pulsar-client');
  });

  it('takes the CommonJS default export', async () => {
    const broker = new FakePulsar();
    await expect(loadPulsarClient(async () => ({ default: broker.module }))).resolves.toBe(broker.module);
  });

  it('refuses ack timeouts pulsar-client would ignore', () => {
    const r = pulsarSourceConfigSchema.safeParse({ ...base, ack_timeout_ms: 5000 });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(/ignores ack timeouts from 1 to 9999/);
    expect(pulsarSourceConfigSchema.safeParse({ ...base, ack_timeout_ms: 10_000 }).success).toBe(true);
    expect(pulsarSourceConfigSchema.safeParse({ ...base, service_url_env: 'X' }).success).toBe(false);
    expect(pulsarSourceConfigSchema.safeParse({ ...base, topik: 'x' }).success).toBe(false);
  });
});
