import type { Redis } from 'ioredis';
import type { JobEvent, Logger } from '@llmq/core';
import { CATCH_UP } from './keys.js';
import { RecentMap } from './recent.js';

export interface Running {
  /** Cancel requested: abort the job's generation. */
  cancel(): void;
  /** Called when a client starts watching: publish the state and the text so far. */
  onWatch(): void;
}

export interface ControlListenerOptions {
  cancelChannel: string;
  watchChannel: string;
  /** Publishes a job event (used for final events a late watcher asks for). */
  publish(jobId: string, event: JobEvent): void;
  logger: Logger;
  /** How long (at least; at most twice) a cancel or watch for a job not running here is remembered. @defaultValue 60000 */
  rememberMs?: number;
  /** How long (at least; at most twice) a job's end is kept for a watcher that arrives just after it. @defaultValue 10000 */
  finishedMs?: number;
  /** Job ends kept at least, whatever their age (at most twice as many). @defaultValue 20000 */
  finishedMax?: number;
}

/**
 * A worker process's control channels, shared by its model workers:
 * - cancel: aborts the matching in-flight job here;
 * - watch: a client (SSE, a front door) follows a job, so its status and tokens are published.
 *   Jobs nobody watches publish nothing, which keeps the per-job cost of the event stream at zero.
 * Messages for jobs not (yet) running here are remembered briefly, closing the window between
 * BullMQ moving a job to active and our processor starting it; final events are kept briefly for
 * a watcher that arrives just after the end (it is told the job ended and reads the stored result).
 */
export class ControlListener {
  private readonly running = new Map<string, Running>();
  private readonly recentCancel: RecentMap<true>;
  private readonly recentWatch: RecentMap<true>;
  private readonly finished: RecentMap<{ at: number; status: 'completed' | 'failed' | 'cancelled' }>;
  private readonly watched = new Set<string>();
  private readonly ready: Promise<unknown>;

  constructor(
    subscriber: Redis,
    private readonly o: ControlListenerOptions,
  ) {
    const rememberMs = o.rememberMs ?? 60_000;
    this.recentCancel = new RecentMap(rememberMs, 10_000);
    this.recentWatch = new RecentMap(rememberMs, 10_000);
    this.finished = new RecentMap(o.finishedMs ?? 10_000, o.finishedMax ?? 20_000);
    subscriber.on('message', (channel: string, id: string) => {
      if (channel === o.cancelChannel) this.onCancel(id);
      else if (channel === o.watchChannel) {
        if (id.startsWith(CATCH_UP)) this.onWatch(id.slice(CATCH_UP.length), true);
        else this.onWatch(id, false);
      }
    });
    this.ready = this.subscribe(subscriber);
  }

  /**
   * Subscribes to the control channels. Without them this process would run jobs it can neither
   * cancel nor stream, so a failed attempt is retried (with backoff) until it works; start-up
   * waits for the first attempt only.
   */
  private subscribe(subscriber: Redis): Promise<void> {
    let first: (() => void) | undefined;
    const firstDone = new Promise<void>((resolve) => (first = resolve));
    void (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          await subscriber.subscribe(this.o.cancelChannel, this.o.watchChannel);
          if (attempt > 1) this.o.logger.info({ attempt }, 'control channels subscribed');
          first?.();
          return;
        } catch (err) {
          this.o.logger.error({ err, attempt }, 'control channel subscribe failed: cancel and live events do not reach this worker until it succeeds; retrying');
          first?.();
          first = undefined;
          if (subscriber.status === 'end') return;
          await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** attempt)).unref());
        }
      }
    })();
    return firstDone;
  }

  whenReady(): Promise<unknown> {
    return this.ready;
  }

  private onCancel(id: string): void {
    const job = this.running.get(id);
    if (job) {
      this.o.logger.info({ jobId: id }, 'cancel requested: aborting job');
      job.cancel();
    } else {
      this.recentCancel.set(id, true);
    }
  }

  private onWatch(id: string, catchUp: boolean): void {
    const job = this.running.get(id);
    if (job) {
      // The first watch, or a client that joined mid-answer asking for the text so far: the
      // job publishes its status and text (the streams already following skip what they have).
      if (!this.watched.has(id) || catchUp) {
        this.watched.add(id);
        job.onWatch();
      }
      return;
    }
    const done = this.finished.get(id);
    if (done) {
      // Ended just before the watch arrived: say so; the watcher reads the stored result.
      this.o.publish(id, { type: 'status', status: done.status, at: done.at });
      return;
    }
    this.recentWatch.set(id, true);
  }

  /** Registers a job starting here. */
  track(id: string, job: Running): { cancelled: boolean; watched: boolean } {
    this.running.set(id, job);
    // Size checks first: the remembered maps are nearly always empty, and this runs per job.
    if (this.recentWatch.size > 0 && this.recentWatch.delete(id)) this.watched.add(id);
    const cancelled = this.recentCancel.size > 0 && this.recentCancel.delete(id);
    return { cancelled, watched: this.watched.size > 0 && this.watched.has(id) };
  }

  untrack(id: string): void {
    this.running.delete(id);
    // The watch moves to the bounded, expiring map until end() (or a retry starting here) takes it:
    // a job that ends without end() here (rate limited, handed back, retried in another process)
    // would otherwise stay in `watched` for the life of the process.
    if (this.watched.size > 0 && this.watched.delete(id)) this.recentWatch.set(id, true);
  }

  isWatched(id: string): boolean {
    return this.watched.has(id);
  }

  /**
   * A job's attempt ended. Final events are published when watched and kept briefly for late
   * watchers. The watch is used up: a retry, here or in another process, learns it again from the
   * client's re-announce, which the gateway sends when it sees the failed event.
   */
  end(id: string, event: JobEvent, final: boolean): void {
    // A watch that came after the processor returned and before BullMQ stored the outcome found the
    // job neither running nor finished here, and was only remembered: it counts.
    const watched = (this.watched.size > 0 && this.watched.has(id)) || (this.recentWatch.size > 0 && this.recentWatch.delete(id));
    if (watched) this.watched.delete(id);
    if (final) {
      const status = event.type === 'completed' ? 'completed' : event.type === 'cancelled' ? 'cancelled' : 'failed';
      this.finished.set(id, { at: Date.now(), status });
    }
    if (watched) this.o.publish(id, event);
  }
}
