import { z } from 'zod';
import { LlmqError } from '@llmq/core';

const envName = z.string().min(1).regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name');
const topicName = z.string().min(1).max(1000);

/** How to reach the cluster. Give `service_url` or `service_url_env`. */
export const connectionShape = {
  /** e.g. `pulsar://localhost:6650` or `pulsar+ssl://…`. */
  service_url: z.string().min(1).optional(),
  /** Environment variable holding the service URL. */
  service_url_env: envName.optional(),
  /** Environment variable holding a JWT for token authentication (never logged). */
  token_env: envName.optional(),
  /** CA bundle for `pulsar+ssl://`. */
  tls_trust_certs_file_path: z.string().min(1).optional(),
  /**
   * Timeout of client operations (lookups, subscribe, producer creation); rounded up to seconds.
   * @defaultValue 30000
   */
  operation_timeout_ms: z.int().min(1000).max(600_000).default(30_000),
};

export type PulsarConnectionConfig = {
  service_url?: string | undefined;
  service_url_env?: string | undefined;
  token_env?: string | undefined;
  tls_trust_certs_file_path?: string | undefined;
  operation_timeout_ms: number;
};

function oneServiceUrl(value: { service_url?: string | undefined; service_url_env?: string | undefined }, ctx: z.RefinementCtx): void {
  if ((value.service_url === undefined) === (value.service_url_env === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['service_url'], message: 'give exactly one of "service_url" and "service_url_env"' });
  }
}

export const deadLetterSchema = z
  .strictObject({
    /** Where messages go after `max_redeliver_count` redeliveries, and invalid payloads at once. @defaultValue "<topic>-<subscription>-DLQ" */
    topic: topicName.optional(),
    /** Redeliveries (nacks, ack timeouts) before the broker dead-letters a message. @defaultValue 10 */
    max_redeliver_count: z.int().min(1).max(1000).default(10),
    /**
     * Subscription created on the dead-letter topic with it, so its messages are retained until
     * someone reads them. @defaultValue "<subscription>-dlq"
     */
    initial_subscription_name: z.string().min(1).max(200).optional(),
  })
  .prefault({});

export const pulsarSourceConfigSchema = z
  .strictObject({
    ...connectionShape,
    /** Topic to consume, e.g. `persistent://public/default/llm-requests`. */
    topic: topicName,
    /** Shared subscription name; every connector with the same name shares the messages. @defaultValue "llmq" */
    subscription: z.string().min(1).max(200).default('llmq'),
    /** Where a new subscription starts. @defaultValue "Earliest" */
    initial_position: z.enum(['Earliest', 'Latest']).default('Earliest'),
    /**
     * `after_enqueue`: ack once the job is durable in Redis. `after_sink`: ack once a pulsar sink
     * in the same process has written the result (see README); else as after_enqueue.
     * @defaultValue "after_enqueue"
     */
    ack: z.enum(['after_enqueue', 'after_sink']).default('after_enqueue'),
    /** after_sink: ack anyway when no sink wrote the result within this time (the job stays durable in Redis). @defaultValue 3600000 */
    after_sink_timeout_ms: z.int().min(1000).max(7 * 86_400_000).default(3_600_000),
    /** Model for payloads that name none. */
    model: z.string().min(1).max(200).optional(),
    /** Per-job time limit for payloads that set none. */
    timeout_ms: z.int().min(1).max(86_400_000).optional(),
    dead_letter: deadLetterSchema,
    /** Delay before a nacked message is redelivered. @defaultValue 60000 */
    nack_redelivery_ms: z.int().min(0).max(86_400_000).default(60_000),
    /**
     * Redeliver messages not acked within this time; 0 turns it off. pulsar-client ignores
     * (or rejects) values from 1 to 9999, so those are refused here. Leave it 0 with
     * `ack: after_sink`, or running jobs count towards `max_redeliver_count`.
     * @defaultValue 0
     */
    ack_timeout_ms: z
      .int()
      .min(0)
      .max(86_400_000)
      .refine((v) => v === 0 || v >= 10_000, { message: 'must be 0 (off) or at least 10000: pulsar-client ignores ack timeouts from 1 to 9999 ms' })
      .default(0),
    /** Messages the client prefetches. @defaultValue 1000 */
    receiver_queue_size: z.int().min(1).max(1_000_000).default(1000),
    /** Most messages per enqueue call. @defaultValue 100 */
    batch_size: z.int().min(1).max(10_000).default(100),
    /** How long one receive waits for a first message (also bounds how long close() waits for the loop). @defaultValue 1000 */
    receive_timeout_ms: z.int().min(1).max(60_000).default(1000),
    /** How long to wait for more messages once a batch has begun. @defaultValue 5 */
    batch_wait_ms: z.int().min(1).max(10_000).default(5),
    /** First pause after an enqueue failure; doubles up to 30 s. @defaultValue 1000 */
    restart_backoff_ms: z.int().min(1).max(60_000).default(1000),
    /** Consumer name shown in topic stats. */
    consumer_name: z.string().min(1).max(200).optional(),
  })
  .superRefine(oneServiceUrl);

