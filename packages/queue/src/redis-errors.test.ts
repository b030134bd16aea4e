import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Logger } from '@llmq/core';
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { REDIS_ERROR_WINDOW_MS, logRedisError, watchRedisConnection } from './redis-errors.js';

function recordingLogger(): Logger & { lines: { obj: object | string; msg?: string | undefined }[] } {
  const lines: { obj: object | string; msg?: string | undefined }[] = [];
  const log = {
    lines,
    debug: () => undefined,
    warn: (obj: object | string, msg?: string) => void lines.push({ obj, msg }),
    info: (obj: object | string, msg?: string) => void lines.push({ obj, msg }),
    error: () => undefined,
    child: () => log,
  };
  return log;
}

describe('logRedisError', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('logs the first of an outage at once and the repeats, from every connection, as one count per window', () => {
    const log = recordingLogger();
    const refused = () => new Error('connect ECONNREFUSED 127.0.0.1:6399');
    // Ten reconnect attempts of five connections.
    for (let attempt = 0; attempt < 10; attempt++) {
      for (const msg of ['redis connection error', 'redis subscriber error', 'queue connection error', 'dlq connection error', 'worker error']) logRedisError(log, msg, refused());
      vi.advanceTimersByTime(900);
    }
    expect(log.lines.map((l) => l.msg)).toEqual(['redis connection error']);
    vi.advanceTimersByTime(REDIS_ERROR_WINDOW_MS);
    expect(log.lines).toHaveLength(2);
    expect(log.lines[1]!.obj).toMatchObject({ err: 'connect ECONNREFUSED 127.0.0.1:6399', repeated: 49 });
    expect((log.lines[1]!.obj as { sources: string[] }).sources).toHaveLength(5);
    // After the window the next one is logged again, and a different error at once.
    logRedisError(log, 'redis connection error', refused());
    logRedisError(log, 'queue connection error', new Error('READONLY You can\'t write against a read only replica.'), { model: 'm' });
    expect(log.lines.slice(2).map((l) => l.obj)).toEqual([{ err: 'connect ECONNREFUSED 127.0.0.1:6399' }, { err: "READONLY You can't write against a read only replica.", model: 'm' }]);
    vi.advanceTimersByTime(REDIS_ERROR_WINDOW_MS);
    // Nothing repeated: no count line.
    expect(log.lines).toHaveLength(4);
  });

  it('says when a connection that failed is back, once per outage, so two outages do not read as one', () => {
    const log = recordingLogger();
    const redis = new EventEmitter();
    watchRedisConnection(redis as unknown as Redis, log, 'connection');
    redis.emit('ready');
    expect(log.lines).toEqual([]);
    const outage = () => {
      redis.emit('error', new Error('connect ECONNREFUSED 127.0.0.1:1'));
      redis.emit('error', new Error('connect ECONNREFUSED 127.0.0.1:1'));
      redis.emit('ready');
    };
    outage();
    outage();
    expect(log.lines.map((l) => l.msg)).toEqual(['redis connection error', 'redis connection is back', 'redis connection is back']);
    vi.advanceTimersByTime(REDIS_ERROR_WINDOW_MS);
  });
});
