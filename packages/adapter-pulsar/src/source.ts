import { LlmqError, defineSource, errorCode, errorDetail, parseJobRequest, type EnqueueInput, type Logger, type Source, type SourceContext } from '@llmq/core';
import { pulsarAcks, type PulsarAckRegistry } from './ack-registry.js';
import { enqueueIsolating } from '@llmq/core';
import { deadLetterOf, pulsarSourceConfigSchema, type PulsarSourceConfig } from './config.js';
import {
  createPulsarClient,
  isReceiveTimeout,
  loadPulsarClient,
  type PulsarClient,
  type PulsarConsumer,
  type PulsarMessage,
  type PulsarModuleLoader,
  type PulsarProducer,
} from './driver.js';
import { errSummary, sleep } from '@llmq/core';

const MAX_BACKOFF_MS = 30_000;

/** `source.ref` of a job from a pulsar source. */
export interface PulsarRef {
  /** The configured topic (the job id's middle part). */
  topic: string;
  /** The topic the message came from (a partition of `topic`, for a partitioned topic). */
  message_topic: string;
  subscription: string;
  message_id: string;
  /** The message's properties, as sent. */
  properties: Record<string, string>;
  redelivery_count: number;
  publish_time: number;
}

/** `pulsar:<topic>:<messageId>`: re-deliveries of one message collapse onto one job. */
export function pulsarJobId(topic: string, messageId: string): string {
  return `pulsar:${topic}:${messageId}`;
}

export interface PulsarSourceStatus {
  received: number;
  enqueued: number;
  acked: number;
  nacked: number;
  dead_lettered: number;
  /** after_sink: messages whose ack waits for a sink. */
  awaiting_sink: number;
}

export interface PulsarSourceDeps {
  /** Where pulsar-client comes from; tests pass a fake module. */
  loadModule?: PulsarModuleLoader;
  /** The after_sink registry; tests may pass their own. */
  acks?: PulsarAckRegistry;
}

/**
 * Consumes a topic on a Shared subscription. A message is acked only after its job is durable
 * (or after its result's sink write, with `ack: after_sink`), nacked when enqueue fails, and an
 * invalid payload goes to the dead-letter topic at once.
 */
export class PulsarSource implements Source {
  readonly name: string;
  private readonly config: PulsarSourceConfig;
  private readonly ctx: SourceContext;
  private readonly log: Logger;
  private readonly client: PulsarClient;
  private readonly acks: PulsarAckRegistry;
  private readonly deadLetter: ReturnType<typeof deadLetterOf>;
  private readonly stop = new AbortController();
  private readonly disposeHostSignal: () => void;
  private consumer: PulsarConsumer | undefined;
  private dlqProducer: Promise<PulsarProducer> | undefined;
  private loop: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private warnedNoSink = false;
  private readonly counters = { received: 0, enqueued: 0, acked: 0, nacked: 0, dead_lettered: 0 };

  constructor(options: { name: string; config: PulsarSourceConfig }, ctx: SourceContext, deps: { client: PulsarClient; acks: PulsarAckRegistry }) {
    this.name = options.name;
    this.config = options.config;
    this.ctx = ctx;
    this.log = ctx.logger.child({ topic: this.config.topic });
    this.client = deps.client;
    this.acks = deps.acks;
    this.deadLetter = deadLetterOf(this.config);
    const onHostAbort = () => void this.close();
    ctx.signal.addEventListener('abort', onHostAbort, { once: true });
    this.disposeHostSignal = () => ctx.signal.removeEventListener('abort', onHostAbort);
  }

  status(): PulsarSourceStatus {
    return { ...this.counters, awaiting_sink: this.acks.countOwner(this) };
  }

  async check(): Promise<void> {
    if (this.closing) throw new LlmqError('ERR_SOURCE_FAILED', `pulsar source "${this.name}" is closed`);
    if (this.loop && !this.consumer) throw new LlmqError('ERR_SOURCE_FAILED', `pulsar source "${this.name}" has no consumer`);
  }

  async start(): Promise<void> {
    if (this.loop || this.closing) return;
    const c = this.config;
    this.consumer = await this.client.subscribe({
      topic: c.topic,
      subscription: c.subscription,
      subscriptionType: 'Shared',
      subscriptionInitialPosition: c.initial_position,
      ackTimeoutMs: c.ack_timeout_ms,
      nAckRedeliverTimeoutMs: c.nack_redelivery_ms,
      receiverQueueSize: c.receiver_queue_size,
      ...(c.consumer_name === undefined ? {} : { consumerName: c.consumer_name }),
      deadLetterPolicy: {
        deadLetterTopic: this.deadLetter.topic,
        maxRedeliverCount: this.deadLetter.maxRedeliverCount,
        initialSubscriptionName: this.deadLetter.initialSubscriptionName,
      },
    });
    this.log.info({ subscription: c.subscription, ack: c.ack, dead_letter_topic: this.deadLetter.topic }, 'pulsar source subscribed');
    const consumer = this.consumer;
    this.loop = this.run(consumer, this.stop.signal).catch((err: unknown) => {
      this.log.error({ err: errSummary(err) }, 'pulsar source loop stopped unexpectedly');
    });
  }

