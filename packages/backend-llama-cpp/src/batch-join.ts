import type { LlamaContextSequence } from 'node-llama-cpp';

/** The per-batch callback node-llama-cpp 3.22 passes with each decode of a sequence (a private). */
type AfterBatch = (sequenceStateLength: number) => Promise<void> | void;
interface SequenceInternals {
  _takeIntervalCheckpointIfNeededAfterBatch?: AfterBatch;
}

/**
 * Lets every running sequence join each decode batch.
 *
 * node-llama-cpp 3.22 decodes the sequences of a context together, but it takes the next batch
 * a few microtasks after the last batch's tokens are sampled: before the sequence sampled last
 * has queued its next token (that takes about ten microtasks through the evaluate generator).
 * So every batch misses one running sequence: two concurrent jobs never share a batch, four
 * share batches of three, and each step of generation costs an extra decode.
 *
 * The hook is the callback node-llama-cpp awaits after each batch, once per sequence in it:
 * while more than one job decodes, it resolves after one event-loop turn (one per batch, shared),
 * by which time every sequence that got a token has queued its next one. A lone job never waits.
 * It is a private of LlamaContextSequence (node-llama-cpp is pinned): {@link attach} returns
 * false when it is missing, and decoding then works as before, only in smaller batches.
 */
export class BatchJoiner {
  private turn: Promise<void> | undefined;

  constructor(private readonly othersDecoding: () => boolean) {}

  attach(sequence: LlamaContextSequence): boolean {
    const internals = sequence as unknown as SequenceInternals;
    const original = internals._takeIntervalCheckpointIfNeededAfterBatch;
    if (typeof original !== 'function') return false;
    internals._takeIntervalCheckpointIfNeededAfterBatch = (length) => {
      const done = original(length);
      if (!this.othersDecoding()) return done;
      return done instanceof Promise ? done.then(() => this.nextTurn()) : this.nextTurn();
    };
    return true;
  }

  private nextTurn(): Promise<void> {
    if (this.turn === undefined) {
      this.turn = new Promise((resolve) =>
        setImmediate(() => {
          this.turn = undefined;
          resolve();
        }),
      );
    }
    return this.turn;
  }
}
