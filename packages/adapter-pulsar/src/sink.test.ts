import { afterEach, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, type JobResult, type SinkWriteInput, type SourceRef, type UsageRecord } from '@llmq/core';
import { PulsarAckRegistry } from './ack-registry.js';
import { pulsarSinkConfigSchema, type PulsarSinkConfigInput } from './config.js';
import { createPulsarSink, pulsarSink, type PulsarSink } from './sink.js';
import { memoryLogger } from './test/context.js';
import { FakePulsar } from './test/fake-pulsar.js';
import { createPulsarUsageProducer } from './usage.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

const ctx = () => ({ logger: memoryLogger(), signal: new AbortController().signal, configDir: '.', env: {} as Record<string, string> });

async function sinkWith(broker: FakePulsar, options: Partial<PulsarSinkConfigInput> = {}): Promise<PulsarSink> {
  const config = pulsarSinkConfigSchema.parse({ service_url: 'pulsar://broker:6650', ...options });
  const sink = await createPulsarSink({ name: 'replies', config }, ctx(), { loadModule: async () => broker.module, acks: new PulsarAckRegistry() });
  open.push(sink);
  return sink;
}

const result: JobResult = {
  text: 'an answer',
  finish_reason: 'length',
  usage: { prompt_tokens: 4, completion_tokens: 6, total_tokens: 10 },
  model: 'echo-fallback',
  started_at: 1_000,
  first_token_at: 1_050,
  completed_at: 1_400,
  worker: 'w1',
};

const usage: UsageRecord = {
  object: 'usage',
  job_id: 'j1',
  model: 'echo',
  served_by: 'echo-fallback',
  backend: 'echo',
  worker: 'w1',
  key_id: null,
  source: 'pulsar',
  status: 'completed',
  created_at: 900,
  started_at: 1_000,
  first_token_at: 1_050,
  completed_at: 1_400,
  queue_wait_ms: 100,
  processing_ms: 400,
  time_to_first_token_ms: 50,
  prompt_tokens: 4,
  completion_tokens: 6,
  total_tokens: 10,
};

function pulsarSourceRef(properties: Record<string, string>): SourceRef {
  return { type: 'pulsar', name: 'requests', ref: { topic: 't', message_id: '7:0:-1:-1', subscription: 'llmq', properties, redelivery_count: 0, publish_time: 1 } };
}

function input(jobId: string, source: SourceRef | undefined): SinkWriteInput {
  return { jobId, model: 'echo', request: { model: 'echo', prompt: 'q' }, result, source, signal: new AbortController().signal, logger: memoryLogger() };
}

