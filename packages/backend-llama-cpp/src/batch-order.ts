import type { BatchItem, CustomBatchingPrioritizationStrategy, LlamaContext, PrioritizedBatchItem } from 'node-llama-cpp';

/** What node-llama-cpp 3.22 keeps of each decode it has queued (a private of LlamaContext). */
interface QueuedDecode {
  readonly tokens: readonly unknown[];
  readonly sequenceId: number;
}
interface ContextInternals {
  _queuedDecodes?: readonly QueuedDecode[];
}

/**
 * Puts the sequences of each decode batch in ascending order, so that llama.cpp decodes the batch
 * in one pass.
 *
 * node-llama-cpp gives each sequence a KV-cache stream of its own, and llama.cpp then splits a
 * batch into micro-batches that each take only consecutive, increasing sequence ids: every step
 * where one id comes before a smaller one costs a whole extra forward pass (all the weights read
 * again). node-llama-cpp lays a batch out in the order the sequences queued their tokens, which is
 * the order their samplings finished: with eight jobs generating, a step ran as 3–4 passes on
 * average instead of one (measured: one pass 42 ms, four 94 ms, five or six 118 ms).
 *
 * The strategy shares the batch's tokens out as node-llama-cpp's default (`maximumParallelism`)
 * does, then orders the items by sequence id. It finds an item's sequence through the context's
 * queue of decodes (a private: node-llama-cpp is pinned); {@link attach} returns false when that
 * is missing, and batches keep node-llama-cpp's order. Busy sequences with an idle one between
 * them still take a pass each side of the gap: the slot pool hands out the lowest free sequence
 * to keep them together.
 */
export class SequenceOrder {
  private context: ContextInternals | undefined;
  private missed = false;

  /**
   * @param onUnmatched called once, the first time a batch of several sequences has no item whose
   * sequence could be found (another node-llama-cpp that copies the tokens): batches then keep
   * node-llama-cpp's order.
   */
  constructor(private readonly onUnmatched?: () => void) {}

  /** For `createContext({ batching: { itemPrioritizationStrategy } })`. */
  readonly strategy: CustomBatchingPrioritizationStrategy = ({ items, size }) => {
    const shares = shareTokens(items, size);
    const queued = this.context?._queuedDecodes;
    if (queued === undefined || shares.length < 2) return shares;
    const ids = new Map<unknown, number>();
    for (const decode of queued) ids.set(decode.tokens, decode.sequenceId);
    if (!this.missed && shares.every((share) => !ids.has(share.item.tokens))) {
      this.missed = true;
      this.onUnmatched?.();
    }
    const idOf = (share: PrioritizedBatchItem) => ids.get(share.item.tokens) ?? Number.MAX_SAFE_INTEGER;
    return shares.sort((a, b) => idOf(a) - idOf(b));
  };

  /** Reads sequence ids from this context's queue from now on; false when the queue is not there. */
  attach(context: LlamaContext): boolean {
    const internals = context as unknown as ContextInternals;
    if (!Array.isArray(internals._queuedDecodes)) return false;
    this.context = internals;
    return true;
  }
}

/**
 * Shares `size` tokens out over the items as node-llama-cpp's `maximumParallelism` means to: an
 * equal share each (at most what an item has), then what is left to the items that have more,
 * higher `evaluationPriority` first. Items that get nothing are left out. Unlike node-llama-cpp's,
 * the shares never add up to more than `size`: its extra passes can hand a long prompt the whole
 * batch, and node-llama-cpp then cuts the batch in queue order, leaving the one-token steps queued
 * after that prompt out of it.
 */
export function shareTokens(items: readonly BatchItem[], size: number): PrioritizedBatchItem[] {
  const shares: PrioritizedBatchItem[] = items.map((item) => ({ item, processAmount: 0 }));
  // Stable: equal priorities keep their queue order.
  let open = [...shares].sort((a, b) => b.item.evaluationPriority - a.item.evaluationPriority);
  let left = size;
  while (left > 0 && open.length > 0) {
    const each = Math.max(1, Math.floor(left / open.length));
    for (const share of open) {
      const add = Math.min(each, share.item.tokens.length - share.processAmount, left);
      share.processAmount += add;
      left -= add;
      if (left === 0) break;
    }
    open = open.filter((share) => share.processAmount < share.item.tokens.length);
  }
  return shares.filter((share) => share.processAmount > 0);
}
