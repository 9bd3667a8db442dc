import { rmSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRepriseError, RepriseError } from '../errors.js';
import { FsObjectStore } from './fs-object-store.js';
import type { ObjectStore, WarmOutcome } from './object-store.js';

export interface CachedObjectStoreOptions {
  /** The cache's own directory (`<dataDir>/cache`): emptied at open. */
  readonly dir: string;
  /** Bytes of objects kept; past it the least recently used are evicted. An object larger than this is never cached. */
  readonly maxBytes: number;
  /**
   * Which keys may be cached: only objects that are never rewritten in
   * place, since another node may rewrite the remote copy without this
   * cache knowing (a region's manifest). Default: every key.
   */
  readonly cacheable?: (key: string) => boolean;
  /** Objects fetched at once by warm(). Default 4. */
  readonly warmConcurrency?: number;
}

/** What /metrics and status report of a cache. */
export interface ObjectCacheStats {
  readonly budgetBytes: number;
  /** Bytes of the objects cached now. */
  readonly bytes: number;
  readonly objects: number;
  /** Reads (get, getRange, size, exists) answered from the local copy. */
  readonly hits: number;
  /** First reads of cacheable keys: each fetched the object from the remote store (or found it too large to cache). */
  readonly misses: number;
  readonly evictions: number;
  /** Bytes fetched from the remote store into the cache (misses and warm). */
  readonly fetchedBytes: number;
}

/**
 * A bounded local cache of whole objects in front of any ObjectStore (S3):
 *
 * - put writes the remote store first (it is the durable copy), then the
 *   local file (write-through: a node that just flushed reads its SSTs
 *   locally);
 * - the first read of a cacheable key (get, getRange, or size: an SST's
 *   size is asked to find its footer) fetches the whole object, later
 *   get/getRange/size/exists are answered from the local file;
 * - least recently used objects are evicted past `maxBytes`;
 * - delete and deletePrefix drop the local copies, and list goes to the
 *   remote store (the cache never answers for what is not there);
 * - warm(keys) fetches objects ahead of their first read (promotion).
 *
 * Everything that changes one key's entry (a miss's fetch, a put, a delete)
 * runs one at a time per key, so concurrent misses share one fetch and a
 * fetch never installs a copy older than a put that followed it. Hits take
 * no lock: they read the local file, and a copy evicted meanwhile is read
 * again from the remote store.
 *
 * At open the directory is emptied rather than indexed: while this node was
 * down another node may have deleted objects or (until manifests are fenced)
 * written a key again, and a copy the cache cannot vouch for is worse than
 * a cold cache. Nothing in it needs to survive a crash, so its files are not
 * fsynced.
 */
export class CachedObjectStore implements ObjectStore {
  private readonly local: FsObjectStore;
  /** Cached key -> bytes; Map order is recency (oldest first). */
  private readonly entries = new Map<string, number>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private fetchedBytes = 0;
  /** Per key: the tail of its chain of entry-changing operations. */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Bumped when a deletePrefix starts and ends: a fetch that overlapped one does not install its copy. */
  private prefixDeletions = 0;
  private deletingPrefixes = 0;
  private readonly cacheable: (key: string) => boolean;
  /** The LOCK file this process holds, until close. */
  private lockPath: string | undefined;

  private constructor(
    readonly remote: ObjectStore,
    private readonly options: CachedObjectStoreOptions,
  ) {
    this.local = new FsObjectStore(options.dir, { durable: false });
    this.cacheable = options.cacheable ?? (() => true);
  }

  /**
   * A cache over `remote` in `options.dir`, emptied first (see the class
   * comment). The directory is this process's: a `LOCK` file in it names
   * the process that holds it, and another live process's lock is refused
   * (INVALID_ARGUMENT) rather than emptying a cache in use, as two nodes
   * started with one `--data-dir` would. A lock left by a process that is
   * gone (SIGKILL) is taken over, and so is one naming this process (a
   * container restarted with the same pid; one process opening a directory
   * twice is not caught).
   */
  static async open(remote: ObjectStore, options: CachedObjectStoreOptions): Promise<CachedObjectStore> {
    await mkdir(options.dir, { recursive: true });
    const lock = join(options.dir, LOCK_FILE);
    await takeLock(lock);
    try {
      await Promise.all((await readdir(options.dir)).filter((name) => name !== LOCK_FILE).map((name) => rm(join(options.dir, name), { recursive: true, force: true })));
    } catch (err) {
      rmSync(lock, { force: true });
      throw err;
    }
    const cache = new CachedObjectStore(remote, options);
    cache.lockPath = lock;
    return cache;
  }

