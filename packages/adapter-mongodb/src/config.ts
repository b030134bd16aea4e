import { z } from 'zod';
import { LlmqError, generationParamsShape } from '@llmq/core';

/** A field path in a document (`a.b` reaches into sub-documents). */
const fieldPath = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^$.][^$]*$/, 'a field path must not start with "$" or "." nor contain "$"');

/** A field the adapter writes; `null` turns the write off. */
const optionalField = (name: string) => fieldPath.nullable().default(name);

/** Where to connect. Give `url` or `url_env`; both may hold a password, so neither is ever logged. */
const connectionShape = {
  /** Connection string. Prefer `url_env`: a string in a config file is a secret at rest. */
  url: z.string().min(1).optional(),
  /** Name of the environment variable holding the connection string (e.g. `DB_URI`). */
  url_env: z.string().min(1).regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
  /**
   * How long the driver looks for a usable server before an operation fails.
   * @defaultValue 30000
   */
  server_selection_timeout_ms: z.int().min(1).max(600_000).default(30_000),
};

function oneConnection(value: { url?: string | undefined; url_env?: string | undefined }, ctx: z.RefinementCtx): void {
  if ((value.url === undefined) === (value.url_env === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['url'], message: 'give exactly one of "url" and "url_env"' });
  }
}

/** The status field and the values the adapters give it. */
export const statusSchema = z
  .strictObject({
    /** @defaultValue "status" */
    field: fieldPath.default('status'),
    /** Documents with this value are requests waiting to be enqueued. @defaultValue "pending" */
    pending: z.string().min(1).default('pending'),
    /** Polling mode: taken by one connector, not yet enqueued (see `lease_ms`). @defaultValue "claimed" */
    claimed: z.string().min(1).default('claimed'),
    /** The job is durable in Redis; a worker will run it. @defaultValue "queued" */
    queued: z.string().min(1).default('queued'),
    /** Written by the sink with the result. @defaultValue "done" */
    done: z.string().min(1).default('done'),
    /** Written by `markFailed` and for documents that are not valid requests. @defaultValue "failed" */
    failed: z.string().min(1).default('failed'),
  })
  .prefault({});

/** Fields written with a result or a failure (the sink and `markFailed`). */
const writeFieldsShape = {
  /** Generated text. @defaultValue "response" */
  response: optionalField('response'),
  /** `{ message, code }` of a failure. @defaultValue "error" */
  error: optionalField('error'),
  /** `{ prompt_tokens, completion_tokens, total_tokens }`. @defaultValue "usage" */
  usage: optionalField('usage'),
  /** `stop`, `length`, … @defaultValue "finish_reason" */
  finish_reason: optionalField('finish_reason'),
  /** Model that produced the result (differs from the request's after a fallback). @defaultValue "result_model" */
  result_model: optionalField('result_model'),
  /** The llmq job id, for finding the job in Bull Board. @defaultValue "llmq_job_id" */
  job_id: optionalField('llmq_job_id'),
  /** When generation started (a Date). @defaultValue "started_at" */
  started_at: optionalField('started_at'),
  /** When the first token came (a Date). @defaultValue null */
  first_token_at: fieldPath.nullable().default(null),
  /**
   * When generation finished (a Date). Always written: the sink refuses to replace a result that
   * finished later than the one it holds, so an old re-delivered write cannot undo a newer one.
   * @defaultValue "completed_at"
   */
  completed_at: fieldPath.default('completed_at'),
  /** When the document was marked failed (a Date). @defaultValue "failed_at" */
  failed_at: optionalField('failed_at'),
};

export const writeFieldsSchema = z.strictObject(writeFieldsShape).prefault({});

export const sourceFieldsSchema = z
  .strictObject({
    /** Prompt text (completion). @defaultValue "prompt" */
    prompt: fieldPath.default('prompt'),
    /** Chat messages `[{ role, content }]`; used instead of `prompt` when the document holds a non-empty array here. @defaultValue "messages" */
    messages: optionalField('messages'),
    /** Model name; overrides the source's `model` when the document has it. `null`: always use `model`. @defaultValue "model" */
    model: optionalField('model'),
    /** An object of generation parameters (`max_tokens`, `temperature`, …) over the source's `params`. @defaultValue "params" */
    params: optionalField('params'),
    /** Named prompt template over the source's `template`. @defaultValue "template" */
    template: optionalField('template'),
    /** Job priority, 1 (most urgent) … 1000000. @defaultValue "priority" */
    priority: optionalField('priority'),
    /** When the document's job was enqueued: the seed worker's "batch start" time (a Date). @defaultValue "queued_at" */
    queued_at: optionalField('queued_at'),
    /** Polling mode: the connector holding the claim. @defaultValue "llmq_claimed_by" */
    claimed_by: fieldPath.default('llmq_claimed_by'),
    /** Polling mode: when the claim lapses and another connector may take the document (a Date). @defaultValue "llmq_lease_until" */
    lease_until: fieldPath.default('llmq_lease_until'),
    ...writeFieldsShape,
  })
  .prefault({});

const generationParamsSchema = z.strictObject(generationParamsShape);

