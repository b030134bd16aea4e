import type { SourceKv } from '@llmq/core';

export interface FakeKvCall {
  op: 'get' | 'set' | 'acquire' | 'renew' | 'release';
  key: string;
  value?: string | undefined;
  owner?: string | undefined;
  ttlMs?: number | undefined;
  /** What the call returned (for acquire/renew) or read (for get). */
  result?: unknown;
}

export interface FakeKv extends SourceKv {
  /** Every call in order, for assertions. */
  readonly calls: FakeKvCall[];
  /** Current value of a key, honouring TTLs, without recording a call. */
  peek(key: string): string | null;
  /** Makes the next calls of `op` throw (all of them when `times` is left out). */
  failNext(op: FakeKvCall['op'], error?: Error, times?: number): void;
  /** Moves this store's clock forward (only when it was created with `manualClock`). */
  advance(ms: number): void;
}

export interface FakeKvOptions {
  /** Clock in ms; defaults to `Date.now`. */
  now?: () => number;
  /** Use an internal clock that only moves with `advance()`. */
  manualClock?: boolean;
}

/**
 * An in-memory {@link SourceKv} with Redis semantics: `acquire` is SET NX PX, `renew` and
 * `release` act only for the current owner, and keys with a TTL vanish when it runs out.
 * Share one instance between two sources to model two connector processes on one Redis.
 */
export function createFakeKv(options: FakeKvOptions = {}): FakeKv {
  let manual = 0;
  const now = options.manualClock ? () => manual : (options.now ?? Date.now);
  const data = new Map<string, { value: string; expiresAt: number | undefined }>();
  const calls: FakeKvCall[] = [];
  const failures: { op: FakeKvCall['op']; error: Error; times: number }[] = [];

  function live(key: string): string | null {
    const entry = data.get(key);
    if (!entry) return null;
    if (entry.expiresAt !== undefined && entry.expiresAt <= now()) {
      data.delete(key);
      return null;
    }
    return entry.value;
  }

  function maybeFail(op: FakeKvCall['op']): void {
    const index = failures.findIndex((f) => f.op === op);
    if (index < 0) return;
    const failure = failures[index]!;
    failure.times -= 1;
    if (failure.times <= 0) failures.splice(index, 1);
    throw failure.error;
  }

  return {
    calls,
    peek: live,
    failNext(op, error = new Error(`fake kv: ${op} failed`), times = Number.POSITIVE_INFINITY) {
      failures.push({ op, error, times });
    },
    advance(ms) {
      manual += ms;
    },
    async get(key) {
      maybeFail('get');
      const result = live(key);
      calls.push({ op: 'get', key, result });
      return result;
    },
    async set(key, value, ttlMs) {
      maybeFail('set');
      calls.push({ op: 'set', key, value, ttlMs });
      data.set(key, { value, expiresAt: ttlMs === undefined ? undefined : now() + ttlMs });
    },
    async acquire(key, owner, ttlMs) {
      maybeFail('acquire');
      const ok = live(key) === null;
      if (ok) data.set(key, { value: owner, expiresAt: now() + ttlMs });
      calls.push({ op: 'acquire', key, owner, ttlMs, result: ok });
      return ok;
    },
    async renew(key, owner, ttlMs) {
      maybeFail('renew');
      const ok = live(key) === owner;
      if (ok) data.set(key, { value: owner, expiresAt: now() + ttlMs });
      calls.push({ op: 'renew', key, owner, ttlMs, result: ok });
      return ok;
    },
    async release(key, owner) {
      maybeFail('release');
      const held = live(key) === owner;
      if (held) data.delete(key);
      calls.push({ op: 'release', key, owner, result: held });
    },
  };
}
