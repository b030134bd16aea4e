import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  LlmqError,
  errorCode,
  errorDetail,
  errorDetails,
  isRetryable,
  toJobError,
  type Backend,
  type JobData,
  type JobResult,
  type Logger,
  type Sink,
  type UsageRecord,
  type GenerateInput,
  type GenerationRequest,
  type JobEvent,
} from '@llmq/core';
import type { ModelConfig, ResolvedConfig } from '@llmq/config';
import type { ControlListener, Running } from './control.js';
import type { EventPublisher } from './events.js';
import { DLQ_QUEUE, fromBullId, type Keys } from './keys.js';
import type { Metrics } from './metrics.js';
import { RateLimiter, estimateTokens } from './rate-limit.js';
import type { DlqEntry } from './producer.js';
import { LazyAbortController } from './lazy-abort.js';
import { logRedisError } from './redis-errors.js';

export interface SinkBinding {
  sink: Sink;
  /** Models whose results it receives; all when absent. */
  models?: string[] | undefined;
  /** Source types or names whose jobs it receives; all when absent. */
  sources?: string[] | undefined;
  /** What it receives. @defaultValue ["results"] */
  events?: ('results' | 'usage')[] | undefined;
}

export interface ModelWorkerOptions {
  config: ResolvedConfig;
  model: ModelConfig;
  backend: Backend;
  /** A `worker` role connection; BullMQ duplicates it for its blocking fetch. */
  connection: Redis;
  publisher: EventPublisher;
  control: ControlListener;
  metrics: Metrics;
  logger: Logger;
  keys: Keys;
  workerId: string;
  sinks?: SinkBinding[];
  /** Backend type, for usage records. */
  backendType?: string;
  /** Backends of other models, for `fallbacks` (created on first use). */
  backendFor?: (model: string) => Promise<Backend>;
}

/** How often a running job's progress is stored (see ModelWorker.reportProgress). */
export const PROGRESS_MS = 2_000;

function asError(reason: unknown): Error {
  if (reason instanceof Error) return reason;
  return new Error(String(reason));
}

/** A child logger created only if something logs (pino's child() is not free per job; nor are five closures). */
class LazyChild implements Logger {
  private made: Logger | undefined;
  constructor(
    private readonly parent: Logger,
    private readonly bindings: Record<string, unknown>,
  ) {}
  private get logger(): Logger {
    return (this.made ??= this.parent.child(this.bindings));
  }
  debug(o: object | string, m?: string): void {
    this.logger.debug(o, m);
  }
  info(o: object | string, m?: string): void {
    this.logger.info(o, m);
  }
  warn(o: object | string, m?: string): void {
    this.logger.warn(o, m);
  }
  error(o: object | string, m?: string): void {
    this.logger.error(o, m);
  }
  child(b: Record<string, unknown>): Logger {
    return this.logger.child(b);
  }
}

/**
 * One attempt of a job in this process: its (lazy) abort controller, its deadline and the text
 * streamed so far; the control channel cancels it or starts watching it. One object per attempt
 * rather than a handful of closures and a timer each.
 */
class Attempt extends LazyAbortController implements Running {
  watched = false;
  firstTokenAt: number | undefined;
  /** Text so far, so a client that starts watching mid-generation can catch up. */
  text = '';
  /** When the running generation started: the attempt's start, or a fallback model's. */
  generationAt: number;
  /** Length of the text last stored as the job's progress (see ModelWorker.reportProgress). */
  reportedChars = 0;
  index = 0;
  readonly deadline: number;

  constructor(
    private readonly host: ModelWorker,
    readonly job: Job<JobData, JobResult>,
    readonly id: string,
    readonly attempt: number,
    readonly startedAt: number,
    readonly timeoutMs: number,
  ) {
    super();
    this.generationAt = startedAt;
    // Monotonic, like the setTimeout it replaces: a step of the wall clock moves no deadline.
    this.deadline = performance.now() + timeoutMs;
  }

  cancel(): void {
    this.abort(new LlmqError('ERR_JOB_CANCELLED', 'cancelled by request'));
  }

