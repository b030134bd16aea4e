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
 * has queued its next token (that takes several microtasks through the evaluate generator).
 * So nearly every batch misses one running sequence: past their shared prompt batch, two
 * concurrent jobs almost never decode together, four decode in batches of three, and each step of
 * generation costs an extra decode.
 *
 * The hook is the callback node-llama-cpp awaits after each batch, once per sequence in it:
 * while more than one job holds a sequence, it resolves after one event-loop turn (shared by the
 * batch), by which time every sequence that got a token has queued its next one. A lone job never
 * waits.
 * It is a private of LlamaContextSequence (node-llama-cpp is pinned): {@link attach} returns
 * false when it is missing, and decoding then works as before, only in smaller batches.
 */
export class BatchJoiner {
  private turn: Promise<void> | undefined;
  /** Sequences whose callback the current turn has served: at most one batch's worth. */
  private readonly inTurn = new Set<LlamaContextSequence>();

  constructor(private readonly othersDecoding: () => boolean) {}

  attach(sequence: LlamaContextSequence): boolean {
    const internals = sequence as unknown as SequenceInternals;
    const original = internals._takeIntervalCheckpointIfNeededAfterBatch;
    if (typeof original !== 'function') return false;
    internals._takeIntervalCheckpointIfNeededAfterBatch = (length) => {
      const done = original(length);
      if (!this.othersDecoding()) {
        this.turn = undefined;
        return done;
      }
      const turn = this.nextTurn(sequence);
      return done instanceof Promise ? done.then(() => turn) : turn;
    };
    return true;
  }

  private nextTurn(sequence: LlamaContextSequence): Promise<void> {
    // node-llama-cpp calls this for the sequences of a batch one after another, each once: a
    // sequence already in the current turn means a new batch, which gets a new turn.
    if (this.turn === undefined || this.inTurn.has(sequence)) {
      this.inTurn.clear();
      this.turn = new Promise((resolve) => setImmediate(resolve));
    }
    this.inTurn.add(sequence);
    return this.turn;
  }
}
