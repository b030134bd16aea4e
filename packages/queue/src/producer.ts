import { randomBytes } from 'node:crypto';
import { Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  LlmqError,
  errorCode,
  requestHash,
  sleep,
  sha256,
  toJobError,
  type EnqueueInput,
  type JobData,
  type JobError,
  type JobRequest,
  type JobResult,
  type JobStatus,
  type JobView,
  type Logger,
  type SourceRef,
} from '@llmq/core';
import type { ModelConfig, ResolvedConfig } from '@llmq/config';
import { CATCH_UP, DLQ_QUEUE, fromBullId, keys, toBullId, type Keys } from './keys.js';
import { RecentMap } from './recent.js';
import { withTimeout } from './connection.js';
import { logRedisError } from './redis-errors.js';
import { parseReport, waitsForWorker, type UnservedReport } from './unserved.js';

export interface EnqueueOptions {
  idempotencyKey?: string | undefined;
  /** Scope of idempotency keys (the API key id), so tenants never collide. */
  keyId?: string | undefined;
  source?: SourceRef | undefined;
  /** Use this id (callers that subscribe to the job's events before enqueueing). */
  id?: string | undefined;
}

export interface EnqueueResult {
  id: string;
  /** False when the idempotency key (or source id) matched an existing job. */
  created: boolean;
}

export interface DlqEntry {
  id: string;
  model: string;
  error: JobError;
  attempts: number;
  failed_at: number;
  source: SourceRef | null;
  data: JobData;
}

export interface QueueCounts {
  model: string;
  paused: boolean;
  waiting: number;
  active: number;
  delayed: number;
  completed: number;
  failed: number;
}

type Tombstone = { model: string; created_at: number; cancelled_at: number; metadata: Record<string, unknown> | null; source: SourceRef | null };

const QUEUED_STATES = new Set(['waiting', 'prioritized', 'delayed', 'waiting-children', 'paused']);
/**
 * How long a watch is kept for reannounceWatches (at least, and at most twice that): longer than
 * its followers take to repeat it (every 2 s for a synchronous request, 15 s for an event stream).
 */
const WATCH_HELD_MS = 20_000;
/** The most recent watches always kept, however many come within WATCH_HELD_MS; at most twice this are held. */
const WATCHED_MAX = 50_000;

/** Turns a Redis failure into the fast 503 the API promises. */
export function asRedisError(err: unknown): unknown {
  if (err instanceof LlmqError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/Stream isn't writeable|Connection is closed|ECONNREFUSED|ETIMEDOUT|Command timed out|ECONNRESET|max retries|enableOfflineQueue|Reached the max retries/i.test(message)) {
    return new LlmqError('ERR_REDIS_UNAVAILABLE', 'Redis is unavailable; nothing was enqueued, retry later', { cause: err });
  }
  return err;
}

export function newJobId(): string {
  return `job_${randomBytes(12).toString('base64url')}`;
}

/** `count` fresh ids from one draw of random bytes (bulk enqueue). */
export function newJobIds(count: number): string[] {
  const bytes = randomBytes(12 * count);
  const ids = new Array<string>(count);
  for (let i = 0; i < count; i++) ids[i] = `job_${bytes.subarray(i * 12, i * 12 + 12).toString('base64url')}`;
  return ids;
}

/** Deterministic id for an idempotency key, so a retried request maps to the same job. */
export function idempotentJobId(key: string, scope = ''): string {
  return `job_${sha256(`${scope}\n${key}`).slice(0, 32)}`;
}

/** BullMQ job options for a model: attempts, backoff, retention. */
const baseOptions = new WeakMap<ModelConfig, JobsOptions>();

