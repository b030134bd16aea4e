import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Redis } from 'ioredis';
import { silentLogger, type JobEvent } from '@llmq/core';
import { EventPublisher } from './events.js';
import { keys } from './keys.js';

/** A Redis stand-in that records each PUBLISH with the time its pipeline was sent. */
function recordingRedis() {
  const sent: { at: number; channel: string; event: JobEvent }[] = [];
  const redis = {
    pipeline() {
      const queued: { channel: string; message: string }[] = [];
      const p = {
        publish(channel: string, message: string) {
          queued.push({ channel, message });
          return p;
        },
        async exec() {
          const at = performance.now();
          for (const q of queued) sent.push({ at, channel: q.channel, event: JSON.parse(q.message) as JobEvent });
          return [];
        },
      };
      return p;
    },
  };
  return { redis: redis as unknown as Redis, sent };
}

/**
 * The clock is faked (timers, immediates, Date and performance): "at once" and "held for the
 * window" are told apart by the fake time that passed, not by how busy the machine is.
 */
const settle = (ms: number) => vi.advanceTimersByTimeAsync(ms);

describe('EventPublisher', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate', 'Date', 'performance'] }));
  afterEach(() => vi.useRealTimers());

  it("sends a job's first token at once and coalesces the tokens after it", async () => {
    const { redis, sent } = recordingRedis();
    const pub = new EventPublisher(redis, keys('t'), silentLogger, 20);
    const t0 = performance.now();
    pub.publish('j1', { type: 'status', status: 'active', attempt: 1, worker: 'w', at: Date.now() });
    await settle(1);
    // Right after a flush: a later token would wait for the coalescing window, the first must not.
    pub.publish('j1', { type: 'token', text: 'a', index: 0, offset: 0 });
    await settle(0);
    expect(sent.map((s) => s.event.type)).toEqual(['status', 'token']);
    expect(sent[1]!.at - t0).toBeLessThan(10);
    pub.publish('j1', { type: 'token', text: ' b', index: 1, offset: 1 });
    pub.publish('j1', { type: 'token', text: ' c', index: 2, offset: 3 });
    await settle(2);
    expect(sent).toHaveLength(2); // held for the window
    await settle(40);
    expect(sent).toHaveLength(3);
    expect(sent[2]!.event).toEqual({ type: 'token', text: ' b c', index: 1, offset: 1 });
    // A second job's first token is not held back by the first job's window either.
    pub.publish('j1', { type: 'token', text: ' d', index: 3, offset: 5 });
    pub.publish('j2', { type: 'token', text: 'x', index: 0, offset: 0 });
    await settle(0);
    expect(sent.slice(3).map((s) => [s.channel.endsWith('j1'), s.event])).toEqual([
      [true, { type: 'token', text: ' d', index: 3, offset: 5 }],
      [false, { type: 'token', text: 'x', index: 0, offset: 0 }],
    ]);
  });
});
