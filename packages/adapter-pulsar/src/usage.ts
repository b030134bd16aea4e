import { LlmqError, formatPath, type AdapterContext, type JobResult, type SourceRef, type Usage } from '@llmq/core';
import { pulsarUsageConfigSchema, type PulsarUsageConfigInput } from './config.js';
import { createPulsarClient, loadPulsarClient, type PulsarModuleLoader, type PulsarProducer } from './driver.js';

/** One usage and billing event: who ran what, how long each stage took, how many tokens. */
export interface UsageRecord {
  type: 'llmq.usage';
  job_id: string;
  /** Model that produced the result (after any fallback). */
  model: string;
  /** Model the job asked for. */
  requested_model: string;
  source: { type: string; name: string | null } | null;
  worker: string | null;
  usage: Usage;
  timings: {
    started_at: number;
    first_token_at: number | null;
    completed_at: number;
    /** Generation time, start to finish. */
    generation_ms: number;
    time_to_first_token_ms: number | null;
  };
  /** When the record was made (ms since the epoch). */
  at: number;
}

export function toUsageRecord(input: { jobId: string; model: string; result: JobResult; source?: SourceRef | undefined }, now: number = Date.now()): UsageRecord {
  const r = input.result;
  return {
    type: 'llmq.usage',
    job_id: input.jobId,
    model: r.model,
    requested_model: input.model,
    source: input.source ? { type: input.source.type, name: input.source.name ?? null } : null,
    worker: r.worker ?? null,
    usage: r.usage,
    timings: {
      started_at: r.started_at,
      first_token_at: r.first_token_at ?? null,
      completed_at: r.completed_at,
      generation_ms: r.completed_at - r.started_at,
      time_to_first_token_ms: r.first_token_at === undefined ? null : r.first_token_at - r.started_at,
    },
    at: now,
  };
}

/** Sends a usage record on a producer; resolves once the broker has it. */
export async function sendUsageRecord(producer: PulsarProducer, record: UsageRecord): Promise<void> {
  await producer.send({
    data: Buffer.from(JSON.stringify(record)),
    // Consumers dedupe on the job id: a retried sink write can send a record twice.
    properties: { llmq_job_id: record.job_id, llmq_type: record.type, llmq_model: record.model },
    partitionKey: record.job_id,
    eventTimestamp: record.timings.completed_at,
  });
}

export interface PulsarUsageProducer {
  send(record: UsageRecord): Promise<void>;
  close(): Promise<void>;
}

/**
 * A standalone producer of usage records to a topic, for hosts that report usage outside a
 * sink (the pulsar sink's `usage_topic` does the same per result).
 */
export async function createPulsarUsageProducer(
  options: { name: string; config: PulsarUsageConfigInput },
  ctx: AdapterContext,
  deps: { loadModule?: PulsarModuleLoader } = {},
): Promise<PulsarUsageProducer> {
  const parsed = pulsarUsageConfigSchema.safeParse(options.config);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = formatPath((issue?.path ?? []) as PropertyKey[]);
    throw new LlmqError('ERR_CONFIG_INVALID', `usage.${options.name}${key ? `.${key}` : ''}: ${issue?.message ?? 'invalid'}`);
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