  /** Stops receiving, lets the batch in hand finish (ack or nack), then closes consumer and client. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.disposeHostSignal();
    this.stop.abort('closed');
    await this.loop;
    const dropped = this.acks.dropOwner(this);
    if (dropped > 0) this.log.info({ messages: dropped }, 'closing with messages still awaiting their sink; the broker redelivers them');
    const closeQuietly = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        this.log.warn({ err: errSummary(err) }, `closing the pulsar ${what} failed`);
      }
    };
    if (this.consumer) {
      const consumer = this.consumer;
      await closeQuietly('consumer', () => consumer.close());
    }
    if (this.dlqProducer) {
      const pending = this.dlqProducer;
      await closeQuietly('dead-letter producer', async () => (await pending).close());
    }
    await closeQuietly('client', () => this.client.close());
    this.log.info(this.counters, 'pulsar source closed');
  }

  private async run(consumer: PulsarConsumer, signal: AbortSignal): Promise<void> {
    let backoff = this.config.restart_backoff_ms;
    while (!signal.aborted) {
      const batch = await this.receiveBatch(consumer, signal);
      if (batch.length === 0) continue;
      this.counters.received += batch.length;
      if (await this.handle(consumer, batch)) {
        backoff = this.config.restart_backoff_ms;
      } else {
        // Enqueue failed (Redis away): the messages were nacked; wait before taking more.
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private async receiveOne(consumer: PulsarConsumer, timeoutMs: number, signal: AbortSignal): Promise<PulsarMessage | null> {
    try {
      return await consumer.receive(timeoutMs);
    } catch (err) {
      if (signal.aborted || isReceiveTimeout(err)) return null;
      this.log.warn({ err: errSummary(err) }, 'receive failed; retrying');
      await sleep(this.config.restart_backoff_ms, signal);
      return null;
    }
  }

  private async receiveBatch(consumer: PulsarConsumer, signal: AbortSignal): Promise<PulsarMessage[]> {
    // A bounded wait (never a blocking receive): pulsar-client's receive holds a libuv worker
    // thread while it waits, and the loop must notice close() promptly.
    const first = await this.receiveOne(consumer, this.config.receive_timeout_ms, signal);
    if (!first) return [];
    const batch = [first];
    while (batch.length < this.config.batch_size && !signal.aborted) {
      const next = await this.receiveOne(consumer, this.config.batch_wait_ms, signal);
      if (!next) break;
      batch.push(next);
    }
    return batch;
  }

  /** False when enqueue failed (the batch was nacked). */
  private async handle(consumer: PulsarConsumer, batch: PulsarMessage[]): Promise<boolean> {
    const byJob = new Map<string, { job: EnqueueInput; messages: PulsarMessage[] }>();
    const poison: { message: PulsarMessage; err: unknown }[] = [];
    for (const message of batch) {
      try {
        const job = this.toJob(message);
        const entry = byJob.get(job.id);
        if (entry) entry.messages.push(message);
        else byJob.set(job.id, { job, messages: [message] });
      } catch (err) {
        poison.push({ message, err });
      }
    }
    await Promise.all(poison.map(({ message, err }) => this.deadLetterNow(consumer, message, err)));
    if (byJob.size === 0) return true;

    const entries = [...byJob.values()];
    let results;
    try {
      results = await enqueueIsolating((jobs) => this.ctx.enqueue(jobs), entries.map((e) => e.job));
    } catch (err) {
      this.log.error({ err: errSummary(err), messages: batch.length - poison.length }, 'enqueue failed; nacking the messages for redelivery');
      for (const e of entries) for (const m of e.messages) this.nack(consumer, m);
      return false;
    }
    const deferAck = this.config.ack === 'after_sink' && this.sinkInProcess();
    const acks: Promise<void>[] = [];
    entries.forEach((entry, i) => {
      const result = results[i];
      if (!result?.ok) {
        // Refused for good (e.g. a model no worker serves): as poison, not worth a redelivery.
        for (const m of entry.messages) acks.push(this.deadLetterNow(consumer, m, result?.rejected));
        return;
      }
      this.counters.enqueued++;
      // A job that already existed was enqueued by an earlier delivery; its sink write may be
      // long done, so waiting for it could hold the message until the timeout.
      if (deferAck && result.ok.created) {
        this.acks.defer(
          entry.job.id,
          {
            owner: this,
            ack: () => this.ackAll(consumer, entry.messages),
            onTimeout: () => {
              this.log.warn({ job: entry.job.id, after_ms: this.config.after_sink_timeout_ms }, 'no sink wrote the result in time; acking the message anyway (the job is durable in Redis)');
              void this.ackAll(consumer, entry.messages);
            },
          },
          this.config.after_sink_timeout_ms,
        );
      } else {
        acks.push(this.ackAll(consumer, entry.messages));
      }
    });
    await Promise.all(acks);
    return true;
  }