export type PulsarSourceConfig = z.infer<typeof pulsarSourceConfigSchema>;
export type PulsarSourceConfigInput = z.input<typeof pulsarSourceConfigSchema>;

export const pulsarSinkConfigSchema = z
  .strictObject({
    ...connectionShape,
    /** Reply topic for jobs whose message names none in `reply_to_property` (and for jobs from other sources). */
    topic: topicName.optional(),
    /** Message property naming the reply topic; it wins over `topic`. @defaultValue "reply_to" */
    reply_to_property: z.string().min(1).default('reply_to'),
    /** Message property holding the correlation id (else the message id, else the job id). @defaultValue "correlation_id" */
    correlation_id_property: z.string().min(1).default('correlation_id'),
    /** Topic for usage records (sink config `events: [usage]`); else `topic`. */
    usage_topic: topicName.optional(),
    /** Producers kept open (one per topic, least recently used closed first). @defaultValue 32 */
    max_producers: z.int().min(1).max(10_000).default(32),
    /** How long a send may wait for the broker. @defaultValue 30000 */
    send_timeout_ms: z.int().min(1).max(600_000).default(30_000),
  })
  .superRefine(oneServiceUrl);

export type PulsarSinkConfig = z.infer<typeof pulsarSinkConfigSchema>;
export type PulsarSinkConfigInput = z.input<typeof pulsarSinkConfigSchema>;

export const pulsarUsageConfigSchema = z
  .strictObject({
    ...connectionShape,
    /** Topic for usage records. */
    topic: topicName,
    /** @defaultValue 30000 */
    send_timeout_ms: z.int().min(1).max(600_000).default(30_000),
  })
  .superRefine(oneServiceUrl);

export type PulsarUsageConfig = z.infer<typeof pulsarUsageConfigSchema>;
export type PulsarUsageConfigInput = z.input<typeof pulsarUsageConfigSchema>;

/** The dead-letter topic and initial subscription a source uses. */
export function deadLetterOf(config: PulsarSourceConfig): { topic: string; maxRedeliverCount: number; initialSubscriptionName: string } {
  return {
    // Pulsar's own default name, so broker- and llmq-dead-lettered messages land together.
    topic: config.dead_letter.topic ?? `${config.topic}-${config.subscription}-DLQ`,
    maxRedeliverCount: config.dead_letter.max_redeliver_count,
    initialSubscriptionName: config.dead_letter.initial_subscription_name ?? `${config.subscription}-dlq`,
  };
}

export function resolveEnv(name: string, env: Readonly<Record<string, string | undefined>>, param: string): string {
  const value = env[name];
  if (value === undefined || value === '') {
    throw new LlmqError('ERR_CONFIG_INVALID', `${param} names ${name}, which is not set`, { param });
  }
  return value;
}
