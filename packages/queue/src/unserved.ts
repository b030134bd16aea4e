import type { Redis } from 'ioredis';
import { errorCode, errorDetail, type Logger } from '@llmq/core';
import type { Keys } from './keys.js';

/**
 * Why a worker process could not serve a model it was meant to (a missing model file, a file that
 * is not a GGUF, a missing optional dependency): kept in Redis so that the API can tell a client
 * at once, rather than leave its job waiting for a worker that will never take it.
 */
export interface UnservedReport {
  /** The worker process (host:pid) that reported it. */
  worker: string;
  code: string;
  message: string;
  /** When the worker last said so (ms since the epoch, its clock). */
  at: number;
}

/** How often a running worker repeats its reports. */
export const UNSERVED_REFRESH_MS = 30_000;
/**
 * How long Redis keeps a report its worker stopped repeating (it was killed without taking it
 * back): the key expires, so no clock but Redis' decides.
 */
export const UNSERVED_TTL_MS = 3 * UNSERVED_REFRESH_MS;

/** A report as stored, if it is one. */
export function parseReport(raw: string | null | undefined): UnservedReport | undefined {
  if (!raw) return undefined;
  let r: Partial<UnservedReport>;
  try {
    r = JSON.parse(raw) as Partial<UnservedReport>;
  } catch {
    return undefined;
  }
  if (typeof r.at !== 'number' || typeof r.message !== 'string') return undefined;
  return { worker: String(r.worker), code: String(r.code), message: r.message, at: r.at };
}

/** The API's sentence for a model no worker serves. */
export function notServedMessage(model: string, r: UnservedReport): string {
  return `no worker serves model "${model}": worker ${r.worker} could not start it (${r.code}: ${r.message})`;
}

/** The `warning` of a queued job of a model no worker serves. */
export function waitsForWorker(model: string, r: UnservedReport): string {
  return `${notServedMessage(model, r)}; the job waits until a worker serves the model`;
}

/** Deletes a key only while it holds the value given: a report another worker wrote since stays. */
const DELETE_IF_SAME = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

/**
 * The worker side: records the models this process could not start (one expiring key per model;
 * the last worker to report a model wins) and takes back reports for the models it serves, which
 * clears a report once the problem is fixed and a worker restarted.
 */
export class UnservedReporter {
  private timer: NodeJS.Timeout | undefined;
  /** This worker's reports: model → the value last written. */
  private readonly mine = new Map<string, { code: string; message: string; written?: string }>();
  private closed = false;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly workerId: string,
    private readonly logger: Logger,
  ) {}

  /** Writes the reports now and repeats them every {@link UNSERVED_REFRESH_MS} until close(). */
  async start(skipped: { model: string; reason: string }[], served: string[]): Promise<void> {
    if (served.length > 0) await this.redis.del(...served.map((m) => this.keys.unserved(m))).catch((err: unknown) => this.failed(err));
    await this.record(skipped);
  }

  /** Records (or updates) why `model` is not served here. */
  set(model: string, reason: string): Promise<void> {
    return this.record([{ model, reason }]);
  }

  /** Keeps these reports, writes all of this worker's in one pipeline, and repeats them from then on. */
  private async record(reports: { model: string; reason: string }[]): Promise<void> {
    if (this.closed || reports.length === 0) return;
    for (const { model, reason } of reports) this.mine.set(model, { code: errorCode(reason) ?? 'ERR_INTERNAL', message: errorDetail(reason) });
    await this.write();
    if (!this.timer) {
      this.timer = setInterval(() => void this.write(), UNSERVED_REFRESH_MS);
      this.timer.unref();
    }
  }

  /** `model` is served here now: its report (whoever's) is taken back. */
  async served(model: string): Promise<void> {
    this.mine.delete(model);
    await this.redis.del(this.keys.unserved(model)).catch((err: unknown) => this.failed(err));
  }

  private async write(): Promise<void> {
    if (this.closed || this.mine.size === 0) return;
    const at = Date.now();
    const pipeline = this.redis.pipeline();
    for (const [model, report] of this.mine) {
      report.written = JSON.stringify({ worker: this.workerId, code: report.code, message: report.message, at });
      pipeline.set(this.keys.unserved(model), report.written, 'PX', UNSERVED_TTL_MS);
    }
    await pipeline.exec().catch((err: unknown) => this.failed(err));
  }

  private failed(err: unknown): void {
    this.logger.debug({ err: (err as Error).message }, 'could not record which models this worker does not serve');
  }

  /** Stops repeating, and takes back the reports that are still this worker's. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const own = [...this.mine].filter(([, r]) => r.written !== undefined);
    this.mine.clear();
    if (own.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const [model, r] of own) pipeline.eval(DELETE_IF_SAME, 1, this.keys.unserved(model), r.written!);
    await pipeline.exec().catch((err: unknown) => this.failed(err));
  }
}
