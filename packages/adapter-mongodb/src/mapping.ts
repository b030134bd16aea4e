import { LlmqError, parseJobRequest, type EnqueueInput, type SourceRef } from '@llmq/core';
import type { MongoSourceConfig, WriteFields } from './config.js';
import type { Document, EjsonLike } from './driver.js';

/**
 * How the sink writes a result back onto a source document. The source puts it on each job's
 * `source.ref`, so the field mapping is configured once, on the source.
 */
export interface WriteBack extends WriteFields {
  status: string;
  done: string;
  failed: string;
  /** Claim fields cleared once the document has a result. */
  claimed_by: string;
  lease_until: string;
}

/** `source.ref` of a job from a mongodb source. */
export interface MongoRef {
  db: string;
  collection: string;
  /** String form of `_id` (hex for an ObjectId), as in the job id. */
  id: string;
  /** Canonical EJSON of `_id`, to find the document again whatever the `_id` type. */
  id_ejson: string;
  write: WriteBack;
}

/** The value at a dotted path, or undefined. */
export function getPath(doc: Document, path: string): unknown {
  let current: unknown = doc;
  for (const part of path.split('.')) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}

/** The string form of an `_id`: an ObjectId's hex, a string as is, else its EJSON. */
export function idString(id: unknown, ejson: EjsonLike): string {
  if (typeof id === 'string') return id;
  if (typeof id === 'number' || typeof id === 'bigint') return String(id);
  if (id !== null && typeof id === 'object' && typeof (id as { toHexString?: unknown }).toHexString === 'function') {
    return (id as { toHexString(): string }).toHexString();
  }
  return ejson.stringify(id);
}

/** `mongodb:<db>.<coll>:<_id>`: one job per document, so re-delivery collapses on it. */
export function mongoJobId(db: string, collection: string, id: string): string {
  return `mongodb:${db}.${collection}:${id}`;
}

export function writeBackOf(config: MongoSourceConfig): WriteBack {
  const f = config.fields;
  return {
    status: config.status.field,
    done: config.status.done,
    failed: config.status.failed,
    response: f.response,
    error: f.error,
    usage: f.usage,
    finish_reason: f.finish_reason,
    result_model: f.result_model,
    job_id: f.job_id,
    started_at: f.started_at,
    first_token_at: f.first_token_at,
    completed_at: f.completed_at,
    failed_at: f.failed_at,
    claimed_by: f.claimed_by,
    lease_until: f.lease_until,
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * The job for a request document. Throws ERR_REQUEST_INVALID (naming the field) when the
 * document is not a valid request; the source then marks it failed rather than retrying it.
 */
export function documentToJob(
  doc: Document,
  config: MongoSourceConfig,
  options: { sourceName: string; ejson: EjsonLike; write: WriteBack },
): EnqueueInput {
  const f = config.fields;
  const id = idString(doc._id, options.ejson);
  const candidate: Record<string, unknown> = { ...config.params };
  const paramsField = f.params;
  const docParams = paramsField === null ? undefined : getPath(doc, paramsField);
  if (paramsField !== null && docParams !== undefined && docParams !== null) {
    if (!isObject(docParams)) throw invalid(paramsField, 'expected an object of generation parameters');
    Object.assign(candidate, docParams);
  }
  const docModel = f.model === null ? undefined : getPath(doc, f.model);
  candidate.model = docModel ?? config.model;
  if (candidate.model === undefined) {
    throw invalid(f.model ?? 'model', 'no model: the document names none and the source sets no "model"');
  }
  const messages = f.messages === null ? undefined : getPath(doc, f.messages);
  if (Array.isArray(messages) && messages.length > 0) candidate.messages = messages;
  else candidate.prompt = getPath(doc, f.prompt);
  const template = (f.template === null ? undefined : getPath(doc, f.template)) ?? config.template;
  if (template !== undefined && template !== null) candidate.template = template;
  const priority = f.priority === null ? undefined : getPath(doc, f.priority);
  if (priority !== undefined && priority !== null) candidate.priority = priority;
  if (config.timeout_ms !== undefined) candidate.timeout_ms = config.timeout_ms;

  const { idempotency_key: _key, metadata: _meta, ...request } = parseJobRequest(candidate, 'document');
  const ref: MongoRef = {
    db: config.db,
    collection: config.collection,
    id,
    id_ejson: options.ejson.stringify(doc._id),
    write: options.write,
  };
  const source: SourceRef = { type: 'mongodb', name: options.sourceName, ref: { ...ref } };
  return { id: mongoJobId(config.db, config.collection, id), request, source };
}

function invalid(field: string, message: string): LlmqError {
  return new LlmqError('ERR_REQUEST_INVALID', `document.${field}: ${message}`, { param: `document.${field}` });
}

/** A `source.ref` from a job, when it is a mongodb one. */
export function asMongoRef(ref: Record<string, unknown> | undefined): MongoRef | undefined {
  if (!ref) return undefined;
  const { db, collection, id, id_ejson, write } = ref as Partial<MongoRef>;
  if (typeof db !== 'string' || typeof collection !== 'string' || typeof id !== 'string' || typeof id_ejson !== 'string' || !isObject(write)) {
    return undefined;
  }
  return { db, collection, id, id_ejson, write: write as WriteBack };
}
