import { z } from 'zod';

const name = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-" only, starting with a letter or digit');

const retention = z.strictObject({
  /** Keep finished jobs at most this long. */
  age_ms: z.int().min(0),
  /** Keep at most this many finished jobs per queue. */
  count: z.int().min(0),
});

export const rateLimitSchema = z.strictObject({
  /** Requests per minute across all workers. */
  rpm: z.int().min(1).optional(),
  /** Tokens (prompt + completion) per minute across all workers. */
  tpm: z.int().min(1).optional(),
  /** Window the limits apply to. @defaultValue 60000 */
  window_ms: z.int().min(100).max(3_600_000).default(60_000),
});

export const modelSchema = z.strictObject({
  /** The name clients use in `model`; also names the queue. */
  name,
  /** Backend type: echo, llama-cpp, openai, textsynth, or one from a plugin. */
  backend: z.string().min(1),
  /**
   * Jobs one worker process runs at once for this model.
   * @defaultValue 8
   */
  concurrency: z.int().min(1).max(10_000).default(8),
  /**
   * Per-job time limit unless the job sets `timeout_ms`.
   * @defaultValue 600000
   */
  timeout_ms: z.int().min(1).max(86_400_000).default(600_000),
  /** Attempts before dead-lettering (defaults to `queue.attempts`). */
  attempts: z.int().min(1).max(100).optional(),
  /** Request defaults applied when a job leaves them out (e.g. max_tokens). */
  defaults: z.record(z.string(), z.unknown()).default({}),
  /** Backend options, validated by the backend's own schema. */
  options: z.record(z.string(), z.unknown()).default({}),
  /** Models to try, in order, when this one fails after its attempts. */
  fallbacks: z.array(z.string()).default([]),
  rate_limit: rateLimitSchema.optional(),
  /** Description shown by GET /v1/models. */
  description: z.string().optional(),
});

export const adapterInstanceSchema = z.strictObject({
  name,
  type: z.string().min(1),
  options: z.record(z.string(), z.unknown()).default({}),
  /** Sinks only: models whose results it receives (default: all). */
  models: z.array(z.string()).optional(),
  /** Sinks only: sources whose jobs it receives, by source type or name (default: all). */
  sources: z.array(z.string()).optional(),
  /** Sinks only: what it receives — results, usage records, or both. @defaultValue ["results"] */
  events: z.array(z.enum(['results', 'usage'])).min(1).default(['results']),
});

export const configSchema = z.strictObject({
  /** pino level. @defaultValue "info" */
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  redis: z
    .strictObject({
      /** @defaultValue "redis://127.0.0.1:6379" (env REDIS_URL) */
      url: z.string().min(1).default('redis://127.0.0.1:6379'),
      /** Key prefix; use a hash tag like "{llmq}" on Redis Cluster. @defaultValue "llmq" */
      prefix: z.string().min(1).default('llmq'),
    })
    .prefault({}),
  gateway: z
    .strictObject({
      /** @defaultValue 8080 (env PORT) */
      port: z.int().min(0).max(65535).default(8080),
      /** @defaultValue "0.0.0.0" */
      host: z.string().default('0.0.0.0'),
      /** Largest accepted JSON body in bytes. @defaultValue 1048576 */
      body_limit_bytes: z.int().min(1024).default(1_048_576),
      /** Most jobs in one POST /v1/jobs/batch. @defaultValue 1000 */
      batch_limit: z.int().min(1).max(100_000).default(1000),
      /** API keys (env LLMQ_API_KEYS, comma-separated). Empty: no auth (a warning is logged). */
      api_keys: z.array(z.string().min(8, 'API keys must be at least 8 characters')).default([]),
      /** Paths served without a key. @defaultValue ["/healthz", "/readyz", "/metrics"] */
      public_paths: z.array(z.string()).default(['/healthz', '/readyz', '/metrics']),
      /** Bull Board. */
      admin: z
        .strictObject({
          enabled: z.boolean().default(true),
          path: z.string().default('/admin/queues'),
        })
        .prefault({}),
      /** How long the OpenAI/TextSynth front doors wait for a job before answering 504. @defaultValue 600000 */
      wait_timeout_ms: z.int().min(1).default(600_000),
    })
    .prefault({}),
  worker: z
    .strictObject({
      /** Models this worker serves (env LLMQ_WORKER_MODELS); empty: all declared models. */
      models: z.array(z.string()).default([]),
      /** Time in-flight jobs get to finish on SIGTERM before the process exits. @defaultValue 30000 */
      shutdown_grace_ms: z.int().min(0).default(30_000),
      /** Port of the worker's own /metrics (env LLMQ_METRICS_PORT); 0 disables it. @defaultValue 9464 */
      metrics_port: z.int().min(0).max(65535).default(9464),
      /** How long a backlog may sit with no job started before the worker rebuilds its connection. @defaultValue 30000 */
      watchdog_ms: z.int().min(0).default(30_000),
      /**
       * Streamed tokens of a job are sent at most this often, merged (its first token and its
       * status and final events go at once); 0 sends them every event-loop turn. @defaultValue 50
       */
      stream_flush_ms: z.int().min(0).max(1000).default(50),
    })
    .prefault({}),
  queue: z
    .strictObject({
      /** Attempts per job, retryable errors only. @defaultValue 3 */
      attempts: z.int().min(1).max(100).default(3),
      /** First retry delay; doubles each attempt. @defaultValue 1000 */
      backoff_ms: z.int().min(0).default(1000),
      /** Kept completed jobs. @defaultValue { age_ms: 86400000, count: 10000 } */
      remove_on_complete: retention.default({ age_ms: 86_400_000, count: 10_000 }),
      /** Kept failed jobs. @defaultValue { age_ms: 604800000, count: 50000 } */
      remove_on_fail: retention.default({ age_ms: 604_800_000, count: 50_000 }),
      /** How long an Idempotency-Key is remembered. @defaultValue 86400000 */
      idempotency_ttl_ms: z.int().min(1000).default(86_400_000),
      /** Waiting jobs per model above which enqueue answers 429; 0 means no limit. @defaultValue 0 */
      max_queued: z.int().min(0).default(0),
      /** Worker lock; a job whose worker stops renewing it is re-run. @defaultValue 30000 */
      lock_duration_ms: z.int().min(1000).default(30_000),
      /**
       * How often stalled jobs are looked for. A job whose worker died runs again within
       * lock_duration_ms + 2 × this (BullMQ marks, then moves). @defaultValue 10000
       */
      stalled_interval_ms: z.int().min(1000).default(10_000),
      /** Worker deaths a job survives before it fails. @defaultValue 5 */
      max_stalled_count: z.int().min(0).default(5),
    })
    .prefault({}),
  /** Plugin modules (npm names or paths relative to the config file) that export adapter definitions. */
  plugins: z.array(z.string().min(1)).default([]),
  /** Named prompt templates folder, relative to the config file. @defaultValue "templates" */
  templates_dir: z.string().default('templates'),
  models: z.array(modelSchema).default([]),
  sources: z.array(adapterInstanceSchema).default([]),
  sinks: z.array(adapterInstanceSchema).default([]),
});

export type ConfigInput = z.input<typeof configSchema>;
export type LlmqConfig = z.infer<typeof configSchema>;
export type ModelConfig = z.infer<typeof modelSchema>;
export type AdapterInstanceConfig = z.infer<typeof adapterInstanceSchema>;