  stats(): ObjectCacheStats {
    return {
      budgetBytes: this.options.maxBytes,
      bytes: this.bytes,
      objects: this.entries.size,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      fetchedBytes: this.fetchedBytes,
    };
  }

  /** The remote store's failure, if it reports one (see ObjectStore.failure). */
  failure(): string | undefined {
    return this.remote.failure?.();
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    await this.locked(key, async () => {
      await this.remote.put(key, data);
      if (this.cacheable(key)) await this.install(key, data);
      else this.drop(key);
    });
  }

  async get(key: string): Promise<Uint8Array> {
    if (this.entries.has(key)) {
      try {
        const bytes = await this.local.get(key);
        this.hit(key);
        return bytes;
      } catch (err) {
        if (!isRepriseError(err, 'NOT_FOUND')) throw err;
        // Evicted or invalidated meanwhile: a miss after all.
      }
    }
    if (!this.cacheable(key)) return this.remote.get(key);
    const fetched = await this.fetch(key, 'whole');
    return fetched ?? this.remote.get(key);
  }

  async getRange(key: string, start: number, end: number): Promise<Uint8Array> {
    if (this.entries.has(key)) {
      try {
        const bytes = await this.local.getRange(key, start, end);
        this.hit(key);
        return bytes;
      } catch (err) {
        if (!isRepriseError(err, 'NOT_FOUND')) throw err;
      }
    }
    if (!this.cacheable(key)) return this.remote.getRange(key, start, end);
    const fetched = await this.fetch(key, 'if-small');
    if (fetched === undefined) return this.remote.getRange(key, start, end);
    return fetched.subarray(start, end);
  }

  async size(key: string): Promise<number> {
    const cached = this.entries.get(key);
    if (cached !== undefined) {
      this.hit(key);
      return cached;
    }
    if (!this.cacheable(key)) return this.remote.size(key);
    // Its size is asked to read it (an SST's footer is at its end): fetch it now, one miss.
    const fetched = await this.fetch(key, 'if-small');
    return fetched?.byteLength ?? this.remote.size(key);
  }

  async exists(key: string): Promise<boolean> {
    if (this.entries.has(key)) {
      this.hit(key);
      return true;
    }
    return this.remote.exists(key);
  }

  async delete(key: string): Promise<void> {
    await this.locked(key, async () => {
      await this.dropLocal(key);
      await this.remote.delete(key);
    });
  }

  list(prefix: string): Promise<string[]> {
    return this.remote.list(prefix);
  }

  async deletePrefix(prefix: string): Promise<void> {
    this.prefixDeletions++;
    this.deletingPrefixes++;
    try {
      await this.dropPrefix(prefix);
      await this.remote.deletePrefix(prefix);
    } finally {
      // Copies installed while the remote deletion ran (fetched before it reached them) go too.
      await this.dropPrefix(prefix);
      this.deletingPrefixes--;
      this.prefixDeletions++;
    }
  }

