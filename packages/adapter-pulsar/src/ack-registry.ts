/**
 * Messages whose ack waits for the result's sink write (`ack: after_sink`), keyed by job id.
 * It lives in the process, so after_sink works only when the Pulsar source and a Pulsar sink run
 * in one process (e.g. `llmq dev`); a source that finds no sink registered acks after enqueue.
 */
export interface DeferredAck {
  ack(): Promise<void>;
  /** Called when the wait ran out: ack anyway (the job is durable in Redis). */
  onTimeout(): void;
  /** The source instance that owns the message, so it can drop its entries on close. */
  owner: object;
}

interface Entry extends DeferredAck {
  timer: NodeJS.Timeout;
}

export class PulsarAckRegistry {
  private readonly pending = new Map<string, Entry>();
  private sinks = 0;

  /** A pulsar sink announces itself; returns the function that withdraws it. */
  registerSink(): () => void {
    this.sinks++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.sinks--;
    };
  }

  get hasSink(): boolean {
    return this.sinks > 0;
  }

  get size(): number {
    return this.pending.size;
  }

  countOwner(owner: object): number {
    let n = 0;
    for (const entry of this.pending.values()) if (entry.owner === owner) n++;
    return n;
  }

  has(jobId: string): boolean {
    return this.pending.has(jobId);
  }

  /** Holds a message's ack until {@link settle} or `timeoutMs`. A re-delivered message replaces the earlier one (same id). */
  defer(jobId: string, deferred: DeferredAck, timeoutMs: number): void {
    this.forget(jobId);
    const timer = setTimeout(() => {
      if (this.pending.get(jobId)?.timer !== timer) return;
      this.pending.delete(jobId);
      deferred.onTimeout();
    }, timeoutMs);
    timer.unref();
    this.pending.set(jobId, { ...deferred, timer });
  }

  /** Acks the job's message if this process holds it. True when it did. */
  async settle(jobId: string): Promise<boolean> {
    const entry = this.pending.get(jobId);
    if (!entry) return false;
    this.forget(jobId);
    await entry.ack();
    return true;
  }

  /** Drops (without acking) every message an owner deferred: the broker redelivers them after the consumer closes. */
  dropOwner(owner: object): number {
    let n = 0;
    for (const [jobId, entry] of this.pending) {
      if (entry.owner !== owner) continue;
      clearTimeout(entry.timer);
      this.pending.delete(jobId);
      n++;
    }
    return n;
  }

  private forget(jobId: string): void {
    const entry = this.pending.get(jobId);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.pending.delete(jobId);
  }
}

const KEY = Symbol.for('llmq.adapter-pulsar.acks');

/** The process-wide registry (one even if this package is loaded twice, e.g. from src and dist). */
export const pulsarAcks: PulsarAckRegistry = ((globalThis as Record<symbol, unknown>)[KEY] ??= new PulsarAckRegistry()) as PulsarAckRegistry;

/**
 * Acks the Pulsar message behind a job held for `ack: after_sink`. The pulsar sink calls it after
 * its write; a host may call it when a job failed for good (it is then in llmq's DLQ) or once all
 * of a job's sinks committed. Resolves false when no message is held for the job here.
 */
export function settlePulsarJob(jobId: string): Promise<boolean> {
  return pulsarAcks.settle(jobId);
}
