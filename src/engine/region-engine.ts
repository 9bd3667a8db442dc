import type { EntryId } from '../wal/log-store.js';
import type { TestFaults } from '../testing/faults.js';
import type { ObjectStore, WarmOutcome } from './object-store.js';
import type { ColumnarRows, Row, TableQuery, TableSchema } from './schema.js';
import type { PartialAggregates } from './table/aggregate.js';

/**
 * The runtime hands WAL entries to regions through this interface and never
 * looks inside region state. The table engine (./table) is one
 * implementation.
 */
export interface RegionDescriptor {
  readonly regionId: number;
  readonly table: TableSchema;
  /** Index of this region among its table's partitions. */
  readonly partition: number;
  /**
   * Entry id of the region_create entry in its shard's topic: nothing at or
   * below it belongs to the region, so a fresh region's flushed entry id.
   */
  readonly createdAt: EntryId;
}

export interface FlushResult {
  readonly flushedEntryId: EntryId;
  /** Bytes of SST written (0 if the memtable was empty). */
  readonly bytes: number;
  readonly rows: number;
}

/** How a region's leader writes its files. */
export interface RegionWriter {
  /** The shard's leadership epoch: what this leader writes is named by it, and outranks every lower epoch's. */
  readonly epoch: number;
  /**
   * Whether this node may still delete files (its lease holds). Asked after
   * the manifest a deletion follows from is written, right before deleting:
   * a deposed leader then deletes nothing a newer one could still read.
   */
  readonly mayDelete: () => boolean;
  /** Deliberate bugs, for the simulation only. */
  readonly faults?: Pick<TestFaults, 'unfencedManifests'>;
}

export interface RegionEngine {
  readonly name: string;
  /**
   * Load the region's newest manifest and check its SSTs exist. Rejects
   * SST_MISSING / MANIFEST_CORRUPT naming the region and file.
   *
   * With a `writer` (this node leads the region's shard) the region is its
   * to flush and compact: it writes its own version of the manifest at once
   * (created at `createdAt` if there was none), which fences off whatever
   * an older leader writes later, and removes what older leaders left
   * behind. Without one (a hot-standby follower, while another node leads
   * the region) it writes nothing to the store; such a region is applied to
   * and queried, never flushed or compacted; it may be opened again with a
   * writer once promoted.
   */
  openRegion(desc: RegionDescriptor, store: ObjectStore, options?: { readonly writer?: RegionWriter }): Promise<Region>;
  /** Delete a dropped region's files. */
  destroyRegion(regionId: number, store: ObjectStore): Promise<void>;
  /** Ids of the regions that have files in the store (to find ones no table owns). */
  listRegions(store: ObjectStore): Promise<number[]>;
}

/** What an open's warm-up of the object store's local cache did (see Region.cacheWarmed). */
export interface CacheWarmOutcome extends WarmOutcome {
  /** SSTs the opened manifest lists. */
  readonly ssts: number;
  readonly ms: number;
  /** Why the warm-up failed as a whole (the store's warm rejected), if it did. */
  readonly error?: string;
}

export interface Region {
  readonly regionId: number;
  /**
   * An engine whose files an object store may cache locally (ObjectStore.warm)
   * starts fetching them when the region opens, in the background, so its
   * first queries read local copies: this settles (never rejects) with what
   * was fetched, or undefined when the store has no cache or the region no
   * files. Nothing waits for it; the runtime logs it.
   */
  readonly cacheWarmed?: Promise<CacheWarmOutcome | undefined>;
  /**
   * Take over the memtables of `previous`: the same region, opened before
   * without a writer at the same flushed entry id (a follower's, now
   * promoted). This one must have nothing applied yet.
   */
  takeOver(previous: Region): void;
  /** Highest entry id whose effects are in flushed SSTs; replay starts after it. */
  flushedEntryId(): EntryId;
  /** The epoch fence at flushedEntryId, as the last flush recorded it (0 if none did): see flush. */
  fenceEpoch(): number;
  /** Highest entry id applied (>= flushedEntryId). */
  appliedEntryId(): EntryId;
  /**
   * Apply a data entry's body. Called in entry id order, synchronously, only
   * after the entry is durable in the WAL. Ids <= appliedEntryId() are
   * ignored (idempotent replay).
   *
   * Applying only records the entry: an engine may keep the body as it is
   * and decode it later, as long as every entry is in effect, in id order,
   * before anything reads the region (query, flush, close). The table engine
   * queues the body and decodes it when it indexes its memtable (see
   * table/queued-memtable.ts); apply then costs no decoding, so a replay or
   * a follower tailing the log serves writes sooner. An undecodable body
   * (past the WAL's CRC only through a bug or a foreign writer) is therefore
   * found when indexed, not here: the region then becomes unusable, and the
   * next apply, query or flush (or close, if nothing else reported it)
   * throws a RepriseError REGION_FAILED naming the table, region and entry
   * id; every later apply, query and flush throws it again. Nothing of that
   * body is applied and no later entry takes effect.
   */
  apply(entryId: EntryId, body: Uint8Array): void;
  /** Bytes held in memtables (active + frozen), for flush triggers. */
  memtableBytes(): number;
  /**
   * Freeze the active memtable now (synchronously, before the first await)
   * and write it as an SST. `coveredUpTo` is the shard's last applied entry
   * id at call time: every entry of this region up to it has been applied,
   * so the manifest's flushed entry id becomes coveredUpTo even when the
   * region had nothing to write. Writes keep flowing into a new memtable.
   * Concurrent calls are serialised. `fenceEpoch` is the highest epoch
   * marker at or below coveredUpTo the shard knows of; it is kept with the
   * flushed entry id (never lowered), so a replay that starts after it
   * still drops a deposed leader's entries after that marker even once the
   * log below is pruned.
   */
  flush(coveredUpTo: EntryId, fenceEpoch?: number): Promise<FlushResult>;
  /** Merge SSTs when there are enough of them; newest wins, tombstones dropped. */
  compact(): Promise<void>;
  /**
   * Rows matching the query, merged from memtables and SSTs, in primary key
   * then time order (descending with order "desc"), at most `limit`, with
   * the requested columns followed by any key column not requested (the
   * frontend merges regions by key); or, for an aggregation, the region's
   * partial aggregates. QUERY_TOO_LARGE past the engine's result bound.
   */
  query(q: TableQuery): Promise<RegionQueryResult>;
  close(): Promise<void>;
}

export type RegionQueryResult =
  | { readonly kind: 'rows'; readonly rows: ColumnarRows }
  | { readonly kind: 'aggregates'; readonly partial: PartialAggregates };

/** A WAL entry body, as the engine encodes a write. */
export interface PreparedMutation {
  readonly body: Uint8Array;
}

/** A write split by range partition: one prepared body per partition it touches. */
export interface PreparedWrite {
  /** Rows (or keys) written in all. */
  readonly count: number;
  /** In the order of each partition's first row. */
  readonly parts: readonly { readonly partition: number; readonly mutation: PreparedMutation }[];
}

/** The table engine's mutation encoding, used by the API to build WAL entry bodies. */
export interface TableMutationCodec {
  /**
   * Validate rows to insert (INVALID_ROW naming the table, the first bad row
   * and column: then nothing is written) and encode them, one put body per
   * partition. `requireAll`: every column must be present in each row.
   */
  preparePuts(schema: TableSchema, rows: unknown, options?: { readonly requireAll?: boolean }): PreparedWrite;
  /** Validated primary keys (tags + time, see validateKeys) -> one delete body of tombstones per partition. */
  prepareDeletes(schema: TableSchema, keys: readonly Row[]): PreparedWrite;
}