export function jobOptions(config: ResolvedConfig, model: ModelConfig, bullId: string, priority?: number): JobsOptions {
  let base = baseOptions.get(model);
  if (!base) {
    // Shared per model (BullMQ does not mutate these): bulk enqueue builds no nested objects per job.
    const q = config.queue;
    base = {
      attempts: model.attempts ?? q.attempts,
      backoff: { type: 'exponential', delay: q.backoff_ms },
      removeOnComplete: { age: Math.ceil(q.remove_on_complete.age_ms / 1000), count: q.remove_on_complete.count },
      removeOnFail: { age: Math.ceil(q.remove_on_fail.age_ms / 1000), count: q.remove_on_fail.count },
    };
    baseOptions.set(model, base);
  }
  return priority === undefined ? { ...base, jobId: bullId } : { ...base, jobId: bullId, priority };
}

/** Applies the model's configured request defaults to fields the job left out. */
export function withDefaults<T extends Record<string, unknown>>(request: T, model: ModelConfig): T {
  const out: Record<string, unknown> = { ...request };
  for (const [k, v] of Object.entries(model.defaults)) if (out[k] === undefined) out[k] = v;
  return out as T;
}

function statusOf(state: string, failedReason: string | undefined): JobStatus {
  if (state === 'active') return 'active';
  if (state === 'completed') return 'completed';
  if (state === 'failed') return errorCode(failedReason) === 'ERR_JOB_CANCELLED' ? 'cancelled' : 'failed';
  return 'queued';
}

/** The running run's stored progress (see ModelWorker.reportProgress); an earlier run's (a retry, a stalled or handed-back job) is not shown. */
function progressOf(progress: unknown, run: number): Partial<Pick<JobView, 'progress' | 'first_token_at'>> {
  const p = progress as { run?: unknown; generated_chars?: unknown; updated_at?: unknown; first_token_at?: unknown } | null;
  if (typeof p !== 'object' || p === null || p.run !== run || typeof p.generated_chars !== 'number' || typeof p.updated_at !== 'number') return {};
  return {
    progress: { generated_chars: p.generated_chars, updated_at: p.updated_at },
    ...(typeof p.first_token_at === 'number' ? { first_token_at: p.first_token_at } : {}),
  };
}

/**
 * Puts jobs into the model queues and reads them back. Used by the gateway and the sources;
 * every method resolves only after Redis answered.
 */
export class Producer {
  readonly keys: Keys;
  private readonly queues = new Map<string, Queue>();
  private readonly models: Map<string, ModelConfig>;
  private dlqQueue: Queue | undefined;

  /** Upper bound for one API call's Redis work (0: none, e.g. for sources that should wait). */
  private readonly callTimeoutMs: number;
  /** notServedHint()'s snapshot: model → report, and when it was read. */
  private unservedSnapshot = new Map<string, UnservedReport>();
  private unservedReadAt = 0;
  private unservedRefresh: Promise<void> | undefined;
  private readonly onQueuedCancel: ((model: string) => void) | undefined;
  /** Jobs announced as watched lately (see reannounceWatches). */
  private readonly watched = new RecentMap<true>(WATCH_HELD_MS, WATCHED_MAX);

  constructor(
    readonly config: ResolvedConfig,
    readonly connection: Redis,
    private readonly logger: Logger,
    options: {
      callTimeoutMs?: number;
      /** Called when cancel() removes a queued job (no worker sees it, so no worker counts it). */
      onQueuedCancel?: (model: string) => void;
    } = {},
  ) {
    this.callTimeoutMs = options.callTimeoutMs ?? 5_000;
    this.onQueuedCancel = options.onQueuedCancel;
    this.keys = keys(config.redis.prefix);
    this.models = new Map(config.models.map((m) => [m.name, m]));
  }

  private bounded<T>(work: Promise<T>): Promise<T> {
    if (this.callTimeoutMs <= 0) return work;
    return withTimeout(work, this.callTimeoutMs, () => new LlmqError('ERR_REDIS_UNAVAILABLE', `Redis did not answer within ${this.callTimeoutMs} ms; retry later`));
  }

