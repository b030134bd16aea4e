/**
 * Stop strings with OpenAI semantics: the answer ends right before the first stop string, which
 * is neither returned nor streamed. Text that could be the start of a stop string is held back
 * from the stream until it is known not to be one.
 *
 * (node-llama-cpp's own stop triggers work on whole tokens and drop the part of a token that
 * precedes the trigger, so `"e t"` with stop `"t"` would return `"e"` instead of `"e "`.)
 */
export class StopStringStream {
  private readonly stops: readonly string[];
  private readonly emit: (text: string) => void;
  private readonly holdBack: number;
  private generated = '';
  private emitted = 0;
  private stopAt = -1;

  /** Whitespace at the end of the answer is neither returned nor streamed (JSON answers). */
  private readonly trimEnd: boolean;

  constructor(stops: readonly string[], emit: (text: string) => void, options: { trimEnd?: boolean } = {}) {
    this.stops = stops.filter((s) => s.length > 0);
    this.emit = emit;
    this.holdBack = this.stops.reduce((n, s) => Math.max(n, s.length - 1), 0);
    this.trimEnd = options.trimEnd ?? false;
  }

  get stopped(): boolean {
    return this.stopAt >= 0;
  }

  /** Adds generated text; true when a stop string has been reached (generation should stop). */
  push(chunk: string): boolean {
    if (this.stopped || chunk === '') return this.stopped;
    const searchFrom = Math.max(0, this.generated.length - this.holdBack);
    this.generated += chunk;
    let first = -1;
    for (const stop of this.stops) {
      const i = this.generated.indexOf(stop, searchFrom);
      if (i >= 0 && (first < 0 || i < first)) first = i;
    }
    if (first >= 0) {
      this.stopAt = first;
      this.flushTo(this.answerEnd(first));
      return true;
    }
    // Trailing whitespace waits for what follows it: streamed once text comes after it, dropped
    // with trimEnd if nothing does.
    let safe = Math.min(this.generated.length - this.holdBack, this.answerEnd(this.generated.length));
    // Never end a streamed piece on half of a surrogate pair.
    const last = this.generated.charCodeAt(safe - 1);
    if (safe > 0 && last >= 0xd800 && last <= 0xdbff) safe--;
    this.flushTo(safe);
    return false;
  }

  /**
   * Ends the stream and returns the answer: the text before the stop string, or else `final`
   * (the generator's own full text; what is still held back of it is streamed now).
   */
  finish(final: string = this.generated): string {
    if (this.stopped) return this.generated.slice(0, this.answerEnd(this.stopAt));
    const answer = this.trimEnd ? final.trimEnd() : final;
    const streamed = this.generated.slice(0, this.emitted);
    if (answer.startsWith(streamed) && answer.length > this.emitted) this.emit(answer.slice(this.emitted));
    this.emitted = answer.length;
    return answer;
  }

  /** Where the answer ends if the generated text ended at `end`. */
  private answerEnd(end: number): number {
    return this.trimEnd ? this.generated.slice(0, end).trimEnd().length : end;
  }

  private flushTo(end: number): void {
    if (end > this.emitted) {
      this.emit(this.generated.slice(this.emitted, end));
      this.emitted = end;
    }
  }
}
