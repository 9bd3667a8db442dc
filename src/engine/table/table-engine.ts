import { RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { FlushResult, Region, RegionDescriptor, RegionEngine } from '../region-engine.js';
import type { Row, TableQuery } from '../schema.js';
import { decodeBody } from './codec.js';
import { layoutOf, rowFromKey, type RowValues, type TableLayout } from './keys.js';
import { readManifest, REGIONS_PREFIX, regionPrefix, sstKey, writeManifest, type Manifest, type SstRef } from './manifest.js';
import { Memtable, RowBatch } from './memtable.js';
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
  readonly memtableRows: number;
  readonly memtableBytes: number;
  /** Frozen memtables not yet written. */
  readonly frozenMemtables: number;
  readonly flushedEntryId: number;
  readonly appliedEntryId: number;
}

const SST_NAME_RE = /\/sst\/(\d+)\.sst$/;

/** Rows of the body being applied (apply is synchronous, so one batch serves every region). */
const decoded = new RowBatch();

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

  async openRegion(desc: RegionDescriptor, store: ObjectStore): Promise<TableRegion> {
    const { regionId } = desc;
    let manifest = await readManifest(store, regionId);
    if (manifest === undefined) {
      manifest = { version: 1, regionId, flushedEntryId: desc.createdAt, ssts: [], nextSeq: 1 };
      await writeManifest(store, manifest);
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
    await removeLeftovers(store, current);
    return new TableRegion(desc, store, current, this.cache, `${this.nextInstance++}:`, this.compactAt);
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
  readonly mem: Memtable;
  readonly coveredUpTo: number;
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
  private active: Memtable;
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

  constructor(desc: RegionDescriptor, store: ObjectStore, manifest: Manifest, cache: SstCache, cacheTag: string, compactAt: number) {
    this.regionId = desc.regionId;
    this.layout = layoutOf(desc.table);
    this.store = store;
    this.manifest = manifest;
    this.cache = cache;
    this.cacheTag = cacheTag;
    this.compactAt = compactAt;
    this.applied = manifest.flushedEntryId;
    this.active = new Memtable(this.layout);
  }

  flushedEntryId(): number {
    return this.manifest.flushedEntryId;
  }

  appliedEntryId(): number {
    return this.applied;
  }

  /** `decoded` is not used: the table engine's prepared mutations carry none. */
  apply(entryId: number, body: Uint8Array, _decoded?: unknown): void {
    this.assertOpen();
    if (entryId <= this.applied) return;
    let shape;
    try {
      shape = decodeBody(this.layout, body, decoded);
    } catch (err) {
      const message = `region ${this.regionId}: entry ${entryId}: ${(err as Error).message}`;
      throw new RepriseError('INVALID_ARGUMENT', message, { regionId: this.regionId, entryId }, { cause: err });
    }
    this.active.setRows(decoded, shape.rows, shape.op === 'delete');
    this.applied = entryId;
  }

  memtableBytes(): number {
    return this.frozen.reduce((n, f) => n + f.mem.bytes, this.active.bytes);
  }

  flush(coveredUpTo: number): Promise<FlushResult> {
    this.assertOpen();
    // Freeze now: what this call covers is exactly what has been applied so far.
    if (this.active.size > 0) {
      this.active.freeze();
      this.frozen.push({ mem: this.active, coveredUpTo });
      this.active = new Memtable(this.layout);
    }
    const last = this.frozen[this.frozen.length - 1];
    return this.serialised(async () => {
      let bytes = 0;
      let rows = 0;
      // Write the pending memtables in freeze order up to this call's own:
      // any a failed flush left behind first, each with its flushed entry id.
      while (last !== undefined && this.frozen.includes(last)) {
        const { mem, coveredUpTo: upTo } = this.frozen[0];
        const m = this.manifest;
        const key = sstKey(this.regionId, m.nextSeq);
        // Only non-empty memtables are frozen, so there is always an SST.
        const data = (await writeSst(this.store, key, this.layout, mem.scan())) as SstData;
        await this.commit({
          ...m,
          flushedEntryId: Math.max(m.flushedEntryId, upTo),
          ssts: [...m.ssts, refOf(key, m.nextSeq, data)],
          nextSeq: m.nextSeq + 1,
        });
        this.cache.set(this.cacheTag + key, data);
        this.frozen.shift();
        bytes += data.meta.bytes;
        rows += data.meta.rows;
      }
      // Every entry up to coveredUpTo is now in SSTs, even if this call had nothing to write.
      if (coveredUpTo > this.manifest.flushedEntryId) await this.commit({ ...this.manifest, flushedEntryId: coveredUpTo });
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
    this.assertOpen();
    const q = validateQuery(this.layout.schema, input);
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

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let a flush or compaction in progress finish; their callers see the outcome.
    await this.tail;
    await Promise.all(this.deleting);
    this.cache.evictPrefix(this.cacheTag);
  }

  stats(): TableRegionStats {
    const { ssts } = this.manifest;
    return {
      ssts: ssts.length,
      sstRows: ssts.reduce((n, s) => n + s.rows, 0),
      sstBytes: ssts.reduce((n, s) => n + s.bytes, 0),
      memtableRows: this.frozen.reduce((n, f) => n + f.mem.size, this.active.size),
      memtableBytes: this.memtableBytes(),
      frozenMemtables: this.frozen.length,
      flushedEntryId: this.manifest.flushedEntryId,
      appliedEntryId: this.applied,
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new RepriseError('CLOSED', `region ${this.regionId} is closed`, { regionId: this.regionId });
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
