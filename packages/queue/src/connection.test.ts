/**
 * Subscriber connections on a real redis-server: a SUBSCRIBE issued while ioredis is still
 * connecting must hold, and survive a Redis restart. With ioredis' ready check on, the first case
 * silently lost the subscription: the worker ran jobs it could neither stream nor cancel.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '@llmq/testing';
import { createRedis } from './connection.js';

let redis: TestRedis;
const open: Redis[] = [];

function connect(role: 'subscriber' | 'worker'): Redis {
  const r = createRedis(redis.url, role);
  r.on('error', () => undefined);
  open.push(r);
  return r;
}

/** Publishes until the subscriber has a message (or `ms` passes); returns what it got. */
async function deliver(sub: Redis, channel: string, ms = 3_000): Promise<string[]> {
  const got: string[] = [];
  sub.on('message', (ch: string, msg: string) => {
    if (ch === channel) got.push(msg);
  });
  const pub = connect('worker');
  const deadline = Date.now() + ms;
  for (let i = 0; got.length === 0 && Date.now() < deadline; i++) {
    await pub.publish(channel, `m${i}`).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
  }
  return got;
}

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const r of open) r.disconnect();
  await redis?.stop();
});

describe('subscriber connections', () => {
  it('keep a subscription made while the connection is still being set up', async () => {
    for (let i = 0; i < 3; i++) {
      const sub = connect('subscriber');
      const errors: string[] = [];
      sub.on('error', (err: Error) => errors.push(err.message));
      // 'connect': the socket is open, ioredis has not declared it ready yet.
      await new Promise((r) => sub.once('connect', r));
      await sub.subscribe('llmq-test-early');
      // The failure mode took the connection down and back up a moment later, without the channel.
      await new Promise((r) => setTimeout(r, 200));
      expect(await deliver(sub, 'llmq-test-early')).not.toHaveLength(0);
      expect(errors).toEqual([]);
      sub.removeAllListeners('message');
      await sub.unsubscribe('llmq-test-early');
    }
  });

  it('subscribe again by themselves after Redis restarts', async () => {
    const sub = connect('subscriber');
    await sub.subscribe('llmq-test-restart');
    expect(await deliver(sub, 'llmq-test-restart')).not.toHaveLength(0);
    sub.removeAllListeners('message');
    await redis.restart();
    // ioredis reconnects with backoff (at most 3 s) and resubscribes.
    expect(await deliver(sub, 'llmq-test-restart', 10_000)).not.toHaveLength(0);
  }, 20_000);
});
