/**
 * A map that forgets: entries are kept for at least `ttlMs` (and at least the last `max` of them),
 * at most twice that. Two generations of plain Maps, swapped when the newer one is full or old, so
 * every operation is O(1). (Using one Map as a FIFO — delete the oldest key, or scan from the
 * start to prune — degrades in V8: deleted entries stay as holes that each scan walks again.)
 */
export class RecentMap<V> {
  private current = new Map<string, V>();
  private previous = new Map<string, V>();
  private since = Date.now();

  constructor(
    private readonly ttlMs: number,
    private readonly max: number,
  ) {}

  set(key: string, value: V): void {
    const now = Date.now();
    if (this.current.size >= this.max || now - this.since >= this.ttlMs) {
      this.previous = this.current;
      this.current = new Map();
      this.since = now;
    }
    this.previous.delete(key);
    this.current.set(key, value);
  }

  get(key: string): V | undefined {
    const value = this.current.get(key);
    return value === undefined ? this.previous.get(key) : value;
  }

  /** The keys held, older generation first. */
  keys(): string[] {
    return [...this.previous.keys(), ...this.current.keys()];
  }

  /** Removes the key; true when it was there. */
  delete(key: string): boolean {
    const a = this.current.delete(key);
    const b = this.previous.delete(key);
    return a || b;
  }

  get size(): number {
    return this.current.size + this.previous.size;
  }
}