  timeOut(): void {
    this.abort(new LlmqError('ERR_JOB_TIMEOUT', `job ran longer than timeout_ms (${this.timeoutMs} ms)`));
  }

  onWatch(): void {
    this.watched = true;
    this.host.publishStatus(this);
    if (this.text.length > 0) this.host.publish(this.id, { type: 'token', text: this.text, index: this.index++, offset: 0 });
  }

  readonly onToken = (piece: string): void => {
    if (this.aborted) return;
    if (this.firstTokenAt === undefined) this.firstTokenAt = Date.now();
    if (this.watched) this.host.publish(this.id, { type: 'token', text: piece, index: this.index++, offset: this.text.length });
    this.text += piece;
  };

  /** What a backend call gets; the text so far restarts with each call (a fallback starts over). */
  input(model: string, request: GenerationRequest, logger: Logger): GenerateInput {
    this.text = '';
    const run = this;
    return {
      jobId: this.id,
      attempt: this.attempt,
      model,
      request,
      // Made on first use: a backend that answers without waiting never pays for a signal.
      get signal() {
        return run.signal;
      },
      logger,
      onToken: this.onToken,
    };
  }
}

/** Puts a code on errors that have none, so the failure reason always carries one. */
function coded(err: Error): string {
  return errorCode(err) ? err.message : `ERR_BACKEND_FAILED: ${err.message}`;
}

/**
 * Runs one model's queue in this process: fetches jobs, runs the backend with a timeout and
 * cancellation, streams tokens, keeps the result on the job before sink writes, retries,
 * dead-letters, and shuts down gracefully.
 */
export class ModelWorker {
  private worker: Worker<JobData, JobResult>;
  readonly queue: Queue;
  private readonly dlq: Queue;
  /**
   * Attempts running here. A set, not a map by job id: BullMQ can hand a job whose lock was lost
   * back to this same worker while the first attempt still runs, and both need their deadline.
   */
  private readonly inflight = new Set<Attempt>();
  /** One timer for all in-flight deadlines, armed for the earliest. */
  private deadlineTimer: NodeJS.Timeout | undefined;
  private deadlineAt = Infinity;
  /** Set once BullMQ has let every job end on close: no deadline is armed after that. */
  private deadlinesOff = false;
  private readonly dlqAdded = new Set<string>();
  private lastProgressAt = Date.now();
  private watchdog: NodeJS.Timeout | undefined;
  private progressTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private readonly log: Logger;
  private readonly limiter: RateLimiter | undefined;
  /** Metrics bound to this model's label once; their per-job updates are plain additions. */
  private readonly m;

  constructor(private readonly o: ModelWorkerOptions) {
    this.log = o.logger.child({ model: o.model.name });
    const labels = { model: o.model.name };
    this.m = {
      active: o.metrics.active.hot(labels),
      wait: o.metrics.waitSeconds.hot(labels),
      processing: o.metrics.processingSeconds.hot(labels),
      ttft: o.metrics.ttftSeconds.hot(labels),
      tokensIn: o.metrics.tokensIn.hot(labels),
      tokensOut: o.metrics.tokensOut.hot(labels),
      completed: o.metrics.completed.hot(labels),
    };
    this.queue = new Queue(o.model.name, { connection: o.connection, prefix: o.config.redis.prefix });
    this.dlq = new Queue(DLQ_QUEUE, { connection: o.connection, prefix: o.config.redis.prefix });
    this.queue.on('error', (err) => logRedisError(this.log, 'queue connection error', err));
    this.dlq.on('error', (err) => logRedisError(this.log, 'dlq connection error', err));
    const rl = o.model.rate_limit;
    this.limiter = rl && (rl.rpm || rl.tpm) ? new RateLimiter(o.connection, o.keys.rateLimit(o.model.name), rl) : undefined;
    this.worker = this.createWorker();
    const every = o.config.worker.watchdog_ms;
    if (every > 0) {
      this.watchdog = setInterval(() => void this.checkProgress(), Math.max(1000, Math.floor(every / 2)));
      this.watchdog.unref();
    }
    this.progressTimer = setInterval(() => this.reportProgress(), PROGRESS_MS);
    this.progressTimer.unref();
  }

