import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { Logger } from '@llmq/core';
import { ControlListener } from './control.js';

/** A subscriber whose first `failures` SUBSCRIBE calls are refused. */
function flakySubscriber(failures: number) {
  const em = new EventEmitter() as EventEmitter & { subscribe: (...c: string[]) => Promise<number>; status: string; calls: number };
  em.status = 'ready';
  em.calls = 0;
  em.subscribe = async () => {
    em.calls++;
    if (em.calls <= failures) throw new Error('Connection is closed.');
    return 2;
  };
  return em;
}

function recordingLogger() {
  const lines: { level: string; msg: string | undefined }[] = [];
  const log = (level: string) => (_o: object | string, msg?: string) => void lines.push({ level, msg });
  const logger: Logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error'), child: () => logger };
  return { logger, lines };
}

describe('ControlListener', () => {
  it('keeps trying to subscribe to the control channels, and cancels once it has', async () => {
    const sub = flakySubscriber(2);
    const { logger, lines } = recordingLogger();
    const control = new ControlListener(sub as unknown as Redis, { cancelChannel: 'c', watchChannel: 'w', publish: () => undefined, logger });
    await control.whenReady(); // the first attempt, failed: start-up does not wait for the retries
    expect(lines.filter((l) => l.level === 'error')).toHaveLength(1);
    const deadline = Date.now() + 3_000;
    while (sub.calls < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(sub.calls).toBe(3);
    expect(lines.some((l) => l.level === 'info' && l.msg === 'control channels subscribed')).toBe(true);
    let cancelled = 0;
    control.track('job_1', { cancel: () => void cancelled++, onWatch: () => undefined });
    sub.emit('message', 'c', 'job_1');
    expect(cancelled).toBe(1);
  });

  it('remembers a watch for a job that starts after it, and a cancel likewise', () => {
    const sub = flakySubscriber(0);
    const { logger } = recordingLogger();
    const control = new ControlListener(sub as unknown as Redis, { cancelChannel: 'c', watchChannel: 'w', publish: () => undefined, logger });
    sub.emit('message', 'w', 'job_2');
    sub.emit('message', 'c', 'job_3');
    expect(control.track('job_2', { cancel: () => undefined, onWatch: () => undefined })).toEqual({ cancelled: false, watched: true });
    expect(control.track('job_3', { cancel: () => undefined, onWatch: () => undefined })).toEqual({ cancelled: true, watched: false });
    expect(control.track('job_4', { cancel: () => undefined, onWatch: () => undefined })).toEqual({ cancelled: false, watched: false });
  });

  it('publishes the final event to a watch that came after the processor returned and before the outcome was stored', () => {
    const sub = flakySubscriber(0);
    const { logger } = recordingLogger();
    const published: { id: string; type: string }[] = [];
    const control = new ControlListener(sub as unknown as Redis, { cancelChannel: 'c', watchChannel: 'w', publish: (id, e) => void published.push({ id, type: e.type }), logger });
    control.track('job_5', { cancel: () => undefined, onWatch: () => undefined });
    control.untrack('job_5');
    // Neither running nor finished here: BullMQ is still moving the job to failed.
    sub.emit('message', 'w', 'job_5');
    control.end('job_5', { type: 'failed', error: { message: 'no room', code: 'ERR_BACKEND_CONTEXT_LENGTH' }, attempt: 1, will_retry: false }, true);
    expect(published).toEqual([{ id: 'job_5', type: 'failed' }]);
  });

  it('keeps no watch for a job that left this process without an end here (rate limited, retried elsewhere)', () => {
    const sub = flakySubscriber(0);
    const { logger } = recordingLogger();
    const published: string[] = [];
    const control = new ControlListener(sub as unknown as Redis, { cancelChannel: 'c', watchChannel: 'w', publish: (id) => void published.push(id), logger });
    for (let i = 0; i < 100; i++) {
      control.track(`job_${i}`, { cancel: () => undefined, onWatch: () => undefined });
      sub.emit('message', 'w', `job_${i}`);
      control.untrack(`job_${i}`);
    }
    const watched = (control as unknown as { watched: Set<string> }).watched;
    expect(watched.size).toBe(0);
    // The watch still reaches the outcome when BullMQ reports it just after.
    control.end('job_99', { type: 'completed', result: { text: 'x', finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }, model: 'm', started_at: 0, completed_at: 1, worker: 'w' } }, true);
    expect(published).toEqual(['job_99']);
  });
});