  model(name: string): ModelConfig {
    const m = this.models.get(name);
    if (!m) {
      throw new LlmqError('ERR_MODEL_NOT_FOUND', `model "${name}" does not exist (available: ${[...this.models.keys()].join(', ') || 'none'})`, { param: 'model' });
    }
    return m;
  }

  modelNames(): string[] {
    return [...this.models.keys()];
  }

  queue(model: string): Queue {
    let q = this.queues.get(model);
    if (!q) {
      q = new Queue(model, { connection: this.connection, prefix: this.config.redis.prefix });
      q.on('error', (err) => logRedisError(this.logger, 'queue connection error', err, { model }));
      this.queues.set(model, q);
    }
    return q;
  }

  get dlq(): Queue {
    if (!this.dlqQueue) {
      this.dlqQueue = new Queue(DLQ_QUEUE, { connection: this.connection, prefix: this.config.redis.prefix });
      this.dlqQueue.on('error', (err) => logRedisError(this.logger, 'dlq connection error', err));
    }
    return this.dlqQueue;
  }

  private async checkBacklog(model: string): Promise<void> {
    const max = this.config.queue.max_queued;
    if (max <= 0) return;
    const waiting = await this.queue(model).count();
    if (waiting >= max) {
      throw new LlmqError('ERR_QUEUE_FULL', `model "${model}" has ${waiting} jobs waiting (limit ${max}); retry later`, { details: { retry_after_s: 5 } });
    }
  }

  private dataFor(request: JobRequest, model: ModelConfig, options: EnqueueOptions): JobData {
    const { priority: _p, idempotency_key: _k, ...generation } = request;
    return {
      request: withDefaults(generation, model),
      created_at: Date.now(),
      source: options.source ?? { type: 'http' },
      key_id: options.keyId,
    };
  }

  /**
   * Enqueues one validated request. With an idempotency key: same key + same body → same id;
   * same key + different body → ERR_IDEMPOTENCY_CONFLICT.
   */
  enqueue(request: JobRequest, options: EnqueueOptions = {}): Promise<EnqueueResult> {
    return this.bounded(this.enqueueNow(request, options));
  }

  private async enqueueNow(request: JobRequest, options: EnqueueOptions = {}): Promise<EnqueueResult> {
    try {
      const model = this.model(request.model);
      const key = options.idempotencyKey ?? request.idempotency_key;
      const { idempotency_key: _ignored, ...hashed } = request;
      const hash = requestHash(hashed);
      const data = this.dataFor(request, model, options);
      const queue = this.queue(model.name);
      if (key === undefined) {
        await this.checkBacklog(model.name);
        const id = options.id ?? newJobId();
        await queue.add('llm', data, jobOptions(this.config, model, toBullId(id), request.priority));
        return { id, created: true };
      }
      const id = idempotentJobId(key, options.keyId);
      const idemKey = this.keys.idempotency(id);
      const ttl = this.config.queue.idempotency_ttl_ms;
      // "pending" until the job is in Redis: a crash between the two writes is repaired by the retry.
      const set = await this.connection.set(idemKey, `pending:${hash}`, 'PX', ttl, 'NX');
      if (set === null) {
        const existing = await this.connection.get(idemKey);
        if (existing !== null) {
          const [state, storedHash] = existing.split(':');
          if (storedHash !== hash) {
            throw new LlmqError('ERR_IDEMPOTENCY_CONFLICT', `Idempotency-Key "${key}" was already used with a different request body`, { param: 'idempotency_key' });
          }
          if (state === 'done') return { id, created: false };
        }
      } else {
        await this.checkBacklog(model.name).catch(async (err: unknown) => {
          await this.connection.del(idemKey);
          throw err;
        });
      }
      await queue.add('llm', data, jobOptions(this.config, model, toBullId(id), request.priority));
      await this.connection.set(idemKey, `done:${hash}`, 'PX', ttl);
      return { id, created: set !== null };
    } catch (err) {
      throw asRedisError(err);
    }
  }

