import { LlmqError, firstIssue, type AdapterContext, type UsageRecord } from '@llmq/core';
import { pulsarUsageConfigSchema, type PulsarUsageConfigInput } from './config.js';
import { createPulsarClient, loadPulsarClient, type PulsarModuleLoader, type PulsarProducer } from './driver.js';

/** Sends one usage record (the platform's usage feed record) as JSON; resolves once the broker has it. */
export async function sendUsageRecord(producer: PulsarProducer, record: UsageRecord): Promise<void> {
  await producer.send({
    data: Buffer.from(JSON.stringify(record)),
    // Consumers dedupe on the job id: a retried write can send a record twice.
    properties: { llmq_job_id: record.job_id, llmq_type: record.object, llmq_model: record.model },
    partitionKey: record.job_id,
    eventTimestamp: record.completed_at,
  });
}

export interface PulsarUsageProducer {
  send(record: UsageRecord): Promise<void>;
  close(): Promise<void>;
}

/**
 * A standalone producer of usage records to one topic, for hosts that report usage outside
 * the sink pipeline (a pulsar sink with `events: [usage]` does the same per finished job).
 */
export async function createPulsarUsageProducer(
  options: { name: string; config: PulsarUsageConfigInput },
  ctx: AdapterContext,
  deps: { loadModule?: PulsarModuleLoader } = {},
): Promise<PulsarUsageProducer> {
  const parsed = pulsarUsageConfigSchema.safeParse(options.config);
  if (!parsed.success) {
    const { key, message } = firstIssue(parsed.error);
    throw new LlmqError('ERR_CONFIG_INVALID', `usage.${options.name}${key ? `.${key}` : ''}: ${message}`);
  }
  const config = parsed.data;
  const mod = await (deps.loadModule ?? loadPulsarClient)();
  const client = createPulsarClient(mod, config, ctx.env, ctx.logger.child({ usage: options.name }), `usage.${options.name}`);
  let producer: PulsarProducer;
  try {
    producer = await client.createProducer({ topic: config.topic, sendTimeoutMs: config.send_timeout_ms, blockIfQueueFull: true });
  } catch (err) {
    await client.close().catch(() => undefined);
    throw err;
  }
  return {
    send: (record) => sendUsageRecord(producer, record),
    async close() {
      try {
        await producer.close();
      } finally {
        await client.close();
      }
    },
  };
}
