/** Queue of the dead-letter entries. Model names cannot start with "_", so it never collides. */
export const DLQ_QUEUE = '_dlq';

/** Redis keys and channels llmq uses beside BullMQ's own, all under the configured prefix. */
export function keys(prefix: string) {
  return {
    idempotency: (id: string) => `${prefix}:_idem:${id}`,
    cancelled: (id: string) => `${prefix}:_cancelled:${id}`,
    cancelChannel: `${prefix}:_cancel`,
    watchChannel: `${prefix}:_watch`,
    /**
     * A worker says here each time it starts serving a model (it listens to the control channels
     * by then), and gateways repeat the watches they hold: those made before never reached it.
     */
    workersChannel: `${prefix}:_workers`,
    events: (id: string) => `${prefix}:_ev:${id}`,
    paused: (model: string) => `${prefix}:_paused:${model}`,
    alerts: `${prefix}:_alerts`,
    /** Why a worker could not serve the model (see UnservedReporter); expires unless repeated. */
    unserved: (model: string) => `${prefix}:_unserved:${model}`,
    rateLimit: (model: string) => `${prefix}:_rl:${model}`,
    sourceKv: (source: string, key: string) => `${prefix}:_src:${source}:${key}`,
  };
}
export type Keys = ReturnType<typeof keys>;

/**
 * Starts a message on the watch channel that asks for the text so far again, even from a worker
 * that already streams the job (a second client joined mid-answer). No job id starts with NUL.
 */
export const CATCH_UP = '\u0000catch-up\u0000';

/**
 * BullMQ refuses custom ids with ":" (unless exactly three parts) or that are integers.
 * llmq ids (e.g. `pulsar:persistent://t/n/topic:1:2:-1`) are mapped reversibly.
 */
export function toBullId(id: string): string {
  if (!id.includes(':') && !id.includes('%') && !/^\d+$/.test(id)) return id;
  const encoded = id.replace(/%/g, '%25').replace(/:/g, '%3A');
  return /^\d+$/.test(encoded) ? `%id${encoded}` : encoded;
}

export function fromBullId(bullId: string): string {
  if (!bullId.includes('%')) return bullId;
  const raw = bullId.startsWith('%id') ? bullId.slice(3) : bullId;
  return raw.replace(/%3A/g, ':').replace(/%25/g, '%');
}