  /**
   * Stores how far each running generation has got as its job's progress (`generated_chars`, and
   * when its first token came), for `GET /v1/jobs/:id` and Bull Board: a client that polls a long
   * job sees it move. At most one write per running job every PROGRESS_MS, and none for a job
   * whose text did not grow: nothing per token, and nothing for jobs that end sooner.
   */
  private reportProgress(): void {
    if (this.inflight.size === 0) return;
    const at = Date.now();
    for (const run of this.inflight) {
      const chars = run.text.length;
      // Not before a job has run PROGRESS_MS: one that ends sooner is never written.
      if (chars === run.reportedChars || run.aborted || at - run.startedAt < PROGRESS_MS) continue;
      run.reportedChars = chars;
      // `run`: BullMQ's count of starts, which also moves when a stalled or handed-back job runs
      // again without spending an attempt, so no other run's progress passes for this one's.
      run.job
        .updateProgress({ run: run.job.attemptsStarted, generated_chars: chars, updated_at: at, first_token_at: run.firstTokenAt })
        .catch((err: unknown) => this.log.debug({ err, jobId: run.id }, 'could not store job progress'));
    }
  }

  get name(): string {
    return this.o.model.name;
  }

  private createWorker(): Worker<JobData, JobResult> {
    const { config, model } = this.o;
    const worker = new Worker<JobData, JobResult>(model.name, (job, token) => this.process(job, token), {
      connection: this.o.connection,
      prefix: config.redis.prefix,
      concurrency: model.concurrency,
      lockDuration: config.queue.lock_duration_ms,
      stalledInterval: config.queue.stalled_interval_ms,
      maxStalledCount: config.queue.max_stalled_count,
      autorun: true,
    });
    worker.on('completed', (job, result) => this.onCompleted(job, result));
    worker.on('failed', (job, err) => void this.onFailed(job, err));
    worker.on('stalled', (jobId) => {
      this.o.metrics.stalled.inc({ model: model.name });
      this.log.warn({ jobId: fromBullId(jobId) }, 'job stalled (its worker died or lost the lock); it will run again');
    });
    worker.on('error', (err) => logRedisError(this.log, 'worker error', err));
    return worker;
  }

  private sinksFor(data: JobData): SinkBinding[] {
    const source = data.source;
    return (this.o.sinks ?? []).filter(
      (b) =>
        (!b.models || b.models.includes(this.o.model.name)) &&
        (!b.sources || (source !== undefined && (b.sources.includes(source.type) || (source.name !== undefined && b.sources.includes(source.name))))),
    );
  }

