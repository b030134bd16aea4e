import { describe, expect, it } from 'vitest';
import { LlmqError, checkCapabilities, echoBackend, errorCode, isRetryable, parseJobRequest, requestHash, toErrorBody } from './index.js';

const fail = (body: unknown) => {
  try {
    parseJobRequest(body);
  } catch (err) {
    return err as LlmqError;
  }
  throw new Error('expected a failure');
};

describe('job request schema', () => {
  it('accepts prompt or messages with OpenAI-style parameters', () => {
    const r = parseJobRequest({ model: 'm', prompt: 'hi', max_tokens: 5, stop: ['x'], temperature: 0.2, metadata: { a: 1 } });
    expect(r).toMatchObject({ model: 'm', prompt: 'hi', max_tokens: 5 });
    expect(parseJobRequest({ model: 'm', messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }] }).messages).toHaveLength(2);
    expect(parseJobRequest({ model: 'm', prompt: 'x', response_format: { type: 'json_schema', json_schema: { schema: { type: 'object' } } } }).response_format?.type).toBe('json_schema');
  });

  it('names the field at fault', () => {
    expect(fail({ model: 'm' }).param).toBe('prompt');
    expect(fail({ model: 'm', prompt: 'x', messages: [{ role: 'user', content: 'y' }] }).param).toBe('messages');
    expect(fail({ model: 'm', prompt: 'x', extra: 1 }).param).toBe('extra');
    expect(fail({ model: 'm', messages: [{ role: 'user', content: 'y', name: 'n' }] }).param).toBe('messages[0].name');
    expect(fail({ model: 'm', prompt: 'x', top_k: -1 }).message).toMatch(/^ERR_REQUEST_INVALID: top_k: /);
    expect(fail(null).code).toBe('ERR_REQUEST_INVALID');
    expect(fail('string').code).toBe('ERR_REQUEST_INVALID');
  });

  it('rejects parameters the backend does not support', () => {
    const caps = echoBackend.capabilities as never;
    expect(() => checkCapabilities(parseJobRequest({ model: 'echo', prompt: 'x', min_p: 0.1 }), caps, 'echo')).toThrow(/min_p: not supported by the echo backend/);
    expect(() => checkCapabilities(parseJobRequest({ model: 'echo', prompt: 'x', max_tokens: 3 }), caps, 'echo')).not.toThrow();
  });

  it('hashes requests independently of key order', () => {
    expect(requestHash({ a: 1, b: { c: 2, d: [1, 2] } })).toBe(requestHash({ b: { d: [1, 2], c: 2 }, a: 1 }));
    expect(requestHash({ a: 1 })).not.toBe(requestHash({ a: 2 }));
  });
});

describe('error codes', () => {
  it('survive serialisation into a plain message', () => {
    const err = new LlmqError('ERR_JOB_TIMEOUT', 'too slow');
    expect(errorCode(err.message)).toBe('ERR_JOB_TIMEOUT');
    expect(errorCode(new Error(err.message))).toBe('ERR_JOB_TIMEOUT');
    expect(isRetryable(new Error('ERR_BACKEND_BAD_REQUEST: no'))).toBe(false);
    expect(isRetryable(new Error('something unknown'))).toBe(true);
    expect(errorCode(new Error('ERR_NOT_A_CODE: x'))).toBeUndefined();
  });

  it('map to the OpenAI error shape without leaking internals', () => {
    expect(toErrorBody(new LlmqError('ERR_REQUEST_INVALID', 'bad', { param: 'x' }))).toEqual({
      status: 400,
      body: { error: { message: 'bad', type: 'invalid_request_error', code: 'ERR_REQUEST_INVALID', param: 'x' } },
    });
    const internal = toErrorBody(new TypeError('secret stack detail'));
    expect(internal.status).toBe(500);
    expect(internal.body.error.message).toBe('internal error');
  });
});
