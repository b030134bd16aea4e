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
  /** When the worker last said so (ms since the epoch); reports older than {@link UNSERVED_FRESH_MS} are ignored. */
  at: number;
}

/** How often a running worker repeats its reports. */
export const UNSERVED_REFRESH_MS = 30_000;
/** A report this old is ignored: its worker stopped (or was killed) without taking it back. */
export const UNSERVED_FRESH_MS = 3 * UNSERVED_REFRESH_MS;

/** A report read from Redis, if it is one and is fresh. */
export function freshReport(raw: string | null | undefined, now = Date.now()): UnservedReport | undefined {
  if (!raw) return undefined;
  let r: Partial<UnservedReport>;
  try {
    r = JSON.parse(raw) as Partial<UnservedReport>;
  } catch {
    return undefined;
  }
  if (typeof r.at !== 'number' || typeof r.message !== 'string' || now - r.at > UNSERVED_FRESH_MS) return undefined;
  return { worker: String(r.worker), code: String(r.code), message: r.message, at: r.at };
}

function reporterOf(raw: string | null | undefined): string | undefined {
  try {
    return raw ? (JSON.parse(raw) as Partial<UnservedReport>).worker : undefined;
  } catch {
    return undefined;
  }
}

/** The API's sentence for a model no worker serves. */
export function notServedMessage(model: string, r: UnservedReport): string {
  return `no worker serves model "${model}": worker ${r.worker} could not start it (${r.code}: ${r.message})`;
}

/** The `warning` of a queued job of a model no worker serves. */
export function waitsForWorker(model: string, r: UnservedReport): string {
  return `${notServedMessage(model, r)}; the job waits until a worker serves the model`;
}

/**
 * The worker side: records the models this process could not start (one hash, model → report;
 * the last worker to report a model wins) and takes back reports for the models it serves, which
 * clears a report once the problem is fixed and a worker restarted.
 */
export class UnservedReporter {
  private timer: NodeJS.Timeout | undefined;
  private mine: { model: string; code: string; message: string }[] = [];

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly workerId: string,
    private readonly logger: Logger,
  ) {}

  /** Writes the reports now and repeats them every {@link UNSERVED_REFRESH_MS} until close(). */
  async start(skipped: { model: string; reason: string }[], served: string[]): Promise<void> {
    this.mine = skipped.map((s) => ({ model: s.model, code: errorCode(s.reason) ?? 'ERR_INTERNAL', message: errorDetail(s.reason) }));
    if (served.length > 0) await this.redis.hdel(this.keys.unserved, ...served).catch((err: unknown) => this.failed(err));
    if (this.mine.length === 0) return;
    await this.write();
    this.timer = setInterval(() => void this.write(), UNSERVED_REFRESH_MS);
    this.timer.unref();
  }

  /** Records (or updates) why `model` is not served here. */
  async set(model: string, reason: string): Promise<void> {
    const entry = { model, code: errorCode(reason) ?? 'ERR_INTERNAL', message: errorDetail(reason) };
    const at = this.mine.findIndex((m) => m.model === model);
    if (at === -1) this.mine.push(entry);
    else this.mine[at] = entry;
    await this.write();
    if (!this.timer) {
      this.timer = setInterval(() => void this.write(), UNSERVED_REFRESH_MS);
      this.timer.unref();
    }
  }

  /** `model` is served here now: its report (whoever's) is taken back. */
  async served(model: string): Promise<void> {
    this.mine = this.mine.filter((m) => m.model !== model);
    await this.redis.hdel(this.keys.unserved, model).catch((err: unknown) => this.failed(err));
  }

  private async write(): Promise<void> {
    if (this.mine.length === 0) return;
    const at = Date.now();
    const fields = this.mine.flatMap((m) => [m.model, JSON.stringify({ worker: this.workerId, code: m.code, message: m.message, at })]);
    await this.redis.hset(this.keys.unserved, ...fields).catch((err: unknown) => this.failed(err));
  }

  private failed(err: unknown): void {
    this.logger.debug({ err: (err as Error).message }, 'could not record which models this worker does not serve');
  }

  /** Stops repeating, and takes back the reports that are still this worker's. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    if (this.mine.length === 0) return;
    try {
      const models = this.mine.map((m) => m.model);
      const current = await this.redis.hmget(this.keys.unserved, ...models);
      const own = models.filter((_, i) => reporterOf(current[i]) === this.workerId);
      if (own.length > 0) await this.redis.hdel(this.keys.unserved, ...own);
    } catch (err) {
      this.failed(err);
    }
  }
}
