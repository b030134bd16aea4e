import { LlmqError, type Logger } from '@llmq/core';
import type { ResolvedServer } from './config.js';

/** What `stats()` shows of one server. */
export interface ServerStats {
  url: string;
  healthy: boolean;
  /** Requests running on it now. */
  in_flight: number;
  /** Its concurrency cap; null when unlimited. */
  max_concurrency: number | null;
  /** Generation requests sent to it. */
  requests: number;
  /** Of those, the ones that failed through the server's fault (connection error, 5xx, cut). */
  failures: number;
  health_checks: number;
  health_check_failures: number;
  /** Times it was taken out of rotation. */
  marked_unhealthy: number;
  last_error: string | null;
}

export interface PoolStats {
  servers: ServerStats[];
  /** Requests waiting for a free slot. */
  waiting: number;
}

interface ServerState {
  readonly url: string;
  readonly maxConcurrency: number;
  healthy: boolean;
  inFlight: number;
  requests: number;
  failures: number;
  healthChecks: number;
  healthCheckFailures: number;
  markedUnhealthy: number;
  lastError: string | null;
  checking: boolean;
}

/** A slot on one server, held for one HTTP request. */
export interface Lease {
  readonly url: string;
  /** `failed`: the server was at fault and is taken out of rotation until a health check passes. */
  release(outcome: 'ok' | 'failed' | 'other', reason?: string): void;
}

interface Waiter {
  exclude: ReadonlySet<string>;
  resolve(lease: Lease): void;
  reject(err: Error): void;
}

export interface ServerPoolOptions {
  logger: Logger;
  /** Probes one server; resolves when it is alive. */
  probe(url: string, signal: AbortSignal): Promise<void>;
  healthCheckIntervalMs: number;
  healthCheckTimeoutMs: number;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new LlmqError('ERR_JOB_CANCELLED', 'aborted');
}

/**
 * The servers of one cluster: least-outstanding-requests balancing under per-server caps,
 * health bookkeeping, and periodic probes that take failing servers out and bring them back.
 *
 * Servers start healthy (optimistic): the first failure takes one out, a passing probe brings it
 * back. Unhealthy servers are used only when no healthy one is left to try. Ties in load are
 * broken round-robin, so light sequential traffic still spreads.
 */
export class ServerPool {
  private readonly servers: ServerState[];
  private readonly waiters: Waiter[] = [];
  private readonly options: ServerPoolOptions;
  private cursor = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly probes = new Set<AbortController>();
  private closed = false;

  constructor(servers: readonly ResolvedServer[], options: ServerPoolOptions) {
    this.options = options;
    this.servers = servers.map((s) => ({
      url: s.url,
      maxConcurrency: s.maxConcurrency,
      healthy: true,
      inFlight: 0,
      requests: 0,
      failures: 0,
      healthChecks: 0,
      healthCheckFailures: 0,
      markedUnhealthy: 0,
      lastError: null,
      checking: false,
    }));
  }

