import type { JobError } from './schemas.js';

/**
 * One registry of error codes. Codes survive BullMQ's serialised failure reason because
 * {@link LlmqError} puts the code at the start of the message; check errors with
 * {@link errorCode}, never with `instanceof`.
 */
export interface ErrorCodeInfo {
  /** HTTP status when the error reaches a client. */
  status: number;
  /** OpenAI-style error type. */
  type: string;
  /** Whether a job failing with it should be attempted again. */
  retryable: boolean;
  /** What it means, for docs/errors.md. */
  meaning: string;
}

export const ERROR_CODES = {
  ERR_CONFIG_INVALID: { status: 500, type: 'server_error', retryable: false, meaning: 'The configuration file or an environment override is invalid; the message names the key.' },
  ERR_CONFIG_PLUGIN: { status: 500, type: 'server_error', retryable: false, meaning: 'A plugin named in config could not be loaded or exports no adapter definition.' },
  ERR_REGISTRY_UNKNOWN_TYPE: { status: 500, type: 'server_error', retryable: false, meaning: 'Config names an adapter type that no built-in or plugin provides.' },
  ERR_REGISTRY_DUPLICATE_TYPE: { status: 500, type: 'server_error', retryable: false, meaning: 'Two adapter definitions share one kind and type.' },
  ERR_REQUEST_INVALID: { status: 400, type: 'invalid_request_error', retryable: false, meaning: 'The request body is malformed or a field is invalid; `param` names the field.' },
  ERR_REQUEST_UNSUPPORTED_PARAM: { status: 400, type: 'invalid_request_error', retryable: false, meaning: "A parameter is valid but the model's backend does not support it." },
  ERR_REQUEST_TOO_LARGE: { status: 413, type: 'invalid_request_error', retryable: false, meaning: 'The request body is larger than `gateway.body_limit`, or a batch holds more than `gateway.batch_limit` jobs.' },
  ERR_AUTH_REQUIRED: { status: 401, type: 'authentication_error', retryable: false, meaning: 'No API key, or one that is not in LLMQ_API_KEYS.' },
  ERR_MODEL_NOT_FOUND: { status: 404, type: 'invalid_request_error', retryable: false, meaning: 'The model is not declared in config.' },
  ERR_JOB_NOT_FOUND: { status: 404, type: 'invalid_request_error', retryable: false, meaning: 'No job with that id (it may have been removed by retention).' },
  ERR_DLQ_NOT_FOUND: { status: 404, type: 'invalid_request_error', retryable: false, meaning: 'No dead-lettered job with that id.' },
  ERR_NOT_FOUND: { status: 404, type: 'invalid_request_error', retryable: false, meaning: 'No such route.' },
  ERR_IDEMPOTENCY_CONFLICT: { status: 409, type: 'invalid_request_error', retryable: false, meaning: 'The Idempotency-Key was used before with a different body.' },
  ERR_JOB_FINISHED: { status: 409, type: 'invalid_request_error', retryable: false, meaning: 'The job already finished, so it cannot be cancelled.' },
  ERR_QUEUE_FULL: { status: 429, type: 'rate_limit_error', retryable: true, meaning: "The model's queue holds `max_queued` jobs; retry after the Retry-After header." },
  ERR_REDIS_UNAVAILABLE: { status: 503, type: 'server_error', retryable: true, meaning: 'Redis cannot be reached; nothing was enqueued.' },
  ERR_JOB_TIMEOUT: { status: 504, type: 'timeout_error', retryable: true, meaning: 'The job ran longer than its `timeout_ms`; the backend call was aborted.' },
  ERR_JOB_LOST: { status: 503, type: 'server_error', retryable: true, meaning: "The job was removed from Redis while a client waited for it (emptied or removed from Bull Board, removed by retention, or a Redis restarted without its data): no result will come; send the request again." },
  ERR_JOB_CANCELLED: { status: 409, type: 'cancelled', retryable: false, meaning: 'The job was cancelled through DELETE /v1/jobs/:id (or a client disconnect).' },
  ERR_WORKER_SHUTDOWN: { status: 503, type: 'server_error', retryable: true, meaning: 'The worker shut down before the job finished; another attempt runs it.' },
  ERR_BACKEND_UNAVAILABLE: { status: 502, type: 'server_error', retryable: true, meaning: 'The backend could not be reached or answered 5xx.' },
  ERR_BACKEND_RATE_LIMITED: { status: 429, type: 'rate_limit_error', retryable: true, meaning: "The backend answered 429; the model's queue is slowed for Retry-After." },
  ERR_BACKEND_QUOTA: { status: 429, type: 'insufficient_quota', retryable: false, meaning: "The backend reported insufficient quota; the model's queue is paused until resumed." },
  ERR_BACKEND_AUTH: { status: 502, type: 'authentication_error', retryable: false, meaning: 'The backend rejected our credentials (401/403).' },
  ERR_BACKEND_BAD_REQUEST: { status: 400, type: 'invalid_request_error', retryable: false, meaning: 'The backend rejected the request as invalid (400).' },
  ERR_BACKEND_CONTEXT_LENGTH: { status: 400, type: 'invalid_request_error', retryable: false, meaning: "The prompt does not fit the model's context." },
  ERR_BACKEND_STREAM_CUT: { status: 502, type: 'server_error', retryable: true, meaning: 'The backend stream ended before the answer was complete; the partial answer was discarded.' },
  ERR_BACKEND_FAILED: { status: 500, type: 'server_error', retryable: true, meaning: 'The backend failed in a way not covered above.' },
  ERR_MODEL_FILE_MISSING: { status: 500, type: 'server_error', retryable: false, meaning: 'A local model file does not exist; the message names the `llmq model pull` command.' },
  ERR_MODEL_NOT_SERVED: { status: 503, type: 'server_error', retryable: true, meaning: 'No worker takes jobs of the model, and a worker said why it could not (e.g. its model file is missing); the message quotes it. Synchronous front doors answer this within ~2 s instead of waiting; `POST /v1/jobs` still queues the job, with a `warning` (also on the job view and the first `status` event of its stream while it waits).' },
  ERR_MODEL_LOAD: { status: 500, type: 'server_error', retryable: false, meaning: 'A local model file could not be loaded (not a GGUF, or unsupported).' },
  ERR_SINK_WRITE: { status: 502, type: 'server_error', retryable: true, meaning: 'A sink write failed; the generated result is kept and only the write is retried.' },
  ERR_SOURCE_FAILED: { status: 500, type: 'server_error', retryable: true, meaning: 'A source adapter failed to read or acknowledge.' },
  ERR_DEPENDENCY_MISSING: { status: 500, type: 'server_error', retryable: false, meaning: 'An optional dependency (e.g. pulsar-client) is not installed; the message says how to install it.' },
  ERR_INTERNAL: { status: 500, type: 'server_error', retryable: true, meaning: 'An unexpected error; see the logs.' },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface LlmqErrorOptions {
  /** The request field at fault, as OpenAI's `param`. */
  param?: string | undefined;
  cause?: unknown;
  /** Overrides the code's default retryability. */
  retryable?: boolean;
  /**
   * Extra machine-readable detail, e.g. `{ prompt_tokens, context_size }`. It reaches the client
   * (stored on a failed job, in its `failed` event and in HTTP error bodies; see
   * {@link errorDetails}): numbers and names only, never prompts, output or secrets.
   */
  details?: Record<string, unknown>;
}

const CODE_PREFIX = /^(ERR_[A-Z0-9_]+): /;

export class LlmqError extends Error {
  readonly code: ErrorCode;
  readonly param: string | undefined;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: LlmqErrorOptions = {}) {
    super(`${code}: ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LlmqError';
    this.code = code;
    this.param = options.param;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    this.details = options.details;
  }

  /** The message without the code prefix. */
  get detail(): string {
    return this.message.replace(CODE_PREFIX, '');
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }
}

function isKnownCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** The llmq error code of an error, from its `code` or from a serialised `ERR_X: …` message. */
export function errorCode(err: unknown): ErrorCode | undefined {
  if (err === null || err === undefined) return undefined;
  if (typeof err === 'object' && 'code' in err && isKnownCode((err as { code: unknown }).code)) {
    return (err as { code: ErrorCode }).code;
  }
  const message = typeof err === 'string' ? err : err instanceof Error ? err.message : undefined;
  const match = message === undefined ? null : CODE_PREFIX.exec(message);
  return match && isKnownCode(match[1]) ? match[1] : undefined;
}

/** Whether a failure should be retried: by the error's own flag, else by its code's default. */
export function isRetryable(err: unknown): boolean {
  if (typeof err === 'object' && err !== null && 'retryable' in err && typeof (err as { retryable: unknown }).retryable === 'boolean') {
    return (err as { retryable: boolean }).retryable;
  }
  const code = errorCode(err);
  return code === undefined ? true : ERROR_CODES[code].retryable;
}

/** Strips the `ERR_X: ` prefix from a serialised message. */
export function errorDetail(message: string): string {
  return message.replace(CODE_PREFIX, '');
}

/** A failure reason (`ERR_X: message`) as the API shows a failed job's error, with the thrower's details. */
export function toJobError(reason: string, details?: Record<string, unknown>): JobError {
  const error: JobError = { message: errorDetail(reason), code: errorCode(reason) ?? 'ERR_INTERNAL' };
  if (details) error.details = details;
  return error;
}

/** The error a failed job's `error` stands for, as {@link toJobError} wrote it; a code this process does not know reads as ERR_INTERNAL. */
export function fromJobError(error: JobError): LlmqError {
  return new LlmqError(errorCode({ code: error.code }) ?? 'ERR_INTERNAL', error.message, error.details ? { details: error.details } : {});
}

/** Limits on what of an error's `details` leaves the process: enough for numbers and names, never a payload. */
const DETAIL_KEYS = 16;
const DETAIL_ITEMS = 16;
const DETAIL_CHARS = 200;
const DETAIL_KEY_CHARS = 64;
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@]+@/gi;

function detailScalar(value: unknown): string | number | boolean | null | undefined {
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value !== 'string') return undefined;
  // Masked before it is cut: a cut between the password and its "@" would leave the password bare.
  const masked = value.replace(URL_CREDENTIALS, '$1***@');
  return masked.length > DETAIL_CHARS ? `${masked.slice(0, DETAIL_CHARS)}…` : masked;
}

/**
 * An error's `details` as they may leave the process (stored on the failed job, sent in its
 * `failed` event and in HTTP error bodies), or undefined when there are none. Only what the
 * thrower put in `details`, and only JSON scalars or short arrays of them: nested objects, long
 * arrays, non-finite numbers and keys past the 16th are dropped, strings are cut at 200
 * characters and credentials in URLs masked, so a careless thrower cannot ship a payload.
 */
export function errorDetails(err: unknown): Record<string, unknown> | undefined {
  if (typeof err !== 'object' || err === null || !('details' in err)) return undefined;
  const details = (err as { details: unknown }).details;
  if (typeof details !== 'object' || details === null || Array.isArray(details)) return undefined;
  const out: Record<string, unknown> = {};
  let kept = 0;
  for (const [key, value] of Object.entries(details)) {
    if (kept >= DETAIL_KEYS) break;
    if (key.length > DETAIL_KEY_CHARS) continue;
    let safe: unknown;
    if (Array.isArray(value)) {
      const items = value.length <= DETAIL_ITEMS ? value.map(detailScalar) : [undefined];
      safe = items.includes(undefined) ? undefined : items;
    } else {
      safe = detailScalar(value);
    }
    if (safe === undefined) continue;
    out[key] = safe;
    kept++;
  }
  return kept > 0 ? out : undefined;
}

/** The JSON error body used by every HTTP endpoint (OpenAI's shape, plus `details` when the error has any). */
export interface ErrorBody {
  error: { message: string; type: string; code: string; param: string | null; details?: Record<string, unknown> };
}

export function toErrorBody(err: unknown): { status: number; body: ErrorBody } {
  const code = errorCode(err) ?? 'ERR_INTERNAL';
  const info = ERROR_CODES[code];
  const raw = err instanceof Error ? err.message : typeof err === 'string' ? err : 'internal error';
  const hidden = code === 'ERR_INTERNAL' && !(err instanceof LlmqError);
  const message = hidden ? 'internal error' : errorDetail(raw);
  const param = err instanceof LlmqError ? (err.param ?? null) : null;
  const details = hidden ? undefined : errorDetails(err);
  const error: ErrorBody['error'] = { message, type: info.type, code, param };
  if (details) error.details = details;
  return { status: info.status, body: { error } };
}
