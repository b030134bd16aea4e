import type { Redis } from 'ioredis';
import type { Logger } from '@llmq/core';

/**
 * Listens for cancel requests from any gateway and aborts the matching in-flight job in this
 * process. Cancels for jobs not (yet) running here are remembered briefly, which closes the
 * window between BullMQ moving a job to active and our processor starting it.
 */
export class CancelListener {
  private readonly running = new Map<string, (reason: string) => void>();
  private readonly recent = new Map<string, number>();
  private ready: Promise<unknown>;

  constructor(
    private readonly subscriber: Redis,
    private readonly channel: string,
    private readonly logger: Logger,
    private readonly rememberMs = 60_000,
  ) {
    subscriber.on('message', (ch: string, id: string) => {
      if (ch !== this.channel) return;
      const abort = this.running.get(id);
      if (abort) {
        this.logger.info({ jobId: id }, 'cancel requested: aborting job');
        abort('cancelled');
      } else {
        this.prune();
        this.recent.set(id, Date.now());
      }
    });
    this.ready = subscriber.subscribe(channel).catch((err: unknown) => this.logger.warn({ err }, 'cancel channel subscribe failed'));
  }

  whenReady(): Promise<unknown> {
    return this.ready;
  }

  private prune(): void {
    const cutoff = Date.now() - this.rememberMs;
    for (const [id, at] of this.recent) {
      if (at >= cutoff) break;
      this.recent.delete(id);
    }
  }

  /** Registers a running job; returns true when it was already cancelled. */
  track(id: string, abort: (reason: string) => void): boolean {
    this.running.set(id, abort);
    return this.recent.delete(id);
  }

  untrack(id: string): void {
    this.running.delete(id);
  }
}
