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
import { UNSERVED_FRESH_MS, UnservedReporter } from './unserved.js';

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
    // An earlier worker could not serve "b"; this one can.
    await connection.hset(keys.unserved, 'b', JSON.stringify({ worker: 'old:1', code: 'ERR_MODEL_LOAD', message: 'bad file', at: Date.now() }));
    const reporter = new UnservedReporter(connection, keys, 'host:42', silentLogger);
    await reporter.start([{ model: 'a', reason: 'ERR_MODEL_FILE_MISSING: model file /m/a.gguf does not exist' }], ['b']);
    expect(await connection.hexists(keys.unserved, 'b')).toBe(0);
    const report = await producer.notServed('a');
    expect(report).toMatchObject({ worker: 'host:42', code: 'ERR_MODEL_FILE_MISSING', message: 'model file /m/a.gguf does not exist' });
    expect(await producer.notServed('b')).toBeUndefined();
    expect([...(await producer.unservedReports()).keys()]).toEqual(['a']);

    // Another worker reported "c" too; this one closing leaves that report alone.
    await connection.hset(keys.unserved, 'c', JSON.stringify({ worker: 'other:7', code: 'ERR_MODEL_LOAD', message: 'x', at: Date.now() }));
    await reporter.close();
    expect(await connection.hexists(keys.unserved, 'a')).toBe(0);
    expect(await connection.hexists(keys.unserved, 'c')).toBe(1);
    await connection.hdel(keys.unserved, 'c');
  });

  it('ignores a report its worker stopped repeating (killed without taking it back)', async () => {
    const producer = new Producer(config, connection, silentLogger);
    await connection.hset(keys.unserved, 'a', JSON.stringify({ worker: 'dead:1', code: 'ERR_MODEL_LOAD', message: 'x', at: Date.now() - UNSERVED_FRESH_MS - 1_000 }));
    await connection.hset(keys.unserved, 'b', 'not json');
    expect(await producer.notServed('a')).toBeUndefined();
    expect(await producer.notServed('b')).toBeUndefined();
    expect((await producer.unservedReports()).size).toBe(0);
    await connection.del(keys.unserved);
  });

  it('does not call a model unserved while a worker process takes its jobs', async () => {
    const producer = new Producer(config, connection, silentLogger);
    await connection.hset(keys.unserved, 'a', JSON.stringify({ worker: 'elsewhere:1', code: 'ERR_MODEL_FILE_MISSING', message: 'x', at: Date.now() }));
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
      await connection.del(keys.unserved);
    }
  });
});
