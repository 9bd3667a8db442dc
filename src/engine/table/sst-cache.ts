/**
 * A least-recently-used cache bounded by the bytes its entries are said to
 * take. The table engine keeps two: SST indexes (parsed, see sst.ts)
 * and decoded column chunks of row groups. Loads in flight are cached too,
 * so concurrent readers share one load; a failed load is not kept.
 */
interface Slot<T> {
  readonly key: string;
  readonly value: Promise<T>;
  bytes: number;
  /** Neighbours in recency order: `older` toward the least recently used. */
  older: Slot<T> | undefined;
  newer: Slot<T> | undefined;
}

export class ByteLru<T> {
  readonly capacity: number;
  /**
   * Recency is a linked list, not the Map's insertion order: V8 leaves a
   * hole in a Map per deleted entry until it rehashes, so finding the
   * oldest entry by iteration passed thousands of holes on every eviction
   * (measured ~5 us per load of a full cache; this way ~0.3 us).
   */
  private readonly entries = new Map<string, Slot<T>>();
  private oldest: Slot<T> | undefined;
  private newest: Slot<T> | undefined;
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
      this.unlink(hit);
      this.link(hit);
      return hit.value;
    }
    this.misses++;
    const value = load();
    const slot: Slot<T> = { key, value, bytes: 0, older: undefined, newer: undefined };
    this.entries.set(key, slot);
    this.link(slot);
    value.then(
      (v) => {
        if (this.entries.get(key) !== slot) return;
        slot.bytes = bytes(v);
        this.used += slot.bytes;
        this.trim();
      },
      () => {
        if (this.entries.get(key) === slot) this.evict(key);
      },
    );
    return value;
  }

  /** Whether the key is cached (loaded or loading), without touching its recency. */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  evict(key: string): void {
    const slot = this.entries.get(key);
    if (slot === undefined) return;
    this.entries.delete(key);
    this.unlink(slot);
    this.used -= slot.bytes;
  }

  evictPrefix(prefix: string): void {
    for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.evict(key);
  }

  private trim(): void {
    while (this.used > this.capacity && this.oldest !== undefined) this.evict(this.oldest.key);
  }

  /** Make the slot the newest. */
  private link(slot: Slot<T>): void {
    slot.older = this.newest;
    slot.newer = undefined;
    if (this.newest !== undefined) this.newest.newer = slot;
    else this.oldest = slot;
    this.newest = slot;
  }

  private unlink(slot: Slot<T>): void {
    if (slot.older !== undefined) slot.older.newer = slot.newer;
    else this.oldest = slot.newer;
    if (slot.newer !== undefined) slot.newer.older = slot.older;
    else this.newest = slot.older;
    slot.older = slot.newer = undefined;
  }
}
