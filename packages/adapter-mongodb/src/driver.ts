import type { Document } from 'mongodb';
import { LlmqError } from '@llmq/core';
import { resolveMongoUrl } from './config.js';

/*
 * The part of the MongoDB driver the adapters use, as interfaces: the real driver satisfies them,
 * and the tests drive the adapters through recording fakes of exactly this surface.
 */

export type { Document };

export interface ChangeEvent extends Document {
  /** The event's resume token. */
  _id: unknown;
  operationType: string;
  fullDocument?: Document | null;
}

export interface ChangeStreamLike {
  /** The next event, or null when a getMore came back empty. */
  tryNext(): Promise<ChangeEvent | null>;
  /** Events already fetched and not yet returned. */
  bufferedCount(): number;
  /**
   * Token to resume after the last returned event; after the last buffered event or an empty
   * batch it is the server's post-batch token.
   */
  readonly resumeToken: unknown;
  close(): Promise<void>;
}

export interface WatchOptions {
  fullDocument: 'updateLookup';
  resumeAfter?: unknown;
  batchSize: number;
  maxAwaitTimeMS: number;
}

export interface FindCursorLike {
  sort(sort: Document): FindCursorLike;
  limit(n: number): FindCursorLike;
  toArray(): Promise<Document[]>;
}

export interface UpdateResultLike {
  matchedCount: number;
  modifiedCount: number;
  upsertedCount?: number;
}

export interface CollectionLike {
  watch(pipeline: Document[], options: WatchOptions): ChangeStreamLike;
  find(filter: Document): FindCursorLike;
  findOne(filter: Document, options?: { projection?: Document }): Promise<Document | null>;
  findOneAndUpdate(filter: Document, update: Document, options: { sort?: Document; returnDocument: 'after' | 'before' }): Promise<Document | null>;
  updateOne(filter: Document, update: Document, options?: { upsert?: boolean }): Promise<UpdateResultLike>;
  updateMany(filter: Document, update: Document): Promise<UpdateResultLike>;
}

export interface DbLike {
  collection(name: string): CollectionLike;
  command(command: Document): Promise<Document>;
}

export interface MongoClientLike {
  db(name: string): DbLike;
  close(): Promise<void>;
}

/** EJSON, for carrying a document `_id` of any BSON type through a job and back. */
export interface EjsonLike {
  stringify(value: unknown): string;
  parse(text: string): unknown;
}

export interface MongoDriver {
  createClient(url: string, options: { serverSelectionTimeoutMS: number; appName: string }): MongoClientLike;
  ejson: EjsonLike;
}

let cached: Promise<MongoDriver> | undefined;

/**
 * Loads the driver on first use, so that importing this package's definitions (as the gateway
 * does, to list adapter types) does not load it.
 */
export function loadMongoDriver(): Promise<MongoDriver> {
  cached ??= import('mongodb').then(
    (mongodb) => ({
      createClient: (url, options) => new mongodb.MongoClient(url, options),
      ejson: {
        stringify: (value) => mongodb.BSON.EJSON.stringify(value, { relaxed: false }),
        parse: (text) => mongodb.BSON.EJSON.parse(text, { relaxed: false }),
      },
    }),
    (err: unknown) => {
      cached = undefined;
      throw new LlmqError('ERR_DEPENDENCY_MISSING', 'the "mongodb" driver could not be loaded; run `npm install mongodb` in the llmq install', { cause: err });
    },
  );
  return cached;
}

/**
 * The client and EJSON codec a source or sink works with: the ones a test passes in, else a new
 * client from the real driver (which the caller then owns and closes).
 */
export async function openMongoClient(
  config: { url?: string | undefined; url_env?: string | undefined; server_selection_timeout_ms: number },
  env: Readonly<Record<string, string | undefined>>,
  where: string,
  deps: { client?: MongoClientLike | undefined; ejson?: EjsonLike | undefined },
): Promise<{ client: MongoClientLike; ejson: EjsonLike; ownsClient: boolean }> {
  let { client, ejson } = deps;
  const ownsClient = client === undefined;
  if (client === undefined || ejson === undefined) {
    const driver = await loadMongoDriver();
    ejson ??= driver.ejson;
    client ??= driver.createClient(resolveMongoUrl(config, env, where), { serverSelectionTimeoutMS: config.server_selection_timeout_ms, appName: 'llmq' });
  }
  return { client, ejson, ownsClient };
}

/** The server error code of a driver error, if any. */
export function mongoErrorCode(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

/** ChangeStreamHistoryLost: the resume token's point is no longer in the oplog. */
export const CHANGE_STREAM_HISTORY_LOST = 286;
