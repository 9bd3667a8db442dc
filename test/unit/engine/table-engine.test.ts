import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LEADER } from '../../harness/region-writer.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import type { ObjectStore } from '../../../src/engine/object-store.js';
import type { RegionDescriptor } from '../../../src/engine/region-engine.js';
import type { Row } from '../../../src/engine/schema.js';
import { manifestKey, manifestKeys, readManifest, sstKey } from '../../../src/engine/table/manifest.js';
import { TableEngine, type TableEngineOptions } from '../../../src/engine/table/table-engine.js';
import { deleteBody, expectError, metrics, putBody, queryRows, tempDir } from './helpers.js';
import { waitUntil } from '../../harness/wait.js';

/** An FsObjectStore whose calls can be observed, delayed and failed. */
class TestStore implements ObjectStore {
  readonly inner: FsObjectStore;
  readonly gets: string[] = [];
  beforePut: (key: string) => Promise<void> = async () => {};
  beforeGet: (key: string) => Promise<void> = async () => {};

  constructor(dir: string) {
    this.inner = new FsObjectStore(dir);
  }
  async put(key: string, data: Uint8Array) {
    await this.beforePut(key);
    return this.inner.put(key, data);
  }
  async get(key: string) {
    this.gets.push(key);
    await this.beforeGet(key);
    return this.inner.get(key);
  }
  async getRange(key: string, start: number, end: number) {
    this.gets.push(key);
    await this.beforeGet(key);
    return this.inner.getRange(key, start, end);
  }
  size(key: string) {
    return this.inner.size(key);
  }
  exists(key: string) {
    return this.inner.exists(key);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  deletePrefix(prefix: string) {
    return this.inner.deletePrefix(prefix);
  }
}

/** A promise and the function that resolves it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

const desc: RegionDescriptor = { regionId: 1, table: metrics, partition: 0, createdAt: 5 };
const put = (rows: Record<string, unknown>[]) => putBody(metrics, rows);
const del = (keys: Row[]) => deleteBody(metrics, keys);
const m = (host: string, ts: number, cpu: number | null = null, idc = 'dc1'): Row => ({ host, idc, cpu, mem: null, up: null, ts });
const brief = (rows: Row[]) => rows.map((r) => `${r.host}/${r.idc}/${r.ts}=${r.cpu}`);

async function setup(options?: TableEngineOptions) {
  const dir = await tempDir();
  const store = new TestStore(dir);
  const engine = new TableEngine(options);
  const region = await engine.openRegion(desc, store, LEADER);
  return { dir, store, engine, region };
}

describe('TableEngine', () => {
  it('creates a manifest at createdAt for a new region', async () => {
    const { store, region } = await setup();
    expect(region.regionId).toBe(1);
    expect(region.flushedEntryId()).toBe(5);
    expect(region.appliedEntryId()).toBe(5);
    expect(await readManifest(store, 1)).toEqual({ manifest: { version: 1, epoch: 1, regionId: 1, flushedEntryId: 5, ssts: [], nextSeq: 1 }, key: manifestKey(1, 1, 1) });
  });

  it("a leader's open writes its own version of the manifest (fencing off what an older leader writes later) and keeps two; a follower's writes nothing", async () => {
    const { store, region } = await setup();
    region.apply(6, put([m('a', 1)]));
    await region.flush(6);
    await region.flush(7);
    expect(await manifestKeys(store, 1)).toEqual([manifestKey(1, 1, 2), manifestKey(1, 1, 3)]);
    const follower = await new TableEngine().openRegion(desc, store);
    expect(await manifestKeys(store, 1)).toEqual([manifestKey(1, 1, 2), manifestKey(1, 1, 3)]);
    await expectError(() => follower.flush(8), 'INTERNAL', /read-only/);
    const next = await new TableEngine().openRegion(desc, store, { writer: { epoch: 4, mayDelete: () => true } });
    expect(await manifestKeys(store, 1)).toEqual([manifestKey(1, 1, 3), manifestKey(1, 4, 4)]);
    // The old leader, deposed, flushes once more: its version sorts below the new leader's and is never read.
    region.apply(8, put([m('b', 1)]));
    await region.flush(8);
    expect((await readManifest(store, 1))?.key).toBe(manifestKey(1, 4, 4));
    expect(brief(await queryRows(await new TableEngine().openRegion(desc, store)))).toEqual(['a/dc1/1=null']);
    // A deposed leader deletes nothing (its lease is gone): neither compaction inputs nor manifests.
    const lapsed = await new TableEngine().openRegion(desc, store, { writer: { epoch: 5, mayDelete: () => false } });
    lapsed.apply(9, put([m('c', 1)]));
    await lapsed.flush(9);
    await lapsed.flush(10);
    expect((await manifestKeys(store, 1)).filter((k) => k.includes('/0000000005-'))).toHaveLength(3);
    await Promise.all([follower.close(), next.close(), lapsed.close()]);
  });

  it('applies puts and deletes in order, ignoring entries already applied', async () => {
    const { region } = await setup();
    region.apply(6, put([m('b', 2, 1), m('a', 1, 1), m('b', 1, 1)]));
    region.apply(7, put([m('a', 1, 2)]));
    region.apply(7, put([m('a', 1, 99)])); // replayed: ignored
    region.apply(3, put([m('z', 1, 99)])); // at or below flushed: ignored
    region.apply(8, del([{ host: 'b', idc: 'dc1', ts: 2 }]));
    expect(region.appliedEntryId()).toBe(8);
    expect(brief(await queryRows(region))).toEqual(['a/dc1/1=2', 'b/dc1/1=1']);
    expect(region.memtableBytes()).toBeGreaterThan(0);
  });

  it('queues an undecodable body; indexing it fails the region with REGION_FAILED naming table, region and entry, applying nothing of it', async () => {
    const { region } = await setup();
    region.apply(6, put([m('a', 1, 1)]));
    region.apply(7, new Uint8Array([1, 2, 3])); // passes apply: bodies are decoded when indexed
    region.apply(8, put([m('b', 1, 1)]));
    expect(region.appliedEntryId()).toBe(8);
    const failed = ['REGION_FAILED', 'table "system_metrics"', 'region 1', 'entry 7'] as const;
    await expectError(() => queryRows(region), ...failed);
    // Unusable from then on: every later call reports the same failure.
    await expectError(() => queryRows(region), ...failed);
    await expectError(() => region.apply(9, put([m('c', 1)])), ...failed);
    await expectError(() => region.flush(8), ...failed);
    expect(region.flushedEntryId()).toBe(5);
    await region.close();
  });

  it('flushes to an SST and the manifest, and keeps rows and flushedEntryId across reopen', async () => {
    const { store, region } = await setup();
    region.apply(6, put([m('a', 1, 1), m('b', 2, 2)]));
    region.apply(9, put([m('c', 3, 3)]));
    const result = await region.flush(10);
    expect(result.flushedEntryId).toBe(10);
    expect(result.rows).toBe(3);
    expect(result.bytes).toBeGreaterThan(0);
    expect(region.flushedEntryId()).toBe(10);
    expect(region.memtableBytes()).toBe(0);
    expect(await store.list('regions/1/sst/')).toEqual([sstKey(1, 1, 1)]);
    const manifest = (await readManifest(store, 1))?.manifest;
    expect(manifest).toMatchObject({ version: 2, epoch: 1, flushedEntryId: 10, nextSeq: 2, ssts: [{ file: sstKey(1, 1, 1), seq: 1, rows: 3, minTime: 1, maxTime: 3 }] });
    await region.close();

    const reopened = await new TableEngine().openRegion(desc, store, LEADER);
    expect(reopened.flushedEntryId()).toBe(10);
    expect(reopened.appliedEntryId()).toBe(10);
    reopened.apply(9, put([m('a', 1, 99)])); // replay below the flushed id is skipped
    reopened.apply(11, put([m('d', 4, 4)]));
    expect(brief(await queryRows(reopened))).toEqual(['a/dc1/1=1', 'b/dc1/2=2', 'c/dc1/3=3', 'd/dc1/4=4']);
  });

  it('advances flushedEntryId without writing an SST when there is nothing to flush', async () => {
    const { store, region } = await setup();
    expect(await region.flush(20)).toEqual({ flushedEntryId: 20, bytes: 0, rows: 0 });
    expect(await store.list('regions/1/sst/')).toEqual([]);
    expect((await readManifest(store, 1))?.manifest.flushedEntryId).toBe(20);
    // Not advancing: no manifest write, no regression.
    expect(await region.flush(15)).toEqual({ flushedEntryId: 20, bytes: 0, rows: 0 });
    expect((await readManifest(store, 1))?.manifest.version).toBe(2);
  });

  it('keeps writes flowing during a flush: rows applied after the freeze land in the new memtable and survive', async () => {
    const { store, region } = await setup();
    const putGate = gate();
    store.beforePut = () => putGate.wait;
    region.apply(6, put([m('a', 1, 1), m('b', 1, 1)]));
    const flushing = region.flush(6);
    // The freeze happened synchronously: these go to the new memtable.
    region.apply(7, put([m('a', 1, 2), m('c', 1, 1)]));
    region.apply(8, del([{ host: 'b', idc: 'dc1', ts: 1 }]));
    expect(region.stats()).toMatchObject({ frozenMemtables: 1, memtableRows: 0, queuedMutations: 3 });
    // Reads during the flush see frozen and new rows, newest first (indexing what is queued first).
    expect(brief(await queryRows(region))).toEqual(['a/dc1/1=2', 'c/dc1/1=1']);
    expect(region.stats()).toMatchObject({ frozenMemtables: 1, memtableRows: 5, queuedMutations: 0 });
    putGate.open();
    expect(await flushing).toMatchObject({ flushedEntryId: 6, rows: 2 });
    expect(region.stats()).toMatchObject({ frozenMemtables: 0, memtableRows: 3, ssts: 1 });
    expect(brief(await queryRows(region))).toEqual(['a/dc1/1=2', 'c/dc1/1=1']);
    store.beforePut = async () => {};
    await region.flush(8);
    await region.close();
    const reopened = await new TableEngine().openRegion(desc, store, LEADER);
    expect(reopened.flushedEntryId()).toBe(8);
    expect(brief(await queryRows(reopened))).toEqual(['a/dc1/1=2', 'c/dc1/1=1']);
  });

  it('encodes a large flush in slices: the event loop turns while it encodes, and writes applied meanwhile stay out of its SST', async () => {
    const { store, region } = await setup();
    const rows = Array.from({ length: 60_000 }, (_, i) => m(`h${i % 600}`, i, i));
    region.apply(6, put(rows));
    expect((await queryRows(region)).length).toBe(60_000); // indexed: the flush only encodes
    // Turns of the event loop from the flush's start until its SST is stored.
    let turns = 0;
    let encoding = true;
    const count = () => {
      if (!encoding) return;
      turns++;
      setImmediate(count);
    };
    store.beforePut = async () => {
      encoding = false;
    };
    setImmediate(count);
    const flushing = region.flush(6);
    setImmediate(() => region.apply(7, put([m('late', 1, 1)])));
    expect(await flushing).toMatchObject({ flushedEntryId: 6, rows: 60_000 });
    expect(turns).toBeGreaterThan(3);
    expect(region.stats()).toMatchObject({ ssts: 1, sstRows: 60_000 });
    expect((await queryRows(region)).length).toBe(60_001);
  });

  it('serialises concurrent flushes in call order', async () => {
    const { store, region } = await setup();
    const order: string[] = [];
    store.beforePut = async (key) => {
      order.push(key);
      await new Promise((r) => setTimeout(r, 5));
    };
    region.apply(6, put([m('a', 1)]));
    const first = region.flush(6);
    region.apply(7, put([m('b', 1)]));
    const second = region.flush(7);
    const third = region.flush(9); // nothing new: only advances the flushed id, after the others
    expect(await Promise.all([first, second, third])).toEqual([
      expect.objectContaining({ flushedEntryId: 6, rows: 1 }),
      expect.objectContaining({ flushedEntryId: 7, rows: 1 }),
      { flushedEntryId: 9, bytes: 0, rows: 0 },
    ]);
    expect(order).toEqual([sstKey(1, 1, 1), manifestKey(1, 1, 2), sstKey(1, 1, 2), manifestKey(1, 1, 3), manifestKey(1, 1, 4)]);
    expect((await readManifest(store, 1))?.manifest.ssts.map((s) => s.seq)).toEqual([1, 2]);
  });

  it('keeps the memtable of a failed flush and writes it with the next one', async () => {
    const { store, region } = await setup();
    store.beforePut = async (key) => {
      if (key.includes('/manifests/')) throw new Error('disk full');
    };
    region.apply(6, put([m('a', 1)]));
    await expect(region.flush(6)).rejects.toThrow('disk full');
    expect(region.flushedEntryId()).toBe(5);
    expect(region.stats().frozenMemtables).toBe(1);
    expect(await queryRows(region)).toHaveLength(1);
    store.beforePut = async () => {};
    region.apply(7, put([m('b', 1)]));
    expect(await region.flush(7)).toMatchObject({ flushedEntryId: 7, rows: 2 });
    expect((await readManifest(store, 1))?.manifest.ssts.map((s) => [s.seq, s.rows])).toEqual([
      [1, 1],
      [2, 1],
    ]);
    expect(brief(await queryRows(region))).toEqual(['a/dc1/1=null', 'b/dc1/1=null']);
  });

  it('hides deleted rows across memtable and SSTs, and compaction drops the tombstones', async () => {
    const { store, region } = await setup({ compactAt: 2 });
    region.apply(6, put([m('a', 1, 1), m('a', 2, 1), m('b', 1, 1)]));
    await region.flush(6);
    region.apply(7, del([{ host: 'a', idc: 'dc1', ts: 1 }]));
    expect(brief(await queryRows(region))).toEqual(['a/dc1/2=1', 'b/dc1/1=1']);
    await region.flush(7);
    expect(brief(await queryRows(region))).toEqual(['a/dc1/2=1', 'b/dc1/1=1']);
    region.apply(8, put([m('a', 1, 5)])); // re-insert after delete
    region.apply(9, del([{ host: 'b', idc: 'dc1', ts: 1 }]));
    expect(brief(await queryRows(region))).toEqual(['a/dc1/1=5', 'a/dc1/2=1']);
    await region.flush(9);
    expect(region.stats().ssts).toBe(3);
    await region.compact();
    expect(region.stats()).toMatchObject({ ssts: 1, sstRows: 2 }); // tombstones gone
    expect(await store.list('regions/1/sst/')).toEqual([sstKey(1, 1, 4)]);
    expect(brief(await queryRows(region))).toEqual(['a/dc1/1=5', 'a/dc1/2=1']);
  });

  it('compacts only at compactAt SSTs, preserving query results, then deletes the inputs', async () => {
    const { store, region } = await setup({ compactAt: 3 });
    for (let i = 0; i < 3; i++) {
      region.apply(6 + i, put([m('a', i, i), m('b', 0, i), m(`c${i}`, 0, i)]));
      await region.flush(6 + i);
      if (i < 2) {
        await region.compact();
        expect(region.stats().ssts).toBe(i + 1);
      }
    }
    const before = await queryRows(region);
    const versionBefore = (await readManifest(store, 1))?.manifest.version as number;
    await region.compact();
    expect(await queryRows(region)).toEqual(before);
    const manifest = (await readManifest(store, 1))?.manifest;
    expect(manifest).toMatchObject({ version: versionBefore + 1, flushedEntryId: 8, nextSeq: 5, ssts: [{ seq: 4, rows: 7 }] });
    expect(await store.list('regions/1/sst/')).toEqual([sstKey(1, 1, 4)]);
    await region.close();
    const reopened = await new TableEngine().openRegion(desc, store, LEADER);
    expect(await queryRows(reopened)).toEqual(before);
  });

  it('defers deleting compacted SSTs until queries reading them finish', async () => {
    // No cache: the compaction must not share the query's (held up) loads.
    const { store, region } = await setup({ compactAt: 2, cacheBytes: 0 });
    region.apply(6, put([m('a', 1, 1)]));
    await region.flush(6);
    region.apply(7, put([m('b', 1, 1)]));
    await region.flush(7);
    const getGate = gate();
    // Only the query's first read waits (the compaction's go through).
    store.beforeGet = () => {
      store.beforeGet = async () => {};
      return getGate.wait;
    };
    const reading = queryRows(region);
    await waitUntil(() => store.gets.length > 0, 'the query reading an SST');
    await region.compact();
    expect((await store.list('regions/1/sst/')).length).toBe(3); // inputs still being read
    getGate.open();
    expect(brief(await reading)).toEqual(['a/dc1/1=1', 'b/dc1/1=1']);
    await region.close();
    expect(await store.list('regions/1/sst/')).toEqual([sstKey(1, 1, 3)]);
  });

  it('caches decoded SSTs across queries', async () => {
    const { store, engine, region } = await setup();
    region.apply(6, put([m('a', 1, 1)]));
    await region.flush(6);
    await region.close();
    const cold = await engine.openRegion(desc, store, LEADER);
    store.gets.length = 0;
    await queryRows(cold);
    const firstReads = [...store.gets];
    expect(new Set(firstReads)).toEqual(new Set([sstKey(1, 1, 1)]));
    await queryRows(cold, { where: { host: 'a' } });
    await Promise.all([queryRows(cold), queryRows(cold)]);
    expect(store.gets).toEqual(firstReads);
    // A new SST is read once, the cached one not again.
    cold.apply(7, put([m('b', 1, 1)]));
    await cold.flush(7);
    await queryRows(cold);
    await queryRows(cold);
    expect(new Set(store.gets.slice(firstReads.length))).toEqual(new Set([sstKey(1, 1, 2)]));
  });

  it('skips SSTs outside the queried time and key range', async () => {
    const { store, engine, region } = await setup();
    region.apply(6, put([m('a', 100), m('b', 150)]));
    await region.flush(6);
    region.apply(7, put([m('c', 200), m('d', 250)]));
    await region.flush(7);
    await region.close();
    const cold = await engine.openRegion(desc, store, LEADER);
    await cold.warmed;
    store.gets.length = 0;
    expect(brief(await queryRows(cold, { timeRange: { from: 200 } }))).toEqual(['c/dc1/200=null', 'd/dc1/250=null']);
    expect(new Set(store.gets)).toEqual(new Set([sstKey(1, 1, 2)]));
    expect(brief(await queryRows(cold, { where: { host: 'b' } }))).toEqual(['b/dc1/150=null']);
    expect(new Set(store.gets)).toEqual(new Set([sstKey(1, 1, 2), sstKey(1, 1, 1)]));
    const reads = store.gets.length;
    expect(await queryRows(cold, { where: { host: 'zz' } })).toEqual([]);
    expect(store.gets).toHaveLength(reads);
  });

  it('reads only the newest SST for the latest point of a series (order desc, limit 1)', async () => {
    const { store, engine, region } = await setup();
    for (let f = 0; f < 3; f++) {
      region.apply(6 + f, put([m('a', 100 * f + 1, f), m('a', 100 * f + 2, f), m('b', 100 * f + 1, f)]));
      await region.flush(6 + f);
    }
    await region.close();
    const cold = await engine.openRegion(desc, store, LEADER);
    await cold.warmed;
    store.gets.length = 0;
    expect(brief(await queryRows(cold, { where: { host: 'a' }, order: 'desc', limit: 1 }))).toEqual(['a/dc1/202=2']);
    expect(new Set(store.gets)).toEqual(new Set([sstKey(1, 1, 3)]));
    expect(brief(await queryRows(cold, { where: { host: 'a' }, order: 'desc' }))).toEqual(['a/dc1/202=2', 'a/dc1/201=2', 'a/dc1/102=1', 'a/dc1/101=1', 'a/dc1/2=0', 'a/dc1/1=0']);
  });

  it('keeps the SST count bounded by time windows under continuous ingest, one window SST each', async () => {
    const { region } = await setup({ compactAt: 4, compactionWindowMs: 100 });
    // 60 flushes of 10 ms each, four hosts, late rows now and then: 6 windows of 100 ms.
    let id = 6;
    for (let f = 0; f < 60; f++) {
      const rows = ['a', 'b', 'c', 'd'].flatMap((h) => Array.from({ length: 10 }, (_, i) => m(h, f * 10 + i, f)));
      if (f % 7 === 6) rows.push(m('a', f * 10 - 55, -1, 'late'));
      region.apply(id, put(rows));
      await region.flush(id++);
      await region.compact();
      const { ssts } = region.stats();
      expect(ssts).toBeLessThan(4 + Math.ceil(((f + 1) * 10) / 100));
    }
    expect(region.stats().ssts).toBeLessThanOrEqual(6 + 3);
    const all = await queryRows(region);
    expect(all).toHaveLength(2408);
    expect(all.filter((r) => r.cpu === -1)).toHaveLength(8);
  });

  it('answers where, timeRange, columns and limit, ordered by primary key then time', async () => {
    const { region } = await setup();
    const rows: Row[] = [];
    for (const host of ['h3', 'h1', 'h2']) for (const idc of ['y', 'x']) for (const ts of [30, 10, 20]) rows.push(m(host, ts, ts / 10, idc));
    region.apply(6, put(rows.slice(0, 9)));
    await region.flush(6);
    region.apply(7, put(rows.slice(9)));
    const all = await queryRows(region);
    expect(all).toHaveLength(18);
    expect(brief(all).slice(0, 7)).toEqual(['h1/x/10=1', 'h1/x/20=2', 'h1/x/30=3', 'h1/y/10=1', 'h1/y/20=2', 'h1/y/30=3', 'h2/x/10=1']);
    expect(all[0]).toEqual({ host: 'h1', idc: 'x', cpu: 1, mem: null, up: null, ts: 10 });
    expect(brief(await queryRows(region, { where: { host: 'h2', idc: 'y' } }))).toEqual(['h2/y/10=1', 'h2/y/20=2', 'h2/y/30=3']);
    expect(brief(await queryRows(region, { where: { idc: 'x' }, timeRange: { from: 20, to: 30 } }))).toEqual(['h1/x/20=2', 'h2/x/20=2', 'h3/x/20=2']);
    expect(brief(await queryRows(region, { where: { host: { gt: 'h1', lte: 'h3' }, ts: { lt: 20 }, idc: 'y' } }))).toEqual(['h2/y/10=1', 'h3/y/10=1']);
    expect(await queryRows(region, { columns: ['ts', 'host'], limit: 2 })).toEqual([
      { ts: 10, host: 'h1' },
      { ts: 20, host: 'h1' },
    ]);
    expect(Object.keys((await queryRows(region, { columns: ['cpu', 'ts'], limit: 1 }))[0])).toEqual(['cpu', 'ts']);
    expect(await queryRows(region, { where: { host: 'h1' }, limit: 100 })).toHaveLength(6);
    expect(await queryRows(region, { timeRange: { from: 30, to: 30 } })).toEqual([]);
    await expectError(() => queryRows(region, { where: { cpu: 1 } }), 'INVALID_QUERY', 'column "cpu"');
  });

  it('fails to open with SST_MISSING naming region and file when a listed SST is gone', async () => {
    const { store, region } = await setup();
    region.apply(6, put([m('a', 1)]));
    await region.flush(6);
    await region.close();
    await store.delete(sstKey(1, 1, 1));
    await expectError(() => new TableEngine().openRegion(desc, store, LEADER), 'SST_MISSING', 'region 1', sstKey(1, 1, 1));
  });

  it('fails to open with MANIFEST_CORRUPT on a damaged manifest, and queries fail with SST_CORRUPT on a damaged SST', async () => {
    const { dir, store, region } = await setup();
    region.apply(6, put([m('a', 1)]));
    await region.flush(6);
    await region.close();
    const sst = await store.get(sstKey(1, 1, 1));
    // The last byte of the engine's index, which lies before the Parquet footer, its length and PAR1.
    const footerLength = new DataView(sst.buffer, sst.byteOffset).getUint32(sst.length - 8, true);
    sst[sst.length - 8 - footerLength - 12 - 1] ^= 0x10;
    await writeFile(join(dir, sstKey(1, 1, 1)), sst);
    const damaged = await new TableEngine().openRegion(desc, store, LEADER);
    await expectError(() => queryRows(damaged), 'SST_CORRUPT', 'region 1', sstKey(1, 1, 1));
    // The newest version (the one the last open wrote) is what a reader takes: damaged, the open fails rather than fall back.
    const newest = (await manifestKeys(store, 1)).at(-1)!;
    await writeFile(join(dir, newest), 'reprise-manifest 1 00000000\n{}');
    await expectError(() => new TableEngine().openRegion(desc, store, LEADER), 'MANIFEST_CORRUPT', 'region 1', newest);
  });

  it("removes on open the unlisted SSTs of older epochs (an interrupted compaction, a deposed leader's flush), never a newer epoch's", async () => {
    const { store, region } = await setup();
    region.apply(6, put([m('a', 1)]));
    await region.flush(6);
    await region.close();
    await store.put(sstKey(1, 0, 9), new Uint8Array([1])); // an older epoch's, unlisted: garbage
    await store.put(`regions/1/sst/${'7'.padStart(12, '0')}.sst`, new Uint8Array([1])); // unversioned, unlisted: garbage
    await store.put(sstKey(1, 3, 1), new Uint8Array([1])); // a newer epoch's: a leader newer than this open
    await new TableEngine().openRegion(desc, store, { writer: { epoch: 2, mayDelete: () => true } });
    expect(await store.list('regions/1/sst/')).toEqual([sstKey(1, 1, 1), sstKey(1, 3, 1)]);
  });

  it('destroys a region by deleting its prefix only', async () => {
    const { store, engine, region } = await setup();
    const other = await engine.openRegion({ ...desc, regionId: 10 }, store, LEADER);
    region.apply(6, put([m('a', 1)]));
    await region.flush(6);
    await region.close();
    await engine.destroyRegion(1, store);
    expect(await store.list('')).toEqual([manifestKey(10, 1, 1)]);
    const fresh = await engine.openRegion({ ...desc, createdAt: 50 }, store, LEADER);
    expect(fresh.flushedEntryId()).toBe(50);
    expect(await queryRows(fresh)).toEqual([]);
    await other.close();
  });

  it('rejects calls after close with CLOSED naming the region', async () => {
    const { region } = await setup();
    await region.close();
    await region.close();
    await expectError(() => region.apply(6, put([m('a', 1)])), 'CLOSED', 'region 1');
    await expectError(() => queryRows(region), 'CLOSED', 'region 1');
    await expectError(() => region.flush(6), 'CLOSED');
    await expectError(() => region.compact(), 'CLOSED');
  });

  it('validates its options', async () => {
    await expectError(() => new TableEngine({ compactAt: 1 }), 'INVALID_ARGUMENT', /compactAt/);
    await expectError(() => new TableEngine({ cacheBytes: -1 }), 'INVALID_ARGUMENT', /cacheBytes/);
    expect(new TableEngine().name).toBe('table');
  });
});
