import type { Logger, SourceKv } from '@llmq/core';
import { childController } from './util.js';
import { errSummary, sleep } from '@llmq/core';

/** Abort reason given to the leader's signal when another instance may now hold the lock. */
export const LOCK_LOST = 'lock-lost';

export interface LeaderLockOptions {
  kv: SourceKv;
  key: string;
  owner: string;
  ttlMs: number;
  renewMs: number;
  logger: Logger;
  now?: () => number;
}

/**
 * One leader among instances sharing a {@link SourceKv}: SET NX PX to take the lock, renew
 * while leading, and a standby takes over once the TTL runs out after the leader stops renewing
 * (it died, froze, or lost Redis).
 */
export class LeaderLock {
  private readonly options: LeaderLockOptions;
  private readonly now: () => number;
  private leading = false;

  constructor(options: LeaderLockOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  /** Whether this instance holds the lock now. */
  get held(): boolean {
    return this.leading;
  }

  /**
   * Calls `lead` each time the lock is taken. Its signal aborts with reason {@link LOCK_LOST}
   * when the lock may have passed to another instance, or with `stop`'s reason on shutdown;
   * `lead` should return soon after. Resolves once `stop` aborts, with the lock released.
   */
  async run(stop: AbortSignal, lead: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const { kv, key, owner, ttlMs, renewMs, logger } = this.options;
    while (!stop.aborted) {
      let acquired = false;
      try {
        acquired = await kv.acquire(key, owner, ttlMs);
      } catch (err) {
        logger.warn({ err: errSummary(err), lock: key }, 'could not reach the lock store; retrying');
      }
      if (!acquired) {
        await sleep(renewMs, stop);
        continue;
      }
      logger.info({ lock: key, owner }, 'took the watch lock; this instance is now the active watcher');
      this.leading = true;
      const { controller, dispose } = childController(stop);
      let lastRenewed = this.now();
      let renewing = false;
      const timer = setInterval(() => {
        if (controller.signal.aborted) return;
        // Step down a renewal period before the TTL runs out, so this instance stops before a
        // standby can take the lock, also when a renewal hangs rather than fails.
        if (this.now() - lastRenewed >= ttlMs - renewMs) {
          logger.warn({ lock: key }, 'could not renew the watch lock within its TTL; stopping this watcher (a standby may take over)');
          controller.abort(LOCK_LOST);
          return;
        }
        if (renewing) return;
        renewing = true;
        kv.renew(key, owner, ttlMs).then(
          (ok) => {
            renewing = false;
            if (ok) {
              lastRenewed = this.now();
            } else if (!controller.signal.aborted) {
              logger.warn({ lock: key }, 'lost the watch lock (another instance holds it); stopping this watcher');
              controller.abort(LOCK_LOST);
            }
          },
          (err: unknown) => {
            renewing = false;
            logger.debug({ err: errSummary(err), lock: key }, 'renewing the watch lock failed; retrying');
          },
        );
      }, renewMs);
      timer.unref();
      try {
        await lead(controller.signal);
      } catch (err) {
        logger.error({ err: errSummary(err), lock: key }, 'watcher failed; giving the lock up');
      } finally {
        clearInterval(timer);
        dispose();
        this.leading = false;
      }
      if (controller.signal.reason !== LOCK_LOST) {
        try {
          await kv.release(key, owner);
        } catch (err) {
          logger.warn({ err: errSummary(err), lock: key }, 'could not release the watch lock; it lapses after its TTL');
        }
      }
      if (!stop.aborted) await sleep(renewMs, stop);
    }
  }
}
