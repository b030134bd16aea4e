import type { Redis } from 'ioredis';
import { LlmqError, type JobEvent, type Logger } from '@llmq/core';
import { withTimeout } from './connection.js';
import type { Keys } from './keys.js';

/** Default of `worker.stream_flush_ms`: tokens are sent at most this often (per process), merged per job. */
export const DEFAULT_STREAM_FLUSH_MS = 50;

/**
 * Publishes job events (status, tokens, results) on a Redis channel per job. Publishing is
 * batched per event-loop turn in one pipeline, and consecutive tokens of one job are merged,
 * so a fast backend costs one round trip per turn rather than one per token.
 * Workers publish only for jobs a client watches (see ControlListener); a watcher that arrives
 * mid-generation first gets the text so far as one token event at offset 0.
 */
export class EventPublisher {
  private batch: { channel: string; jobId: string; event: JobEvent }[] = [];
  /** Index in `batch` of each job's latest event, so a token can join a token right before it. */
  private lastEntry = new Map<string, number>();
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private lastFlush = 0;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly logger: Logger,
    /** Tokens after a job's first are held up to this long and sent merged; 0 sends them each event-loop turn. */
    private readonly flushMs = DEFAULT_STREAM_FLUSH_MS,
  ) {}

  publish(jobId: string, event: JobEvent): void {
    const at = this.lastEntry.get(jobId);
    const last = at === undefined ? undefined : this.batch[at];
    if (event.type === 'token' && last?.event.type === 'token') {
      last.event = { ...last.event, text: last.event.text + event.text };
      return;
    }
    this.lastEntry.set(jobId, this.batch.length);
    this.batch.push({ channel: this.keys.events(jobId), jobId, event });
    // Status and final events go out at once (with the tokens before them, in order), and so does
    // a job's first text (offset 0: its first token, or the catch-up text for a late watcher):
    // time to first token is what a streaming client waits on.
    const urgent = event.type !== 'token' || event.offset === 0;
    if (urgent && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.scheduled = false;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      const since = Date.now() - this.lastFlush;
      if (!urgent && since < this.flushMs) {
        // Fast decoders: coalesce tokens for a few ms rather than one PUBLISH per token (each one
        // also costs the gateway and the client a message: CPU the decode shares the machine with).
        this.timer = setTimeout(() => {
          this.timer = undefined;
          void this.flush();
        }, this.flushMs - since);
      } else setImmediate(() => void this.flush());
    }
  }

  /** Sends everything pending; resolves when Redis has it (or it was dropped on error). */
  flush(): Promise<void> {
    this.scheduled = false;
    this.lastFlush = Date.now();
    const batch = this.batch;
    this.batch = [];
    this.lastEntry.clear();
    if (batch.length === 0) return this.flushing;
    const pipeline = this.redis.pipeline();
    for (const item of batch) pipeline.publish(item.channel, JSON.stringify(item.event));
    this.flushing = pipeline.exec().then(
      () => undefined,
      (err: unknown) => this.logger.warn({ err, events: batch.length }, 'dropped job events (Redis unavailable)'),
    );
    return this.flushing;
  }
}

type Listener = (event: JobEvent) => void;

/**
 * One subscriber connection shared by all SSE clients of a process: subscribes to a job's
 * channel while at least one listener wants it.
 */
export class EventHub {
  private listeners = new Map<string, Set<Listener>>();
  /** SUBSCRIBEs sent and not yet confirmed, by job: a second listener of the job waits for the same one. */
  private pending = new Map<string, Promise<void>>();
  private readonly workerListeners = new Set<() => void>();
  /**
   * Whether the connection was up once, or failed to come up: not ready after either means Redis
   * is away. Only a connection's first attempt is waited for.
   */
  private triedOnce: boolean;

  constructor(
    private readonly subscriber: Redis,
    private readonly keys: Keys,
    private readonly logger: Logger,
    /** How long a SUBSCRIBE may take before the caller is told Redis is unavailable (0: no bound). */
    private readonly callTimeoutMs = 5_000,
  ) {
    this.triedOnce = subscriber.status !== 'wait' && subscriber.status !== 'connecting' && subscriber.status !== 'connect';
    const tried = () => (this.triedOnce = true);
    subscriber.on('ready', tried);
    subscriber.on('error', tried);
    subscriber.on('close', tried);
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.keys.workersChannel) {
        for (const l of [...this.workerListeners]) l();
        return;
      }
      const prefix = this.keys.events('');
      if (!channel.startsWith(prefix)) return;
      const set = this.listeners.get(channel.slice(prefix.length));
      if (!set) return;
      let event: JobEvent;
      try {
        event = JSON.parse(message) as JobEvent;
      } catch {
        return;
      }
      for (const l of [...set]) l(event);
    });
  }

  /**
   * Calls `listener` each time a worker starts serving a model (it then listens for watches and
   * cancels), from now on; the first call subscribes to that channel. Redis not answering is
   * logged, not thrown: each client's next repeat of its watch still reaches the worker.
   */
  onWorkerStart(listener: () => void): void {
    this.workerListeners.add(listener);
    if (this.workerListeners.size === 1) {
      this.subscriber.subscribe(this.keys.workersChannel).catch((err: unknown) => this.logger.warn({ err }, 'could not subscribe to worker starts: streams opened before a worker starts get its tokens only at their next watch (up to 15 s)'));
    }
  }

  /**
   * Resolves once Redis confirmed the subscription (for every listener of the job), so nothing
   * published afterwards is missed. Rejects with ERR_REDIS_UNAVAILABLE at once while the
   * connection is down after having been up or having failed to connect (the subscriber connection
   * queues commands until it is back, which would hold the caller for the whole outage), and when
   * Redis does not confirm within `callTimeoutMs` (a connection's first attempt is waited for that long).
   */
  async subscribe(jobId: string, listener: Listener): Promise<() => void> {
    let set = this.listeners.get(jobId);
    if (!set) {
      if (this.subscriber.status !== 'ready' && this.triedOnce) throw unavailable(`its connection is ${this.subscriber.status}`);
      set = new Set();
      this.listeners.set(jobId, set);
      const sent = this.subscriber.subscribe(this.keys.events(jobId)).then(() => undefined);
      this.pending.set(jobId, sent);
      const settled = () => {
        if (this.pending.get(jobId) === sent) this.pending.delete(jobId);
      };
      sent.then(settled, settled);
    }
    set.add(listener);
    // A set exists only once its SUBSCRIBE was sent: emptying it sends the UNSUBSCRIBE.
    const unsubscribe = () => {
      const current = this.listeners.get(jobId);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) {
        this.listeners.delete(jobId);
        this.pending.delete(jobId);
        this.subscriber.unsubscribe(this.keys.events(jobId)).catch((err: unknown) => this.logger.debug({ err }, 'unsubscribe failed'));
      }
    };
    const confirmed = this.pending.get(jobId);
    if (confirmed !== undefined) {
      try {
        await (this.callTimeoutMs > 0 ? withTimeout(confirmed, this.callTimeoutMs, () => unavailable(`no answer within ${this.callTimeoutMs} ms`)) : confirmed);
      } catch (err) {
        unsubscribe();
        throw err instanceof LlmqError ? err : unavailable((err as Error).message);
      }
    }
    return unsubscribe;
  }
}

const unavailable = (why: string) => new LlmqError('ERR_REDIS_UNAVAILABLE', `Redis is unavailable (subscribing to job events: ${why}); retry later`);