export const mongoSourceConfigSchema = z
  .strictObject({
    ...connectionShape,
    /** Database name. */
    db: z.string().min(1).max(64),
    /** Collection holding the requests. */
    collection: z.string().min(1).max(255),
    /**
     * `change_stream` (needs a replica set or sharded cluster), `poll` (claims with
     * findOneAndUpdate; works on a standalone server), or `auto`: change_stream when the server
     * is a replica-set member or mongos, else poll.
     * @defaultValue "auto"
     */
    mode: z.enum(['auto', 'change_stream', 'poll']).default('auto'),
    /** Documents per enqueue batch (and per claim round in polling mode). @defaultValue 100 */
    batch_size: z.int().min(1).max(10_000).default(100),
    /** Model for documents that do not name one. */
    model: z.string().min(1).max(200).optional(),
    /** Template for documents that do not name one. */
    template: z.string().min(1).max(200).optional(),
    /** Generation parameters for every job; a document's own `params` win. @defaultValue {} */
    params: generationParamsSchema.default({}),
    /** Per-job time limit (else the model's `timeout_ms`). */
    timeout_ms: z.int().min(1).max(86_400_000).optional(),
    status: statusSchema,
    fields: sourceFieldsSchema,
    /**
     * Change-stream mode: how often to look for documents still pending (catch-up). A scan also
     * runs at start-up and after the change-stream history was lost. 0: only then.
     * @defaultValue 60000
     */
    scan_interval_ms: z.int().min(0).default(60_000),
    /** Polling mode: pause between claim rounds that found nothing. @defaultValue 1000 */
    poll_interval_ms: z.int().min(10).max(3_600_000).default(1000),
    /**
     * Polling mode: how long a claim holds before another connector may take the document. Only
     * the time from claim to enqueue needs to fit; keep it well above clock skew between hosts.
     * @defaultValue 60000
     */
    lease_ms: z.int().min(1000).max(86_400_000).default(60_000),
    /**
     * Change-stream mode: TTL of the per-collection watch lock in Redis. A standby connector
     * takes over this long after the holder stops renewing it.
     * @defaultValue 30000
     */
    lock_ttl_ms: z.int().min(100).max(600_000).default(30_000),
    /** How often the holder renews the lock and a standby tries to take it. @defaultValue lock_ttl_ms / 3 */
    lock_renew_ms: z.int().min(10).max(600_000).optional(),
    /** Change-stream mode: how long one getMore waits on the server for events. @defaultValue 1000 */
    max_await_ms: z.int().min(1).max(60_000).default(1000),
    /** Change-stream mode: least time between checkpoints taken while no event arrives. @defaultValue 10000 */
    idle_checkpoint_ms: z.int().min(0).default(10_000),
    /** First delay before restarting a failed stream or claim loop; doubles up to 30 s. @defaultValue 1000 */
    restart_backoff_ms: z.int().min(1).max(60_000).default(1000),
  })
  .superRefine((value, ctx) => {
    oneConnection(value, ctx);
    if (value.lock_renew_ms !== undefined && value.lock_renew_ms >= value.lock_ttl_ms) {
      ctx.addIssue({ code: 'custom', path: ['lock_renew_ms'], message: 'must be shorter than lock_ttl_ms' });
    }
  });

export type MongoSourceConfig = z.infer<typeof mongoSourceConfigSchema>;
export type MongoSourceConfigInput = z.input<typeof mongoSourceConfigSchema>;
export type SourceFields = z.infer<typeof sourceFieldsSchema>;
export type StatusConfig = z.infer<typeof statusSchema>;
export type WriteFields = z.infer<typeof writeFieldsSchema>;

export const mongoSinkConfigSchema = z
  .strictObject({
    ...connectionShape,
    /**
     * Results collection. Unset: write each result back onto the job's source document (jobs
     * from a mongodb source only). Set: upsert one document per job, `_id` = the job id.
     */
    collection: z.string().min(1).max(255).optional(),
    /** Database of `collection` (required with it). */
    db: z.string().min(1).max(64).optional(),
    /** Results collection only: fields to write (write-back uses the source's mapping). */
    fields: writeFieldsSchema,
    /** Results collection only: status field and values. */
    status: statusSchema,
  })
  .superRefine((value, ctx) => {
    oneConnection(value, ctx);
    if ((value.collection === undefined) !== (value.db === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['db'], message: 'give "db" and "collection" together (or neither, to write back onto source documents)' });
    }
  });

export type MongoSinkConfig = z.infer<typeof mongoSinkConfigSchema>;
export type MongoSinkConfigInput = z.input<typeof mongoSinkConfigSchema>;

/** The connection string from `url` or from the environment variable `url_env` names. */
export function resolveMongoUrl(
  config: { url?: string | undefined; url_env?: string | undefined },
  env: Readonly<Record<string, string | undefined>>,
  where: string,
): string {
  if (config.url !== undefined) return config.url;
  const name = config.url_env ?? '';
  const value = env[name];
  if (value === undefined || value === '') {
    throw new LlmqError('ERR_CONFIG_INVALID', `${where}: url_env names ${name}, which is not set`, { param: `${where}.url_env` });
  }
  return value;
}
