import { RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { RegionDescriptor, RegionEngine } from '../region-engine.js';
import { readManifest, REGIONS_PREFIX, regionPrefix, writeManifest } from './manifest.js';
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
  /** Whether a region has run warmReadPath in this process (once is enough: the JIT is the process's). */
  private readPathWarmed = false;

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

  async openRegion(desc: RegionDescriptor, store: ObjectStore, options: { readonly readOnly?: boolean } = {}): Promise<TableRegion> {
    const { regionId } = desc;
    let manifest = await readManifest(store, regionId);
    if (manifest === undefined) {
      manifest = { version: 1, regionId, flushedEntryId: desc.createdAt, ssts: [], nextSeq: 1 };
      if (!options.readOnly) await writeManifest(store, manifest);
    }
    const current = manifest;
    await Promise.all(
      current.ssts.map(async (s) => {
        if (!(await store.exists(s.file))) {
          throw new RepriseError('SST_MISSING', `region ${regionId}: SST ${s.file} listed in its manifest is missing from the object store`, {
            regionId,
            file: s.file,
          });
        }
      }),
    );
    if (!options.readOnly) await removeLeftovers(store, current);
    const region = new TableRegion(desc, store, current, this.reads, `${this.nextInstance++}:`, this.compactAt, this.indexer);
    region.warmIndexes();
    if (!this.readPathWarmed && current.ssts.length > 0) {
      this.readPathWarmed = true;
      void region.warmed.then(() => region.warmReadPath());
    }
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