  private async process(job: Job<JobData, JobResult>, token: string | undefined): Promise<JobResult> {
    const { model, backend, metrics, control } = this.o;
    const id = fromBullId(job.id ?? '');
    const data = job.data;
    const startedAt = Date.now();
    const timeoutMs = data.request.timeout_ms ?? model.timeout_ms;
    const run = new Attempt(this, job, id, job.attemptsMade + 1, startedAt, timeoutMs);
    this.lastProgressAt = startedAt;
    this.inflight.add(run);
    this.armDeadline(run.deadline);
    const tracked = control.track(id, run);
    run.watched = tracked.watched;
    if (tracked.cancelled) run.cancel();
    if (job.attemptsMade === 0) this.m.wait.observe(Math.max(0, startedAt - job.timestamp) / 1000);
    this.m.active.inc();
    if (run.watched) this.publishStatus(run);
    const log = new LazyChild(this.log, { jobId: id, attempt: run.attempt });
    try {
      let result = data.result;
      if (!result) {
        if (run.aborted) throw run.reason;
        let reservation: { window: number; estimate: number } | undefined;
        if (this.limiter) {
          const estimate = estimateTokens(data.request);
          const { waitMs, window } = await this.limiter.reserve(estimate);
          if (waitMs > 0) {
            // Over the model's shared RPM/TPM: the job waits in the queue, no attempt spent.
            metrics.throttledSeconds.inc({ model: model.name, reason: 'rate_limit' }, waitMs / 1000);
            await this.queue.rateLimit(waitMs);
            throw Worker.RateLimitError();
          }
          reservation = { window, estimate };
        }
        const call = (b: Backend, name: string) => b.generate(run.input(name, data.request, log));
        let servedBy = model.name;
        let out: Awaited<ReturnType<Backend['generate']>>;
        try {
          out = await call(backend, model.name);
        } catch (err) {
          const fallback = await this.fallback(err, run, job, call, log);
          if (!fallback) throw err;
          ({ out, servedBy } = fallback);
        }
        if (run.aborted) throw run.reason;
        const completedAt = Date.now();
        result = {
          text: out.text,
          finish_reason: out.finish_reason,
          usage: {
            prompt_tokens: out.usage.prompt_tokens,
            completion_tokens: out.usage.completion_tokens,
            total_tokens: out.usage.total_tokens ?? out.usage.prompt_tokens + out.usage.completion_tokens,
          },
          model: servedBy,
          started_at: startedAt,
          first_token_at: run.firstTokenAt,
          completed_at: completedAt,
          worker: this.o.workerId,
        };
        this.m.processing.observe((completedAt - startedAt) / 1000);
        if (run.firstTokenAt !== undefined) this.m.ttft.observe((run.firstTokenAt - startedAt) / 1000);
        if (reservation && this.limiter) {
          await this.limiter.correct(reservation.window, reservation.estimate, result.usage.total_tokens).catch((err: unknown) => log.debug({ err }, 'rate-limit correction failed'));
        }
        this.m.tokensIn.inc(result.usage.prompt_tokens);
        this.m.tokensOut.inc(result.usage.completion_tokens);
      }
      const sinks = this.o.sinks && this.o.sinks.length > 0 ? this.sinksFor(data) : [];
      if (sinks.length > 0) await this.writeSinks(job, result, sinks, run.signal, log);
      return result;
    } catch (err) {
      throw await this.failure(job, token, err, run, log);
    } finally {
      control.untrack(id);
      this.inflight.delete(run);
      // Idle: no timer holds the process for a deadline nobody has any more.
      if (this.inflight.size === 0) this.disarmDeadline();
      this.m.active.dec();
      this.lastProgressAt = Date.now();
    }
  }

  /** @internal For {@link Attempt}. */
  publish(id: string, event: JobEvent): void {
    this.o.publisher.publish(id, event);
  }

  /** @internal For {@link Attempt}. */
  publishStatus(run: Attempt): void {
    this.o.publisher.publish(run.id, { type: 'status', status: 'active', attempt: run.attempt, worker: this.o.workerId, at: run.generationAt });
  }

  private armDeadline(at: number): void {
    if (this.deadlinesOff || at >= this.deadlineAt) return;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineAt = at;
    this.deadlineTimer = setTimeout(() => this.expire(), Math.max(0, at - performance.now()));
    this.deadlineTimer.unref();
  }

