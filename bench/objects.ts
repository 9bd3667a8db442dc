import { join } from 'node:path';
import { DEFAULT_OBJECT_CACHE_BYTES } from '../src/api/storage.js';
import { CachedObjectStore } from '../src/engine/cached-object-store.js';
import { FsObjectStore } from '../src/engine/fs-object-store.js';
import type { ObjectStore } from '../src/engine/object-store.js';
import type { Region, RegionWriter } from '../src/engine/region-engine.js';
import { S3ObjectStore } from '../src/engine/s3-object-store.js';
import type { TableSchema } from '../src/engine/schema.js';
import { isSstKey } from '../src/engine/table/manifest.js';
import { TableEngine, type TableRegion } from '../src/engine/table/table-engine.js';
import { startS3Server, type TestS3Server } from '../test/harness/s3-server.js';
import { metricsRows, metricsSchema, putBody, regionPrefix, removeDir, settle, tempDir } from './lib/fixtures.js';
import { metric } from './lib/metric.js';
import { formatValue, type Metric } from './lib/report.js';
import { median } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * The object store under the table engine (issue 17): the same work on a
 * local directory (FsObjectStore, fsynced, as `storage.type = 'local'`)
 * and on an S3-protocol server (s3rver in a child process, on loopback),
 * with the CachedObjectStore in front as openObjectStore builds it
 * (SSTs only, 1 GiB budget) and, where it tells something, without a cache
 * (`cacheBytes = 0`: every SST read is a ranged GET).
 *
 * Measured on TableEngine regions opened directly (as the engine is
 * handed them by the runtime), so the numbers are the store's and the
 * engine's, without the WAL or actors around them:
 *
 *  - flush: `--objects-rows` rows (4 regions, 1,000-row entries) applied
 *    and indexed (a query, as the idle indexer would have done), then every
 *    region's flush at once (as a shard flushes): the SST encode, its put,
 *    and the manifest's. A fresh root per run.
 *  - promotion: a region of `--objects-scan-rows` rows in 4 SSTs, opened as
 *    the leader at a new, higher epoch (it writes its own manifest version)
 *    over a cold cache (a new, empty cache directory), as a new region
 *    instance of the suite's one read engine (see engine()), then one
 *    first query: one series
 *    (the whole time range) or a full scan, each on its own open. Also with
 *    the cache filled by CachedObjectStore.warm() before the open (what
 *    warm-on-promotion does), its time reported beside.
 *  - scan throughput: rows/s and MB/s (SST bytes) of a full scan. Cold: the
 *    promotion's first full scan (index and, with a cache, the whole SSTs
 *    fetched during it). Warm: a new region instance (no decoded chunk of
 *    it cached), its indexes loaded (`warmed`), the store warm: the
 *    cache holding the SSTs, or without a cache the connection open; the
 *    local directory is in the page cache in both (not dropped on a shared
 *    machine).
 *
 * One S3 client serves every run (a live process keeps its own); each run
 * gets a new cache directory. Variants are measured in rotating order.
 * s3rver is a local fake: its latency is loopback HTTP and its own disk
 * writes, not S3's (tens of ms per request, per-request cost, bandwidth).
 */

type Variant = 'local' | 's3_cache' | 's3_nocache';
const LABEL: Record<Variant, string> = { local: 'local dir', s3_cache: 's3 + cache', s3_nocache: 's3, no cache' };
const FLUSH_REGIONS = 4;
const ROWS_PER_ENTRY = 1000;
const SCAN_SSTS = 4;
const SCAN_REGION = 1;

interface Stores {
  readonly server: TestS3Server;
  readonly remote: S3ObjectStore;
  readonly base: string;
}

/** A store of `variant` over `root` (a directory under base, or an S3 key prefix); a cache starts empty. */
async function openVariant(stores: Stores, variant: Variant, root: string): Promise<{ store: Metered; cache?: CachedObjectStore; dispose(): Promise<void> }> {
  if (variant === 'local') return { store: new Metered(new FsObjectStore(join(stores.base, root))), dispose: async () => undefined };
  const remote = rooted(stores.remote, root);
  if (variant === 's3_nocache') return { store: new Metered(remote), dispose: async () => undefined };
  const dir = await tempDir('objects-cache');
  const cache = await CachedObjectStore.open(remote, { dir, maxBytes: DEFAULT_OBJECT_CACHE_BYTES, cacheable: isSstKey });
  return { store: new Metered(cache), cache, dispose: () => removeDir(dir) };
}

