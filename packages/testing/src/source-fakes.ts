import type { EnqueueInput, EnqueueOutcome, Logger } from '@llmq/core';

/*
 * Fakes for driving source adapters without a queue: a logger that keeps entries, an enqueue
 * that records calls and can fail, refuse or hold them on request, and a polling helper.
 */

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

/** A pino-like logger that keeps every entry (bindings merged in) for assertions. */
export function memoryLogger(entries: LogEntry[] = [], bindings: Record<string, unknown> = {}): Logger & { entries: LogEntry[] } {
  const at =
    (level: LogEntry['level']) =>
    (obj: object | string, msg?: string): void => {
      if (typeof obj === 'string') entries.push({ level, obj: { ...bindings }, msg: obj });
      else entries.push({ level, obj: { ...bindings, ...(obj as Record<string, unknown>) }, msg: msg ?? '' });
    };
  return {
    entries,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (more) => memoryLogger(entries, { ...bindings, ...more }),
  };
}

export type TimelineEvent = { t: 'enqueue:start'; ids: string[] } | { t: 'enqueue:done'; ids: string[] } | { t: 'enqueue:failed'; ids: string[] } | { t: 'kv:set'; key: string; value: string };

export interface RecordingEnqueue {
  (jobs: EnqueueInput[]): Promise<EnqueueOutcome[]>;
  /** Jobs by id, as a durable queue would hold them. */
  jobs: Map<string, EnqueueInput>;
  /** Every call's ids, in order (re-deliveries included). */
  batches: string[][];
  /** Ids of resolved calls, in order: what was durable when. */
  durable: string[];
  /** Makes the next `times` calls reject. */
  failNext(times?: number, error?: Error): void;
  /** Fails any call holding a job this returns an error for, as addBulk fails a whole batch. */
  refuse(check: (job: EnqueueInput) => Error | undefined): void;
  /** Holds every call until `release()`; returns a promise resolving when a call is waiting. */
  hold(): void;
  release(): void;
  waiting(): number;
}

export function recordingEnqueue(timeline: TimelineEvent[] = []): RecordingEnqueue {
  let failures: Error[] = [];
  let held = false;
  let refuse: ((job: EnqueueInput) => Error | undefined) | undefined;
  const parked: (() => void)[] = [];
  const fn = (async (jobs: EnqueueInput[]) => {
    const ids = jobs.map((j) => j.id);
    fn.batches.push(ids);
    timeline.push({ t: 'enqueue:start', ids });
    if (held) await new Promise<void>((resolve) => parked.push(resolve));
    const refused = jobs.map((j) => refuse?.(j)).find((e) => e !== undefined);
    if (refused) throw refused;
    const failure = failures.shift();
    if (failure) {
      timeline.push({ t: 'enqueue:failed', ids });
      throw failure;
    }
    const outcomes = jobs.map((j) => {
      const created = !fn.jobs.has(j.id);
      if (created) fn.jobs.set(j.id, j);
      fn.durable.push(j.id);
      return { id: j.id, created };
    });
    timeline.push({ t: 'enqueue:done', ids });
    return outcomes;
  }) as RecordingEnqueue;
  fn.jobs = new Map();
  fn.batches = [];
  fn.durable = [];
  fn.failNext = (times = 1, error = new Error('ERR_REDIS_UNAVAILABLE: redis down')) => {
    failures = [...failures, ...Array.from({ length: times }, () => error)];
  };
  fn.refuse = (check) => {
    refuse = check;
  };
  fn.hold = () => {
    held = true;
  };
  fn.release = () => {
    held = false;
    for (const resume of parked.splice(0)) resume();
  };
  fn.waiting = () => parked.length;
  return fn;
}

/** Polls until `check` passes (vi.waitFor with a friendlier default for these suites). */
export async function eventually(check: () => void | Promise<void>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}
