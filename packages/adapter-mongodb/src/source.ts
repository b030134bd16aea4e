import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { defineSource, errorCode, errorDetail, type EnqueueInput, type Logger, type Source, type SourceContext } from '@llmq/core';
import { mongoSourceConfigSchema, type MongoSourceConfig } from './config.js';
import {
  CHANGE_STREAM_HISTORY_LOST,
  openMongoClient,
  mongoErrorCode,
  type ChangeEvent,
  type ChangeStreamLike,
  type CollectionLike,
  type Document,
  type EjsonLike,
  type MongoClientLike,
} from './driver.js';
import { LOCK_LOST, LeaderLock } from './lock.js';
import { enqueueIsolating } from '@llmq/core';
import { asMongoRef, documentToJob, writeBackOf, type WriteBack } from './mapping.js';
import { childController } from './util.js';
import { errSummary, sleep } from '@llmq/core';
import { markDocumentFailed, type FailureInfo } from './writes.js';

const MAX_BACKOFF_MS = 30_000;

export type MongoSourceMode = 'change_stream' | 'poll';

/** What the source is doing, for `check()`, tests and status pages. */
export interface MongoSourceStatus {
  mode: MongoSourceMode | undefined;
  /** Change-stream mode: whether this instance holds the per-collection watch lock. */
  leader: boolean;
  /** Jobs handed to `enqueue` that it accepted. */
  enqueued: number;
  /** Documents marked failed because they were not valid requests. */
  invalid: number;
  /** Resume tokens stored. */
  checkpoints: number;
  scans: number;
}

export interface MongoSourceDeps {
  /** A connected client (tests pass a fake); else one is created from `url`/`url_env`. */
  client?: MongoClientLike;
  /** EJSON for `_id`s; else the driver's. */
  ejson?: EjsonLike;
  /** Identifies this instance in locks and claims. */
  owner?: string;
  now?: () => number;
}

/** Input to {@link MongoSource.markFailed} and {@link MongoSink.markFailed}. */
export interface MarkFailedInput {
  jobId: string;
  /** The job's `source` (its `ref` says which document and which fields). */
  source: { type: string; ref?: Record<string, unknown> | undefined } | undefined;
  error: FailureInfo;
}

/**
 * Turns documents of one collection into jobs. Change-stream mode: one active watcher per
 * collection (a lock in the source's kv), resume tokens checkpointed only after enqueue
 * resolved, catch-up scans for documents still pending. Poll mode: claims with
 * findOneAndUpdate and a lease, so any number of connectors share the work.
 */
export class MongoSource implements Source {
  readonly name: string;
  private readonly config: MongoSourceConfig;
  private readonly ctx: SourceContext;
  private readonly log: Logger;
  private readonly client: MongoClientLike;
  private readonly ownsClient: boolean;
  private readonly collection: CollectionLike;
  private readonly ejson: EjsonLike;
  private readonly owner: string;
  private readonly now: () => number;
  private readonly write: WriteBack;
  private readonly ns: string;
  private readonly lock: LeaderLock;
  private readonly stop = new AbortController();
  private readonly disposeHostSignal: () => void;
  private readonly tasks = new Set<Promise<void>>();
  private mode: MongoSourceMode | undefined;
  private scanning: Promise<number> | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private lastCheckpoint: { token: string; at: number } | undefined;
  private started = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly counters = { enqueued: 0, invalid: 0, checkpoints: 0, scans: 0 };

  constructor(
    options: { name: string; config: MongoSourceConfig },
    ctx: SourceContext,
    deps: { client: MongoClientLike; ownsClient: boolean; ejson: EjsonLike; owner?: string | undefined; now?: (() => number) | undefined },
  ) {
    this.name = options.name;
    this.config = options.config;
    this.ctx = ctx;
    this.ns = `${this.config.db}.${this.config.collection}`;
    this.log = ctx.logger.child({ ns: this.ns });
    this.client = deps.client;
    this.ownsClient = deps.ownsClient;
    this.collection = this.client.db(this.config.db).collection(this.config.collection);
    this.ejson = deps.ejson;
    this.owner = deps.owner ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.now = deps.now ?? Date.now;
    this.write = writeBackOf(this.config);
    const ttl = this.config.lock_ttl_ms;
    this.lock = new LeaderLock({
      kv: ctx.kv,
      key: `watch-lock:${this.ns}`,
      owner: this.owner,
      ttlMs: ttl,
      renewMs: this.config.lock_renew_ms ?? Math.max(10, Math.floor(ttl / 3)),
      logger: this.log,
      now: this.now,
    });
    const onHostAbort = () => void this.close();
    ctx.signal.addEventListener('abort', onHostAbort, { once: true });
    this.disposeHostSignal = () => ctx.signal.removeEventListener('abort', onHostAbort);
  }

