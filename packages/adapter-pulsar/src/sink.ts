import { LlmqError, defineSink, type AdapterContext, type Logger, type Sink, type SinkWriteInput, type UsageRecord } from '@llmq/core';
import { pulsarAcks, type PulsarAckRegistry } from './ack-registry.js';
import { pulsarSinkConfigSchema, type PulsarSinkConfig } from './config.js';
import { createPulsarClient, loadPulsarClient, type PulsarClient, type PulsarModuleLoader } from './driver.js';
import { ProducerCache } from './producer-cache.js';
import type { PulsarRef } from './source.js';
import { errSummary } from '@llmq/core';
import { sendUsageRecord } from './usage.js';

/** What a reply message carries (JSON). */
export interface PulsarReply {
  job_id: string;
  correlation_id: string;
  /** Model the job asked for. */
  model: string;
  result: {
    text: string;
    finish_reason: string;
    usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    /** Model that produced it. */
    model: string;
    started_at: number;
    first_token_at: number | null;
    completed_at: number;
  };
}

export interface PulsarSinkDeps {
  loadModule?: PulsarModuleLoader;
  acks?: PulsarAckRegistry;
}

function pulsarRef(input: SinkWriteInput): Partial<PulsarRef> | undefined {
  return input.source?.type === 'pulsar' ? (input.source.ref as Partial<PulsarRef> | undefined) : undefined;
}

/**
 * Produces each result to a reply topic (the message's `reply_to` property, else `topic`) with
 * its correlation id, then acks the source message when it was held for `ack: after_sink`.
 * With `events: [usage]` it also produces the platform's usage records.
 */
export class PulsarSink implements Sink {
  readonly name: string;
  private readonly config: PulsarSinkConfig;
  private readonly log: Logger;
  private readonly client: PulsarClient;
  private readonly producers: ProducerCache;
  private readonly acks: PulsarAckRegistry;
  private readonly unregister: () => void;
  private closing: Promise<void> | undefined;

  constructor(options: { name: string; config: PulsarSinkConfig }, ctx: AdapterContext, deps: { client: PulsarClient; acks: PulsarAckRegistry }) {
    this.name = options.name;
    this.config = options.config;
    this.log = ctx.logger;
    this.client = deps.client;
    this.acks = deps.acks;
    this.producers = new ProducerCache(this.client, { max: this.config.max_producers, sendTimeoutMs: this.config.send_timeout_ms, logger: this.log });
    this.unregister = this.acks.registerSink();
  }

  async check(): Promise<void> {
    if (this.closing) throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}" is closed`);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.unregister();
      await this.producers.closeAll();
      try {
        await this.client.close();
      } catch (err) {
        this.log.warn({ err: errSummary(err) }, 'closing the pulsar client failed');
      }
    })();
    return this.closing;
  }

  async write(input: SinkWriteInput): Promise<void> {
    if (this.closing) throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}" is closed`);
    if (input.signal.aborted) throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}": aborted before writing job ${input.jobId}`);
    const ref = pulsarRef(input);
    const properties = ref?.properties ?? {};
    const topic = properties[this.config.reply_to_property] ?? this.config.topic;
    if (topic === undefined || topic === '') {
      throw new LlmqError(
        'ERR_SINK_WRITE',
        `pulsar sink "${this.name}": job ${input.jobId} names no reply topic (message property "${this.config.reply_to_property}") and the sink has no "topic"`,
        { retryable: false },
      );
    }
    const correlationId = properties[this.config.correlation_id_property] ?? ref?.message_id ?? input.jobId;
    const r = input.result;
    const reply: PulsarReply = {
      job_id: input.jobId,
      correlation_id: correlationId,
      model: input.model,
      result: {
        text: r.text,
        finish_reason: r.finish_reason,
        usage: r.usage,
        model: r.model,
        started_at: r.started_at,
        first_token_at: r.first_token_at ?? null,
        completed_at: r.completed_at,
      },
    };
    try {
      const producer = await this.producers.get(topic);
      await producer.send({
        data: Buffer.from(JSON.stringify(reply)),
        // Consumers dedupe on llmq_job_id: a retried write can send a reply twice.
        properties: { correlation_id: correlationId, llmq_job_id: input.jobId, llmq_model: r.model },
        eventTimestamp: r.completed_at,
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}": producing the result of job ${input.jobId} to ${topic} failed: ${message}`, { cause: err });
    }
    input.logger.debug({ sink: this.name, topic }, 'result produced');
    // The result is committed: a message held for `ack: after_sink` in this process can go.
    if (await this.acks.settle(input.jobId).catch(() => false)) input.logger.debug({ sink: this.name }, 'source message acked after the sink write');
  }

  /** With `events: [usage]` in the sink's config: one usage record per finished job to `usage_topic` (else `topic`). */
  async writeUsage(record: UsageRecord, options: { signal: AbortSignal; logger: Logger }): Promise<void> {
    if (this.closing) throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}" is closed`);
    if (options.signal.aborted) throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}": aborted before writing usage of job ${record.job_id}`);
    const topic = this.config.usage_topic ?? this.config.topic;
    if (topic === undefined) {
      throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}" receives usage records but has neither "usage_topic" nor "topic"`, { retryable: false });
    }
    try {
      await sendUsageRecord(await this.producers.get(topic), record);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new LlmqError('ERR_SINK_WRITE', `pulsar sink "${this.name}": producing the usage record of job ${record.job_id} to ${topic} failed: ${message}`, { cause: err });
    }
  }
}

export async function createPulsarSink(options: { name: string; config: PulsarSinkConfig }, ctx: AdapterContext, deps: PulsarSinkDeps = {}): Promise<PulsarSink> {
  const mod = await (deps.loadModule ?? loadPulsarClient)();
  const client = createPulsarClient(mod, options.config, ctx.env, ctx.logger, `sinks.${options.name}.options`);
  return new PulsarSink(options, ctx, { client, acks: deps.acks ?? pulsarAcks });
}

/** `type: pulsar` sink. */
export const pulsarSink = defineSink<PulsarSinkConfig>({
  kind: 'sink',
  type: 'pulsar',
  configSchema: pulsarSinkConfigSchema,
  create(options, ctx) {
    return createPulsarSink(options, ctx);
  },
});
