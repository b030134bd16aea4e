import { describe, expect, it } from 'vitest';
import { errorCode } from '@llmq/core';
import { httpError, readJsonStream, toChat, toRequest } from './protocol.js';

async function collect(parts: string[]): Promise<unknown[]> {
  const encoder = new TextEncoder();
  async function* body() {
    for (const p of parts) yield encoder.encode(p);
  }
  const out: unknown[] = [];
  for await (const v of readJsonStream(body())) out.push(v);
  return out;
}

describe('toChat', () => {
  it('gathers system messages and alternates user/assistant strings', () => {
    expect(
      toChat([
        { role: 'system', content: 'S1' },
        { role: 'user', content: 'u1' },
        { role: 'assistant', content: 'a1' },
        { role: 'system', content: 'S2' },
        { role: 'user', content: 'u2' },
      ]),
    ).toEqual({ system: 'S1\n\nS2', messages: ['u1', 'a1', 'u2'] });
  });

  it('joins consecutive turns of one role and opens with a user turn', () => {
    expect(toChat([{ role: 'assistant', content: 'hi' }, { role: 'user', content: 'a' }, { role: 'user', content: 'b' }])).toEqual({ messages: ['', 'hi', 'a\n\nb'] });
  });
});

describe('toRequest', () => {
  it('maps llmq parameters to ts_server fields', () => {
    const { endpoint, body } = toRequest(
      {
        model: 'm',
        prompt: 'p',
        max_tokens: 5,
        temperature: 0.3,
        top_k: 40,
        top_p: 0.8,
        stop: ['a', 'b'],
        repeat_penalty: 1.2,
        presence_penalty: 0.1,
        frequency_penalty: 0.2,
        response_format: { type: 'json_schema', json_schema: { schema: { type: 'object', properties: { x: { type: 'number' } } } } },
      },
      { stream: true, seed: 9 },
    );
    expect(endpoint).toBe('completions');
    expect(body).toEqual({
      prompt: 'p',
      max_tokens: 5,
      temperature: 0.3,
      top_k: 40,
      top_p: 0.8,
      seed: 9,
      stop: ['a', 'b'],
      repetition_penalty: 1.2,
      presence_penalty: 0.1,
      frequency_penalty: 0.2,
      schema: { type: 'object', properties: { x: { type: 'number' } } },
      stream: true,
    });
  });

  it('says top_p 0 as top_k 1, whatever top_k was asked', () => {
    expect(toRequest({ model: 'm', prompt: 'p', top_p: 0, top_k: 40 }, { stream: false, seed: undefined }).body).toEqual({ prompt: 'p', top_k: 1, stream: false });
  });

  it('refuses more than five stop strings', () => {
    expect(() => toRequest({ model: 'm', prompt: 'p', stop: ['1', '2', '3', '4', '5', '6'] }, { stream: false, seed: undefined })).toThrow(
      expect.objectContaining({ code: 'ERR_REQUEST_UNSUPPORTED_PARAM', param: 'stop' }),
    );
  });
});

describe('readJsonStream', () => {
  it('splits on blank lines whatever the chunking, and reads a last object without one', async () => {
    expect(await collect(['{"text":"a"}\n', '\n{"te', 'xt":"b"}\n\n\n\n{"reached_end":true}'])).toEqual([{ text: 'a' }, { text: 'b' }, { reached_end: true }]);
  });

  it('keeps multi-byte characters split across chunks', async () => {
    const bytes = new TextEncoder().encode('{"text":"é"}\n\n');
    async function* body() {
      yield bytes.slice(0, 10);
      yield bytes.slice(10);
    }
    const out: unknown[] = [];
    for await (const v of readJsonStream(body())) out.push(v);
    expect(out).toEqual([{ text: 'é' }]);
  });
});

describe('httpError', () => {
  const h = (o: Record<string, string> = {}) => new Headers(o);
  it.each([
    [400, '{"status":400,"error":"invalid parameter"}', 'ERR_BACKEND_BAD_REQUEST', false],
    [400, '{"status":400,"error":"prompt too long for the context length"}', 'ERR_BACKEND_CONTEXT_LENGTH', false],
    [401, '{"status":401,"error":"invalid api key"}', 'ERR_BACKEND_AUTH', false],
    [403, 'forbidden', 'ERR_BACKEND_AUTH', false],
    [404, '{"error":"unknown engine"}', 'ERR_BACKEND_BAD_REQUEST', false],
    [429, '{"error":{"message":"quota","code":"insufficient_quota"}}', 'ERR_BACKEND_QUOTA', false],
    // An llmq gateway's TextSynth front door: { error, code } with llmq's codes.
    [429, '{"error":"quota gone","code":"ERR_BACKEND_QUOTA"}', 'ERR_BACKEND_QUOTA', false],
    [400, '{"error":"does not fit","code":"ERR_BACKEND_CONTEXT_LENGTH"}', 'ERR_BACKEND_CONTEXT_LENGTH', false],
    [429, '{"error":"queue full","code":"ERR_QUEUE_FULL"}', 'ERR_BACKEND_RATE_LIMITED', false],
    [500, 'oops', 'ERR_BACKEND_UNAVAILABLE', true],
    [503, '', 'ERR_BACKEND_UNAVAILABLE', true],
  ])('%d %s → %s', (status, body, code, serverFault) => {
    const out = httpError(status, h(), body, 'http://s');
    expect(errorCode(out.error)).toBe(code);
    expect(out.serverFault).toBe(serverFault);
  });

  it('429 carries retry_after_ms', () => {
    const out = httpError(429, h({ 'retry-after': '3' }), '{"status":429,"error":"busy"}', 'http://s');
    expect(out.error).toMatchObject({ code: 'ERR_BACKEND_RATE_LIMITED', retryable: true, details: { status: 429, retry_after_ms: 3000, server: 'http://s' } });
  });
});