describe('pulsar sink', () => {
  it("replies to the message's reply_to topic with its correlation id", async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker, { topic: 'default-replies' });
    await sink.write(input('pulsar:t:7:0:-1:-1', pulsarSourceRef({ reply_to: 'client-42', correlation_id: 'req-9' })));
    expect(broker.produced('default-replies')).toEqual([]);
    const [reply] = broker.produced('client-42');
    expect(reply?.properties).toEqual({ correlation_id: 'req-9', llmq_job_id: 'pulsar:t:7:0:-1:-1', llmq_model: 'echo-fallback' });
    expect(reply?.data).toEqual({
      job_id: 'pulsar:t:7:0:-1:-1',
      correlation_id: 'req-9',
      model: 'echo',
      result: { text: 'an answer', finish_reason: 'length', usage: result.usage, model: 'echo-fallback', started_at: 1_000, first_token_at: 1_050, completed_at: 1_400 },
    });
  });

  it('falls back to the configured topic and the message id as correlation id', async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker, { topic: 'default-replies' });
    await sink.write(input('pulsar:t:7:0:-1:-1', pulsarSourceRef({})));
    expect(broker.produced('default-replies')[0]?.properties.correlation_id).toBe('7:0:-1:-1');
    await sink.write(input('http-job', { type: 'http' }));
    expect(broker.produced('default-replies')[1]?.properties.correlation_id).toBe('http-job');
  });

  it('keeps one producer per topic and closes the least recently used past max_producers', async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker, { max_producers: 2 });
    for (const to of ['a', 'b', 'a', 'c', 'a']) await sink.write(input(`j-${to}`, pulsarSourceRef({ reply_to: to })));
    const created = broker.calls.filter((c) => c.op === 'createProducer').map((c) => (c.args[0] as { topic: string }).topic);
    expect(created).toEqual(['a', 'b', 'c']);
    await new Promise((r) => setTimeout(r, 0));
    expect(broker.calls.filter((c) => c.op === 'producer.close').map((c) => c.args[0])).toEqual(['b']);
    await sink.close();
    expect(broker.calls.filter((c) => c.op === 'producer.close').map((c) => c.args[0]).sort()).toEqual(['a', 'b', 'c']);
    expect(broker.calls.some((c) => c.op === 'client.close')).toBe(true);
  });

  it('throws a retryable ERR_SINK_WRITE when sending fails, and a failed producer is created again', async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker, { topic: 'r' });
    broker.failNext('send', new Error('Failed to send message: TimeOut'));
    const err = await sink.write(input('j1', undefined)).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_SINK_WRITE');
    expect(isRetryable(err)).toBe(true);
    broker.failNext('createProducer', new Error('Failed to create producer: TopicNotFound'));
    const sink2 = await sinkWith(broker, { topic: 'r2' });
    const err2 = await sink2.write(input('j2', undefined)).catch((e: unknown) => e);
    expect(errorCode(err2)).toBe('ERR_SINK_WRITE');
    await sink2.write(input('j2', undefined));
    expect(broker.produced('r2')).toHaveLength(1);
  });

  it('refuses, without retry, a result with no reply topic at all', async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker);
    const err = await sink.write(input('j', pulsarSourceRef({}))).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_SINK_WRITE');
    expect(isRetryable(err)).toBe(false);
  });

  it('produces usage records (events: [usage]) to usage_topic, not with results', async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker, { topic: 'r', usage_topic: 'usage' });
    await sink.write(input('j1', pulsarSourceRef({})));
    expect(broker.produced('usage')).toEqual([]);
    await sink.writeUsage(usage, { signal: new AbortController().signal, logger: memoryLogger() });
    const [record] = broker.produced('usage');
    expect(record?.data).toEqual(usage);
    expect(record?.properties).toEqual({ llmq_job_id: 'j1', llmq_type: 'usage', llmq_model: 'echo' });
  });

  it('sends usage to topic when there is no usage_topic, and refuses without retry when neither is set', async () => {
    const broker = new FakePulsar();
    const sink = await sinkWith(broker, { topic: 'r' });
    await sink.writeUsage(usage, { signal: new AbortController().signal, logger: memoryLogger() });
    expect(broker.produced('r')).toHaveLength(1);
    const bare = await sinkWith(broker);
    const err = await bare.writeUsage(usage, { signal: new AbortController().signal, logger: memoryLogger() }).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_SINK_WRITE');
    expect(isRetryable(err)).toBe(false);
  });

  it('is type pulsar', () => {
    expect(pulsarSink.kind).toBe('sink');
    expect(pulsarSink.type).toBe('pulsar');
  });
});

describe('pulsar usage producer', () => {
  it('sends records to its topic and closes producer and client', async () => {
    const broker = new FakePulsar();
    const producer = await createPulsarUsageProducer({ name: 'billing', config: { service_url: 'pulsar://b:6650', topic: 'billing' } }, ctx(), { loadModule: async () => broker.module });
    await producer.send(usage);
    expect(broker.produced('billing')[0]?.data).toEqual(usage);
    await producer.close();
    expect(broker.calls.map((c) => c.op)).toEqual(expect.arrayContaining(['producer.close', 'client.close']));
  });

  it('rejects bad config naming the key', async () => {
    const broker = new FakePulsar();
    const err = await createPulsarUsageProducer({ name: 'billing', config: { service_url: 'pulsar://b:6650' } as never }, ctx(), { loadModule: async () => broker.module }).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_CONFIG_INVALID');
    expect(String(err)).toMatch(/usage\.billing\.topic/);
  });
});
