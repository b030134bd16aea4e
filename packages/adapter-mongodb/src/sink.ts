import { LlmqError, defineSink, type AdapterContext, type Logger, type Sink, type SinkFailureInput, type SinkWriteInput } from '@llmq/core';
import { mongoSinkConfigSchema, type MongoSinkConfig } from './config.js';
import { openMongoClient, type EjsonLike, type MongoClientLike } from './driver.js';
import { asMongoRef, type WriteBack } from './mapping.js';
import type { MarkFailedInput } from './source.js';
import { errSummary } from '@llmq/core';
import { markDocumentFailed, upsertResult, writeResultBack, type ResultWriteOutcome } from './writes.js';

export interface MongoSinkDeps {
  client?: MongoClientLike;
  ejson?: EjsonLike;
  now?: () => number;
}

/**
 * Writes results to MongoDB: back onto the request document a mongodb source read (field
 * mapping from the job's `source.ref`), or, with `collection`, one document per job keyed by
 * job id. Idempotent by job id, and never replaces a result that finished later.
 */
export class MongoSink implements Sink {
  readonly name: string;
  private readonly config: MongoSinkConfig;
  private readonly log: Logger;
  private readonly client: MongoClientLike;
  private readonly ownsClient: boolean;
  private readonly ejson: EjsonLike;
  private readonly now: () => number;
  private readonly resultsWrite: WriteBack;

  constructor(
    options: { name: string; config: MongoSinkConfig },
    ctx: AdapterContext,
    deps: { client: MongoClientLike; ownsClient: boolean; ejson: EjsonLike; now?: (() => number) | undefined },
  ) {
    this.name = options.name;
    this.config = options.config;
    this.log = ctx.logger;
    this.client = deps.client;
    this.ownsClient = deps.ownsClient;
    this.ejson = deps.ejson;
    this.now = deps.now ?? Date.now;
    this.resultsWrite = {
      ...this.config.fields,
      status: this.config.status.field,
      done: this.config.status.done,
      failed: this.config.status.failed,
      claimed_by: 'llmq_claimed_by',
      lease_until: 'llmq_lease_until',
    };
  }

  async check(): Promise<void> {
    await this.client.db(this.config.db ?? 'admin').command({ ping: 1 });
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return;
    try {
      await this.client.close();
    } catch (err) {
      this.log.warn({ err: errSummary(err) }, 'closing the mongodb client failed');
    }
  }

  async write(input: SinkWriteInput): Promise<void> {
    if (input.signal.aborted) throw new LlmqError('ERR_SINK_WRITE', `mongodb sink "${this.name}": aborted before writing job ${input.jobId}`);
    let outcome: ResultWriteOutcome;
    let target: string;
    try {
      if (this.config.collection !== undefined && this.config.db !== undefined) {
        target = `${this.config.db}.${this.config.collection}`;
        const collection = this.client.db(this.config.db).collection(this.config.collection);
        const ref = input.source?.type === 'mongodb' ? asMongoRef(input.source.ref) : undefined;
        outcome = await upsertResult(collection, this.resultsWrite, input.jobId, input.result, {
          source: {
            type: input.source?.type ?? null,
            name: input.source?.name ?? null,
            ...(ref ? { db: ref.db, collection: ref.collection, id: ref.id } : {}),
          },
        });
      } else {
        const ref = input.source?.type === 'mongodb' ? asMongoRef(input.source.ref) : undefined;
        if (!ref) {
          throw new LlmqError(
            'ERR_SINK_WRITE',
            `mongodb sink "${this.name}": job ${input.jobId} did not come from a mongodb source, so there is no document to write back to; ` +
              'give the sink a "collection" (and "db") for results, or limit it with `sources:` in config',
            { retryable: false },
          );
        }
        target = `${ref.db}.${ref.collection}`;
        const collection = this.client.db(ref.db).collection(ref.collection);
        outcome = await writeResultBack(collection, this.ejson.parse(ref.id_ejson), ref.write, input.jobId, input.result);
      }
    } catch (err) {
      if (err instanceof LlmqError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new LlmqError('ERR_SINK_WRITE', `mongodb sink "${this.name}": writing job ${input.jobId} failed: ${message}`, { cause: err });
    }
    if (outcome === 'stale') {
      input.logger.debug({ sink: this.name, ns: target }, 'document already holds a newer result; this one was not written');
    } else if (outcome === 'missing') {
      input.logger.warn({ sink: this.name, ns: target }, 'source document no longer exists; result not written back');
    }
  }

  /** Called by the worker once a job failed for good: marks the source document failed. */
  async writeFailure(input: SinkFailureInput): Promise<void> {
    await this.markFailed({ jobId: input.jobId, source: input.source, error: input.error });
  }

  /** See {@link MongoSource.markFailed}; for hosts that have the sink at hand rather than the source. */
  async markFailed(input: MarkFailedInput): Promise<boolean> {
    const ref = input.source?.type === 'mongodb' ? asMongoRef(input.source.ref) : undefined;
    if (!ref) return false;
    const collection = this.client.db(ref.db).collection(ref.collection);
    try {
      return await markDocumentFailed(collection, this.ejson.parse(ref.id_ejson), ref.write, input.error, input.jobId, this.now());
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new LlmqError('ERR_SINK_WRITE', `mongodb sink "${this.name}": marking job ${input.jobId} failed did not work: ${message}`, { cause: err });
    }
  }
}

export async function createMongoSink(
  options: { name: string; config: MongoSinkConfig },
  ctx: AdapterContext,
  deps: MongoSinkDeps = {},
): Promise<MongoSink> {
  const { client, ejson, ownsClient } = await openMongoClient(options.config, ctx.env, `sinks.${options.name}.options`, deps);
  return new MongoSink(options, ctx, { client, ownsClient, ejson, now: deps.now });
}

/** `type: mongodb` sink. */
export const mongoSink = defineSink<MongoSinkConfig>({
  kind: 'sink',
  type: 'mongodb',
  configSchema: mongoSinkConfigSchema,
  create(options, ctx) {
    return createMongoSink(options, ctx);
  },
});
