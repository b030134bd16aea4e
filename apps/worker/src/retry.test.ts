import { describe, expect, it } from 'vitest';
import { giveUpRetry } from './run.js';

describe('giveUpRetry (a skipped model tried again)', () => {
  const fresh = () => ({ loadFailures: 0, file: '' });

  it('keeps trying a missing file, and stops at once for a reason no file change fixes', () => {
    const entry = fresh();
    for (let i = 0; i < 50; i++) expect(giveUpRetry(entry, 'ERR_MODEL_FILE_MISSING', undefined)).toBe(false);
    expect(giveUpRetry(fresh(), 'ERR_DEPENDENCY_MISSING', undefined)).toBe(true);
    expect(giveUpRetry(fresh(), undefined, undefined)).toBe(true);
  });

  it('gives a file that does not load three tries as it is, and more while it keeps changing', () => {
    const stable = fresh();
    const same = { file_size: 10, file_mtime_ms: 1 };
    expect([1, 2, 3].map(() => giveUpRetry(stable, 'ERR_MODEL_LOAD', same))).toEqual([false, false, true]);
    // A copy in progress: bigger at every try, never given up on.
    const growing = fresh();
    for (let size = 1; size <= 20; size++) expect(giveUpRetry(growing, 'ERR_MODEL_LOAD', { file_size: size * 1000, file_mtime_ms: size })).toBe(false);
    // Once it stops changing (and still does not load), three tries as it is.
    const done = { file_size: 20_500, file_mtime_ms: 21 };
    expect([1, 2, 3].map(() => giveUpRetry(growing, 'ERR_MODEL_LOAD', done))).toEqual([false, false, true]);
  });
});
