import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, silentLogger } from '@llmq/core';
import { webhookSink } from './index.js';

let url = '';
const received: { headers: Record<string, unknown>; body: any }[] = [];
let nextStatus = 200;
const server = createServer((req, res) => {
  let data = '';
  req.on('data', (c: Buffer) => (data += c.toString()));
  req.on('end', () => {
    received.push({ headers: req.headers, body: JSON.parse(data) });
    res.writeHead(nextStatus).end();
  });
});
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});
afterAll(() => server.close());

const input = {
  jobId: 'job_1',
  model: 'echo',
  request: { model: 'echo', prompt: 'secret prompt', metadata: { a: 1 } },
  result: { text: 'hi', finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }, model: 'echo', started_at: 1, completed_at: 2 },
  source: { type: 'http' },
  signal: new AbortController().signal,
  logger: silentLogger,
} as const;

describe('webhook sink', () => {
  it('POSTs the result with the job id as idempotency key and an HMAC signature', async () => {
    const config = webhookSink.configSchema.parse({ url, secret_env: 'HOOK_SECRET' });
    const sink = await webhookSink.create({ name: 'hook', config }, { env: { HOOK_SECRET: 's3cret' } } as never);
    nextStatus = 200;
    await sink.write(input as never);
    const got = received.at(-1)!;
    expect(got.headers['idempotency-key']).toBe('job_1');
    expect(got.body).toMatchObject({ id: 'job_1', model: 'echo', result: { text: 'hi' }, metadata: { a: 1 } });
    expect(got.body.request).toBeUndefined();
    const expected = createHmac('sha256', 's3cret').update(JSON.stringify(got.body)).digest('hex');
    expect(got.headers['x-llmq-signature']).toBe(`sha256=${expected}`);
  });

  it('retries 5xx and unreachable receivers, not 4xx', async () => {
    const sink = await webhookSink.create({ name: 'hook', config: webhookSink.configSchema.parse({ url }) }, { env: {} } as never);
    nextStatus = 503;
    const e5 = await sink.write(input as never).catch((e: unknown) => e);
    expect(errorCode(e5)).toBe('ERR_SINK_WRITE');
    expect(isRetryable(e5)).toBe(true);
    nextStatus = 400;
    expect(isRetryable(await sink.write(input as never).catch((e: unknown) => e))).toBe(false);
    const dead = await webhookSink.create({ name: 'd', config: webhookSink.configSchema.parse({ url: 'http://127.0.0.1:1/x' }) }, { env: {} } as never);
    const e = await dead.write(input as never).catch((err: unknown) => err);
    expect(isRetryable(e)).toBe(true);
  });
});
