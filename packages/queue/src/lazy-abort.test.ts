import { describe, expect, it } from 'vitest';
import { LazyAbortController } from './lazy-abort.js';

describe('LazyAbortController', () => {
  it('a signal taken before the abort fires with the first reason', () => {
    const c = new LazyAbortController();
    const signal = c.signal;
    const seen: unknown[] = [];
    signal.addEventListener('abort', () => seen.push(signal.reason));
    c.abort('timeout');
    c.abort('cancel');
    expect(seen).toEqual(['timeout']);
    expect([c.aborted, c.reason, signal.aborted]).toEqual([true, 'timeout', true]);
  });

  it('a signal taken after the abort is born aborted, with the reason', () => {
    const c = new LazyAbortController();
    expect(c.aborted).toBe(false);
    c.abort(new Error('cancelled'));
    expect(c.signal.aborted).toBe(true);
    expect((c.signal.reason as Error).message).toBe('cancelled');
    expect(c.signal).toBe(c.signal);
  });
});
