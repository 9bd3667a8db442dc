/**
 * Where flushed region data lives: SST files and manifests. A directory by
 * default (FsObjectStore), or an S3 bucket (S3ObjectStore, usually behind a
 * CachedObjectStore), shared by every node so a region can open anywhere.
 * Keys are '/'-separated relative paths.
 */
export interface ObjectStore {
  /** Write durably and atomically (readers see the old object or the whole new one). */
  put(key: string, data: Uint8Array): Promise<void>;
  /** Rejects with NOT_FOUND if the object does not exist. */
  get(key: string): Promise<Uint8Array>;
  /** Bytes [start, end) of an object (SST indexes and row groups); NOT_FOUND if it does not exist. */
  getRange(key: string, start: number, end: number): Promise<Uint8Array>;
  /** Size in bytes; NOT_FOUND if it does not exist. */
  size(key: string): Promise<number>;
  exists(key: string): Promise<boolean>;
  /** Idempotent. */
  delete(key: string): Promise<void>;
  /** Keys under a prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Delete every object under a prefix. */
  deletePrefix(prefix: string): Promise<void>;
  /**
   * Why the store fails right now, if it knows (a remote store whose last
   * operation ran out of retries; cleared by the next success), for status
   * and /health; undefined otherwise.
   */
  failure?(): string | undefined;
  /**
   * A store with a local cache (CachedObjectStore): fetch `keys` into it
   * ahead of their first read, skipping what is cached already (that costs
   * no request). Best effort: keys gone or unreadable are counted in
   * `failed`, never thrown. Stores without a cache do not have it.
   */
  warm?(keys: readonly string[]): Promise<WarmOutcome>;
  /** Release what the store holds open (it may be used again after). */
  close?(): void;
}

/** What ObjectStore.warm did. */
export interface WarmOutcome {
  /** Keys fetched into the cache now. */
  readonly fetched: number;
  /** Keys cached already (or not cacheable): nothing fetched. */
  readonly skipped: number;
  /** Keys gone or unreadable. */
  readonly failed: number;
}