/** The shared S3 client's store seen under a key prefix (S3ObjectStore's own root, without a second client). */
function rooted(store: ObjectStore, root: string): ObjectStore {
  const k = (key: string) => `${root}/${key}`;
  return {
    put: (key, data) => store.put(k(key), data),
    get: (key) => store.get(k(key)),
    getRange: (key, start, end) => store.getRange(k(key), start, end),
    size: (key) => store.size(k(key)),
    exists: (key) => store.exists(k(key)),
    delete: (key) => store.delete(k(key)),
    list: async (prefix) => (await store.list(k(prefix))).map((key) => key.slice(root.length + 1)),
    deletePrefix: (prefix) => store.deletePrefix(k(prefix)),
  };
}

/**
 * Counts what the engine asks of its store: requests, bytes, and the wall
 * time during which at least one read (write) was in flight (the union of
 * their intervals, so concurrent requests of 4 regions count once).
 */
class Metered implements ObjectStore {
  reads = 0;
  writes = 0;
  readBytes = 0;
  writtenBytes = 0;
  private readonly busy = { read: { inFlight: 0, since: 0, ms: 0 }, write: { inFlight: 0, since: 0, ms: 0 } };
  constructor(private readonly inner: ObjectStore) {}
  busyMs(kind: 'read' | 'write'): number {
    const b = this.busy[kind];
    return b.ms + (b.inFlight > 0 ? performance.now() - b.since : 0);
  }
  private async timed<T>(kind: 'read' | 'write', work: () => Promise<T>): Promise<T> {
    const b = this.busy[kind];
    if (b.inFlight++ === 0) b.since = performance.now();
    try {
      return await work();
    } finally {
      if (--b.inFlight === 0) b.ms += performance.now() - b.since;
    }
  }
  put(key: string, data: Uint8Array): Promise<void> {
    this.writes++;
    this.writtenBytes += data.byteLength;
    return this.timed('write', () => this.inner.put(key, data));
  }
  async get(key: string): Promise<Uint8Array> {
    this.reads++;
    const bytes = await this.timed('read', () => this.inner.get(key));
    this.readBytes += bytes.byteLength;
    return bytes;
  }
  async getRange(key: string, start: number, end: number): Promise<Uint8Array> {
    this.reads++;
    const bytes = await this.timed('read', () => this.inner.getRange(key, start, end));
    this.readBytes += bytes.byteLength;
    return bytes;
  }
  size(key: string): Promise<number> {
    this.reads++;
    return this.timed('read', () => this.inner.size(key));
  }
  exists(key: string): Promise<boolean> {
    this.reads++;
    return this.timed('read', () => this.inner.exists(key));
  }
  list(prefix: string): Promise<string[]> {
    this.reads++;
    return this.timed('read', () => this.inner.list(prefix));
  }
  delete(key: string): Promise<void> {
    this.writes++;
    return this.timed('write', () => this.inner.delete(key));
  }
  deletePrefix(prefix: string): Promise<void> {
    this.writes++;
    return this.timed('write', () => this.inner.deletePrefix(prefix));
  }
  snapshot() {
    return { reads: this.reads, writes: this.writes, readBytes: this.readBytes, writtenBytes: this.writtenBytes, readMs: this.busyMs('read'), writeMs: this.busyMs('write') };
  }
}

type StoreUse = ReturnType<Metered['snapshot']>;
function usedSince(m: Metered, before: StoreUse): StoreUse {
  const now = m.snapshot();
  return {
    reads: now.reads - before.reads,
    writes: now.writes - before.writes,
    readBytes: now.readBytes - before.readBytes,
    writtenBytes: now.writtenBytes - before.writtenBytes,
    readMs: now.readMs - before.readMs,
    writeMs: now.writeMs - before.writeMs,
  };
}

/**
 * One engine for the reads, as a process has one: each open region is a
 * new instance whose cache keys no earlier one's match, so its caches
 * start cold all the same.
 */
let readEngine: TableEngine | undefined;
const engine = (): TableEngine => (readEngine ??= new TableEngine());

let epochs = 1;
const writer = (): RegionWriter => ({ epoch: epochs++, mayDelete: () => true });

function desc(schema: TableSchema, regionId: number, partition: number) {
  return { regionId, table: schema, partition, createdAt: 0 };
}