  /** Starts the periodic health checks (unref'd: they never keep a process alive). */
  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => void this.checkAll(), this.options.healthCheckIntervalMs);
    this.timer.unref();
  }

  /**
   * A slot on the least-loaded healthy server not in `exclude` (an unhealthy one when no healthy
   * one is left), waiting (honouring `signal`) while all candidates are at their cap. Rejects with
   * ERR_BACKEND_UNAVAILABLE when every server is in `exclude`.
   */
  acquire(exclude: ReadonlySet<string>, signal: AbortSignal): Promise<Lease> {
    if (signal.aborted) return Promise.reject(abortError(signal));
    if (this.closed) return Promise.reject(new LlmqError('ERR_BACKEND_UNAVAILABLE', 'the textsynth backend is closed'));
    const now = this.tryAcquire(exclude);
    if (now instanceof Error) return Promise.reject(now);
    if (now) return Promise.resolve(now);
    return new Promise<Lease>((resolve, reject) => {
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(abortError(signal));
      };
      const waiter: Waiter = {
        exclude,
        resolve: (lease) => {
          signal.removeEventListener('abort', onAbort);
          resolve(lease);
        },
        reject: (err) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** A lease now, undefined when every candidate is full, or an error when there is no candidate. */
  private tryAcquire(exclude: ReadonlySet<string>): Lease | Error | undefined {
    const n = this.servers.length;
    let best: ServerState | undefined;
    let bestIndex = -1;
    let candidates = 0;
    // With no healthy server left to try, the unhealthy ones are the last resort: a lone server
    // that failed once must not refuse every job until its next health check.
    const healthyLeft = this.servers.some((s) => s.healthy && !exclude.has(s.url));
    for (let k = 0; k < n; k++) {
      const index = (this.cursor + k) % n;
      const s = this.servers[index];
      if (!s || s.healthy !== healthyLeft || exclude.has(s.url)) continue;
      candidates++;
      if (s.inFlight >= s.maxConcurrency) continue;
      if (!best || s.inFlight < best.inFlight) {
        best = s;
        bestIndex = index;
      }
    }
    if (candidates === 0) {
      const down = this.servers.filter((s) => !s.healthy).length;
      return new LlmqError('ERR_BACKEND_UNAVAILABLE', `no ts_server left to try (${this.servers.length} configured, ${down} unhealthy, ${exclude.size} already tried)`, {
        details: { servers: this.servers.length, unhealthy: down, tried: exclude.size },
      });
    }
    if (!best) return undefined;
    this.cursor = (bestIndex + 1) % n;
    best.inFlight++;
    best.requests++;
    return this.lease(best);
  }

  private lease(server: ServerState): Lease {
    let released = false;
    return {
      url: server.url,
      release: (outcome, reason) => {
        if (released) return;
        released = true;
        server.inFlight--;
        if (outcome === 'failed') {
          server.failures++;
          this.markUnhealthy(server, reason ?? 'request failed');
        }
        this.drain();
      },
    };
  }

  private markUnhealthy(server: ServerState, reason: string): void {
    server.lastError = reason;
    if (!server.healthy) return;
    server.healthy = false;
    server.markedUnhealthy++;
    this.options.logger.warn({ server: server.url, reason }, 'ts_server taken out of rotation');
  }

  private markHealthy(server: ServerState): void {
    if (server.healthy) return;
    server.healthy = true;
    this.options.logger.info({ server: server.url }, 'ts_server back in rotation');
    this.drain();
  }

  /** Hands free slots to waiters in arrival order; fails waiters that have no candidate left. */
  private drain(): void {
    for (let i = 0; i < this.waiters.length; ) {
      const waiter = this.waiters[i];
      if (!waiter) break;
      const got = this.tryAcquire(waiter.exclude);
      if (got === undefined) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      if (got instanceof Error) waiter.reject(got);
      else waiter.resolve(got);
    }
  }

  /** Probes every server once (also what the timer runs). */
  async checkAll(): Promise<void> {
    await Promise.all(this.servers.map((s) => this.check(s)));
  }

  private async check(server: ServerState): Promise<void> {
    if (server.checking || this.closed) return;
    server.checking = true;
    const controller = new AbortController();
    this.probes.add(controller);
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${this.options.healthCheckTimeoutMs} ms`)), this.options.healthCheckTimeoutMs);
    timer.unref();
    server.healthChecks++;
    try {
      await this.options.probe(server.url, controller.signal);
      if (!this.closed) this.markHealthy(server);
    } catch (err) {
      if (this.closed) return;
      server.healthCheckFailures++;
      const reason = controller.signal.aborted ? String((controller.signal.reason as Error).message) : err instanceof Error ? err.message : String(err);
      this.markUnhealthy(server, `health check: ${reason}`);
      // A server that is down leaves waiters with fewer candidates.
      this.drain();
    } finally {
      clearTimeout(timer);
      this.probes.delete(controller);
      server.checking = false;
    }
  }

  stats(): PoolStats {
    return {
      servers: this.servers.map((s) => ({
        url: s.url,
        healthy: s.healthy,
        in_flight: s.inFlight,
        max_concurrency: Number.isFinite(s.maxConcurrency) ? s.maxConcurrency : null,
        requests: s.requests,
        failures: s.failures,
        health_checks: s.healthChecks,
        health_check_failures: s.healthCheckFailures,
        marked_unhealthy: s.markedUnhealthy,
        last_error: s.lastError,
      })),
      waiting: this.waiters.length,
    };
  }

  /** Stops health checks, aborts probes in progress and fails requests still waiting for a slot. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const probe of this.probes) probe.abort(new Error('closed'));
    this.probes.clear();
    const waiting = this.waiters.splice(0);
    for (const w of waiting) w.reject(new LlmqError('ERR_BACKEND_UNAVAILABLE', 'the textsynth backend was closed'));
  }
}
