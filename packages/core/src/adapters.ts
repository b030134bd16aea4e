import type { z } from 'zod';
import type { Logger } from './logger.js';
import type { FinishReason, GenerationParam, GenerationRequest, JobResult, SourceRef, Usage } from './schemas.js';

export type AdapterKind = 'backend' | 'source' | 'sink';

/** Given to every adapter factory and call. */
export interface AdapterContext {
  logger: Logger;
  /** Fires when the host shuts down. */
  signal: AbortSignal;
  /** Directory of the config file, for resolving relative paths in adapter options. */
  configDir: string;
  /** The config's named-templates folder (`templates_dir`, absolute). */
  templatesDir?: string;
  /** Environment (secrets are read from here, by the env var names given in config). */
  env: Readonly<Record<string, string | undefined>>;
}

interface DefinitionBase<K extends AdapterKind, C> {
  kind: K;
  /** Stable implementation id, named by `backend:` / `type:` in config. */
  type: string;
  /** Validates the adapter's `options` block from config; unknown keys should be errors. */
  configSchema: z.ZodType<C>;
}

interface InstanceBase {
  /** Name from config. */
  readonly name: string;
  /** Throws when the adapter cannot work (used by /readyz and start-up). */
  check(): Promise<void>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- backends

export interface GenerateInput {
  jobId: string;
  /** 1 on the first attempt. */
  attempt: number;
  /** Model name as the job asked for it. */
  model: string;
  request: GenerationRequest;
  /** Fires on timeout, cancel and shutdown: stop decoding at once. */
  signal: AbortSignal;
  logger: Logger;
  /** Call with each piece of text as it is produced. */
  onToken(text: string): void;
}

export interface GenerateOutput {
  text: string;
  finish_reason: FinishReason;
  usage: Omit<Usage, 'total_tokens'> & { total_tokens?: number };
}

export interface Backend extends InstanceBase {
  generate(input: GenerateInput): Promise<GenerateOutput>;
}

export interface BackendCapabilities {
  /** Generation parameters the backend honours; a job setting any other is a 400 at enqueue. */
  params: readonly GenerationParam[];
  /** Whether `messages` (chat) is accepted. */
  chat: boolean;
  /** Whether raw `prompt` completion is accepted. */
  completion: boolean;
  /** Whether a named `template` may be chosen. */
  templates?: boolean;
  /**
   * Looks a job's `template` up where the backend will read it, at enqueue (so a file added later
   * is found): `undefined` when it is there, else the names that are. Without it any name passes.
   */
  findTemplate?: (name: string) => readonly string[] | undefined;
  /**
   * The backend's own checks of a request at enqueue, beyond `params` (such as what a JSON schema
   * may use): the first problem, as the field it is about (relative to the request) and what to fix.
   */
  checkRequest?: (request: GenerationRequest) => { param: string; message: string } | undefined;
}

/** Where a model's files are, for capabilities that depend on them (the config's folders). */
export interface CapabilityContext {
  /** The config file's directory. */
  configDir: string;
  /** The config's top-level `templates_dir`, resolved. */
  templatesDir?: string | undefined;
}

export interface BackendDefinition<C = unknown> extends DefinitionBase<'backend', C> {
  /** What requests the backend can serve, checked by the gateway (which never creates a backend). */
  capabilities: BackendCapabilities | ((config: C, ctx: CapabilityContext) => BackendCapabilities);
  create(options: { name: string; config: C; concurrency: number }, ctx: AdapterContext): Promise<Backend> | Backend;
}

// ---------------------------------------------------------------- sources

/** A job a source wants enqueued. `id` must be deterministic so re-delivery collapses. */
export interface EnqueueInput {
  id: string;
  request: GenerationRequest & { model: string; priority?: number | undefined; timeout_ms?: number | undefined };
  source: SourceRef;
}

export interface EnqueueOutcome {
  id: string;
  /** False when a job with this id already existed (a re-delivery). */
  created: boolean;
}

export interface SourceContext extends AdapterContext {
  /** Resolves only once every job is durable in Redis. */
  enqueue(jobs: EnqueueInput[]): Promise<EnqueueOutcome[]>;
  /** Small key/value store in Redis for checkpoints and locks, namespaced per source. */
  kv: SourceKv;
}

export interface SourceKv {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ttlMs?: number): Promise<void>;
  /** SET NX PX: true when acquired. */
  acquire(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Extends a lock if still held by `owner`. */
  renew(key: string, owner: string, ttlMs: number): Promise<boolean>;
  release(key: string, owner: string): Promise<void>;
}

export interface Source extends InstanceBase {
  start(): Promise<void>;
}

export interface SourceDefinition<C = unknown> extends DefinitionBase<'source', C> {
  create(options: { name: string; config: C }, ctx: SourceContext): Promise<Source> | Source;
}

// ---------------------------------------------------------------- sinks

export interface SinkWriteInput {
  jobId: string;
  model: string;
  request: GenerationRequest;
  result: JobResult;
  source: SourceRef | undefined;
  signal: AbortSignal;
  logger: Logger;
}

/** One finished job, for billing and capacity planning (the usage feed). */
export interface UsageRecord {
  object: 'usage';
  job_id: string;
  model: string;
  /** Model that produced the result (differs after a fallback). */
  served_by: string;
  backend: string;
  worker: string;
  key_id: string | null;
  source: string;
  status: 'completed';
  created_at: number;
  started_at: number;
  first_token_at: number | null;
  completed_at: number;
  queue_wait_ms: number;
  processing_ms: number;
  time_to_first_token_ms: number | null;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface SinkFailureInput {
  jobId: string;
  model: string;
  request: GenerationRequest;
  source: SourceRef | undefined;
  error: { message: string; code: string };
  signal: AbortSignal;
  logger: Logger;
}

export interface Sink extends InstanceBase {
  /** Must be idempotent by `jobId`: a write may be repeated after a crash. */
  write(input: SinkWriteInput): Promise<void>;
  /**
   * Told once a job failed for good (after its last attempt, or cancelled), so the sink can mark
   * the source record failed. Best effort: errors are logged, not retried.
   */
  writeFailure?(input: SinkFailureInput): Promise<void>;
  /** Receives usage records when the sink's config lists `events: [usage]`; idempotent by `job_id`. */
  writeUsage?(record: UsageRecord, options: { signal: AbortSignal; logger: Logger }): Promise<void>;
}

export interface SinkDefinition<C = unknown> extends DefinitionBase<'sink', C> {
  create(options: { name: string; config: C }, ctx: AdapterContext): Promise<Sink> | Sink;
}

export type AdapterDefinition = BackendDefinition<any> | SourceDefinition<any> | SinkDefinition<any>;

export function defineBackend<C>(def: BackendDefinition<C>): BackendDefinition<C> {
  return def;
}
export function defineSource<C>(def: SourceDefinition<C>): SourceDefinition<C> {
  return def;
}
export function defineSink<C>(def: SinkDefinition<C>): SinkDefinition<C> {
  return def;
}

export function resolveCapabilities<C>(def: BackendDefinition<C>, config: C, ctx: CapabilityContext = { configDir: process.cwd() }): BackendCapabilities {
  return typeof def.capabilities === 'function' ? def.capabilities(config, ctx) : def.capabilities;
}