  private sinkInProcess(): boolean {
    if (this.acks.hasSink) return true;
    if (!this.warnedNoSink) {
      this.warnedNoSink = true;
      this.log.warn('ack: after_sink needs a pulsar sink in this process and there is none; acking messages once their jobs are durable instead');
    }
    return false;
  }

  private toJob(message: PulsarMessage): EnqueueInput {
    let body: unknown;
    try {
      body = JSON.parse(message.getData().toString('utf8'));
    } catch {
      throw new LlmqError('ERR_REQUEST_INVALID', 'payload is not JSON');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new LlmqError('ERR_REQUEST_INVALID', 'payload must be a JSON object with model and prompt or messages');
    }
    const candidate = { ...(body as Record<string, unknown>) };
    if (candidate.model === undefined && this.config.model !== undefined) candidate.model = this.config.model;
    if (candidate.timeout_ms === undefined && this.config.timeout_ms !== undefined) candidate.timeout_ms = this.config.timeout_ms;
    // The message id is the idempotency key here; a key in the payload is not used.
    const { idempotency_key: _key, ...request } = parseJobRequest(candidate, 'payload');
    const messageId = message.getMessageId().toString();
    const ref: PulsarRef = {
      topic: this.config.topic,
      message_topic: message.getTopicName(),
      subscription: this.config.subscription,
      message_id: messageId,
      properties: { ...message.getProperties() },
      redelivery_count: message.getRedeliveryCount(),
      publish_time: message.getPublishTimestamp(),
    };
    return { id: pulsarJobId(this.config.topic, messageId), request, source: { type: 'pulsar', name: this.name, ref: { ...ref } } };
  }

  private async ackAll(consumer: PulsarConsumer, messages: PulsarMessage[]): Promise<void> {
    await Promise.all(
      messages.map(async (m) => {
        try {
          await consumer.acknowledge(m);
          this.counters.acked++;
        } catch (err) {
          // The job is durable; an unacked message is redelivered and collapses onto it.
          this.log.warn({ err: errSummary(err), message_id: m.getMessageId().toString() }, 'ack failed; the message will be redelivered');
        }
      }),
    );
  }

  private nack(consumer: PulsarConsumer, message: PulsarMessage): void {
    try {
      consumer.negativeAcknowledge(message);
      this.counters.nacked++;
    } catch (err) {
      this.log.warn({ err: errSummary(err) }, 'nack failed; the message is redelivered when the consumer closes');
    }
  }

  /**
   * An invalid payload cannot become valid, nor will the queue take a job it refused for good,
   * so redelivering would only burn retries: it goes to the dead-letter topic now (with the
   * reason in `llmq_error`) and is acked. If that send
   * fails it is nacked, and the broker's policy dead-letters it after max_redeliver_count.
   */
  private async deadLetterNow(consumer: PulsarConsumer, message: PulsarMessage, err: unknown): Promise<void> {
    const messageId = message.getMessageId().toString();
    const reason = errorDetail(err instanceof Error ? err.message : String(err));
    this.log.warn(
      { message_id: messageId, code: errorCode(err) ?? 'ERR_REQUEST_INVALID', reason, dead_letter_topic: this.deadLetter.topic },
      'message cannot become a job (invalid payload, or refused by the queue); sending it to the dead-letter topic',
    );
    try {
      this.dlqProducer ??= this.client.createProducer({ topic: this.deadLetter.topic, sendTimeoutMs: 30_000 });
      const producer = await this.dlqProducer.catch((createErr: unknown) => {
        this.dlqProducer = undefined;
        throw createErr;
      });
      await producer.send({
        data: message.getData(),
        properties: {
          ...message.getProperties(),
          REAL_TOPIC: message.getTopicName(),
          ORIGIN_MESSAGE_ID: messageId,
          llmq_error: reason.slice(0, 2000),
          llmq_error_code: errorCode(err) ?? 'ERR_REQUEST_INVALID',
        },
      });
      this.counters.dead_lettered++;
      await this.ackAll(consumer, [message]);
    } catch (sendErr) {
      this.log.error({ err: errSummary(sendErr), message_id: messageId }, 'could not send the invalid payload to the dead-letter topic; nacking it');
      this.nack(consumer, message);
    }
  }
}

export async function createPulsarSource(
  options: { name: string; config: PulsarSourceConfig },
  ctx: SourceContext,
  deps: PulsarSourceDeps = {},
): Promise<PulsarSource> {
  const mod = await (deps.loadModule ?? loadPulsarClient)();
  const client = createPulsarClient(mod, options.config, ctx.env, ctx.logger, `sources.${options.name}.options`);
  return new PulsarSource(options, ctx, { client, acks: deps.acks ?? pulsarAcks });
}

/** `type: pulsar` source. */
export const pulsarSource = defineSource<PulsarSourceConfig>({
  kind: 'source',
  type: 'pulsar',
  configSchema: pulsarSourceConfigSchema,
  create(options, ctx) {
    return createPulsarSource(options, ctx);
  },
});
