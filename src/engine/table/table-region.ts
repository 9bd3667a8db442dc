import { RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { CacheWarmOutcome, FlushResult, Region, RegionDescriptor, RegionQueryResult, RegionWriter } from '../region-engine.js';
import type { TableQuery, Value } from '../schema.js';
import { aggregatePlanOf, Aggregator, type AggregatePlan } from './aggregate.js';
import { compareKeys, layoutOf, rowFromKey, type TableLayout, type RowValues } from './keys.js';
import { regionPrefix, sstKey, sstNameOf, writeManifest, type Manifest, type SstRef } from './manifest.js';
import { QueuedMemtable, UnindexableEntry } from './queued-memtable.js';
import { aggregateSink, blockOfEntries, filterBlock, mergeRuns, RowsSink, sourceOf, type Block, type BlockSource, type ScanStop } from './read.js';
import { planScan, type ScanPlan } from './scan.js';
import { DELETED_COLUMN, SstReader, SstWriter, type SstMeta, type WrittenIndex } from './sst.js';
import { ByteLru } from './sst-cache.js';
import { validateQuery } from './validate.js';
import { IdleIndexer, INDEX_SLICE_MS, nextTurn } from './idle-indexer.js';

/** What a region needs of its engine for reads: the caches and bounds shared by all regions. */
export interface ReadContext {
  /** Parsed SST indexes. */
  readonly indexes: ByteLru<SstReader>;
  /** Decoded column chunks: `<instance><file>#<group>#<column>`. */
  readonly chunks: ByteLru<ArrayLike<unknown>>;
  readonly maxResultRows: number;
  readonly windowMs: number;
}

export interface TableRegionStats {
  readonly ssts: number;
  readonly sstRows: number;
  readonly sstBytes: number;
  /** Entries indexed in memtables (rows and tombstones). */
  readonly memtableRows: number;
  /** Bodies applied but not indexed yet (see QueuedMemtable). */
  readonly queuedMutations: number;
  readonly memtableBytes: number;
  /** Frozen memtables not yet written. */
  readonly frozenMemtables: number;
  readonly flushedEntryId: number;
  readonly appliedEntryId: number;
}

/**
 * Delete the SSTs of older epochs that the manifest does not list: the
 * inputs of a compaction whose deletion a crash interrupted, or what a
 * deposed leader wrote that no manifest read will ever list. An SST of
 * this epoch or a later one is left alone (a later epoch's belongs to a
 * leader newer than this one).
 */
export async function removeLeftovers(store: ObjectStore, manifest: Manifest, epoch: number): Promise<void> {
  const listed = new Set(manifest.ssts.map((s) => s.file));
  const keys = await store.list(`${regionPrefix(manifest.regionId)}sst/`);
  const leftovers = keys.filter((key) => {
    const name = sstNameOf(key);
    return name !== undefined && name.epoch < epoch && !listed.has(key);
  });
  await Promise.all(leftovers.map((key) => store.delete(key)));
}

/** Manifest versions a leader keeps: its newest, and the one before (a reader may have just listed it). */
const MANIFESTS_KEPT = 2;
/** How long a flush encodes before the event loop gets a turn (see writeSst). */
const FLUSH_SLICE_MS = 5;

/** A frozen memtable waiting to be written, and the entry id its flush covers. */
interface Frozen {
  readonly mem: QueuedMemtable;
  readonly coveredUpTo: number;
  readonly fenceEpoch: number;
}

export class TableRegion implements Region {
  readonly regionId: number;
  private readonly layout: TableLayout;
  private readonly store: ObjectStore;
  private readonly reads: ReadContext;
  /** This instance's prefix for cache keys. */
  private readonly cacheTag: string;
  private readonly compactAt: number;
  private manifest: Manifest;
  private applied: number;
  /** Takes applied bodies in a queue, indexed on demand (see QueuedMemtable). */
  private active: QueuedMemtable;
  /** Oldest first. A failed flush leaves its memtable here for the next flush. */
  private readonly frozen: Frozen[] = [];
  /** Flushes and compactions run one at a time, in call order. */
  private tail: Promise<unknown> = Promise.resolve();
  /** SST key -> number of queries reading it; compaction defers deleting SSTs still read. */
  private readonly readers = new Map<string, number>();
  /** Compacted-away SSTs to delete once their last reader is done. */
  private readonly doomed = new Set<string>();
  private readonly deleting = new Set<Promise<void>>();
  private closed = false;
  /** Set once a queued body fails to index: every later apply, query and flush throws it. */
  private failure: RepriseError | undefined;
  /** Whether `failure` has been thrown to a caller (close reports it otherwise). */
  private failureReported = false;
  private readonly indexer: IdleIndexer;
  /** Settles once warmIndexes is done (for tests and benchmarks that want the cold read path). */
  warmed: Promise<void> = Promise.resolve();
  /** Settles once warmIndexes fetched the SSTs into the store's cache (undefined: no cache, or no SSTs); never rejects. */
  cacheWarmed: Promise<CacheWarmOutcome | undefined> = Promise.resolve(undefined);
  /** Whether the engine's IdleIndexer holds this region (its flag, kept here to save a lookup per apply). */
  awaitingIndexer = false;

  constructor(
    desc: RegionDescriptor,
    store: ObjectStore,
    manifest: Manifest,
    reads: ReadContext,
    cacheTag: string,
    compactAt: number,
    indexer: IdleIndexer,
    /** Set when this node leads the region (it flushes and compacts); undefined on a follower. */
    private readonly writer: RegionWriter | undefined,
    /** Keys of the manifest versions this leader may delete once newer ones are written, oldest first. */
    private readonly manifestKeys: string[],
  ) {
    this.regionId = desc.regionId;
    this.layout = layoutOf(desc.table);
    this.store = store;
    this.manifest = manifest;
    this.reads = reads;
    this.cacheTag = cacheTag;
    this.compactAt = compactAt;
    this.indexer = indexer;
    this.applied = manifest.flushedEntryId;
    this.active = new QueuedMemtable(this.layout);
  }

  fenceEpoch(): number {
    return this.manifest.fenceEpoch ?? 0;
  }

  flushedEntryId(): number {
    return this.manifest.flushedEntryId;
  }

  appliedEntryId(): number {
    return this.applied;
  }

  /**
   * Carry on from `previous`, this region opened before without a writer at
   * the same flushed entry id (a follower being promoted): take over its
   * memtables, so that nothing it applied is read from the log again.
   */
  takeOver(previous: Region): void {
    if (!(previous instanceof TableRegion) || previous.regionId !== this.regionId || previous.flushedEntryId() !== this.flushedEntryId() || this.applied !== this.flushedEntryId()) {
      throw new RepriseError('INTERNAL', `region ${this.regionId}: only a region opened at the same flushed entry id, with nothing applied, takes over another's memtables`, { regionId: this.regionId });
    }
    previous.assertUsable();
    this.active = previous.active;
    this.frozen.push(...previous.frozen);
    this.applied = previous.applied;
    previous.active = new QueuedMemtable(previous.layout);
    previous.frozen.length = 0;
    previous.indexer.forget(previous);
    this.indexer.applied(this);
  }

  /** Queue the body (see QueuedMemtable): nothing is decoded here. */
  apply(entryId: number, body: Uint8Array): void {
    this.assertUsable();
    if (entryId <= this.applied) return;
    this.active.enqueue(entryId, body);
    this.applied = entryId;
    this.indexer.applied(this);
  }

  memtableBytes(): number {
    return this.frozen.reduce((n, f) => n + f.mem.bytes, this.active.bytes);
  }

  flush(coveredUpTo: number, fenceEpoch = 0): Promise<FlushResult> {
    this.assertUsable();
    // Freeze now: what this call covers is exactly what has been applied so
    // far (queued or indexed; the queue is indexed below, before the write).
    if (!this.active.empty) {
      this.active.freeze();
      this.frozen.push({ mem: this.active, coveredUpTo, fenceEpoch });
      this.active = new QueuedMemtable(this.layout);
    }
    const last = this.frozen[this.frozen.length - 1];
    return this.serialised(async () => {
      let bytes = 0;
      let rows = 0;
      // Write the pending memtables in freeze order up to this call's own:
      // any a failed flush left behind first, each with its flushed entry id.
      while (last !== undefined && this.frozen.includes(last)) {
        const { mem, coveredUpTo: upTo, fenceEpoch: upToFence } = this.frozen[0];
        // Index its queue a slice at a time: writes and reads go on meanwhile.
        await this.indexInSlices(mem);
        const m = this.manifest;
        const key = sstKey(this.regionId, this.writerOf().epoch, m.nextSeq);
        // Undefined when the queue held no rows (empty bodies): no SST then.
        const written = await this.writeSst(key, mem.scan());
        const data = written?.meta;
        if (data === undefined) {
          if (upTo > m.flushedEntryId) await this.commit({ ...m, flushedEntryId: upTo, fenceEpoch: Math.max(m.fenceEpoch ?? 0, upToFence) });
        } else {
          await this.commit({
            ...m,
            flushedEntryId: Math.max(m.flushedEntryId, upTo),
            fenceEpoch: Math.max(m.fenceEpoch ?? 0, upToFence),
            ssts: [...m.ssts, refOf(key, m.nextSeq, data)],
            nextSeq: m.nextSeq + 1,
          });
          this.remember(key, (written as WrittenSst).index);
          bytes += data.bytes;
          rows += data.rows;
        }
        this.frozen.shift();
      }
      // Every entry up to coveredUpTo is now in SSTs, even if this call had nothing to write.
      if (coveredUpTo > this.manifest.flushedEntryId) {
        await this.commit({ ...this.manifest, flushedEntryId: coveredUpTo, fenceEpoch: Math.max(this.manifest.fenceEpoch ?? 0, fenceEpoch) });
      }
      return { flushedEntryId: this.manifest.flushedEntryId, bytes, rows };
    });
  }

  /**
   * Time-window compaction (as Cassandra's TWCS): once `compactAt` SSTs
   * written by flushes have accumulated, they and the window SSTs of every
   * window they touch are merged, one window at a time, into one SST per
   * window. Every SST a window's output replaces is an input, and no SST
   * left out overlaps it in time, so tombstones can be dropped and newest
   * wins by seq still holds: SSTs that both overlap in key and time stay
   * ordered by seq (outputs get seqs above every remaining SST they could
   * overlap, which are none). A time-range query then reads few SSTs, and
   * the file count stays bounded by windows, not flushes.
   */
  compact(): Promise<void> {
    this.assertOpen();
    return this.serialised(async () => {
      const flushed = this.manifest.ssts.filter((s) => s.window === undefined);
      if (flushed.length < this.compactAt) return;
      const W = this.reads.windowMs;
      const windows = new Set<number>();
      for (const s of flushed) for (let w = Math.floor(s.minTime / W) * W; w <= s.maxTime; w += W) windows.add(w);
      const inputs = this.manifest.ssts.filter((s) => s.window === undefined || windows.has(s.window));
      const outputs: SstRef[] = [];
      const indexes: WrittenIndex[] = [];
      let seq = this.manifest.nextSeq;
      for (const w of [...windows].sort((a, b) => a - b)) {
        const overlapping = inputs.filter((s) => s.minTime < w + W && s.maxTime >= w);
        if (overlapping.length === 0) continue;
        const plan = planScan(this.layout, { timeRange: { from: w, to: w + W } });
        const key = sstKey(this.regionId, this.writerOf().epoch, seq);
        const writer = new SstWriter(this.layout, this.regionId);
        const columns = this.layout.names.map((_, i) => i);
        const readers = await Promise.all([...overlapping].reverse().map((s) => this.reader(s)));
        await mergeRuns(
          // Outside the chunk cache: each row is read once, and caching them evicted what queries read.
          // In one piece (see ARCHITECTURE.md, known limits: compaction holds the event loop).
          readers.map((r) => this.sstSource(r, plan, columns, false, { viaCache: false })),
          this.layout,
          false,
          (block, from, to) => {
            const row: Value[] = new Array(columns.length);
            for (let i = from; i < to; i++) {
              // Every older version is an input: a tombstone hides nothing left.
              if (block.deleted[i]) continue;
              for (const c of columns) row[c] = (block.columns[c] as ArrayLike<Value>)[i];
              writer.add(row, false);
            }
            return true;
          },
        );
        const written = await this.storeSst(key, writer);
        if (written === undefined) continue;
        outputs.push({ ...refOf(key, seq, written.meta), window: w });
        indexes.push(written.index);
        seq++;
      }
      const m = this.manifest;
      const replaced = new Set(inputs.map((s) => s.file));
      await this.commit({ ...m, ssts: [...m.ssts.filter((s) => !replaced.has(s.file)), ...outputs], nextSeq: seq });
      outputs.forEach((s, i) => this.remember(s.file, indexes[i] as WrittenIndex));
      const deletions: Promise<void>[] = [];
      // A deposed leader deletes nothing: the next leader's open removes what is unlisted.
      const mayDelete = this.writerOf().mayDelete();
      for (const s of inputs) {
        this.forget(s.file);
        if (this.readers.has(s.file)) this.doomed.add(s.file);
        else if (mayDelete) deletions.push(this.store.delete(s.file));
      }
      await Promise.all(deletions);
    });
  }

  async query(input: TableQuery): Promise<RegionQueryResult> {
    this.assertUsable();
    const { layout } = this;
    const q = validateQuery(layout.schema, input);
    const agg = aggregatePlanOf(layout.schema, q);
    const desc = q.order === 'desc';
    // Requested columns, then the key columns the frontend merges by.
    const wanted = agg !== undefined ? [] : (q.columns ?? layout.names).map((n) => layout.index.get(n) as number);
    const output = [...wanted, ...layout.keyIdx.filter((c) => !wanted.includes(c))];
    const needed = new Set(output);
    if (agg !== undefined) for (const a of agg.aggregates) if (a.column >= 0) needed.add(a.column);
    const columns = [...needed];
    const plan = planScan(layout, q);
    const empty: RegionQueryResult =
      agg !== undefined
        ? { kind: 'aggregates', partial: new Aggregator(agg, layout, 1).result() }
        : { kind: 'rows', rows: { columns: output.map((c) => layout.names[c]), data: output.map(() => []) } };
    if (plan.empty) return empty;
    // Snapshot the memtables synchronously, before any await: what has been
    // applied so far is indexed and copied, so writes applied while SSTs
    // load neither show up half-way nor find the memtable mid-scan.
    this.indexAll();
    const memtables = [this.active, ...this.frozen.map((f) => f.mem).reverse()].filter((mem) => mem.size > 0);
    // Newest first; with a limit (rows, ascending) the newest is copied up to
    // its limit-th live row and the older ones up to that row's key.
    const memBlocks: (Block | undefined)[] = [];
    let stop: ScanStop | undefined = agg === undefined && q.limit !== undefined && !desc ? { live: q.limit } : undefined;
    for (const mem of memtables) {
      const block = blockOfEntries(mem.scan(plan), layout, columns, desc, stop);
      memBlocks.push(block);
      if (stop !== undefined && 'live' in stop) {
        // The scan stops right after its limit-th live row, which is then its last; a memtable with fewer leaves older ones needed whole.
        stop = block !== undefined && liveRows(block) >= stop.live ? { through: keyRow(layout, block, block.length - 1) } : undefined;
      }
    }
    const ssts = this.manifest.ssts.filter((s) => this.mayMatch(s, plan)).reverse();
    for (const s of ssts) this.readers.set(s.file, (this.readers.get(s.file) ?? 0) + 1);
    try {
      const readers = await Promise.all(ssts.map((s) => this.reader(s)));
      if (agg !== undefined) {
        const aggregator = new Aggregator(agg, layout, this.reads.maxResultRows);
        const summarised = this.summarise(aggregator, agg, plan, readers, ssts, memBlocks);
        const sources = [...memBlocks.map(sourceOf), ...readers.map((r, i) => this.sstSource(r, plan, columns, desc, { skip: summarised[i] }))];
        await mergeRuns(sources, layout, desc, aggregateSink(aggregator));
        return { kind: 'aggregates', partial: aggregator.result() };
      }
      const sources = [...memBlocks.map(sourceOf), ...readers.map((r) => this.sstSource(r, plan, columns, desc))];
      const rows = new RowsSink(output, q.limit ?? Infinity, this.reads.maxResultRows);
      await mergeRuns(sources, layout, desc, rows.sink);
      return { kind: 'rows', rows: { columns: output.map((c) => layout.names[c]), data: rows.data } };
    } finally {
      for (const s of ssts) this.release(s.file);
    }
  }

  /**
   * Index what is still queued (a bad body is reported, not dropped unseen:
   * close rejects with the region's failure if no earlier call reported it),
   * then release the region.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.indexer.forget(this);
    // Let a flush or compaction in progress finish; their callers see the outcome.
    await this.tail;
    try {
      for (const mem of [...this.frozen.map((f) => f.mem), this.active]) await this.indexInSlices(mem, false);
    } catch {
      // Recorded in this.failure, reported below.
    }
    await Promise.all(this.deleting);
    this.reads.indexes.evictPrefix(this.cacheTag);
    this.reads.chunks.evictPrefix(this.cacheTag);
    if (this.failure !== undefined && !this.failureReported) throw this.reportFailure();
  }

  /** Counts of the region's parts, as they are (indexes nothing). */
  stats(): TableRegionStats {
    const { ssts } = this.manifest;
    return {
      ssts: ssts.length,
      sstRows: ssts.reduce((n, s) => n + s.rows, 0),
      sstBytes: ssts.reduce((n, s) => n + s.bytes, 0),
      memtableRows: this.frozen.reduce((n, f) => n + f.mem.size, this.active.size),
      queuedMutations: this.frozen.reduce((n, f) => n + f.mem.queued, this.active.queued),
      memtableBytes: this.memtableBytes(),
      frozenMemtables: this.frozen.length,
      flushedEntryId: this.manifest.flushedEntryId,
      appliedEntryId: this.applied,
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new RepriseError('CLOSED', `region ${this.regionId} is closed`, { regionId: this.regionId });
  }

  /** Open and not failed. */
  private assertUsable(): void {
    this.assertOpen();
    if (this.failure !== undefined) throw this.reportFailure();
  }

  private reportFailure(): RepriseError {
    this.failureReported = true;
    return this.failure as RepriseError;
  }

  /**
   * Index a memtable's queue, or part of it until `deadline`: whether it is
   * now empty. A body that does not decode makes the region unusable: the
   * failure is recorded and thrown.
   */
  private index(mem: QueuedMemtable, deadline = Infinity): boolean {
    if (this.failure !== undefined) throw this.failure;
    try {
      return mem.index(deadline);
    } catch (err) {
      if (!(err instanceof UnindexableEntry)) throw err;
      const { entryId, reason } = err;
      const table = this.layout.schema.name;
      this.failure = new RepriseError(
        'REGION_FAILED',
        `region ${this.regionId} of table "${table}" failed: entry ${entryId} cannot be applied: ${reason instanceof Error ? reason.message : String(reason)}`,
        { table, regionId: this.regionId, entryId },
        { cause: reason },
      );
      this.indexer.forget(this);
      throw this.failure;
    }
  }

  /** Index every queue now, oldest memtable first (throws the region's failure, reported). */
  private indexAll(): void {
    try {
      for (const f of this.frozen) this.index(f.mem);
      this.index(this.active);
    } catch (err) {
      if (err === this.failure) throw this.reportFailure();
      throw err;
    }
  }

  /**
   * Index a memtable's queue a slice at a time, letting the event loop run
   * in between. Throws the region's failure (reported, unless `report` is false).
   */
  private async indexInSlices(mem: QueuedMemtable, report = true): Promise<void> {
    try {
      while (!this.index(mem, performance.now() + INDEX_SLICE_MS)) await nextTurn();
    } catch (err) {
      if (err === this.failure && report) throw this.reportFailure();
      throw err;
    }
  }

  /**
   * A slice of background indexing (see IdleIndexer): the active queue until
   * `deadline`. Whether there is nothing more to do for now (all indexed,
   * closed, or failed: a failure is recorded for the next apply, query,
   * flush or close to report).
   */
  indexWhileIdle(deadline: number): boolean {
    if (this.closed || this.failure !== undefined) return true;
    try {
      return this.index(this.active, deadline);
    } catch {
      return true;
    }
  }

  private serialised<T>(job: () => Promise<T>): Promise<T> {
    const run = this.tail.then(job);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async commit(next: Manifest): Promise<void> {
    const writer = this.writerOf();
    const m = { ...next, epoch: writer.epoch, version: this.manifest.version + 1 };
    const key = await writeManifest(this.store, m, writer.faults);
    if (this.manifestKeys.at(-1) !== key) this.manifestKeys.push(key);
    this.manifest = m;
    while (this.manifestKeys.length > MANIFESTS_KEPT && writer.mayDelete()) await this.store.delete(this.manifestKeys.shift()!);
  }

  /** Flushes and compactions are the leader's: a follower's region has no writer. */
  private writerOf(): RegionWriter {
    if (this.writer === undefined) throw new RepriseError('INTERNAL', `region ${this.regionId} is open read-only (a follower's): it is not flushed or compacted here`, { regionId: this.regionId });
    return this.writer;
  }

  /**
   * Encode sorted entries (a frozen memtable's) and store them under `key`;
   * undefined (nothing written) when there are none. Encoded in slices of
   * FLUSH_SLICE_MS with a turn of the event loop between them: a 64 MiB
   * memtable is about a second of encoding, which in one piece stalled
   * every append, acknowledgement and query of the node for that second.
   */
  private async writeSst(key: string, entries: Iterable<readonly [Value[], boolean]>): Promise<WrittenSst | undefined> {
    const writer = new SstWriter(this.layout, this.regionId);
    let n = 0;
    let sliceEnd = performance.now() + FLUSH_SLICE_MS;
    for (const [row, deleted] of entries) {
      writer.add(row, deleted);
      if ((++n & 1023) === 0 && performance.now() > sliceEnd) {
        await nextTurn();
        sliceEnd = performance.now() + FLUSH_SLICE_MS;
      }
    }
    return this.storeSst(key, writer);
  }

  /** Finish the writer's SST and store it under `key`; undefined (nothing written) when it holds no row. */
  private async storeSst(key: string, writer: SstWriter): Promise<WrittenSst | undefined> {
    const encoded = writer.finish();
    if (encoded === undefined) return undefined;
    await this.store.put(key, encoded.bytes);
    return { meta: encoded.meta, index: encoded.index };
  }

  /**
   * Cache the reader of an SST this region just wrote and committed, from
   * its writer's index: the queries that follow a flush or compaction (the
   * newest data is the most asked for) would otherwise parse it first
   * (measured: ~5 ms per 2-hour window SST of 1,000 series).
   */
  private remember(file: string, index: WrittenIndex): void {
    const reader = SstReader.ofIndex(this.store, file, this.layout, this.regionId, index);
    void this.reads.indexes.get(this.cacheTag + file, () => Promise.resolve(reader), (r) => r.indexBytes);
  }

  /**
   * In the background, so the first queries after an open (a restart, a
   * promotion) do not pay for them: fetch the region's SSTs into the
   * object store's local cache, if it has one (ObjectStore.warm: several
   * at once, the ones cached already cost nothing), then load their
   * indexes into the engine's cache, newest first. A damaged SST is
   * reported by the query that reads it (a failed load is not cached).
   * `cacheWarmed` settles with what the store's warm did.
   */
  warmIndexes(): void {
    const started = Date.now();
    const files = this.manifest.ssts.map((s) => s.file);
    const store = this.store;
    this.cacheWarmed =
      store.warm === undefined || files.length === 0
        ? Promise.resolve(undefined)
        : store.warm(files).then(
            (outcome) => ({ ssts: files.length, ...outcome, ms: Date.now() - started }),
            (err: unknown) => ({ ssts: files.length, fetched: 0, skipped: 0, failed: files.length, ms: Date.now() - started, error: err instanceof Error ? err.message : String(err) }),
          );
    this.warmed = (async () => {
      await this.cacheWarmed;
      for (const s of [...this.manifest.ssts].reverse()) {
        if (this.closed) return;
        await this.reader(s).catch(() => undefined);
      }
    })();
  }

  /** The SST's verified index (cached). */
  private reader(s: SstRef): Promise<SstReader> {
    return this.reads.indexes.get(
      this.cacheTag + s.file,
      () => SstReader.open(this.store, s.file, this.layout, this.regionId, s),
      (r) => r.indexBytes,
    );
  }

  /** Drop an SST's index and chunks from the caches. */
  private forget(file: string): void {
    this.reads.indexes.evict(this.cacheTag + file);
    this.reads.chunks.evictPrefix(`${this.cacheTag}${file}#`);
  }

  /**
   * Fold into the aggregator, from their statistics, the row groups that
   * need no row read: every row matches the query, the group-by tags (and
   * the time bucket) are the same for all of them, no other source may hold
   * a version of any of their keys (no key range and time range both
   * overlap), and first/last only where each output group is one series
   * (else the tie rule between series at one time would need the rows).
   * Returns, per SST, the groups folded.
   */
  private summarise(
    aggregator: Aggregator,
    agg: AggregatePlan,
    plan: ScanPlan,
    readers: readonly SstReader[],
    refs: readonly SstRef[],
    memBlocks: readonly (Block | undefined)[],
  ): Set<number>[] {
    const { layout } = this;
    const folded = readers.map(() => new Set<number>());
    const oneSeries = layout.tagIdx.every((c) => agg.groupBy.includes(c));
    if (!oneSeries && agg.aggregates.some((a) => a.fn === 'first' || a.fn === 'last')) return folded;
    const keyPos = agg.groupBy.map((c) => layout.keyIdx.indexOf(c));
    const t = layout.keyIdx.length - 1;
    const extents = [...refs.map((s) => ({ minKey: s.minKey, maxKey: s.maxKey, minTime: s.minTime, maxTime: s.maxTime })), ...memBlocks.flatMap((b) => (b ? [extentOf(layout, b)] : []))];
    readers.forEach((reader, i) => {
      const [from, to] = this.groupSpan(reader, plan);
      for (let n = from; n < to; n++) {
        const g = reader.groups[n];
        if (plan.coverage(g.mins, g.maxs) !== 'all') continue;
        if (keyPos.some((k) => g.mins[k] !== g.maxs[k])) continue;
        const { interval } = agg;
        const bucket = interval === undefined ? undefined : Math.floor((g.mins[t] as number) / interval) * interval;
        if (interval !== undefined && Math.floor((g.maxs[t] as number) / interval) * interval !== bucket) continue;
        const overlapped = extents.some((x, e) => {
          if (e === i) return false;
          const keysOverlap = compareKeys(g.lastKey, x.minKey) >= 0 && compareKeys(x.maxKey, g.firstKey) >= 0;
          return keysOverlap && (g.maxs[t] as number) >= x.minTime && x.maxTime >= (g.mins[t] as number);
        });
        if (overlapped) continue;
        const key = keyPos.map((k) => g.mins[k]);
        if (bucket !== undefined) key.push(bucket);
        aggregator.addSummary(key, g.live, g.stats);
        folded[i].add(n);
      }
    });
    return folded;
  }

  /**
   * The row groups [from, to) of an SST whose key ranges can hold rows the
   * plan matches: groups are in key order, so two binary searches (the
   * first group not wholly before the plan's seek, the first one past its
   * end) rather than a look at each of thousands.
   */
  private groupSpan(reader: SstReader, plan: ScanPlan): [number, number] {
    const { layout } = this;
    const { groups } = reader;
    let lo = 0;
    let hi = groups.length;
    if (plan.seek !== undefined) {
      const seek = plan.seek;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (layout.compare(rowFromKey(layout, groups[mid].lastKey), seek) < 0) lo = mid + 1;
        else hi = mid;
      }
    }
    const from = lo;
    hi = groups.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (plan.pastEnd(rowFromKey(layout, groups[mid].firstKey))) hi = mid;
      else lo = mid + 1;
    }
    return [from, lo];
  }

  /**
   * The row groups of an SST that the plan can match (less those in
   * `skip`), in scan order, each read when the merge reaches it: through
   * the chunk cache unless `viaCache` is false.
   */
  private sstSource(
    reader: SstReader,
    plan: ScanPlan,
    columns: readonly number[],
    desc: boolean,
    { skip, viaCache = true }: { readonly skip?: ReadonlySet<number>; readonly viaCache?: boolean } = {},
  ): BlockSource {
    const { layout } = this;
    const picked: { g: number; whole: boolean }[] = [];
    const [from, to] = this.groupSpan(reader, plan);
    for (let g = from; g < to; g++) {
      const group = reader.groups[g];
      const coverage = plan.coverage(group.mins, group.maxs);
      if (coverage !== 'none' && !skip?.has(g)) picked.push({ g, whole: coverage === 'all' });
    }
    if (desc) picked.reverse();
    const names = [...columns.map((c) => layout.names[c]), DELETED_COLUMN];
    const seekKey = plan.seek === undefined ? undefined : layout.keyIdx.map((c) => (plan.seek as Value[])[c]);
    let next = 0;
    return {
      // The group's first (last) key, narrowed by the query's key bounds.
      peek: () => {
        const pick = picked[next];
        if (pick === undefined) return null;
        const group = reader.groups[pick.g];
        if (desc) {
          const capped = [...plan.upper, ...group.maxs.slice(plan.upper.length)];
          return compareKeys(capped, group.lastKey) < 0 ? capped : group.lastKey;
        }
        return seekKey !== undefined && compareKeys(seekKey, group.firstKey) > 0 ? seekKey : group.firstKey;
      },
      next: async (): Promise<Block | undefined> => {
        for (;;) {
          const pick = picked[next++];
          if (pick === undefined) return undefined;
          const decoded = viaCache ? await this.readChunks(reader, pick.g, names) : Object.fromEntries(await reader.readGroup(pick.g, names));
          const cols: (ArrayLike<Value> | undefined)[] = layout.names.map(() => undefined);
          for (const c of columns) cols[c] = decoded[layout.names[c]] as ArrayLike<Value>;
          const block = filterBlock(layout, plan, reader.groups[pick.g].rows, cols, decoded[DELETED_COLUMN], pick.whole, desc);
          if (block !== undefined) return block;
        }
      },
    };
  }

  /** Columns of a row group, from the chunk cache or decoded (only those missing). */
  private async readChunks(reader: SstReader, g: number, names: readonly string[]): Promise<Record<string, ArrayLike<unknown>>> {
    const { chunks } = this.reads;
    const prefix = `${this.cacheTag}${reader.file}#${g}#`;
    const missing = names.filter((n) => !chunks.has(prefix + n));
    const loading = missing.length > 0 ? reader.readGroup(g, missing) : undefined;
    const values = await Promise.all(
      names.map((n) =>
        chunks.get(
          prefix + n,
          async () => (await (loading as Promise<Map<string, ArrayLike<unknown>>>)).get(n) as ArrayLike<unknown>,
          (col) => 16 + 8 * col.length,
        ),
      ),
    );
    const out: Record<string, ArrayLike<unknown>> = {};
    names.forEach((n, i) => (out[n] = values[i]));
    return out;
  }

  /** Whether the SST's time and key ranges can hold rows the plan matches. */
  private mayMatch(s: SstRef, plan: ScanPlan): boolean {
    if (!plan.overlapsTime(s.minTime, s.maxTime)) return false;
    if (plan.seek !== undefined && this.layout.compare(rowFromKey(this.layout, s.maxKey), plan.seek) < 0) return false;
    return !plan.pastEnd(rowFromKey(this.layout, s.minKey));
  }

  private release(file: string): void {
    const n = (this.readers.get(file) as number) - 1;
    if (n > 0) {
      this.readers.set(file, n);
      return;
    }
    this.readers.delete(file);
    if (this.doomed.delete(file)) {
      this.forget(file);
      if (this.writer?.mayDelete() !== true) return;
      // A failure leaves an unlisted SST behind, which the next open removes.
      const deletion = this.store.delete(file).catch(() => undefined);
      this.deleting.add(deletion);
      void deletion.then(() => this.deleting.delete(deletion));
    }
  }
}


/** The key and time range of a block's rows. */
function extentOf(layout: TableLayout, block: Block): { minKey: Value[]; maxKey: Value[]; minTime: number; maxTime: number } {
  const keyAt = (i: number) => layout.keyIdx.map((c) => (block.columns[c] as ArrayLike<Value>)[i]);
  const a = keyAt(0);
  const b = keyAt(block.length - 1);
  const times = block.columns[layout.timeIdx] as ArrayLike<number>;
  let minTime = Infinity;
  let maxTime = -Infinity;
  for (let i = 0; i < block.length; i++) {
    if (times[i] < minTime) minTime = times[i];
    if (times[i] > maxTime) maxTime = times[i];
  }
  return compareKeys(a, b) <= 0 ? { minKey: a, maxKey: b, minTime, maxTime } : { minKey: b, maxKey: a, minTime, maxTime };
}

/** An SST as written: its manifest metadata and its index. */
interface WrittenSst {
  readonly meta: SstMeta;
  readonly index: WrittenIndex;
}

function refOf(file: string, seq: number, meta: SstMeta): SstRef {
  const { rows, bytes, minTime, maxTime, minKey, maxKey, indexCrc } = meta;
  return { file, seq, rows, bytes, minTime, maxTime, minKey, maxKey, indexCrc };
}

function liveRows(block: Block): number {
  let n = 0;
  for (let i = 0; i < block.length; i++) if (!block.deleted[i]) n++;
  return n;
}

/** Row i of a block as a row of the layout, its primary key columns set (what layout.compare reads). */
function keyRow(layout: TableLayout, block: Block, i: number): RowValues {
  const row: RowValues = new Array(layout.names.length).fill(null);
  for (const c of layout.keyIdx) row[c] = (block.columns[c] as ArrayLike<Value>)[i];
  return row;
}