  /**
   * Bulk enqueue for sources: ids are deterministic, so re-delivery collapses on them. Resolves
   * once every job is durable in Redis.
   */
  async enqueueMany(inputs: readonly EnqueueInput[]): Promise<EnqueueResult[]> {
    if (inputs.length === 0) return [];
    try {
      const byModel = new Map<string, EnqueueInput[]>();
      for (const input of inputs) {
        this.model(input.request.model);
        const list = byModel.get(input.request.model) ?? [];
        list.push(input);
        byModel.set(input.request.model, list);
      }
      const exists = this.connection.pipeline();
      for (const input of inputs) exists.exists(`${this.config.redis.prefix}:${input.request.model}:${toBullId(input.id)}`);
      const existed = ((await exists.exec()) ?? []).map(([, n]) => n === 1);
      for (const [name, list] of byModel) {
        const model = this.model(name);
        await this.queue(name).addBulk(
          list.map((input) => {
            const { priority, ...request } = input.request;
            const data: JobData = {
              request: withDefaults(request, model),
              created_at: Date.now(),
              source: input.source,
            };
            return { name: 'llm', data, opts: jobOptions(this.config, model, toBullId(input.id), priority) };
          }),
        );
      }
      return inputs.map((input, i) => ({ id: input.id, created: !existed[i] }));
    } catch (err) {
      throw asRedisError(err);
    }
  }

  /** Adds many HTTP requests; requests without an idempotency key go in one addBulk per model. */
  enqueueBatch(requests: readonly JobRequest[], options: Omit<EnqueueOptions, 'idempotencyKey'> = {}): Promise<(EnqueueResult | { error: unknown })[]> {
    return this.bounded(this.enqueueBatchNow(requests, options));
  }

  private async enqueueBatchNow(requests: readonly JobRequest[], options: Omit<EnqueueOptions, 'idempotencyKey'> = {}): Promise<(EnqueueResult | { error: unknown })[]> {
    const results: (EnqueueResult | { error: unknown })[] = new Array(requests.length);
    const bulk = new Map<string, { index: number; request: JobRequest }[]>();
    const single: Promise<void>[] = [];
    requests.forEach((request, index) => {
      if (request.idempotency_key !== undefined) {
        single.push(
          this.enqueue(request, options).then(
            (r) => void (results[index] = r),
            (error: unknown) => void (results[index] = { error }),
          ),
        );
      } else {
        const list = bulk.get(request.model) ?? [];
        list.push({ index, request });
        bulk.set(request.model, list);
      }
    });
    for (const [name, list] of bulk) {
      try {
        const model = this.model(name);
        await this.checkBacklog(name);
        const ids = newJobIds(list.length);
        await this.queue(name).addBulk(
          list.map(({ request }, i) => ({
            name: 'llm',
            data: this.dataFor(request, model, options),
            opts: jobOptions(this.config, model, toBullId(ids[i]!), request.priority),
          })),
        );
        list.forEach(({ index }, i) => (results[index] = { id: ids[i]!, created: true }));
      } catch (err) {
        const error = asRedisError(err);
        list.forEach(({ index }) => (results[index] = { error }));
      }
    }
    await Promise.all(single);
    return results;
  }

  /** Finds a job in whichever model queue holds it. */
  async findJob(id: string): Promise<Job<JobData, JobResult> | null> {
    const bullId = toBullId(id);
    try {
      const found = await Promise.all(this.modelNames().map((m) => this.queue(m).getJob(bullId)));
      return (found.find((j) => j !== undefined && j !== null) as Job<JobData, JobResult> | undefined) ?? null;
    } catch (err) {
      throw asRedisError(err);
    }
  }

  /**
   * The job as the API shows it. `lockWarning`: for an active job, also look whether a worker still
   * holds its lock (two more reads; for GET /v1/jobs/:id, not for the polls that wait on a job).
   */
  getJob(id: string, options: { lockWarning?: boolean } = {}): Promise<JobView | null> {
    return this.bounded(this.getJobNow(id, options.lockWarning === true));
  }

