import { describe, expect, it } from 'vitest';
import { parseDurationMs, retryAfterMs } from './retry-after.js';

const headers = (h: Record<string, string>) => new Headers(h);

describe('parseDurationMs', () => {
  it.each([
    ['1s', 1000],
    ['6m0s', 360_000],
    ['20ms', 20],
    ['1h2m3.5s', 3_723_500],
    ['0.5s', 500],
    ['2', 2000],
    ['150us', 0.15],
  ])('%s → %d ms', (text, ms) => {
    expect(parseDurationMs(text)).toBeCloseTo(ms, 6);
  });

  it.each(['', 'soon', '5 s', '1x', 's1'])('rejects %j', (text) => {
    expect(parseDurationMs(text)).toBeUndefined();
  });
});

describe('retryAfterMs', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('reads Retry-After in seconds and as an HTTP date', () => {
    expect(retryAfterMs(headers({ 'retry-after': '2' }), now)).toBe(2000);
    expect(retryAfterMs(headers({ 'retry-after': '0.25' }), now)).toBe(250);
    expect(retryAfterMs(headers({ 'retry-after': 'Thu, 01 Jan 2026 00:00:30 GMT' }), now)).toBe(30_000);
    expect(retryAfterMs(headers({ 'retry-after': 'Wed, 31 Dec 2025 23:59:00 GMT' }), now)).toBe(0);
  });

  it('prefers retry-after-ms', () => {
    expect(retryAfterMs(headers({ 'retry-after-ms': '1500', 'retry-after': '9' }), now)).toBe(1500);
  });

  it('falls back to x-ratelimit-reset-*, choosing the exhausted limit', () => {
    expect(retryAfterMs(headers({ 'x-ratelimit-reset-requests': '6m0s' }), now)).toBe(360_000);
    expect(retryAfterMs(headers({ 'x-ratelimit-reset-requests': '1s', 'x-ratelimit-reset-tokens': '20ms' }), now)).toBe(1000);
    expect(
      retryAfterMs(
        headers({
          'x-ratelimit-reset-requests': '1s',
          'x-ratelimit-reset-tokens': '20ms',
          'x-ratelimit-remaining-requests': '12',
          'x-ratelimit-remaining-tokens': '0',
        }),
        now,
      ),
    ).toBe(20);
  });

  it('is undefined when nothing usable is sent', () => {
    expect(retryAfterMs(headers({}), now)).toBeUndefined();
    expect(retryAfterMs(headers({ 'retry-after': 'later' }), now)).toBeUndefined();
    expect(retryAfterMs(undefined, now)).toBeUndefined();
  });
});
