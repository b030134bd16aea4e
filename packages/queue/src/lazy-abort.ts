/**
 * An AbortController made only when something asks for its signal. Node 20 builds an AbortSignal
 * slowly (an EventTarget whose prototype is swapped: ~5 µs, the largest single per-job cost of the
 * worker in `npm run bench`), and a backend that answers without waiting never needs one.
 * Aborting before the signal exists is remembered; the signal is then born aborted.
 */
export class LazyAbortController {
  private controller: AbortController | undefined;
  private abortReason: unknown;
  private isAborted = false;

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.isAborted) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.isAborted;
  }

  get reason(): unknown {
    return this.abortReason;
  }

  abort(reason: unknown): void {
    if (this.isAborted) return;
    this.isAborted = true;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
}