  /** Times out the attempts past their deadline and re-arms for the next one. */
  private expire(): void {
    this.deadlineTimer = undefined;
    this.deadlineAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const run of this.inflight) {
      if (run.aborted) continue;
      if (run.deadline <= now) run.timeOut();
      else if (run.deadline < next) next = run.deadline;
    }
    if (next < Infinity) this.armDeadline(next);
  }

  private disarmDeadline(): void {
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.deadlineAt = Infinity;
  }

  /** Result first, then each sink once: a failed write retries only the writes still missing. */
  private async writeSinks(job: Job<JobData, JobResult>, result: JobResult, sinks: SinkBinding[], signal: AbortSignal, log: Logger): Promise<void> {
    const done = new Set(job.data.sinks_done ?? []);
    if (!job.data.result) await job.updateData({ ...job.data, result });
    const writes = sinks.flatMap((b) => (b.events ?? ['results']).map((kind) => ({ sink: b.sink, kind, key: kind === 'results' ? b.sink.name : `usage:${b.sink.name}` })));
    for (const { sink, kind, key } of writes) {
      if (done.has(key)) continue;
      try {
        if (kind === 'results') {
          await sink.write({ jobId: fromBullId(job.id ?? ''), model: this.o.model.name, request: job.data.request, result, source: job.data.source, signal, logger: log });
        } else if (sink.writeUsage) {
          await sink.writeUsage(this.usageRecord(job, result), { signal, logger: log });
        }
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        const code = errorCode(err);
        throw new LlmqError(code && code !== 'ERR_INTERNAL' ? code : 'ERR_SINK_WRITE', `sink "${sink.name}": ${errorDetail(asError(err).message)}`, {
          cause: err,
          retryable: isRetryable(err),
        });
      }
      done.add(key);
      await job.updateData({ ...job.data, result, sinks_done: [...done] });
    }
  }

  private usageRecord(job: Job<JobData, JobResult>, result: JobResult): UsageRecord {
    const created = job.data.created_at;
    return {
      object: 'usage',
      job_id: fromBullId(job.id ?? ''),
      model: this.o.model.name,
      served_by: result.model,
      backend: this.o.backendType ?? 'unknown',
      worker: this.o.workerId,
      key_id: job.data.key_id ?? null,
      source: job.data.source?.type ?? 'unknown',
      status: 'completed',
      created_at: created,
      started_at: result.started_at,
      first_token_at: result.first_token_at ?? null,
      completed_at: result.completed_at,
      queue_wait_ms: Math.max(0, result.started_at - created),
      processing_ms: result.completed_at - result.started_at,
      time_to_first_token_ms: result.first_token_at === undefined ? null : result.first_token_at - result.started_at,
      prompt_tokens: result.usage.prompt_tokens,
      completion_tokens: result.usage.completion_tokens,
      total_tokens: result.usage.total_tokens,
    };
  }

  /**
   * After the last attempt of a retryable failure, or at once on a context-length error, tries
   * the model's `fallbacks` in order within this job (same id, same event stream).
   */
  private async fallback(
    err: unknown,
    run: Attempt,
    job: Job<JobData, JobResult>,
    call: (b: Backend, name: string) => Promise<Awaited<ReturnType<Backend['generate']>>>,
    log: Logger,
  ): Promise<{ out: Awaited<ReturnType<Backend['generate']>>; servedBy: string } | undefined> {
    const fallbacks = this.o.model.fallbacks;
    if (fallbacks.length === 0 || !this.o.backendFor || run.aborted) return undefined;
    const code = errorCode(err);
    const lastAttempt = run.attempt >= (job.opts.attempts ?? 1);
    if (!(code === 'ERR_BACKEND_CONTEXT_LENGTH' || (isRetryable(err) && lastAttempt && code !== 'ERR_BACKEND_RATE_LIMITED' && code !== 'ERR_BACKEND_QUOTA'))) return undefined;
    let lastError = err;
    for (const name of fallbacks) {
      if (run.aborted) break;
      try {
        const b = await this.o.backendFor(name);
        log.warn({ fallback: name, code }, 'primary model failed: trying a fallback');
        run.generationAt = Date.now();
        if (this.o.control.isWatched(run.id)) this.publishStatus(run);
        return { out: await call(b, name), servedBy: name };
      } catch (e) {
        lastError = e;
        log.warn({ fallback: name, code: errorCode(e) }, 'fallback failed');
      }
    }
    throw lastError;
  }

  private async failure(job: Job<JobData, JobResult>, token: string | undefined, err: unknown, run: Attempt, log: Logger): Promise<Error> {
    const { model, metrics } = this.o;
    if (err instanceof Error && err.name === 'RateLimitError') return err;
    const reason = asError(run.aborted ? run.reason : err);
    const code = errorCode(reason);
    if (code === 'ERR_WORKER_SHUTDOWN' && token) {
      // Its watchers learn it waits again (and re-announce their watch for the next worker): before
      // the hand-back, so that the next worker's `active` cannot come first. Untracked first, so
      // that this process answers the re-announced watch with nothing rather than `active`.
      const id = fromBullId(job.id ?? '');
      this.o.control.untrack(id);
      this.o.control.end(id, { type: 'status', status: 'queued', at: Date.now() }, false);
      await this.o.publisher.flush();
      // Hand the job back without spending an attempt; another worker picks it up at once.
      await job.moveToDelayed(Date.now(), token);
      return new DelayedError();
    }
    if (code === 'ERR_BACKEND_RATE_LIMITED') {
      const ms = Number((reason as LlmqError).details?.retry_after_ms ?? 1000);
      metrics.throttledSeconds.inc({ model: model.name, reason: 'backend_429' }, ms / 1000);
      log.warn({ retry_after_ms: ms }, 'backend rate limited: slowing the whole queue');
      await this.queue.rateLimit(ms);
      return Worker.RateLimitError();
    }
    if (code === 'ERR_BACKEND_QUOTA' && token) {
      log.error({ err: reason.message }, 'backend quota exhausted: pausing the queue until resumed (POST /v1/queues/:model/resume)');
      metrics.alerts.inc({ model: model.name, kind: 'insufficient_quota' });
      metrics.queuePaused.set({ model: model.name }, 1);
      await this.queue.pause();
      await this.o.connection.publish(this.o.keys.alerts, JSON.stringify({ type: 'insufficient_quota', model: model.name, at: Date.now(), message: errorDetail(reason.message) }));
      await job.moveToDelayed(Date.now() + 1000, token);
      return new DelayedError();
    }
    const message = coded(reason);
    const details = errorDetails(reason);
    const retryable = isRetryable(reason);
    const maxAttempts = job.opts.attempts ?? 1;
    const final = !retryable || run.attempt >= maxAttempts;
    if (code === 'ERR_JOB_CANCELLED') {
      // Asked for (DELETE, a client gone): routine, not a failure to alert on.
      log.info({ code: 'ERR_JOB_CANCELLED' }, 'job cancelled');
    } else log.warn({ code: errorCode(message), final, attempts: maxAttempts }, final ? 'job failed' : 'job attempt failed, will retry');
    if (final && (details || run.firstTokenAt !== undefined)) {
      // BullMQ stores only the message: the details (and the first token's time, for a job
      // cancelled or timed out mid-answer) go beside it, so GET /v1/jobs/:id shows them.
      await job
        .updateData({ ...job.data, failure: { reason: message, details, first_token_at: run.firstTokenAt } })
        .catch((err: unknown) => log.warn({ err: asError(err).message }, 'could not store the error details'));
    }
    if (final && code !== 'ERR_JOB_CANCELLED') await this.deadLetter(job, message, run.attempt, details);
    if (final) await this.notifyFailure(job, message, log);
    const out = final ? new UnrecoverableError(message) : new Error(message);
    // BullMQ hands this same object to the 'failed' listener, which publishes the event.
    return details ? Object.assign(out, { details }) : out;
  }

  /** Lets sinks mark the source record failed (e.g. a MongoDB document's status). */
  private async notifyFailure(job: Job<JobData, JobResult>, message: string, log: Logger): Promise<void> {
    const error = { message: errorDetail(message), code: errorCode(message) ?? 'ERR_INTERNAL' };
    for (const { sink } of this.sinksFor(job.data)) {
      if (!sink.writeFailure) continue;
      try {
        await sink.writeFailure({ jobId: fromBullId(job.id ?? ''), model: this.o.model.name, request: job.data.request, source: job.data.source, error, signal: AbortSignal.timeout(10_000), logger: log });
      } catch (err) {
        log.warn({ sink: sink.name, err: asError(err).message }, 'sink could not record the failure');
      }
    }
  }

  private async deadLetter(job: Job<JobData, JobResult>, message: string, attempts: number, details?: Record<string, unknown>): Promise<void> {
    const id = fromBullId(job.id ?? '');
    const entry: DlqEntry = {
      id,
      model: this.o.model.name,
      error: toJobError(message, details),
      attempts,
      failed_at: Date.now(),
      source: job.data.source ?? null,
      data: job.data,
    };
    await this.dlq.add('dead', entry, { jobId: job.id, removeOnComplete: true });
    this.dlqAdded.add(id);
    this.o.metrics.deadLettered.inc({ model: this.o.model.name });
  }

  private onCompleted(job: Job<JobData, JobResult>, result: JobResult): void {
    this.m.completed.inc();
    this.o.control.end(fromBullId(job.id ?? ''), { type: 'completed', result }, true);
  }

  private async onFailed(job: Job<JobData, JobResult> | undefined, err: Error): Promise<void> {
    if (!job) return;
    const id = fromBullId(job.id ?? '');
    const code = errorCode(err.message) ?? 'ERR_INTERNAL';
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1) || job.finishedOn !== undefined;
    const { metrics, control, model } = this.o;
    if (code === 'ERR_JOB_CANCELLED') {
      // A client's choice, counted on its own: an error-rate alert on failed_total must not fire on it.
      metrics.cancelled.inc({ model: model.name });
      control.end(id, { type: 'cancelled', at: Date.now() }, true);
      return;
    }
    metrics.failed.inc({ model: model.name, code });
    if (!final) metrics.retried.inc({ model: model.name });
    control.end(id, { type: 'failed', error: toJobError(err.message, errorDetails(err)), attempt: job.attemptsMade, will_retry: !final }, final);
    // Jobs failed by the stalled checker never ran our catch block: dead-letter them here.
    if (final && !this.dlqAdded.delete(id)) {
      const message = err.message.startsWith('ERR_') ? err.message : `ERR_WORKER_SHUTDOWN: ${err.message}`;
      await this.deadLetter(job, message, job.attemptsMade).catch((e: unknown) => this.log.error({ err: e, jobId: id }, 'could not dead-letter job'));
      await this.notifyFailure(job, message, this.log);
      this.dlqAdded.delete(id);
    }
  }

  /** A backlog with nothing running for `watchdog_ms`: the fetch loop is stuck; rebuild it. */
  private async checkProgress(): Promise<void> {
    if (this.closing) return;
    try {
      const idleFor = Date.now() - this.lastProgressAt;
      if (this.inflight.size > 0 || idleFor < this.o.config.worker.watchdog_ms) return;
      const [waiting, paused, limited] = await Promise.all([this.queue.getWaitingCount(), this.queue.isPaused(), this.queue.getRateLimitTtl()]);
      if (waiting === 0 || paused || limited > 0) {
        this.lastProgressAt = Date.now();
        return;
      }
      this.log.warn({ waiting, idle_ms: idleFor }, 'backlog with no progress: rebuilding the worker connection');
      this.o.metrics.watchdogRestarts.inc({ model: this.o.model.name });
      const old = this.worker;
      this.lastProgressAt = Date.now();
      this.worker = this.createWorker();
      await old.close(true).catch(() => undefined);
    } catch (err) {
      this.log.debug({ err }, 'watchdog check failed');
    }
  }

  /**
   * Stops taking jobs and lets in-flight ones finish for up to `graceMs`; after that, aborts them
   * and hands them back to the queue for another worker.
   */
  async close(graceMs: number): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.watchdog) clearInterval(this.watchdog);
    const closed = this.worker.close().finally(() => {
      this.deadlinesOff = true;
      this.disarmDeadline();
      // Only now: jobs still generating through the grace period keep showing their progress.
      clearInterval(this.progressTimer);
    });
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), graceMs);
    });
    const outcome = await Promise.race([closed.then(() => 'closed' as const), expired]);
    clearTimeout(timer);
    if (outcome === 'expired') {
      this.log.warn({ inflight: this.inflight.size }, 'grace period over: handing in-flight jobs back to the queue');
      for (const run of this.inflight) run.abort(new LlmqError('ERR_WORKER_SHUTDOWN', 'worker shutting down'));
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
      await Promise.race([this.worker.close(true), new Promise((r) => setTimeout(r, 1000).unref())]).catch(() => undefined);
    }
    await Promise.race([Promise.allSettled([this.queue.close(), this.dlq.close()]), new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}
