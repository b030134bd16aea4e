import { describe, expect, it } from 'vitest';
import { errorCode } from '@llmq/core';
import { SlotPool } from './slot-pool.js';

describe('SlotPool', () => {
  it('hands slots out first come, first served, and straight to the next waiter on release', async () => {
    const pool = new SlotPool(['a']);
    const signal = new AbortController().signal;
    const first = await pool.acquire(signal);
    const order: string[] = [];
    const second = pool.acquire(signal).then((s) => (order.push('second'), s));
    const third = pool.acquire(signal).then((s) => (order.push('third'), s));
    expect(pool.waiting).toBe(2);
    pool.release(first);
    expect(await second).toBe('a');
    pool.release('a');
    expect(await third).toBe('a');
    expect(order).toEqual(['second', 'third']);
    expect(pool.available).toBe(0);
  });

  it('hands out the free slot that comes first in its list, whatever order they came back in', async () => {
    const pool = new SlotPool([0, 1, 2, 3]);
    const signal = new AbortController().signal;
    const taken = [await pool.acquire(signal), await pool.acquire(signal), await pool.acquire(signal), await pool.acquire(signal)];
    expect(taken).toEqual([0, 1, 2, 3]);
    pool.release(3);
    pool.release(1);
    pool.release(2);
    expect(await pool.acquire(signal)).toBe(1);
    pool.release(0);
    expect([await pool.acquire(signal), await pool.acquire(signal), await pool.acquire(signal)]).toEqual([0, 2, 3]);
  });

  it('drops an aborted waiter at once with the abort reason', async () => {
    const pool = new SlotPool([1]);
    await pool.acquire(new AbortController().signal);
    const ac = new AbortController();
    const waiting = pool.acquire(ac.signal);
    const reason = new Error('timeout');
    ac.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(pool.waiting).toBe(0);
    const plain = new AbortController();
    const p = pool.acquire(plain.signal);
    plain.abort('not an error');
    expect(errorCode(await p.catch((e: unknown) => e))).toBe('ERR_JOB_CANCELLED');
  });

  it('rejects waiters and later acquires once closed', async () => {
    const pool = new SlotPool([1]);
    await pool.acquire(new AbortController().signal);
    const waiting = pool.acquire(new AbortController().signal);
    const err = new Error('closed');
    pool.close(err);
    await expect(waiting).rejects.toBe(err);
    await expect(pool.acquire(new AbortController().signal)).rejects.toBe(err);
  });
});
