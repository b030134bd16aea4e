import type { Redis } from 'ioredis';
import type { Logger } from '@llmq/core';

/** How long the same Redis error is counted rather than logged again. */
export const REDIS_ERROR_WINDOW_MS = 10_000;

/** Errors logged in the last window, by message, for the whole process. */
const windows = new Map<string, { repeated: number; sources: Set<string> }>();

/**
 * Logs a Redis connection error without a line per connection per reconnect attempt: during an
 * outage every connection of a process (its own, BullMQ's for each queue and worker, the
 * subscriber) fails the same way about once a second, which made ~50 lines in 10 s. The first
 * error with a message is logged at once (`msg` says which connection); the same message again
 * within {@link REDIS_ERROR_WINDOW_MS}, from any connection of the process, is counted, and the
 * count logged once when that window ends.
 */
export function logRedisError(log: Logger, msg: string, err: Error, fields: Record<string, unknown> = {}): void {
  const key = err.message;
  const open = windows.get(key);
  if (open) {
    open.repeated++;
    open.sources.add(msg);
    return;
  }
  log.warn({ err: err.message, ...fields }, msg);
  const window = { repeated: 0, sources: new Set<string>() };
  windows.set(key, window);
  setTimeout(() => {
    windows.delete(key);
    if (window.repeated > 0) {
      log.warn({ err: key, repeated: window.repeated, sources: [...window.sources] }, `the same error ${window.repeated} more times in ${REDIS_ERROR_WINDOW_MS / 1000} s`);
    }
  }, REDIS_ERROR_WINDOW_MS).unref();
}

/**
 * Logs a connection's errors through {@link logRedisError}, and its return once it is ready again
 * after one: a line per outage end, so two outages close together do not read as one.
 */
export function watchRedisConnection(redis: Redis, log: Logger, name: string): void {
  let failing = false;
  redis.on('error', (err: Error) => {
    failing = true;
    logRedisError(log, `redis ${name} error`, err);
  });
  redis.on('ready', () => {
    if (!failing) return;
    failing = false;
    log.info({ connection: name }, `redis ${name} is back`);
  });
}
