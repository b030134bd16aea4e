import { Redis, type RedisOptions } from 'ioredis';

export type ConnectionRole = 'worker' | 'producer' | 'subscriber';

/**
 * Redis connections with the settings BullMQ needs to survive restarts:
 * - workers/subscribers: `maxRetriesPerRequest: null` (block, reconnect forever), keepAlive;
 * - producers: `enableOfflineQueue: false` so a dead Redis fails fast (503) instead of hanging.
 * No `enableAutoPipelining` (it breaks BullMQ's blocking commands).
 */
export function createRedis(url: string, role: ConnectionRole, extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    keepAlive: 10_000,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 3_000),
    lazyConnect: false,
  };
  const byRole: Record<ConnectionRole, RedisOptions> = {
    worker: { maxRetriesPerRequest: null, enableReadyCheck: true },
    subscriber: { maxRetriesPerRequest: null, enableReadyCheck: true },
    producer: { maxRetriesPerRequest: 1, enableOfflineQueue: false, commandTimeout: 5_000 },
  };
  return new Redis(url, { ...common, ...byRole[role], ...extra });
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export function waitReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms (${redis.options.host}:${redis.options.port})`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}

/** Checks the eviction policy BullMQ requires; returns a warning text or null. */
export async function checkRedisPolicy(redis: Redis): Promise<string | null> {
  try {
    const reply = (await redis.config('GET', 'maxmemory-policy')) as string[];
    const policy = reply[1];
    if (policy && policy !== 'noeviction') {
      return `Redis maxmemory-policy is "${policy}"; BullMQ needs "noeviction" or queued jobs can be evicted and lost`;
    }
    return null;
  } catch {
    return 'could not read Redis maxmemory-policy (CONFIG GET refused); make sure it is "noeviction"';
  }
}