/** The entries of a data set: per region, 1,000-row bodies encoded by the runtime's codec. */
function bodies(schema: TableSchema, regions: number, rows: number): Uint8Array[][] {
  const perRegion = Math.ceil(rows / regions / ROWS_PER_ENTRY);
  return Array.from({ length: regions }, (_, r) => Array.from({ length: perRegion }, (_, seq) => putBody(schema, metricsRows(regions === 1 ? 0 : r, 0, seq, ROWS_PER_ENTRY))));
}

interface FlushSample {
  readonly ms: number;
  readonly bytes: number;
  readonly rows: number;
  readonly store: StoreUse;
}

async function flushOnce(stores: Stores, variant: Variant, schema: TableSchema, entries: Uint8Array[][], run: number): Promise<FlushSample> {
  const { store, dispose } = await openVariant(stores, variant, `flush-${variant}-${run}`);
  const engine = new TableEngine();
  const regions: Region[] = [];
  try {
    for (let r = 0; r < FLUSH_REGIONS; r++) regions.push(await engine.openRegion(desc(schema, r + 1, r), store, { writer: writer() }));
    let id = 0;
    regions.forEach((region, r) => {
      for (const body of entries[r]!) region.apply(++id, body);
    });
    // Index the queues now: the flush is then the SST write and the manifest, the part that differs by store.
    await Promise.all(regions.map((region) => region.query({ limit: 1 })));
    await settle();
    const before = store.snapshot();
    const t0 = performance.now();
    const results = await Promise.all(regions.map((region) => region.flush(id)));
    const ms = performance.now() - t0;
    return { ms, bytes: results.reduce((n, x) => n + x.bytes, 0), rows: results.reduce((n, x) => n + x.rows, 0), store: usedSince(store, before) };
  } finally {
    await Promise.all(regions.map((region) => region.close()));
    await dispose();
  }
}

/** The scan region, written once to the local directory in SCAN_SSTS flushes, then copied object by object to the bucket. */
async function buildScanRegion(stores: Stores, schema: TableSchema, rows: number, ctx: SuiteContext): Promise<{ rows: number; sstBytes: number; ssts: string[] }> {
  const entries = bodies(schema, 1, rows)[0]!;
  const local = new FsObjectStore(join(stores.base, 'scan'));
  const region = await new TableEngine().openRegion(desc(schema, SCAN_REGION, 0), local, { writer: writer() });
  let id = 0;
  let sstBytes = 0;
  let written = 0;
  const per = Math.ceil(entries.length / SCAN_SSTS);
  for (let s = 0; s < SCAN_SSTS; s++) {
    for (const body of entries.slice(s * per, (s + 1) * per)) region.apply(++id, body);
    const result = await region.flush(id);
    sstBytes += result.bytes;
    written += result.rows;
  }
  await region.close();
  const keys = await local.list('');
  const remote = rooted(stores.remote, 'scan');
  for (const key of keys) await remote.put(key, await local.get(key));
  const ssts = keys.filter(isSstKey);
  ctx.log(`  scan region: ${written.toLocaleString('en-US')} rows in ${ssts.length} SSTs, ${(sstBytes / 2 ** 20).toFixed(1)} MB, copied to the bucket`);
  return { rows: written, sstBytes, ssts };
}

const rowCount = (result: Awaited<ReturnType<Region['query']>>): number => (result.kind === 'rows' ? (result.rows.data[0]?.length ?? 0) : 0);

interface PromotionSample {
  readonly openMs: number;
  readonly queryMs: number;
  readonly rows: number;
  /** What the open and the query asked of the store. */
  readonly openStore: StoreUse;
  readonly queryStore: StoreUse;
  /** CachedObjectStore.warm before the open, when asked for. */
  readonly warmMs?: number;
}

type Shape = 'series' | 'scan';
const SERIES_QUERY = { where: { host: `${regionPrefix(0)}_w0_0`, idc: 'idc_a' } };

