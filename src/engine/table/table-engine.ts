import { RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { FlushResult, Region, RegionDescriptor, RegionEngine } from '../region-engine.js';
import type { Row, TableQuery } from '../schema.js';
import { layoutOf, rowFromKey, type RowValues, type TableLayout } from './keys.js';
import { readManifest, REGIONS_PREFIX, regionPrefix, sstKey, writeManifest, type Manifest, type SstRef } from './manifest.js';
import { QueuedMemtable, UnindexableEntry } from './queued-memtable.js';
import { mergeNewestFirst, planScan, type Entry, type ScanPlan } from './scan.js';
import { readSst, scanSst, sstEntries, writeSst, type SstData } from './sst.js';
import { SstCache } from './sst-cache.js';
import { validateQuery } from './validate.js';

export interface TableEngineOptions {
  /** Compact a region once it has this many SSTs (>= 2). Default 8. */
  readonly compactAt?: number;
  /** Bound on the decoded-SST cache shared by the engine's regions, in encoded bytes. Default 64 MiB. */
  readonly cacheBytes?: number;
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

const SST_NAME_RE = /\/sst\/(\d+)\.sst$/;

/**
 * Indexing queued bodies in the background starts once no region of the
 * engine has had an apply for IDLE_MS (longer than a replay waits for its
 * next batch of records, so a replay is not slowed by it; busy writers keep
 * it waiting too), and goes on in slices of INDEX_SLICE_MS, one per turn of
 * the event loop, for as long as no apply comes in. Flushes and close index
 * in such slices too (short, so that writes waiting on the WAL get their
 * turn in between); a query indexes what is left in one go.
 */
const IDLE_MS = 50;
const INDEX_SLICE_MS = 1;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Indexes the queues of an engine's regions while the engine is idle: one
 * slice per turn of the event loop for all regions together (round-robin),
 * so that background work never holds the event loop for more than a slice,
 * however many regions have queues. Indexing a region's queue from its head
 * is all it does, so it never changes the order in which entries take effect.
 */
class IdleIndexer {
  /** Regions with bodies queued since they were last indexed, in turn order. */
  private readonly regions = new Set<TableRegion>();
  private applies = 0;
  private appliesSeen = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;

  /** A region queued a body. */
  applied(region: TableRegion): void {
    this.applies++;
    if (!region.awaitingIndexer) {
      region.awaitingIndexer = true;
      this.regions.add(region);
    }
    if (this.timer === undefined && this.immediate === undefined) this.watch();
  }

  /** A region that closed or failed: nothing more to do for it. */
  forget(region: TableRegion): void {
    region.awaitingIndexer = false;
    this.regions.delete(region);
  }

  private watch(): void {
    this.appliesSeen = this.applies;
    this.timer = setTimeout(this.tick, IDLE_MS);
    this.timer.unref();
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    if (this.regions.size === 0) return;
    // Applies came in since the last look: not idle, look again later.
    if (this.applies !== this.appliesSeen) return this.watch();
    const deadline = performance.now() + INDEX_SLICE_MS;
    for (const region of this.regions) {
      this.regions.delete(region);
      if (!region.indexWhileIdle(deadline)) {
        // More to do: its turn comes again after the others'.
        this.regions.add(region);
        break;
      }
      region.awaitingIndexer = false;
      if (performance.now() >= deadline) break;
    }
    if (this.regions.size > 0) {
      this.immediate = setImmediate(this.tick);
      this.immediate.unref();
    }
  };
}

/**
 * The table engine: each region is a memtable in front of SSTs in the
 * object store, described by its manifest (see ./manifest.ts).
 */
export class TableEngine implements RegionEngine {
  readonly name = 'table';
  private readonly compactAt: number;
  private readonly cache: SstCache;
  /** Distinguishes region instances in the shared cache (a region may be destroyed and recreated). */
  private nextInstance = 0;
  private readonly indexer = new IdleIndexer();

  constructor(options: TableEngineOptions = {}) {
    const compactAt = options.compactAt ?? 8;
    if (!Number.isSafeInteger(compactAt) || compactAt < 2) {
      throw new RepriseError('INVALID_ARGUMENT', `table engine: compactAt must be an integer >= 2, got ${compactAt}`);
    }
    const cacheBytes = options.cacheBytes ?? 64 * 1024 * 1024;
    if (!(cacheBytes >= 0)) throw new RepriseError('INVALID_ARGUMENT', `table engine: cacheBytes must be >= 0, got ${cacheBytes}`);
    this.compactAt = compactAt;
    this.cache = new SstCache(cacheBytes);
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
    return new TableRegion(desc, store, current, this.cache, `${this.nextInstance++}:`, this.compactAt, this.indexer);
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

/**
 * Delete SSTs the manifest no longer lists but whose seq it has passed: the
 * inputs of a compaction whose deletion a crash interrupted. An unlisted SST
 * at or above nextSeq may be a flush in progress elsewhere; it is left alone
 * (a later flush of this lineage overwrites it).
 */
async function removeLeftovers(store: ObjectStore, manifest: Manifest): Promise<void> {
  const listed = new Set(manifest.ssts.map((s) => s.file));
  const keys = await store.list(`${regionPrefix(manifest.regionId)}sst/`);
  const leftovers = keys.filter((key) => {
    const m = SST_NAME_RE.exec(key);
    return m !== null && Number(m[1]) < manifest.nextSeq && !listed.has(key);
  });
  await Promise.all(leftovers.map((key) => store.delete(key)));
}

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
  private readonly cache: SstCache;
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
  /** Whether the engine's IdleIndexer holds this region (its flag, kept here to save a lookup per apply). */
  awaitingIndexer = false;

  constructor(
    desc: RegionDescriptor,
    store: ObjectStore,
    manifest: Manifest,
    cache: SstCache,
    cacheTag: string,
    compactAt: number,
    indexer: IdleIndexer,
  ) {
    this.regionId = desc.regionId;
    this.layout = layoutOf(desc.table);
    this.store = store;
    this.manifest = manifest;
    this.cache = cache;
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
   * Queue the body (see QueuedMemtable): nothing is decoded here. `decoded`
   * is not used: the table engine's prepared mutations carry none.
   */
  apply(entryId: number, body: Uint8Array, _decoded?: unknown): void {
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
        const key = sstKey(this.regionId, m.nextSeq);
        // Undefined when the queue held no rows (empty bodies): no SST then.
        const data = await writeSst(this.store, key, this.layout, mem.scan());
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
          this.cache.set(this.cacheTag + key, data);
          bytes += data.meta.bytes;
          rows += data.meta.rows;
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

  compact(): Promise<void> {
    this.assertOpen();
    return this.serialised(async () => {
      const inputs = this.manifest.ssts;
      if (inputs.length < this.compactAt) return;
      const datas = await Promise.all(inputs.map((s) => this.load(s)));
      const merged = mergeNewestFirst(datas.reverse().map(sstEntries), this.layout.compare);
      const m = this.manifest;
      const key = sstKey(this.regionId, m.nextSeq);
      // Every SST takes part, so no older version is left for a tombstone to hide.
      const data = await writeSst(this.store, key, this.layout, live(merged));
      await this.commit({ ...m, ssts: data ? [refOf(key, m.nextSeq, data)] : [], nextSeq: m.nextSeq + 1 });
      if (data) this.cache.set(this.cacheTag + key, data);
      const deletions: Promise<void>[] = [];
      for (const s of inputs) {
        this.cache.evict(this.cacheTag + s.file);
        if (this.readers.has(s.file)) this.doomed.add(s.file);
        else deletions.push(this.store.delete(s.file));
      }
      await Promise.all(deletions);
    });
  }

  async query(input: TableQuery): Promise<Row[]> {
    this.assertUsable();
    const q = validateQuery(this.layout.schema, input);
    // Everything applied so far is indexed before it is read.
    this.indexAll();
    const plan = planScan(this.layout, q);
    if (plan.empty) return [];
    // Snapshot the sources synchronously, newest first. A flush finishing
    // while we load SSTs is harmless: we still hold the memtable it wrote.
    const memtables = [this.active, ...this.frozen.map((f) => f.mem).reverse()].filter((mem) => mem.size > 0);
    const ssts = this.manifest.ssts.filter((s) => this.mayMatch(s, plan)).reverse();
    for (const s of ssts) this.readers.set(s.file, (this.readers.get(s.file) ?? 0) + 1);
    try {
      const datas = await Promise.all(ssts.map((s) => this.load(s)));
      const sources = [...memtables.map((mem) => mem.scan(plan)), ...datas.map((d) => scanSst(d, this.layout, plan))];
      const merged = sources.length === 1 ? sources[0] : mergeNewestFirst(sources, this.layout.compare);
      const project = projection(this.layout, q.columns);
      const limit = q.limit ?? Infinity;
      const out: Row[] = [];
      if (limit > 0) {
        for (const entry of live(merged)) {
          out.push(project(entry[0]));
          if (out.length >= limit) break;
        }
      }
      return out;
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
    this.cache.evictPrefix(this.cacheTag);
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
    const m = { ...next, version: this.manifest.version + 1 };
    await writeManifest(this.store, m);
    this.manifest = m;
  }

  private load(s: SstRef): Promise<SstData> {
    return this.cache.get(this.cacheTag + s.file, s.bytes, () => readSst(this.store, s.file, this.layout, this.regionId));
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
      this.cache.evict(this.cacheTag + file);
      // A failure leaves an unlisted SST behind, which the next open removes.
      const deletion = this.store.delete(file).catch(() => undefined);
      this.deleting.add(deletion);
      void deletion.then(() => this.deleting.delete(deletion));
    }
  }
}

function refOf(file: string, seq: number, data: SstData): SstRef {
  const { rows, bytes, minTime, maxTime, minKey, maxKey } = data.meta;
  return { file, seq, rows, bytes, minTime, maxTime, minKey, maxKey };
}

/** The entries that are not tombstones. */
function* live(entries: Iterable<Entry>): Generator<Entry> {
  for (const entry of entries) if (!entry[1]) yield entry;
}

/** RowValues -> Row object with the requested columns (all by default), in the requested order. */
function projection(layout: TableLayout, columns: readonly string[] | undefined): (row: RowValues) => Row {
  const names = columns ?? layout.names;
  const idx = names.map((n) => layout.index.get(n) as number);
  return (row) => {
    const out: Row = {};
    for (let k = 0; k < names.length; k++) out[names[k]] = row[idx[k]];
    return out;
  };
}