  private get resumeKey(): string {
    return `resume-token:${this.ns}`;
  }

  status(): MongoSourceStatus {
    return { mode: this.mode, leader: this.lock.held, ...this.counters };
  }

  async check(): Promise<void> {
    await this.client.db(this.config.db).command({ ping: 1 });
  }

  async start(): Promise<void> {
    if (this.started || this.closed) return;
    this.mode = this.config.mode === 'auto' ? await this.detectMode() : this.config.mode;
    if (this.started || this.closed) return;
    this.started = true;
    this.log.info({ mode: this.mode, owner: this.owner }, 'mongodb source starting');
    if (this.mode === 'poll') {
      this.track(this.pollLoop(this.stop.signal));
    } else {
      this.track(this.lock.run(this.stop.signal, (signal) => this.lead(signal)));
    }
  }

  /** Stops reading, waits for the batch in hand to be enqueued and checkpointed, releases the lock. */
  close(): Promise<void> {
    // The host may abort ctx.signal and call close() too: both wait for the same shutdown.
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.disposeHostSignal();
    this.stop.abort('closed');
    if (this.scanTimer) clearInterval(this.scanTimer);
    await Promise.allSettled([...this.tasks]);
    if (this.ownsClient) {
      try {
        await this.client.close();
      } catch (err) {
        this.log.warn({ err: errSummary(err) }, 'closing the mongodb client failed');
      }
    }
    this.log.info(this.counters, 'mongodb source closed');
  }

  /**
   * Marks the job's document failed (unless it already holds a result). The worker calls sinks
   * only on success, so the connector calls this for jobs that failed for good.
   * Returns false when the job is not from this source's collection or the document is done.
   */
  async markFailed(input: MarkFailedInput): Promise<boolean> {
    const ref = input.source?.type === 'mongodb' ? asMongoRef(input.source.ref) : undefined;
    if (!ref || ref.db !== this.config.db || ref.collection !== this.config.collection) return false;
    return markDocumentFailed(this.collection, this.ejson.parse(ref.id_ejson), ref.write, input.error, input.jobId, this.now());
  }

  private track(task: Promise<void>): void {
    const guarded = task.catch((err: unknown) => {
      this.log.error({ err: errSummary(err) }, 'mongodb source loop stopped unexpectedly');
    });
    this.tasks.add(guarded);
    void guarded.finally(() => this.tasks.delete(guarded));
  }

  private async detectMode(): Promise<MongoSourceMode> {
    const hello = await this.client.db(this.config.db).command({ hello: 1 });
    // Change streams need an oplog: replica-set members and mongos have one, a standalone does not.
    const replicated = typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
    if (!replicated) this.log.info('server is not a replica set: using polling claims instead of a change stream');
    return replicated ? 'change_stream' : 'poll';
  }

  // ------------------------------------------------------------ change-stream mode

  /** Runs while this instance holds the watch lock. */
  private async lead(signal: AbortSignal): Promise<void> {
    if (this.config.scan_interval_ms > 0) {
      this.scanTimer = setInterval(() => void this.scan('periodic', signal).catch(() => undefined), this.config.scan_interval_ms);
      this.scanTimer.unref();
    }
    try {
      await this.streamLoop(signal);
    } finally {
      if (this.scanTimer) clearInterval(this.scanTimer);
      this.scanTimer = undefined;
      await this.scanning?.catch(() => undefined);
    }
  }