/** A new leader at a higher epoch on a cold store (a fresh cache), optionally warmed first; then one first query. */
async function promoteOnce(stores: Stores, variant: Variant, schema: TableSchema, shape: Shape, ssts: readonly string[], warm: boolean): Promise<PromotionSample> {
  const { store, cache, dispose } = await openVariant(stores, variant, 'scan');
  let region: TableRegion | undefined;
  try {
    await settle();
    let warmMs: number | undefined;
    if (warm) {
      if (cache === undefined || typeof cache.warm !== 'function') throw new Error('objects bench: warm() needs the cache');
      const w0 = performance.now();
      const warmed = await cache.warm(ssts);
      warmMs = performance.now() - w0;
      if (warmed.failed > 0) throw new Error(`objects bench: warm() failed for ${warmed.failed} SSTs`);
    }
    const s0 = store.snapshot();
    const t0 = performance.now();
    region = await engine().openRegion(desc(schema, SCAN_REGION, 0), store, { writer: writer() });
    const t1 = performance.now();
    const openStore = usedSince(store, s0);
    const s1 = store.snapshot();
    const result = await region.query(shape === 'series' ? SERIES_QUERY : {});
    const t2 = performance.now();
    // Includes the region's background warmIndexes, which runs beside the query (and which the query shares).
    const queryStore = usedSince(store, s1);
    return { openMs: t1 - t0, queryMs: t2 - t1, rows: rowCount(result), openStore, queryStore, ...(warmMs !== undefined ? { warmMs } : {}) };
  } finally {
    if (region) {
      await region.warmed;
      await region.close();
    }
    await dispose();
  }
}

/** A full scan with the store warm and the region's indexes loaded, on a fresh engine (no decoded chunk cached). */
async function warmScanOnce(store: Metered, schema: TableSchema): Promise<{ ms: number; rows: number; store: StoreUse }> {
  const region = await engine().openRegion(desc(schema, SCAN_REGION, 0), store, { writer: writer() });
  try {
    await region.warmed;
    await settle();
    const before = store.snapshot();
    const t0 = performance.now();
    const result = await region.query({});
    return { ms: performance.now() - t0, rows: rowCount(result), store: usedSince(store, before) };
  } finally {
    await region.close();
  }
}

