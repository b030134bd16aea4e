import type { Redis } from 'ioredis';
import type { SourceKv } from '@llmq/core';
import type { Keys } from './keys.js';

const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

/** Checkpoints and locks for a source, namespaced under `<prefix>:_src:<source>:`. */
export function createSourceKv(redis: Redis, keys: Keys, source: string): SourceKv {
  const k = (key: string) => keys.sourceKv(source, key);
  return {
    async get(key) {
      return redis.get(k(key));
    },
    async set(key, value, ttlMs) {
      if (ttlMs !== undefined) await redis.set(k(key), value, 'PX', ttlMs);
      else await redis.set(k(key), value);
    },
    async acquire(key, owner, ttlMs) {
      return (await redis.set(k(key), owner, 'PX', ttlMs, 'NX')) === 'OK';
    },
    async renew(key, owner, ttlMs) {
      return (await redis.eval(RENEW, 1, k(key), owner, String(ttlMs))) === 1;
    },
    async release(key, owner) {
      await redis.eval(RELEASE, 1, k(key), owner);
    },
  };
}
