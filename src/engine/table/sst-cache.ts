/**
 * A least-recently-used cache bounded by the bytes its entries are said to
 * take. The table engine keeps two: SST indexes (parsed, see sst.ts)
 * and decoded column chunks of row groups. Loads in flight are cached too,
 * so concurrent readers share one load; a failed load is not kept.
 */
export class ByteLru<T> {
  readonly capacity: number;
  /** Map iteration order is insertion order: the first entry is the least recently used. */
  private readonly entries = new Map<string, { readonly value: Promise<T>; bytes: number }>();
  private used = 0;
  hits = 0;
  misses = 0;

  constructor(capacityBytes: number) {
    this.capacity = capacityBytes;
  }

  get bytes(): number {
    return this.used;
  }

  /** The cached value, or `load` it and cache it at `bytes(value)` once loaded. A cache of capacity 0 keeps nothing, not even loads in flight. */
  get(key: string, load: () => Promise<T>, bytes: (value: T) => number): Promise<T> {
    if (this.capacity <= 0) {
      this.misses++;
      return load();
    }
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.hits++;
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.value;
    }
    this.misses++;
    const value = load();
    const entry = { value, bytes: 0 };
    this.entries.set(key, entry);
    value.then(
      (v) => {
        if (this.entries.get(key) !== entry) return;
        entry.bytes = bytes(v);
        this.used += entry.bytes;
        this.trim();
      },
      () => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
      },
    );
    return value;
  }

  /** Whether the key is cached (loaded or loading), without touching its recency. */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  evict(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.used -= entry.bytes;
  }

  evictPrefix(prefix: string): void {
    for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.evict(key);
  }

  private trim(): void {
    for (const oldest of this.entries.keys()) {
      if (this.used <= this.capacity) break;
      this.evict(oldest);
    }
  }
}
