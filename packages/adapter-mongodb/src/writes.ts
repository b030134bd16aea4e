import type { JobResult } from '@llmq/core';
import type { CollectionLike, Document } from './driver.js';
import { mongoErrorCode } from './driver.js';
import type { WriteBack } from './mapping.js';

/*
 * Every write the adapters make to a request document, in one place, because their filters are
 * what keeps concurrent writers (several connectors, the sink, the failure marker) from undoing
 * each other.
 */

export type ResultWriteOutcome = 'written' | 'stale' | 'missing';

function setIf(target: Document, field: string | null, value: unknown): void {
  if (field !== null && value !== undefined) target[field] = value;
}

function resultSet(write: WriteBack, jobId: string, result: JobResult): Document {
  const $set: Document = { [write.status]: write.done, [write.completed_at]: new Date(result.completed_at) };
  setIf($set, write.response, result.text);
  setIf($set, write.usage, result.usage);
  setIf($set, write.finish_reason, result.finish_reason);
  setIf($set, write.result_model, result.model);
  setIf($set, write.job_id, jobId);
  setIf($set, write.started_at, new Date(result.started_at));
  setIf($set, write.first_token_at, result.first_token_at === undefined ? undefined : new Date(result.first_token_at));
  return $set;
}

/**
 * Guard that keeps a write from replacing a result that finished later. `$not: { $gt }` also
 * matches a document with no result yet. Re-writing the same result matches (equal times) and
 * changes nothing, which is what makes the write idempotent by job.
 */
function notNewer(write: WriteBack, result: JobResult): Document {
  return { [write.completed_at]: { $not: { $gt: new Date(result.completed_at) } } };
}

/** Writes a result onto the request document `_id`. */
export async function writeResultBack(
  collection: CollectionLike,
  _id: unknown,
  write: WriteBack,
  jobId: string,
  result: JobResult,
): Promise<ResultWriteOutcome> {
  const $unset: Document = { [write.claimed_by]: '', [write.lease_until]: '' };
  setIf($unset, write.error, '');
  setIf($unset, write.failed_at, '');
  const res = await collection.updateOne({ _id, ...notNewer(write, result) }, { $set: resultSet(write, jobId, result), $unset });
  if (res.matchedCount > 0) return 'written';
  const current = await collection.findOne({ _id }, { projection: { _id: 1 } });
  return current === null ? 'missing' : 'stale';
}

/** Upserts a result as its own document, `_id` = job id, in a results collection. */
export async function upsertResult(
  collection: CollectionLike,
  write: WriteBack,
  jobId: string,
  result: JobResult,
  extra: Document,
): Promise<ResultWriteOutcome> {
  try {
    await collection.updateOne({ _id: jobId, ...notNewer(write, result) }, { $set: { ...extra, ...resultSet(write, jobId, result) } }, { upsert: true });
    return 'written';
  } catch (err) {
    // The guard failed on an existing document, so the upsert tried to insert a second one with
    // the same _id: a newer result is already there.
    if (mongoErrorCode(err) === 11000) return 'stale';
    throw err;
  }
}

export interface FailureInfo {
  message: string;
  code: string;
}

/**
 * Marks a request document failed, unless it already holds a result (`done`): a failure never
 * replaces a success, while a later success does replace a failure.
 */
export async function markDocumentFailed(
  collection: CollectionLike,
  _id: unknown,
  write: WriteBack,
  failure: FailureInfo,
  jobId: string | undefined,
  now: number,
): Promise<boolean> {
  const $set: Document = { [write.status]: write.failed };
  setIf($set, write.error, { message: failure.message, code: failure.code });
  setIf($set, write.failed_at, new Date(now));
  setIf($set, write.job_id, jobId);
  const res = await collection.updateOne(
    { _id, [write.status]: { $ne: write.done } },
    { $set, $unset: { [write.claimed_by]: '', [write.lease_until]: '' } },
  );
  return res.matchedCount > 0;
}
