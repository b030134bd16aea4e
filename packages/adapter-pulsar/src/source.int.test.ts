import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PulsarAckRegistry } from './ack-registry.js';
import { pulsarSinkConfigSchema, pulsarSourceConfigSchema } from './config.js';
import { loadPulsarClient, type PulsarMessage } from './driver.js';
import { createPulsarSink } from './sink.js';
import { createPulsarSource } from './source.js';
import { eventually, memoryLogger, testContext } from './test/context.js';

/*
 * The full source path against a real broker and the real pulsar-client: 1,000 messages in,
 * 1,000 jobs out through a `ctx.enqueue` that records into a Map, every message acked, and
 * replies through the sink. Runs only when PULSAR_URL is set (and then needs pulsar-client
 * installed: its absence fails the suite with the install instructions).
 */

const url = process.env.PULSAR_URL;
if (!url) {
  console.warn(
    '\n!!! PULSAR_URL is not set: SKIPPING the Pulsar integration suite (packages/adapter-pulsar/src/source.int.test.ts).\n' +
      '!!! Set PULSAR_URL=pulsar://localhost:6650 (and `npm install pulsar-client`) to run it against a real broker.\n',
  );
}

const N = 1000;

describe.skipIf(!url)('pulsar source against a real broker (PULSAR_URL)', () => {
  it(`enqueues ${N} messages, acks them all, and replies through the sink`, async () => {
    const Pulsar = await loadPulsarClient();
    const run = randomUUID().slice(0, 8);
    const topic = `persistent://public/default/llmq-int-${run}`;
    const replies = `persistent://public/default/llmq-int-replies-${run}`;
    const admin = new Pulsar.Client({ serviceUrl: url!, operationTimeoutSeconds: 30 });
    const replyConsumer = await admin.subscribe({
      topic: replies,
      subscription: 'check',
      subscriptionType: 'Shared',
      subscriptionInitialPosition: 'Earliest',
      ackTimeoutMs: 0,
      nAckRedeliverTimeoutMs: 1000,
      receiverQueueSize: 1000,
      deadLetterPolicy: { deadLetterTopic: `${replies}-DLQ`, maxRedeliverCount: 5, initialSubscriptionName: 'dlq' },
    });

    const acks = new PulsarAckRegistry();
    const t = testContext({ PULSAR_URL: url! });
    const config = pulsarSourceConfigSchema.parse({ service_url_env: 'PULSAR_URL', topic, subscription: `llmq-${run}`, batch_size: 100 });
    const source = await createPulsarSource({ name: 'int', config }, t.ctx, { acks });
    await source.start();

    const producer = await admin.createProducer({ topic, sendTimeoutMs: 30_000 });
    const sent: string[] = [];
    for (let i = 0; i < N; i++) {
      const id = await producer.send({ data: Buffer.from(JSON.stringify({ model: 'echo', prompt: `request ${i}` })), properties: { reply_to: replies, correlation_id: `c-${i}` } });
      sent.push(id.toString());
    }
    await eventually(() => expect(t.enqueue.jobs.size).toBe(N), 120_000);
    expect(new Set(t.enqueue.jobs.keys())).toEqual(new Set(sent.map((id) => `pulsar:${topic}:${id}`)));
    await eventually(() => expect(source.status().acked).toBe(N), 30_000);

    const sinkConfig = pulsarSinkConfigSchema.parse({ service_url_env: 'PULSAR_URL' });
    const sink = await createPulsarSink({ name: 'int-replies', config: sinkConfig }, { logger: memoryLogger(), signal: new AbortController().signal, configDir: '.', env: { PULSAR_URL: url! } }, { acks });
    const now = Date.now();
    const some = [...t.enqueue.jobs.values()].slice(0, 10);
    for (const job of some) {
      await sink.write({
        jobId: job.id,
        model: 'echo',
        request: job.request,
        result: { text: 'ok', finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }, model: 'echo', started_at: now, completed_at: now + 1 },
        source: job.source,
        signal: new AbortController().signal,
        logger: memoryLogger(),
      });
    }
    const got: PulsarMessage[] = [];
    while (got.length < some.length) {
      const m = await replyConsumer.receive(10_000);
      got.push(m);
      await replyConsumer.acknowledge(m);
    }
    expect(new Set(got.map((m) => m.getProperties().llmq_job_id))).toEqual(new Set(some.map((j) => j.id)));

    await sink.close();
    await source.close();
    // Every message was acked: a new consumer on the same subscription gets nothing.
    const check = await admin.subscribe({
      topic,
      subscription: `llmq-${run}`,
      subscriptionType: 'Shared',
      subscriptionInitialPosition: 'Earliest',
      ackTimeoutMs: 0,
      nAckRedeliverTimeoutMs: 1000,
      receiverQueueSize: 10,
      deadLetterPolicy: { deadLetterTopic: `${topic}-DLQ`, maxRedeliverCount: 5, initialSubscriptionName: 'dlq' },
    });
    await expect(check.receive(3000)).rejects.toThrow(/timeout/i);
    await check.close();
    await producer.close();
    await replyConsumer.close();
    await admin.close();
  }, 300_000);
});
