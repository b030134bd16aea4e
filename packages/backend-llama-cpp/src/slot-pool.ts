import { LlmqError } from '@llmq/core';

/** The error a job sees when its signal fires: the signal's reason when it is an Error. */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new LlmqError('ERR_JOB_CANCELLED', 'aborted');
}

/** Settles like `work`, or rejects with the abort reason as soon as `signal` fires. */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    // Followed even once aborted: a work that fails later is not an unhandled rejection.
    void work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * A fixed set of slots (context sequences) handed out first come, first served. A waiter whose
 * signal fires leaves the queue at once; a slot is handed straight to the next waiter on release.
 * A free slot is taken in the order the slots were given: the busy sequences stay together at the
 * start, which llama.cpp decodes in fewer passes (see SequenceOrder).
 */
export class SlotPool<T> {
  /** Free slots, in the order of the constructor's list. */
  private readonly free: T[];
  private readonly rank: Map<T, number>;
  private readonly waiters: { resolve(slot: T): void; reject(err: Error): void; cleanup(): void }[] = [];
  private closedError: Error | undefined;

  constructor(slots: readonly T[]) {
    this.free = [...slots];
    this.rank = new Map(slots.map((slot, i) => [slot, i]));
  }

  get available(): number {
    return this.free.length;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  acquire(signal: AbortSignal): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (signal.aborted) return Promise.reject(abortReason(signal));
    const slot = this.free.shift();
    if (slot !== undefined) return Promise.resolve(slot);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(abortReason(signal));
      };
      const waiter = {
        resolve,
        reject,
        cleanup: () => signal.removeEventListener('abort', onAbort),
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(slot: T): void {
    const next = this.waiters.shift();
    if (next) {
      next.cleanup();
      next.resolve(slot);
    } else {
      const rank = this.rank.get(slot) ?? Number.MAX_SAFE_INTEGER;
      const at = this.free.findIndex((other) => (this.rank.get(other) ?? Number.MAX_SAFE_INTEGER) > rank);
      this.free.splice(at < 0 ? this.free.length : at, 0, slot);
    }
  }

  /** Rejects every waiter and every later acquire with `err`. */
  close(err: Error): void {
    this.closedError = err;
    for (const waiter of this.waiters.splice(0)) {
      waiter.cleanup();
      waiter.reject(err);
    }
  }
}
