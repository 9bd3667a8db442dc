import type { SstData } from './sst.js';

/**
 * Decoded SSTs kept in memory so that repeated queries do not fetch and
 * decode them again: least recently used first out, bounded by the SSTs'
 * encoded sizes (decoded rows take a few times more). Loads in flight are
 * cached too, so concurrent readers of one SST share a single load.
 */
export class SstCache {
  private readonly capacity: number;
  /** Map iteration order is insertion order: the first entry is the least recently used. */
  private readonly entries = new Map<string, { readonly data: Promise<SstData>; readonly bytes: number }>();
  private used = 0;

  constructor(capacityBytes: number) {
    this.capacity = capacityBytes;
  }

  /** The cached SST, or `load` it and cache it (a failed load is not cached). */
  get(key: string, bytes: number, load: () => Promise<SstData>): Promise<SstData> {
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.data;
    }
    const data = load();
    this.insert(key, data, bytes);
    data.catch(() => {
      if (this.entries.get(key)?.data === data) this.evict(key);
    });
    return data;
  }

  /** Cache an SST just written, so its first read needs no fetch. */
  set(key: string, data: SstData): void {
    this.evict(key);
    this.insert(key, Promise.resolve(data), data.meta.bytes);
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

  private insert(key: string, data: Promise<SstData>, bytes: number): void {
    this.entries.set(key, { data, bytes });
    this.used += bytes;
    for (const oldest of this.entries.keys()) {
      if (this.used <= this.capacity) break;
      this.evict(oldest);
    }
  }
}