  private async streamLoop(signal: AbortSignal): Promise<void> {
    let backoff = this.config.restart_backoff_ms;
    let scanFirst = true;
    while (!signal.aborted) {
      try {
        const token = await this.loadToken();
        await this.runStream(token, scanFirst, signal, () => {
          scanFirst = false;
          backoff = this.config.restart_backoff_ms;
        });
      } catch (err) {
        if (signal.aborted) break;
        if (mongoErrorCode(err) === CHANGE_STREAM_HISTORY_LOST) {
          this.log.error(
            { err: errSummary(err), code: CHANGE_STREAM_HISTORY_LOST },
            'CHANGE STREAM HISTORY LOST (ChangeStreamHistoryLost, code 286): the stored resume token is no longer in the oplog, so changes made while this source was behind cannot be replayed. ' +
              'Falling back to a full scan of pending documents and restarting the stream without the token. Consider a larger oplog.',
          );
          await this.forgetToken();
          scanFirst = true;
          continue;
        }
        this.log.warn({ err: errSummary(err), retry_in_ms: backoff }, 'change stream failed; restarting it from the last checkpoint');
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private async runStream(token: unknown, scanFirst: boolean, signal: AbortSignal, onHealthy: () => void): Promise<void> {
    const pipeline = this.pipeline();
    const stream = this.collection.watch(pipeline, {
      fullDocument: 'updateLookup',
      batchSize: this.config.batch_size,
      maxAwaitTimeMS: this.config.max_await_ms,
      ...(token === undefined ? {} : { resumeAfter: token }),
    });
    this.log.info({ resuming: token !== undefined }, token === undefined ? 'change stream opened from now' : 'change stream resumed after the stored token');
    const onAbort = () => void stream.close().catch(() => undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      // The first getMore opens the server-side cursor; scanning only after it means a document
      // written during the scan arrives as an event even if the scan misses it.
      const batch: ChangeEvent[] = [];
      const first = await stream.tryNext();
      if (first) batch.push(first);
      if (scanFirst) await this.scan(token === undefined ? 'start-up (no resume token)' : 'start-up', signal);
      onHealthy();
      while (!signal.aborted) {
        while (batch.length < this.config.batch_size && stream.bufferedCount() > 0) {
          const change = await stream.tryNext();
          if (!change) break;
          batch.push(change);
        }
        if (batch.length === 0) {
          const change = await stream.tryNext();
          if (change) batch.push(change);
          else await this.idleCheckpoint(stream, signal);
          continue;
        }
        // Taken now, before any further getMore: the token covers exactly the events in hand.
        const batchToken = stream.resumeToken ?? batch.at(-1)?._id;
        await this.handleChanges(batch);
        await this.checkpoint(batchToken, signal);
        batch.length = 0;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      await stream.close().catch(() => undefined);
    }
  }

  /** Inserts, replaces and updates whose document is now pending (that is, updates that made it so). */
  private pipeline(): Document[] {
    return [
      {
        $match: {
          operationType: { $in: ['insert', 'update', 'replace'] },
          [`fullDocument.${this.config.status.field}`]: this.config.status.pending,
        },
      },
    ];
  }

  private async handleChanges(changes: ChangeEvent[]): Promise<void> {
    // One job per document even when a batch holds several events for it.
    const docs = new Map<string, Document>();
    for (const change of changes) {
      const doc = change.fullDocument;
      if (doc) docs.set(this.ejson.stringify(doc._id), doc);
    }
    await this.enqueueDocuments([...docs.values()], 'stream');
  }

  private async idleCheckpoint(stream: ChangeStreamLike, signal: AbortSignal): Promise<void> {
    // After an empty batch the token is the server's post-batch token: every event before it
    // has been handled, so storing it keeps a quiet stream from falling off the oplog.
    const last = this.lastCheckpoint;
    if (last && this.now() - last.at < this.config.idle_checkpoint_ms) return;
    if (stream.resumeToken === undefined || stream.resumeToken === null) return;
    await this.checkpoint(stream.resumeToken, signal);
  }

  private async loadToken(): Promise<unknown> {
    const stored = await this.ctx.kv.get(this.resumeKey);
    if (stored === null || stored === '') return undefined;
    return this.ejson.parse(stored);
  }

  private async forgetToken(): Promise<void> {
    this.lastCheckpoint = undefined;
    try {
      await this.ctx.kv.set(this.resumeKey, '');
    } catch (err) {
      this.log.warn({ err: errSummary(err) }, 'could not clear the stored resume token');
    }
  }

  /** Stores the token; called only after the events before it were enqueued. */
  private async checkpoint(token: unknown, signal: AbortSignal): Promise<void> {
    if (token === undefined || token === null) return;
    // Another instance may lead now; an older token from us would only cost it re-delivery,
    // but there is no reason to write one.
    if (signal.aborted && signal.reason === LOCK_LOST) return;
    const text = this.ejson.stringify(token);
    if (this.lastCheckpoint?.token === text) return;
    try {
      await this.ctx.kv.set(this.resumeKey, text);
      this.lastCheckpoint = { token: text, at: this.now() };
      this.counters.checkpoints++;
    } catch (err) {
      // Not fatal: the next checkpoint carries on, and a restart meanwhile only re-delivers.
      this.log.warn({ err: errSummary(err) }, 'could not store the resume token');
    }
  }

  /** Enqueues every document still pending; coalesces with a scan already running. */
  private scan(reason: string, signal: AbortSignal): Promise<number> {
    if (this.scanning) return this.scanning;
    const run = this.scanPending(reason, signal).finally(() => {
      this.scanning = undefined;
    });
    this.scanning = run;
    return run;
  }

  private async scanPending(reason: string, signal: AbortSignal): Promise<number> {
    const { field, pending } = this.config.status;
    let total = 0;
    let after: unknown;
    try {
      while (!signal.aborted) {
        // Pages by _id rather than one long cursor: documents change status under the scan, and
        // a long-lived cursor would time out on a big backlog.
        const filter: Document = after === undefined ? { [field]: pending } : { [field]: pending, _id: { $gt: after } };
        const page = await this.collection.find(filter).sort({ _id: 1 }).limit(this.config.batch_size).toArray();
        if (page.length === 0) break;
        await this.enqueueDocuments(page, 'scan');
        total += page.length;
        after = page.at(-1)?._id;
        if (page.length < this.config.batch_size) break;
      }
      this.counters.scans++;
      const level = total > 0 || reason !== 'periodic' ? 'info' : 'debug';
      this.log[level]({ reason, enqueued: total }, 'catch-up scan finished');
      return total;
    } catch (err) {
      this.log.error({ err: errSummary(err), reason, enqueued: total }, 'catch-up scan failed; the next one picks up the rest');
      throw err;
    }
  }

  // ------------------------------------------------------------ polling mode

  private async pollLoop(signal: AbortSignal): Promise<void> {
    let backoff = this.config.restart_backoff_ms;
    while (!signal.aborted) {
      let claimed: Document[] = [];
      try {
        claimed = await this.claimBatch(signal);
      } catch (err) {
        this.log.warn({ err: errSummary(err), retry_in_ms: backoff }, 'claiming documents failed');
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      if (claimed.length === 0) {
        await sleep(this.config.poll_interval_ms, signal);
        continue;
      }
      try {
        await this.enqueueDocuments(claimed, 'poll');
        backoff = this.config.restart_backoff_ms;
      } catch (err) {
        this.log.error({ err: errSummary(err), documents: claimed.length, retry_in_ms: backoff }, 'enqueue failed; releasing the claimed documents');
        await this.releaseClaims(claimed);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      if (claimed.length < this.config.batch_size) await sleep(this.config.poll_interval_ms, signal);
    }
  }

  /**
   * Takes up to `batch_size` documents, one atomic findOneAndUpdate each, so two connectors can
   * never take the same one. A claim whose lease ran out (its connector died between claim and
   * enqueue) is taken like a pending document.
   */
  private async claimBatch(signal: AbortSignal): Promise<Document[]> {
    const { status, fields } = this.config;
    const claimed: Document[] = [];
    while (claimed.length < this.config.batch_size && !signal.aborted) {
      const now = this.now();
      const doc = await this.collection.findOneAndUpdate(
        {
          $or: [
            { [status.field]: status.pending },
            { [status.field]: status.claimed, [fields.lease_until]: { $lt: new Date(now) } },
          ],
        },
        {
          $set: {
            [status.field]: status.claimed,
            [fields.claimed_by]: this.owner,
            [fields.lease_until]: new Date(now + this.config.lease_ms),
          },
        },
        { sort: { _id: 1 }, returnDocument: 'after' },
      );
      if (!doc) break;
      claimed.push(doc);
    }
    return claimed;
  }

  private async releaseClaims(docs: Document[]): Promise<void> {
    const { status, fields } = this.config;
    try {
      await this.collection.updateMany(
        { _id: { $in: docs.map((d) => d._id) }, [status.field]: status.claimed, [fields.claimed_by]: this.owner },
        { $set: { [status.field]: status.pending }, $unset: { [fields.claimed_by]: '', [fields.lease_until]: '' } },
      );
    } catch (err) {
      this.log.warn({ err: errSummary(err) }, 'could not release claims; they lapse after lease_ms');
    }
  }

  // ------------------------------------------------------------ shared

  /**
   * Enqueues documents and then marks them queued. Throws when enqueue fails, so nothing
   * after it (status change, checkpoint) happens for jobs that are not durable.
   */
  private async enqueueDocuments(docs: Document[], via: 'stream' | 'scan' | 'poll'): Promise<void> {
    const jobs: EnqueueInput[] = [];
    const ids: unknown[] = [];
    const invalid: { doc: Document; err: unknown }[] = [];
    const accepted: Document[] = [];
    for (const doc of docs) {
      try {
        jobs.push(documentToJob(doc, this.config, { sourceName: this.name, ejson: this.ejson, write: this.write }));
        ids.push(doc._id);
        accepted.push(doc);
      } catch (err) {
        invalid.push({ doc, err });
      }
    }
    if (jobs.length > 0) {
      const results = await enqueueIsolating((batch) => this.ctx.enqueue(batch), jobs);
      const queued: unknown[] = [];
      let created = 0;
      results.forEach((r, i) => {
        if (r.ok) {
          queued.push(ids[i]);
          if (r.ok.created) created++;
        } else {
          const doc = accepted[i];
          if (doc) invalid.push({ doc, err: r.rejected });
        }
      });
      this.counters.enqueued += queued.length;
      this.log.debug({ via, jobs: queued.length, created }, 'enqueued');
      if (queued.length > 0) await this.markQueued(queued, via === 'poll');
    }
    for (const { doc, err } of invalid) await this.markInvalid(doc, err);
  }

  /**
   * The job is durable: the document leaves `pending`/`claimed`, so scans and claims pass it
   * over. Conditional, so it never overwrites a result the sink already wrote.
   */
  private async markQueued(ids: unknown[], claimedByUs: boolean): Promise<void> {
    const { status, fields } = this.config;
    const $set: Document = { [status.field]: status.queued };
    if (fields.queued_at !== null) $set[fields.queued_at] = new Date(this.now());
    const filter: Document = claimedByUs
      ? { _id: { $in: ids }, [status.field]: status.claimed, [fields.claimed_by]: this.owner }
      : { _id: { $in: ids }, [status.field]: status.pending };
    const update: Document = claimedByUs ? { $set, $unset: { [fields.claimed_by]: '', [fields.lease_until]: '' } } : { $set };
    try {
      await this.collection.updateMany(filter, update);
    } catch (err) {
      // Harmless beyond a repeat: the jobs exist, a later scan or claim enqueues them again and
      // the deterministic job id collapses the repeat.
      this.log.warn({ err: errSummary(err), documents: ids.length }, 'could not mark enqueued documents queued');
    }
  }

  private async markInvalid(doc: Document, err: unknown): Promise<void> {
    this.counters.invalid++;
    const message = errorDetail(err instanceof Error ? err.message : String(err));
    const code = errorCode(err) ?? 'ERR_REQUEST_INVALID';
    this.log.warn({ id: this.ejson.stringify(doc._id), code, reason: message }, 'document cannot become a job (not a valid request, or refused by the queue); marking it failed');
    const { status } = this.config;
    try {
      await this.collection.updateOne(
        { _id: doc._id, [status.field]: { $in: [status.pending, status.claimed] } },
        {
          $set: {
            [status.field]: status.failed,
            ...(this.write.error === null ? {} : { [this.write.error]: { message, code } }),
            ...(this.write.failed_at === null ? {} : { [this.write.failed_at]: new Date(this.now()) }),
          },
          $unset: { [this.write.claimed_by]: '', [this.write.lease_until]: '' },
        },
      );
    } catch (markErr) {
      this.log.warn({ err: errSummary(markErr) }, 'could not mark an invalid document failed');
    }
  }
}

/** Creates a source; tests pass a fake client through `deps`. */
export async function createMongoSource(
  options: { name: string; config: MongoSourceConfig },
  ctx: SourceContext,
  deps: MongoSourceDeps = {},
): Promise<MongoSource> {
  const { client, ejson, ownsClient } = await openMongoClient(options.config, ctx.env, `sources.${options.name}.options`, deps);
  return new MongoSource(options, ctx, { client, ownsClient, ejson, owner: deps.owner, now: deps.now });
}

/** `type: mongodb` source. */
export const mongoSource = defineSource<MongoSourceConfig>({
  kind: 'source',
  type: 'mongodb',
  configSchema: mongoSourceConfigSchema,
  create(options, ctx) {
    return createMongoSource(options, ctx);
  },
});
