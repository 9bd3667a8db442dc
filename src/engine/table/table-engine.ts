import { RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { RegionDescriptor, RegionWriter, RegionEngine } from '../region-engine.js';
import { legacyManifestKey, manifestKeys, readManifest, REGIONS_PREFIX, regionPrefix, writeManifest, type Manifest } from './manifest.js';
import { ByteLru } from './sst-cache.js';
import { IdleIndexer } from './idle-indexer.js';
import { removeLeftovers, TableRegion, type ReadContext } from './table-region.js';

export type { TableRegion, TableRegionStats } from './table-region.js';

export interface TableEngineOptions {
  /** Compact a region once it has this many SSTs (>= 2). Default 8. */
  readonly compactAt?: number;
  /** Bound on the cache of decoded row groups shared by the engine's regions, in bytes. Default 64 MiB. */
  readonly cacheBytes?: number;
  /** Compaction writes one SST per time window of this many ms (as TWCS does). Default 2 hours. */
  readonly compactionWindowMs?: number;
  /** A query (or aggregation) whose result has more rows (groups) than this fails with QUERY_TOO_LARGE. Default 1,000,000. */
  readonly maxResultRows?: number;
}

/** SST indexes and decoded chunks kept for queries, half each. */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** Rows (or aggregation groups) one query may return. */
export const DEFAULT_MAX_RESULT_ROWS = 1_000_000;

/**
 * The table engine: each region is a memtable in front of SSTs in the
 * object store, described by its manifest (see ./manifest.ts).
 */
export class TableEngine implements RegionEngine {
  readonly name = 'table';
  private readonly compactAt: number;
  private readonly reads: ReadContext;
  /** Distinguishes region instances in the shared cache (a region may be destroyed and recreated). */
  private nextInstance = 0;
  private readonly indexer = new IdleIndexer();

  constructor(options: TableEngineOptions = {}) {
    const compactAt = options.compactAt ?? 8;
    if (!Number.isSafeInteger(compactAt) || compactAt < 2) {
      throw new RepriseError('INVALID_ARGUMENT', `table engine: compactAt must be an integer >= 2, got ${compactAt}`);
    }
    const cacheBytes = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
    if (!(cacheBytes >= 0)) throw new RepriseError('INVALID_ARGUMENT', `table engine: cacheBytes must be >= 0, got ${cacheBytes}`);
    const windowMs = options.compactionWindowMs ?? 2 * 60 * 60 * 1000;
    if (!Number.isSafeInteger(windowMs) || windowMs <= 0) throw new RepriseError('INVALID_ARGUMENT', `table engine: compactionWindowMs must be a positive integer, got ${windowMs}`);
    const maxResultRows = options.maxResultRows ?? DEFAULT_MAX_RESULT_ROWS;
    if (!Number.isSafeInteger(maxResultRows) || maxResultRows <= 0) {
      throw new RepriseError('INVALID_ARGUMENT', `table engine: maxResultRows must be a positive integer, got ${maxResultRows}`);
    }
    this.compactAt = compactAt;
    // Every query of an SST needs its index (about 1.2 bytes a row: 12 MB
    // for 10M rows), and one evicted is read and parsed again by each query
    // that plans by it: half the budget.
    this.reads = { indexes: new ByteLru(cacheBytes / 2), chunks: new ByteLru(cacheBytes - cacheBytes / 2), maxResultRows, windowMs };
  }

  get maxResultRows(): number {
    return this.reads.maxResultRows;
  }

  /** The read caches: budget and use, for status and metrics. */
  cacheStats(): { budgetBytes: number; usedBytes: number; hits: number; misses: number } {
    const { indexes, chunks } = this.reads;
    return { budgetBytes: indexes.capacity + chunks.capacity, usedBytes: indexes.bytes + chunks.bytes, hits: indexes.hits + chunks.hits, misses: indexes.misses + chunks.misses };
  }

  async openRegion(desc: RegionDescriptor, store: ObjectStore, options: { readonly writer?: RegionWriter } = {}): Promise<TableRegion> {
    const { regionId } = desc;
    const { writer } = options;
    const found = await readManifest(store, regionId);
    const read: Manifest = found?.manifest ?? { version: 0, regionId, flushedEntryId: desc.createdAt, ssts: [], nextSeq: 1 };
    await Promise.all(
      read.ssts.map(async (s) => {
        if (!(await store.exists(s.file))) {
          throw new RepriseError('SST_MISSING', `region ${regionId}: SST ${s.file} listed in its manifest is missing from the object store`, {
            regionId,
            file: s.file,
          });
        }
      }),
    );
    let current = read;
    const ownKeys: string[] = [];
    if (writer) {
      // This leader's own version: it outranks anything an older leader writes from now on.
      const claimed = { ...read, epoch: writer.epoch, version: read.version + 1 };
      const claimedKey = await writeManifest(store, claimed, writer.faults);
      current = claimed;
      ownKeys.push(claimedKey);
      if (writer.mayDelete()) {
        await removeLeftovers(store, claimed, writer.epoch);
        if (found?.key === legacyManifestKey(regionId)) {
          if (claimedKey !== found.key) await store.delete(found.key);
        } else {
          // The version just read stays until the next flush (a reader may be reading it); older ones go.
          const older = (await manifestKeys(store, regionId)).filter((key) => key < claimedKey && key !== found?.key);
          await Promise.all(older.map((key) => store.delete(key)));
          if (found) ownKeys.unshift(found.key);
        }
      }
    }
    const region = new TableRegion(desc, store, current, this.reads, `${this.nextInstance++}:`, this.compactAt, this.indexer, writer, ownKeys);
    region.warmIndexes();
    return region;
  }

  async destroyRegion(regionId: number, store: ObjectStore): Promise<void> {
    await store.deletePrefix(regionPrefix(regionId));
  }

  async listRegions(store: ObjectStore): Promise<number[]> {
    const ids = new Set<number>();
    for (const key of await store.list(REGIONS_PREFIX)) {
      const id = Number(key.slice(REGIONS_PREFIX.length).split('/')[0]);
      if (Number.isSafeInteger(id)) ids.add(id);
    }
    return [...ids].sort((a, b) => a - b);
  }
}