  private async getJobNow(id: string, lockWarning = false): Promise<JobView | null> {
    const job = await this.findJob(id);
    if (!job) {
      const tomb = await this.connection.get(this.keys.cancelled(id)).catch((err: unknown) => {
        throw asRedisError(err);
      });
      if (!tomb) return null;
      const t = JSON.parse(tomb) as Tombstone;
      return {
        id,
        object: 'job',
        model: t.model,
        status: 'cancelled',
        result: null,
        error: { message: 'cancelled before it started', code: 'ERR_JOB_CANCELLED' },
        attempts: 0,
        max_attempts: 0,
        priority: null,
        source: t.source,
        metadata: t.metadata,
        created_at: t.created_at,
        started_at: null,
        first_token_at: null,
        completed_at: t.cancelled_at,
      };
    }
    const state = await job.getState().catch((err: unknown) => {
      throw asRedisError(err);
    });
    if ((state === 'completed' || state === 'failed') && job.finishedOn === undefined) {
      // It finished between reading the job and its state: read it again for the result.
      const fresh = await this.findJob(id);
      if (fresh) return this.view(fresh, state);
    }
    const view = this.view(job, state);
    // Read again when it is not held: the job may have just finished (which also frees the lock).
    if (lockWarning && view.status === 'active' && !(await this.lockHeld(job)) && (await job.getState().catch(() => state)) === 'active') {
      // Otherwise it looks like a job at work until the stalled check finds it.
      const { stalled_interval_ms: interval, max_stalled_count: max } = this.config.queue;
      view.warning =
        `no worker holds this job's lock any more (its worker died or lost Redis): a running worker of ${view.model} queues it again ` +
        `within ${Math.round((2 * interval) / 1000)} s (two stalled checks), or fails it once this has happened more than ${max} times`;
    }
    return view;
  }

  /** Whether a worker holds the job's BullMQ lock (renewed every lock_duration_ms / 2 while it runs). */
  private async lockHeld(job: Job<JobData, JobResult>): Promise<boolean> {
    try {
      return (await this.connection.exists(`${job.queueQualifiedName}:${job.id}:lock`)) === 1;
    } catch (err) {
      throw asRedisError(err);
    }
  }

  view(job: Job<JobData, JobResult>, state: string): JobView {
    const status = statusOf(state, job.failedReason);
    const result = status === 'completed' ? (job.returnvalue ?? null) : null;
    const failed = status === 'failed' || status === 'cancelled';
    // attemptsMade counts finished attempts (BullMQ's rate-limit hand-backs and stalls are not attempts).
    const attempts = job.attemptsMade + (status === 'active' ? 1 : 0);
    // Stored for another failure (a job retried from Bull Board), it is not this one's.
    const failure = failed && job.failedReason && job.data.failure?.reason === job.failedReason ? job.data.failure : undefined;
    return {
      id: fromBullId(job.id ?? ''),
      object: 'job',
      model: job.data.request.model,
      status,
      result: result ? { text: result.text, finish_reason: result.finish_reason, usage: result.usage, model: result.model } : null,
      error: failed && job.failedReason ? toJobError(job.failedReason, failure?.details) : null,
      attempts,
      max_attempts: job.opts.attempts ?? 1,
      priority: job.opts.priority ?? null,
      source: job.data.source ?? null,
      metadata: job.data.request.metadata ?? null,
      created_at: job.data.created_at,
      started_at: result?.started_at ?? job.processedOn ?? null,
      first_token_at: result?.first_token_at ?? failure?.first_token_at ?? null,
      completed_at: result?.completed_at ?? (failed ? (job.finishedOn ?? null) : null),
      ...(status === 'active' ? progressOf(job.progress, job.attemptsStarted) : {}),
    };
  }