  /**
   * Fetch `keys` that are cacheable and not cached yet (warmConcurrency at a
   * time), so their first reads are local: every region open warms its
   * SSTs (TableRegion.warmIndexes), so a follower is warm when promoted and
   * a leader opened elsewhere soon is. Best effort: keys gone or unreadable
   * are counted, not thrown. A warm fetch is not a miss (no read waited).
   */
  async warm(keys: readonly string[]): Promise<WarmOutcome> {
    const unique = [...new Set(keys)];
    const todo = unique.filter((k) => this.cacheable(k) && !this.entries.has(k));
    let next = 0;
    let fetched = 0;
    let failed = 0;
    const worker = async (): Promise<void> => {
      while (next < todo.length) {
        const key = todo[next++]!;
        try {
          if ((await this.fetch(key, 'if-small', false)) !== undefined) fetched++;
        } catch {
          failed++;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.warmConcurrency ?? 4, todo.length) }, worker));
    // Skipped: cached already, not cacheable, or larger than the whole budget.
    return { fetched, skipped: unique.length - fetched - failed, failed };
  }

  close(): void {
    this.local.close();
    this.remote.close?.();
    if (this.lockPath !== undefined) rmSync(this.lockPath, { force: true });
    this.lockPath = undefined;
  }

  // ---- internals ----

  /**
   * A miss: the whole object from the remote store, cached unless it is
   * larger than the budget or a deletePrefix overlapped. 'if-small' asks
   * the remote store for the size first and returns undefined (nothing
   * fetched) for an object too large to cache, so the caller reads only the
   * range it needs. Concurrent misses of one key share the first one's
   * fetch through the key's lock.
   */
  private fetch(key: string, mode: 'whole' | 'if-small', countMiss = true): Promise<Uint8Array | undefined> {
    return this.locked(key, async () => {
      if (this.entries.has(key)) {
        try {
          const bytes = await this.local.get(key);
          this.hit(key);
          return bytes;
        } catch (err) {
          if (!isRepriseError(err, 'NOT_FOUND')) throw err;
        }
      }
      if (countMiss) this.misses++;
      if (mode === 'if-small' && (await this.remote.size(key)) > this.options.maxBytes) return undefined;
      const generation = this.prefixDeletions;
      const bytes = await this.remote.get(key);
      this.fetchedBytes += bytes.byteLength;
      if (generation === this.prefixDeletions && this.deletingPrefixes === 0) await this.install(key, bytes);
      return bytes;
    });
  }

  /** Keep a local copy of `key` (replacing any), then evict past the budget. A failed local write only means no copy. */
  private async install(key: string, data: Uint8Array): Promise<void> {
    this.drop(key);
    if (data.byteLength > this.options.maxBytes) {
      await this.local.delete(key).catch(() => undefined);
      return;
    }
    try {
      await this.local.put(key, data);
    } catch {
      await this.local.delete(key).catch(() => undefined);
      return;
    }
    this.entries.set(key, data.byteLength);
    this.bytes += data.byteLength;
    for (const [oldest, size] of this.entries) {
      if (this.bytes <= this.options.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= size;
      this.evictions++;
      // Not under the key's lock: a read that finds the file gone reads the remote store.
      void this.local.delete(oldest).catch(() => undefined);
    }
  }

  private hit(key: string): void {
    this.hits++;
    const size = this.entries.get(key);
    if (size === undefined) return;
    this.entries.delete(key);
    this.entries.set(key, size);
  }

  /** Forget the entry (its file may stay until overwritten or dropped). */
  private drop(key: string): void {
    const size = this.entries.get(key);
    if (size === undefined) return;
    this.entries.delete(key);
    this.bytes -= size;
  }

  private async dropLocal(key: string): Promise<void> {
    this.drop(key);
    await this.local.delete(key);
  }

  private async dropPrefix(prefix: string): Promise<void> {
    const doomed = [...this.entries.keys()].filter((k) => k.startsWith(prefix));
    await Promise.all(doomed.map((key) => this.locked(key, () => this.dropLocal(key))));
  }

  /** Run `work` after every earlier entry-changing operation on `key` ended. */
  private locked<T>(key: string, work: () => Promise<T>): Promise<T> {
    const prior = this.locks.get(key) ?? Promise.resolve();
    const run = prior.then(work, work);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return run;
  }
}

/** In the cache directory: the pid of the process using it. */
const LOCK_FILE = 'LOCK';

/** Whether process `pid` exists (EPERM: it does, someone else's). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Create `path` holding this pid, or take it over from a process that is gone; refuse a live one's. */
async function takeLock(path: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    // Our own pid is a lock from an earlier life (a container restarted: pids repeat).
    if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
      throw new RepriseError(
        'INVALID_ARGUMENT',
        `the SST cache ${path.slice(0, -LOCK_FILE.length - 1)} is in use by process ${holder}: with storage s3 every process needs a data dir of its own ` +
          `(the cache is emptied at start). If process ${holder} is not reprise, remove ${path}`,
        { lock: path, pid: holder },
      );
    }
    await rm(path, { force: true });
  }
}
