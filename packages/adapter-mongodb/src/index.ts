export { mongoSource, createMongoSource, MongoSource } from './source.js';
export type { MongoSourceDeps, MongoSourceMode, MongoSourceStatus, MarkFailedInput } from './source.js';
export { mongoSink, createMongoSink, MongoSink } from './sink.js';
export type { MongoSinkDeps } from './sink.js';
export {
  mongoSourceConfigSchema,
  mongoSinkConfigSchema,
  resolveMongoUrl,
  type MongoSourceConfig,
  type MongoSourceConfigInput,
  type MongoSinkConfig,
  type MongoSinkConfigInput,
  type SourceFields,
  type StatusConfig,
  type WriteFields,
} from './config.js';
export { documentToJob, mongoJobId, idString, asMongoRef, type MongoRef, type WriteBack } from './mapping.js';
export { markDocumentFailed, writeResultBack, upsertResult, type FailureInfo, type ResultWriteOutcome } from './writes.js';
export { parseSeedWorkerArgs, type SeedWorkerFragment } from './seed-args.js';
export type { MongoClientLike, DbLike, CollectionLike, ChangeStreamLike, ChangeEvent, FindCursorLike, EjsonLike } from './driver.js';
