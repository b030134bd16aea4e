import { afterEach, describe, expect, it, vi } from 'vitest';
import { RecentMap } from './recent.js';

describe('RecentMap', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('keeps entries at least ttl, forgets them by 2 × ttl', () => {
    vi.useFakeTimers({ now: 0 });
    const m = new RecentMap<number>(1000, 100);
    m.set('a', 1);
    vi.setSystemTime(999);
    m.set('b', 2);
    expect(m.get('a')).toBe(1);
    vi.setSystemTime(1500);
    m.set('c', 3); // rotates: a, b become the previous generation
    expect([m.get('a'), m.get('b'), m.get('c')]).toEqual([1, 2, 3]);
    vi.setSystemTime(2600);
    m.set('d', 4); // rotates again: a and b are gone
    expect([m.get('a'), m.get('b'), m.get('c'), m.get('d')]).toEqual([undefined, undefined, 3, 4]);
  });

  it('keeps at least the last `max` entries and never more than 2 × max', () => {
    const m = new RecentMap<number>(60_000, 10);
    for (let i = 0; i < 1000; i++) {
      m.set(`k${i}`, i);
      expect(m.size).toBeLessThanOrEqual(20);
    }
    for (let i = 990; i < 1000; i++) expect(m.get(`k${i}`)).toBe(i);
    expect(m.get('k900')).toBeUndefined();
  });

  it('delete removes from either generation; a re-set value wins over the older one', () => {
    const m = new RecentMap<string>(60_000, 2);
    m.set('x', 'old');
    m.set('y', 'y');
    m.set('z', 'z'); // x, y now in the previous generation
    expect(m.delete('x')).toBe(true);
    expect(m.delete('x')).toBe(false);
    m.set('y', 'new');
    expect(m.get('y')).toBe('new');
    m.set('w', 'w');
    m.set('v', 'v'); // rotation: the old 'y' must not come back
    expect(m.get('y')).toBe('new');
  });
});
