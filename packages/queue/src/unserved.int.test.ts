/**
 * Worker reports of models they could not start, on a real redis-server: what the API reads to
 * tell clients why a model's jobs would wait for ever (see UnservedReporter).
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@llmq/config';
import { silentLogger } from '@llmq/core';
import { startRedis, type TestRedis } from '@llmq/testing';
import { createRedis } from './connection.js';
import { keys as makeKeys } from './keys.js';
import { Producer } from './producer.js';
import { UNSERVED_TTL_MS, UnservedReporter } from './unserved.js';

let redis: TestRedis;
let connection: Redis;
const prefix = `u${Math.random().toString(36).slice(2, 8)}`;
const keys = makeKeys(prefix);
const config = loadConfig({
  inline: {
    redis: { url: 'redis://unused', prefix },
    models: ['a', 'b', 'c'].map((name) => ({ name, backend: 'echo' })),
  },
  env: {},
});

beforeAll(async () => {
  redis = await startRedis();
  connection = createRedis(redis.url, 'worker');
});
afterAll(async () => {
  connection?.disconnect();
  await redis?.stop();
});

describe('UnservedReporter and Producer.notServed', () => {
  it('reports skipped models, takes back reports of models it serves, and only its own at close', async () => {
    const producer = new Producer(config, connection, silentLogger);
    const report = (worker: string) => JSON.stringify({ worker, code: 'ERR_MODEL_LOAD', message: 'x', at: Date.now() });
    // An earlier worker could not serve "b"; this one can.
    await connection.set(keys.unserved('b'), report('old:1'));
    const reporter = new UnservedReporter(connection, keys, 'host:42', silentLogger);
    await reporter.start([{ model: 'a', reason: 'ERR_MODEL_FILE_MISSING: model file /m/a.gguf does not exist' }], ['b']);
    expect(await connection.exists(keys.unserved('b'))).toBe(0);
    expect(await producer.notServed('a')).toMatchObject({ worker: 'host:42', code: 'ERR_MODEL_FILE_MISSING', message: 'model file /m/a.gguf does not exist' });
    expect(await producer.notServed('b')).toBeUndefined();
    expect([...(await producer.unservedReports()).keys()]).toEqual(['a']);
    // Redis forgets a report its worker stops repeating.
    const ttl = await connection.pttl(keys.unserved('a'));
    expect(ttl).toBeGreaterThan(UNSERVED_TTL_MS - 5_000);
    expect(ttl).toBeLessThanOrEqual(UNSERVED_TTL_MS);

    // Another worker reported "c"; and "a" was reported again by a third since: closing leaves both.
    await reporter.set('c', 'ERR_MODEL_LOAD: bad file');
    await connection.set(keys.unserved('c'), report('other:7'));
    await reporter.close();
    expect(await connection.exists(keys.unserved('a'))).toBe(0);
    expect(await connection.exists(keys.unserved('c'))).toBe(1);
    // A closed reporter writes nothing more.
    await reporter.set('a', 'ERR_MODEL_LOAD: late');
    expect(await connection.exists(keys.unserved('a'))).toBe(0);
    await connection.del(keys.unserved('c'));
  });

  it('reads past values that are not reports', async () => {
    const producer = new Producer(config, connection, silentLogger);
    await connection.set(keys.unserved('b'), 'not json');
    expect(await producer.notServed('b')).toBeUndefined();
    expect((await producer.unservedReports()).size).toBe(0);
    await connection.del(keys.unserved('b'));
  });

  it('does not call a model unserved while a worker process takes its jobs', async () => {
    const producer = new Producer(config, connection, silentLogger);
    await connection.set(keys.unserved('a'), JSON.stringify({ worker: 'elsewhere:1', code: 'ERR_MODEL_FILE_MISSING', message: 'x', at: Date.now() }));
    expect(await producer.notServed('a')).toBeDefined();
    // A worker's blocking connection carries its queue's client name (as BullMQ names it).
    const worker = createRedis(redis.url, 'worker');
    try {
      await worker.client('SETNAME', `${prefix}:${Buffer.from('a').toString('base64')}:w:test`);
      expect(await producer.notServed('a')).toBeUndefined();
      // The report itself stays for GET /v1/queues to show.
      expect((await producer.unservedReports()).get('a')).toMatchObject({ worker: 'elsewhere:1' });
    } finally {
      worker.disconnect();
      await connection.del(keys.unserved('a'));
    }
  });
});
