import { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import { LlmqError, retryAfterMs, type ErrorCode } from '@llmq/core';

/** The job's abort reason when it is an Error (timeout, cancel, shutdown), else a cancellation. */
export function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new LlmqError('ERR_JOB_CANCELLED', 'aborted');
}

const CONTEXT_MESSAGE = /context length|context window|maximum context|too many tokens|prompt is too long|exceeds the model/i;

function isContextLength(code: string | undefined, message: string): boolean {
  // ERR_BACKEND_CONTEXT_LENGTH: another llmq gateway in front of the model says it in its own code.
  return code === 'context_length_exceeded' || code === 'string_above_max_length' || code === 'ERR_BACKEND_CONTEXT_LENGTH' || CONTEXT_MESSAGE.test(message);
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The backend's own message, without the SDK's `<status> ` prefix. */
function backendMessage(err: APIError): string {
  const body = err.error as { message?: unknown } | string | undefined;
  if (typeof body === 'string') return body;
  if (body && typeof body.message === 'string') return body.message;
  return err.message.replace(/^\d{3} /, '');
}

/**
 * Maps what the OpenAI SDK throws to an {@link LlmqError} whose code says whether and how the
 * queue retries. `details` carries `status`, `backend_code`, `backend_type`, `request_id` and, for
 * 429, `retry_after_ms`. An abort of the job's own signal is rethrown as the signal's reason.
 */
export function toLlmqError(err: unknown, signal: AbortSignal): Error {
  if (signal.aborted) return abortError(signal);
  if (err instanceof LlmqError) return err;
  if (err instanceof APIUserAbortError) {
    // Only the SDK's own request timeout aborts without our signal.
    return new LlmqError('ERR_BACKEND_UNAVAILABLE', 'request aborted before the backend answered', { cause: err });
  }
  if (err instanceof APIConnectionError) {
    return new LlmqError('ERR_BACKEND_UNAVAILABLE', `cannot reach the backend: ${err.message}`, { cause: err });
  }
  if (err instanceof APIError) {
    const status = err.status;
    const backendCode = str(err.code ?? undefined);
    const backendType = str(err.type);
    const message = backendMessage(err);
    const details: Record<string, unknown> = { status: status ?? null };
    if (backendCode !== undefined) details['backend_code'] = backendCode;
    if (backendType !== undefined) details['backend_type'] = backendType;
    if (err.requestID) details['request_id'] = err.requestID;
    const make = (code: ErrorCode, extra: Record<string, unknown> = {}) =>
      new LlmqError(code, message, { cause: err, details: { ...details, ...extra }, param: err.param ?? undefined });

    if (backendCode === 'insufficient_quota' || backendType === 'insufficient_quota' || backendCode === 'ERR_BACKEND_QUOTA') return make('ERR_BACKEND_QUOTA');
    if (status === undefined) {
      // An error event inside a stream: the answer is incomplete whatever the cause.
      if (isContextLength(backendCode, message)) return make('ERR_BACKEND_CONTEXT_LENGTH');
      return make('ERR_BACKEND_STREAM_CUT');
    }
    if (status === 429) {
      const wait = retryAfterMs(err.headers);
      return make('ERR_BACKEND_RATE_LIMITED', wait === undefined ? {} : { retry_after_ms: wait });
    }
    if (status === 401 || status === 403) return make('ERR_BACKEND_AUTH');
    if (status === 408 || status === 409 || status >= 500) return make('ERR_BACKEND_UNAVAILABLE');
    if (status >= 400) return make(isContextLength(backendCode, message) ? 'ERR_BACKEND_CONTEXT_LENGTH' : 'ERR_BACKEND_BAD_REQUEST');
    return make('ERR_BACKEND_FAILED');
  }
  if (err instanceof SyntaxError) {
    return new LlmqError('ERR_BACKEND_FAILED', `unreadable answer: ${err.message}`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new LlmqError('ERR_BACKEND_FAILED', message, { cause: err });
}
