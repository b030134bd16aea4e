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
    // No ready check (INFO) and no CLIENT SETINFO: ioredis 5.x sends a SUBSCRIBE issued while it
    // is connecting at once, then fails its own INFO in subscriber mode, reconnects, and comes back
    // without the subscription (ioredis issue #2037, fixed in 6.0): the process silently stops
    // getting watch/cancel messages or job events. connection.test.ts reproduces it.
    subscriber: { maxRetriesPerRequest: null, enableReadyCheck: false, disableClientInfo: true },
    // No per-command timeout: ioredis would arm a timer for every command of a bulk add.
    // The gateway bounds each API call instead (withTimeout).
    producer: { maxRetriesPerRequest: 1, enableOfflineQueue: false },
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

/**
 * Bounds one API call's Redis work: a frozen Redis (socket open, nothing answering) becomes a
 * 503 after `ms` instead of a hung request.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(onTimeout()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