/** Variants in a rotating order, so none is always first after the previous one's garbage. */
function rotate<T>(xs: readonly T[], run: number): T[] {
  const k = run % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

async function run(ctx: SuiteContext): Promise<SuiteResult> {
  const { options } = ctx;
  const runs = Math.max(options.runs, 3);
  const flushRows = options.objectsRows;
  const scanRows = options.objectsScanRows;
  const base = await tempDir('objects');
  const server = await startS3Server({ bucket: 'reprise-bench' });
  const remote = new S3ObjectStore(server.storeOptions());
  const stores: Stores = { server, remote, base };
  ctx.log(`objects: s3rver at ${server.endpoint}; ${runs} runs; flush ${flushRows.toLocaleString('en-US')} rows over ${FLUSH_REGIONS} regions; scan region ${scanRows.toLocaleString('en-US')} rows`);
  const metrics: Metric[] = [];
  const details: Record<string, unknown> = { runs, flushRows, scanRows, endpoint: server.endpoint };
  try {
    const variants: Variant[] = ['local', 's3_cache', 's3_nocache'];

    // ---- flush ----
    const schema = metricsSchema(FLUSH_REGIONS, 'objects_flush');
    const entries = bodies(schema, FLUSH_REGIONS, flushRows);
    // One throwaway flush: the encoder and the S3 client compiled and connected before the clock runs.
    await flushOnce(stores, 's3_cache', schema, bodies(schema, FLUSH_REGIONS, 20_000), -1);
    const flush: Record<Variant, FlushSample[]> = { local: [], s3_cache: [], s3_nocache: [] };
    for (let r = 0; r < runs; r++) {
      for (const v of rotate(variants, r)) {
        const sample = await flushOnce(stores, v, schema, entries, r);
        flush[v].push(sample);
        ctx.log(`  flush ${LABEL[v]}: ${sample.ms.toFixed(0)} ms (${(sample.bytes / 2 ** 20).toFixed(1)} MB, ${sample.rows} rows)`);
      }
    }
    const flushMs = (v: Variant) => flush[v].map((s) => s.ms);
    for (const v of variants) {
      const mb = median(flush[v].map((s) => s.bytes)) / 2 ** 20;
      const rows = flush[v][0]!.rows;
      metrics.push(
        metric({
          id: `objects.flush.${v}.ms`,
          suite: 'objects',
          name: `flush ${(rows / 1000).toFixed(0)}k rows, ${FLUSH_REGIONS} regions: ${LABEL[v]}`,
          unit: 'ms',
          samples: flushMs(v),
          ...(v === 'local' ? {} : { versus: { of: 'local', samples: flushMs('local') } }),
          note: `${mb.toFixed(1)} MB of SST; writes in flight ${formatValue(median(flush[v].map((s) => s.store.writeMs)), 'ms')} ms (${median(flush[v].map((s) => s.store.writes))} requests)`,
        }),
      );
    }
    details.flush = flush;

    // ---- promotion and first queries ----
    const scanSchema = metricsSchema(1, 'objects_scan');
    const scan = await buildScanRegion(stores, scanSchema, scanRows, ctx);
    details.scanRegion = scan;
    const promoVariants: { key: string; variant: Variant; warm: boolean; label: string }[] = [
      { key: 'local', variant: 'local', warm: false, label: LABEL.local },
      { key: 's3_cache', variant: 's3_cache', warm: false, label: `${LABEL.s3_cache}, cold` },
      { key: 's3_cache_warmed', variant: 's3_cache', warm: true, label: `${LABEL.s3_cache}, warm() first` },
      { key: 's3_nocache', variant: 's3_nocache', warm: false, label: LABEL.s3_nocache },
    ];
    // Throwaway: the read path compiled before the clock runs.
    await promoteOnce(stores, 'local', scanSchema, 'scan', scan.ssts, false);
    const promo: Record<string, Record<Shape, PromotionSample[]>> = {};
    for (const p of promoVariants) promo[p.key] = { series: [], scan: [] };
    for (let r = 0; r < runs; r++) {
      for (const shape of ['series', 'scan'] as const) {
        for (const p of rotate(promoVariants, r)) {
          const sample = await promoteOnce(stores, p.variant, scanSchema, shape, scan.ssts, p.warm);
          if (sample.rows === 0 || (shape === 'scan' && sample.rows !== scan.rows)) throw new Error(`objects bench: ${shape} query on ${p.key} found ${sample.rows} rows`);
          promo[p.key]![shape].push(sample);
          ctx.log(`  promote ${p.label}, ${shape}: open ${sample.openMs.toFixed(1)} ms, first query ${sample.queryMs.toFixed(1)} ms (${sample.rows} rows)${sample.warmMs !== undefined ? `, warm() ${sample.warmMs.toFixed(0)} ms before` : ''}`);
        }
      }
    }
    const q = (key: string, shape: Shape) => promo[key]![shape].map((s) => s.queryMs);
    const openAndQuery = (key: string, shape: Shape) => promo[key]![shape].map((s) => s.openMs + s.queryMs);
    for (const shape of ['series', 'scan'] as const) {
      for (const p of promoVariants) {
        const samples = promo[p.key]![shape];
        const warmMs = samples.some((s) => s.warmMs !== undefined) ? median(samples.map((s) => s.warmMs ?? 0)) : undefined;
        metrics.push(
          metric({
            id: `objects.promote.${p.key}.${shape}.first_query_ms`,
            suite: 'objects',
            name: `first query after promotion, ${shape === 'series' ? 'one series' : 'full scan'}: ${p.label}`,
            unit: 'ms',
            samples: q(p.key, shape),
            ...(p.key === 'local' ? {} : { versus: { of: 'local', samples: q('local', shape) } }),
            note:
              `reads in flight ${formatValue(median(samples.map((s) => s.queryStore.readMs)), 'ms')} ms (${median(samples.map((s) => s.queryStore.reads))} requests); ` +
              `open ${formatValue(median(samples.map((s) => s.openMs)), 'ms')} ms before it (${median(samples.map((s) => s.openStore.reads + s.openStore.writes))} requests)` +
              (warmMs !== undefined ? `; warm() ${formatValue(warmMs, 'ms')} ms before the open` : ''),
          }),
        );
      }
    }
    details.promotion = promo;

    // ---- scan throughput ----
    const mb = scan.sstBytes / 2 ** 20;
    const rate = (ms: readonly number[], per: 'rows' | 'MB') => ms.map((t) => (per === 'rows' ? scan.rows : mb) / (t / 1000));
    const coldMs: Record<string, number[]> = { local: q('local', 'scan'), s3_cache: q('s3_cache', 'scan'), s3_nocache: q('s3_nocache', 'scan') };
    // Warm: the stores stay open across runs; the cache is filled by the first scan.
    const warmStores = new Map<Variant, Awaited<ReturnType<typeof openVariant>>>();
    const warmMs: Record<Variant, number[]> = { local: [], s3_cache: [], s3_nocache: [] };
    const warmUse: Record<Variant, StoreUse[]> = { local: [], s3_cache: [], s3_nocache: [] };
    try {
      for (const v of variants) {
        const opened = await openVariant(stores, v, 'scan');
        warmStores.set(v, opened);
        await warmScanOnce(opened.store, scanSchema);
      }
      for (let r = 0; r < runs; r++) {
        for (const v of rotate(variants, r)) {
          const sample = await warmScanOnce(warmStores.get(v)!.store, scanSchema);
          if (sample.rows !== scan.rows) throw new Error(`objects bench: warm scan on ${v} found ${sample.rows} rows`);
          warmMs[v].push(sample.ms);
          warmUse[v].push(sample.store);
          ctx.log(`  warm scan ${LABEL[v]}: ${sample.ms.toFixed(0)} ms`);
        }
      }
    } finally {
      for (const opened of warmStores.values()) await opened.dispose();
    }
    const coldUse: Record<Variant, StoreUse[]> = { local: [], s3_cache: [], s3_nocache: [] };
    for (const v of variants) coldUse[v] = promo[v]!.scan.map((s) => s.queryStore);
    for (const [temp, times, use] of [
      ['cold', coldMs, coldUse],
      ['warm', warmMs, warmUse],
    ] as const) {
      for (const v of variants) {
        const ms = (times as Record<string, number[]>)[v]!;
        const ref = (times as Record<string, number[]>).local!;
        metrics.push(
          metric({
            id: `objects.scan.${temp}.${v}.rows_per_s`,
            suite: 'objects',
            name: `full scan ${(scan.rows / 1000).toFixed(0)}k rows, ${temp}: ${LABEL[v]}`,
            unit: 'rows/s',
            samples: rate(ms, 'rows'),
            ...(v === 'local' ? {} : { versus: { of: 'local', samples: rate(ref, 'rows') } }),
            note:
              `${formatValue(median(rate(ms, 'MB')), 'MB/s')} MB/s of SST, ${formatValue(median(ms), 'ms')} ms; ` +
              `reads in flight ${formatValue(median(use[v].map((u) => u.readMs)), 'ms')} ms (${median(use[v].map((u) => u.reads))} requests, ${(median(use[v].map((u) => u.readBytes)) / 2 ** 20).toFixed(1)} MB read by the engine)`,
          }),
        );
      }
    }
    details.scan = { coldMs, warmMs, warmStore: warmUse, sstBytes: scan.sstBytes, rows: scan.rows };

    const side = sideBySide(
      variants,
      flushMs,
      (v, shape) => q(v, shape),
      (v) => openAndQuery(v, 'series'),
      (v) => rate((coldMs as Record<string, number[]>)[v]!, 'MB'),
      (v) => rate(warmMs[v], 'MB'),
      median(q('s3_cache_warmed', 'series')),
      median(promo.s3_cache_warmed!.series.map((s) => s.warmMs ?? 0)),
    );
    return { metrics, details, tables: [side] };
  } finally {
    remote.close();
    await server.stop();
    await removeDir(base);
  }
}

/** The three stores side by side: medians, ms or MB/s. */
function sideBySide(
  variants: readonly Variant[],
  flushMs: (v: Variant) => number[],
  firstMs: (v: Variant, shape: Shape) => number[],
  openPlusSeries: (v: Variant) => number[],
  coldMBs: (v: Variant) => number[],
  warmMBs: (v: Variant) => number[],
  warmedSeriesMs: number,
  warmCallMs: number,
): string {
  const rows: [string, string, (v: Variant) => string][] = [
    ['flush', 'ms', (v) => formatValue(median(flushMs(v)), 'ms')],
    ['open as new leader + first one-series query', 'ms', (v) => formatValue(median(openPlusSeries(v)), 'ms')],
    ['first one-series query after open', 'ms', (v) => formatValue(median(firstMs(v, 'series')), 'ms')],
    ['first full scan after open (cold)', 'ms', (v) => formatValue(median(firstMs(v, 'scan')), 'ms')],
    ['full scan, cold', 'MB/s', (v) => formatValue(median(coldMBs(v)), 'MB/s')],
    ['full scan, warm', 'MB/s', (v) => formatValue(median(warmMBs(v)), 'MB/s')],
  ];
  const header = ['objects (medians)', 'unit', ...variants.map((v) => LABEL[v])];
  const body = rows.map(([name, unit, cell]) => [name, unit, ...variants.map(cell)]);
  body.push([`first one-series query, cache warm()ed (${formatValue(warmCallMs, 'ms')} ms) before the open`, 'ms', '', formatValue(warmedSeriesMs, 'ms'), '']);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export const objectsSuite: Suite = {
  name: 'objects',
  description: 'flush, first query after promotion and SST scan throughput: local directory vs s3 (s3rver), cached and not',
  run,
};