  /**
   * Cancels a job: a queued job is removed (and remembered as cancelled); an active one is
   * signalled to whichever worker runs it, which aborts the generation.
   */
  cancel(id: string): Promise<{ status: 'cancelled' | 'cancelling' }> {
    return this.bounded(this.cancelNow(id));
  }

  private async cancelNow(id: string): Promise<{ status: 'cancelled' | 'cancelling' }> {
    try {
      const job = await this.findJob(id);
      if (!job) {
        if (await this.connection.exists(this.keys.cancelled(id))) return { status: 'cancelled' };
        throw new LlmqError('ERR_JOB_NOT_FOUND', `job "${id}" not found`, { param: 'id' });
      }
      const state = await job.getState();
      if (state === 'completed' || state === 'failed') {
        if (statusOf(state, job.failedReason) === 'cancelled') return { status: 'cancelled' };
        throw new LlmqError('ERR_JOB_FINISHED', `job "${id}" already ${state}`, { param: 'id' });
      }
      if (QUEUED_STATES.has(state)) {
        const removed = await job.remove().then(
          () => true,
          () => false,
        );
        if (removed) {
          const tomb: Tombstone = {
            model: job.data.request.model,
            created_at: job.data.created_at,
            cancelled_at: Date.now(),
            metadata: job.data.request.metadata ?? null,
            source: job.data.source ?? null,
          };
          await this.connection.set(this.keys.cancelled(id), JSON.stringify(tomb), 'PX', this.config.queue.remove_on_fail.age_ms);
          await this.connection.publish(this.keys.events(id), JSON.stringify({ type: 'cancelled', at: tomb.cancelled_at }));
          this.onQueuedCancel?.(tomb.model);
          return { status: 'cancelled' };
        }
      }
      // Active (or became active while we looked): the worker holding it aborts on this message.
      await this.connection.publish(this.keys.cancelChannel, id);
      return { status: 'cancelling' };
    } catch (err) {
      throw asRedisError(err);
    }
  }

  /**
   * Tells the workers a client follows this job, so they publish its status and tokens
   * (unwatched jobs publish nothing). Re-announce while waiting: workers remember it for a minute.
   * `catchUp`: a worker that already publishes them sends the text so far again (a client joined
   * mid-answer).
   */
  watch(id: string, catchUp = false): Promise<void> {
    this.watched.set(id, true);
    return this.bounded(this.watchNow(id, catchUp));
  }

  /**
   * Announces again the watches made lately (those of the last 20 s at least): for a worker that
   * has just started serving a model, which heard none of them. Returns how many.
   */
  async reannounceWatches(): Promise<number> {
    const ids = this.watched.keys();
    if (ids.length === 0) return 0;
    const pipeline = this.connection.pipeline();
    for (const id of ids) pipeline.publish(this.keys.watchChannel, id);
    const replies = await this.bounded(pipeline.exec().catch((err: unknown) => Promise.reject(asRedisError(err))));
    const failed = replies?.find(([err]) => err !== null)?.[0];
    if (failed) throw asRedisError(failed);
    return ids.length;
  }

  private async watchNow(id: string, catchUp: boolean): Promise<void> {
    try {
      await this.connection.publish(this.keys.watchChannel, catchUp ? CATCH_UP + id : id);
    } catch (err) {
      throw asRedisError(err);
    }
  }

  counts(): Promise<QueueCounts[]> {
    return this.bounded(this.countsNow());
  }

