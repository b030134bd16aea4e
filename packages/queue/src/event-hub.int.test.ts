/**
 * EventHub.subscribe against a real redis-server that goes away, freezes, or was never there: the
 * subscriber connection queues commands until Redis is back, so a subscription must not be asked
 * for while it is down, and must be bounded while it does not answer.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, silentLogger } from '@llmq/core';
import { freePort, startRedis, type TestRedis } from '@llmq/testing';
import { createRedis, waitReady } from './connection.js';
import { EventHub } from './events.js';
import { keys as makeKeys } from './keys.js';

const keys = makeKeys('llmq-hub-test');
const offline = (r: Redis) => (r as unknown as { offlineQueue: { length: number } }).offlineQueue.length;
const open: Redis[] = [];
function subscriber(url: string): Redis {
  const r = createRedis(url, 'subscriber');
  r.on('error', () => undefined);
  open.push(r);
  return r;
}
async function failure(p: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const started = performance.now();
  try {
    await p;
  } catch (err) {
    return { err, ms: performance.now() - started };
  }
  throw new Error('expected a rejection');
}

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  for (const r of open) r.disconnect();
  await redis?.stop();
});

describe('EventHub.subscribe when Redis is not there', () => {
  it('refuses at once while Redis is down, queueing nothing, and subscribes again once it is back', async () => {
    const conn = subscriber(redis.url);
    await waitReady(conn);
    const hub = new EventHub(conn, keys, silentLogger);
    const events: unknown[] = [];
    (await hub.subscribe('before', (e) => events.push(e)))();
    await redis.kill();
    // The first request after the kill may go out before the connection notices (bounded to 5 s).
    while (conn.status === 'ready') await new Promise((r) => setTimeout(r, 10));
    try {
      for (let i = 0; i < 200; i++) {
        const { err, ms } = await failure(hub.subscribe(`down-${i % 10}`, () => undefined));
        expect(errorCode(err)).toBe('ERR_REDIS_UNAVAILABLE');
        expect(ms).toBeLessThan(50);
      }
      // Nothing waits to be sent when Redis is back: not 200 SUBSCRIBEs, nor their UNSUBSCRIBEs.
      expect(offline(conn)).toBe(0);
    } finally {
      await redis.start();
    }
    await waitReady(conn, 15_000);
    const unsubscribe = await hub.subscribe('after', (e) => events.push(e));
    unsubscribe();
  });

  it('refuses at once on a connection that never came up, once its first attempt failed', async () => {
    // As the gateway does: the hub is made at once, before the connection's first attempt ends.
    const conn = subscriber(`redis://127.0.0.1:${await freePort()}`);
    const hub = new EventHub(conn, keys, silentLogger);
    await new Promise((r) => conn.once('error', r));
    for (let i = 0; i < 50; i++) {
      const { err, ms } = await failure(hub.subscribe(`never-${i}`, () => undefined));
      expect(errorCode(err)).toBe('ERR_REDIS_UNAVAILABLE');
      expect(ms).toBeLessThan(50);
    }
    expect(offline(conn)).toBe(0);
  });

  it('bounds every listener of a job, not only the first, while Redis is frozen', async () => {
    const conn = subscriber(redis.url);
    await waitReady(conn);
    const hub = new EventHub(conn, keys, silentLogger, 300);
    redis.freeze();
    try {
      const first = failure(hub.subscribe('frozen', () => undefined));
      const second = failure(hub.subscribe('frozen', () => undefined));
      for (const { err, ms } of await Promise.all([first, second])) {
        expect(errorCode(err)).toBe('ERR_REDIS_UNAVAILABLE');
        expect(ms).toBeGreaterThanOrEqual(250);
        expect(ms).toBeLessThan(2_000);
      }
    } finally {
      redis.unfreeze();
    }
  });
});
