import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LlmqError, checkCapabilities, echoBackend, errorCode, errorDetails, isRetryable, parseJobRequest, requestHash, toErrorBody, zodToLlmqError } from './index.js';

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

  it('refuses metadata and schemas nested deeper than their limits, without overflowing the stack', () => {
    const nest = (levels: number): Record<string, unknown> => {
      let v: Record<string, unknown> = { leaf: 1 };
      for (let i = 1; i < levels; i++) v = { a: v };
      return v;
    };
    expect(parseJobRequest({ model: 'm', prompt: 'x', metadata: nest(32) }).metadata).toBeDefined();
    for (const levels of [33, 5_000, 100_000]) {
      const err = fail({ model: 'm', prompt: 'x', metadata: nest(levels) });
      expect(err.param).toBe('metadata');
      expect(err.message).toBe('ERR_REQUEST_INVALID: metadata: nests more than 32 levels of objects and arrays');
    }
    const schema = (levels: number) => ({ model: 'm', prompt: 'x', response_format: { type: 'json_schema', json_schema: { schema: nest(levels) } } });
    expect(parseJobRequest(schema(64)).response_format?.type).toBe('json_schema');
    expect(fail(schema(65)).param).toBe('response_format.json_schema.schema');
    // Arrays count as levels too.
    expect(fail({ model: 'm', prompt: 'x', metadata: { a: JSON.parse('['.repeat(40) + ']'.repeat(40)) } }).param).toBe('metadata');
  });

  it("states a field's own limit for a number beyond the safe integers, not z.int()'s", () => {
    expect(fail({ model: 'm', prompt: 'x', timeout_ms: 1e16 }).message).toBe('ERR_REQUEST_INVALID: timeout_ms: Too big: expected number to be <=86400000');
    expect(fail({ model: 'm', prompt: 'x', max_tokens: -1e17 }).message).toBe('ERR_REQUEST_INVALID: max_tokens: Too small: expected number to be >=1');
    expect(fail({ model: 'm', prompt: 'x', priority: 1e300 }).message).toMatch(/^ERR_REQUEST_INVALID: priority: Too big: expected number to be <=1000000$/);
  });

  it('takes top_p from 0 (only the most likely token) to 1, as OpenAI does', () => {
    expect(parseJobRequest({ model: 'm', prompt: 'x', top_p: 0 }).top_p).toBe(0);
    expect(parseJobRequest({ model: 'm', prompt: 'x', top_p: 1 }).top_p).toBe(1);
    expect(fail({ model: 'm', prompt: 'x', top_p: -0.1 }).param).toBe('top_p');
    expect(fail({ model: 'm', prompt: 'x', top_p: 1.1 }).param).toBe('top_p');
  });

  it('refuses repeat_penalty 0, which llama.cpp divides by, saying 1 is off', () => {
    for (const repeat_penalty of [0, -1]) {
      const err = fail({ model: 'm', prompt: 'x', repeat_penalty });
      expect(toErrorBody(err).status).toBe(400);
      expect(err.param).toBe('repeat_penalty');
      expect(err.message).toBe('ERR_REQUEST_INVALID: repeat_penalty: must be greater than 0 (1 = no penalty, above 1 discourages repeats)');
    }
    expect(parseJobRequest({ model: 'm', prompt: 'x', repeat_penalty: 1 }).repeat_penalty).toBe(1);
    expect(fail({ model: 'm', prompt: 'x', repeat_penalty: 11 }).message).toMatch(/repeat_penalty: .*<=10/);
    // OpenAI's range for the other two penalties.
    expect(fail({ model: 'm', prompt: 'x', presence_penalty: 2.5 }).message).toMatch(/presence_penalty: .*<=2/);
    expect(fail({ model: 'm', prompt: 'x', frequency_penalty: -2.5 }).message).toMatch(/frequency_penalty: .*>=-2/);
  });

  it('says what stop may be when it is neither a string nor up to 16 strings', () => {
    const allowed = 'stop: must be a string or an array of at most 16 strings, each 1 to 500 characters';
    const tooMany = fail({ model: 'm', prompt: 'x', stop: Array.from({ length: 17 }, (_, i) => `s${i}`) });
    expect(toErrorBody(tooMany)).toMatchObject({ status: 400, body: { error: { param: 'stop', message: `${allowed} (got an array of 17)` } } });
    expect(fail({ model: 'm', prompt: 'x', stop: 5 }).message).toBe(`ERR_REQUEST_INVALID: ${allowed} (got a number)`);
    expect(fail({ model: 'm', prompt: 'x', stop: ['a', 5] }).message).toBe(`ERR_REQUEST_INVALID: ${allowed} (got an array holding a number)`);
    expect(parseJobRequest({ model: 'm', prompt: 'x', stop: Array(16).fill('s') }).stop).toHaveLength(16);
  });

  it('explains a union no branch of which matched, rather than "Invalid input" (the front doors\' own schemas)', () => {
    const door = z.object({ stop: z.union([z.string(), z.array(z.string())]).optional(), prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]) });
    const err = (body: unknown) => zodToLlmqError(door.safeParse(body).error!);
    expect(err({ prompt: 'x', stop: 5 }).message).toBe('ERR_REQUEST_INVALID: stop: Invalid input: expected string or array');
    expect(err({ prompt: ['a', 'b'] }).message).toBe('ERR_REQUEST_INVALID: prompt: only one prompt per request is supported');
    expect(err({ prompt: 'x', stop: ['a', 1] })).toMatchObject({ param: 'stop[1]', message: expect.stringMatching(/stop\[1\]: .*expected string/) });
  });

  it('names both values when min_tokens exceeds max_tokens', () => {
    expect(fail({ model: 'm', prompt: 'x', min_tokens: 20, max_tokens: 10 })).toMatchObject({ param: 'min_tokens', message: 'ERR_REQUEST_INVALID: min_tokens: 20 is more than max_tokens (10); min_tokens must not exceed max_tokens' });
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

  it("carry the thrower's details to the HTTP body (a context-length error says how many tokens)", () => {
    const err = new LlmqError('ERR_BACKEND_CONTEXT_LENGTH', 'the prompt does not fit', { details: { prompt_tokens: 5000, context_size: 4096 } });
    expect(toErrorBody(err)).toEqual({
      status: 400,
      body: { error: { message: 'the prompt does not fit', type: 'invalid_request_error', code: 'ERR_BACKEND_CONTEXT_LENGTH', param: null, details: { prompt_tokens: 5000, context_size: 4096 } } },
    });
    // As the gateway rebuilds a stored job error.
    expect(toErrorBody(new LlmqError('ERR_QUEUE_FULL', 'full', { details: { retry_after_s: 5 } })).body.error.details).toEqual({ retry_after_s: 5 });
    expect(toErrorBody(new LlmqError('ERR_JOB_TIMEOUT', 'slow')).body.error).not.toHaveProperty('details');
    const internal = Object.assign(new TypeError('boom'), { details: { secret: 'x' } });
    expect(toErrorBody(internal).body.error).not.toHaveProperty('details');
  });

  it('keep details small and plain: scalars and short lists only, credentials in URLs masked', () => {
    const details = errorDetails(
      new LlmqError('ERR_BACKEND_UNAVAILABLE', 'down', {
        details: { status: 503, server: 'http://user:hunter2@ts:8080/v1', tried: ['a', 'b'], request: { prompt: 'private' }, many: Array(17).fill(1), long: 'x'.repeat(300), nan: Number.NaN },
      }),
    );
    expect(details).toEqual({ status: 503, server: 'http://***@ts:8080/v1', tried: ['a', 'b'], long: `${'x'.repeat(200)}…` });
    // A password long enough to push its "@" past the cut is masked all the same; an overlong key is dropped.
    const cut = errorDetails(new LlmqError('ERR_BACKEND_UNAVAILABLE', 'down', { details: { server: `https://user:${'A'.repeat(250)}@ts:8080/v1`, ['k'.repeat(65)]: 1 } }));
    expect(cut).toEqual({ server: 'https://***@ts:8080/v1' });
    expect(errorDetails(new LlmqError('ERR_BACKEND_UNAVAILABLE', 'down', { details: { request: { prompt: 'private' } } }))).toBeUndefined();
    expect(errorDetails(new Error('plain'))).toBeUndefined();
  });
});