  private async countsNow(): Promise<QueueCounts[]> {
    try {
      return await Promise.all(
        this.modelNames().map(async (model) => {
          const q = this.queue(model);
          const [c, paused] = await Promise.all([q.getJobCounts('waiting', 'prioritized', 'paused', 'active', 'delayed', 'completed', 'failed'), q.isPaused()]);
          return {
            model,
            paused,
            waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.paused ?? 0),
            active: c.active ?? 0,
            delayed: c.delayed ?? 0,
            completed: c.completed ?? 0,
            failed: c.failed ?? 0,
          };
        }),
      );
    } catch (err) {
      throw asRedisError(err);
    }
  }

  /**
   * Worker processes taking jobs of each model now: BullMQ names each worker's blocking connection
   * after its queue (as its Queue.getWorkers reads them), so one CLIENT LIST counts them all.
   * 0 means jobs wait until a worker that can serve the model starts, e.g. once its file is there.
   */
  workerCounts(): Promise<Record<string, number>> {
    return this.bounded(this.workerCountsNow());
  }

  private async workerCountsNow(): Promise<Record<string, number>> {
    let list: string;
    try {
      list = String(await this.connection.client('LIST'));
    } catch (err) {
      throw asRedisError(err);
    }
    const names = new Map<string, number>();
    for (const match of list.matchAll(/(?:^|\s)name=(\S+)/g)) {
      const name = match[1] ?? '';
      // A named worker's connection is "<queue's client name>:w:<worker name>".
      const base = name.includes(':w:') ? name.slice(0, name.indexOf(':w:')) : name;
      names.set(base, (names.get(base) ?? 0) + 1);
    }
    // BullMQ's client name for a queue (QueueBase.clientName, protected): prefix and base64 name.
    const clientName = (model: string) => `${this.config.redis.prefix}:${Buffer.from(model).toString('base64')}`;
    return Object.fromEntries(this.modelNames().map((model) => [model, names.get(clientName(model)) ?? 0]));
  }

  /**
   * Reports of workers that could not start a model (see UnservedReporter), for configured
   * models: model → report. A model with a report may still be served by another worker.
   */
  unservedReports(): Promise<Map<string, UnservedReport>> {
    return this.bounded(this.unservedReportsNow());
  }

  private async unservedReportsNow(): Promise<Map<string, UnservedReport>> {
    const models = this.modelNames();
    let raw: (string | null)[];
    try {
      raw = models.length === 0 ? [] : await this.connection.mget(...models.map((m) => this.keys.unserved(m)));
    } catch (err) {
      throw asRedisError(err);
    }
    const reports = new Map<string, UnservedReport>();
    models.forEach((model, i) => {
      const report = parseReport(raw[i]);
      if (report) reports.set(model, report);
    });
    return reports;
  }

  /**
   * Why no worker serves `model`, when a worker reported that it could not and no worker process
   * takes its jobs now; undefined while the model is served, or nobody said why not (jobs then
   * wait for a worker, as a queue's jobs do).
   */
  notServed(model: string): Promise<UnservedReport | undefined> {
    return this.bounded(this.notServedNow(model));
  }

  private async notServedNow(model: string): Promise<UnservedReport | undefined> {
    let report: UnservedReport | undefined;
    try {
      report = parseReport(await this.connection.get(this.keys.unserved(model)));
    } catch (err) {
      throw asRedisError(err);
    }
    return report ? (await this.withoutWorkers(new Map([[model, report]]))).get(model) : undefined;
  }

  /** Of these reports, those of models no worker process takes jobs of now (one CLIENT LIST, none when empty). */
  private async withoutWorkers(reports: Map<string, UnservedReport>): Promise<Map<string, UnservedReport>> {
    if (reports.size === 0) return reports;
    const counts = await this.workerCountsNow();
    for (const model of [...reports.keys()]) if ((counts[model] ?? 0) > 0) reports.delete(model);
    return reports;
  }

  /**
   * notServed() without waiting for Redis, for the enqueue path: from a snapshot of all models at
   * most 5 s old. An older one is refreshed in the background and not used meanwhile, so the first
   * call after start or after a quiet spell knows nothing rather than something out of date.
   */
  notServedHint(model: string): UnservedReport | undefined {
    if (Date.now() - this.unservedReadAt <= 5_000) return this.unservedSnapshot.get(model);
    void this.refreshUnserved();
    return undefined;
  }

  /**
   * notServedHint() for a caller that can wait one read: a snapshot older than 5 s is read again
   * first (one MGET, and one CLIENT LIST when some worker reported), so the first request after
   * start or a quiet spell is told too. A read slower than 500 ms is not waited for (the snapshot
   * is a hint: the job is enqueued, and its wait's poll finds out); it never fails the caller.
   */
  async notServedFresh(model: string): Promise<UnservedReport | undefined> {
    if (Date.now() - this.unservedReadAt > 5_000) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.refreshUnserved(), new Promise<void>((r) => (timer = setTimeout(r, 500)))]);
      clearTimeout(timer);
    }
    return this.notServedHint(model);
  }

  /** Reads the snapshot again; one read at a time, shared by whoever asks meanwhile. Never rejects. */
  private refreshUnserved(): Promise<void> {
    this.unservedRefresh ??= this.unservedReportsNow()
      .then((reports) => this.withoutWorkers(reports))
      .then(
        (reports) => {
          this.unservedSnapshot = reports;
        },
        () => {
          this.unservedSnapshot = new Map();
        },
      )
      .finally(() => {
        this.unservedReadAt = Date.now();
        this.unservedRefresh = undefined;
      });
    return this.unservedRefresh;
  }

  /** The `warning` of a queued job of `model` while no worker serves it (see notServedHint). */
  waitWarning(model: string): string | undefined {
    const report = this.notServedHint(model);
    return report && waitsForWorker(model, report);
  }

  async listDlq(offset = 0, limit = 100): Promise<{ total: number; entries: DlqEntry[] }> {
    try {
      const [total, jobs] = await Promise.all([this.dlq.count(), this.dlq.getJobs(['waiting', 'paused', 'prioritized'], offset, offset + limit - 1, true)]);
      return { total, entries: jobs.filter(Boolean).map((j) => j.data as DlqEntry) };
    } catch (err) {
      throw asRedisError(err);
    }
  }

  async getDlq(id: string): Promise<DlqEntry | null> {
    const job = await this.dlq.getJob(toBullId(id)).catch((err: unknown) => {
      throw asRedisError(err);
    });
    return job ? (job.data as DlqEntry) : null;
  }

  /** Puts a dead-lettered job back in its model queue with fresh attempts (same id). */
  async replayDlq(id: string): Promise<EnqueueResult> {
    try {
      const bullId = toBullId(id);
      const entry = await this.dlq.getJob(bullId);
      if (!entry) throw new LlmqError('ERR_DLQ_NOT_FOUND', `no dead-lettered job "${id}"`, { param: 'id' });
      const data = entry.data as DlqEntry;
      const model = this.model(data.model);
      const queue = this.queue(model.name);
      const existing = await queue.getJob(bullId);
      if (existing) {
        const state = await existing.getState();
        if (state !== 'failed' && state !== 'completed') {
          throw new LlmqError('ERR_JOB_FINISHED', `job "${id}" is ${state} in its queue; it cannot be replayed now`, { param: 'id' });
        }
        await existing.remove();
      }
      const { priority } = existing?.opts ?? {};
      // The replay starts clean: the old failure's details must not show beside a new failure.
      const { failure: _old, ...fresh } = data.data;
      await queue.add('llm', { ...fresh, sinks_done: fresh.sinks_done ?? [] }, jobOptions(this.config, model, bullId, priority));
      await entry.remove();
      return { id, created: true };
    } catch (err) {
      throw asRedisError(err);
    }
  }

  async close(): Promise<void> {
    const queues = [...this.queues.values(), ...(this.dlqQueue ? [this.dlqQueue] : [])];
    // BullMQ drops a Queue's error listeners when it closes; a Redis version check still in flight
    // on the shared connection would then fail unheard (an unhandled rejection) once the caller
    // disconnects it. A queue made just before close (the gateway's, at start-up) finishes it first.
    await Promise.race([Promise.allSettled(queues.map((q) => q.waitUntilReady())), sleep(1_000)]);
    await Promise.allSettled(queues.map((q) => q.close()));
  }
}
