import { encode } from '@msgpack/msgpack';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LEADER } from '../../harness/region-writer.js';
import { open } from '../../../src/api/runtime.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import type { ObjectStore } from '../../../src/engine/object-store.js';
import type { RegionDescriptor } from '../../../src/engine/region-engine.js';
import type { Row, TableSchema } from '../../../src/engine/schema.js';
import { layoutOf } from '../../../src/engine/table/keys.js';
import { rowBytes } from '../../../src/engine/table/memtable.js';
import { QUEUED_BODY_EXPANSION, QueuedMemtable, UnindexableEntry } from '../../../src/engine/table/queued-memtable.js';
import { TableEngine } from '../../../src/engine/table/table-engine.js';
import { deleteBody, expectError, metrics, putBody, tempDir, queryRows } from './helpers.js';

/**
 * The memtable that indexes on demand: applied bodies are queued and
 * decoded into the memtable, in entry order, when something reads it
 * (query, flush, close) or the region is idle.
 */

const desc: RegionDescriptor = { regionId: 1, table: metrics, partition: 0, createdAt: 5 };
const m = (host: string, ts: number, cpu: number | null = null, idc = 'dc1'): Row => ({ host, idc, cpu, mem: null, up: null, ts });
const put = (rows: Row[]) => putBody(metrics, rows);
const del = (keys: Row[]) => deleteBody(metrics, keys);
const brief = (rows: Row[]) => rows.map((r) => `${r.host}/${r.ts}=${r.cpu}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** A body that is msgpack but not a mutation this table can apply. */
const bad = encode({ op: 'put', rows: [['a', 'dc1', 'not a number', null, null, 1]] });

async function setup() {
  const store = new FsObjectStore(await tempDir());
  const engine = new TableEngine();
  const region = await engine.openRegion(desc, store, LEADER);
  return { store, engine, region };
}

describe('QueuedMemtable', () => {
  const layout = layoutOf(metrics);

  it('indexes queued bodies in order, a body whole or not at all', () => {
    const mem = new QueuedMemtable(layout);
    mem.enqueue(6, put([m('a', 1, 1), m('b', 1, 1)]));
    // Row 0 is valid, row 1 is not: none of its rows may be applied.
    mem.enqueue(7, encode({ op: 'put', rows: [['c', 'dc1', 1, null, null, 1], ['d', 'dc1', 'x', null, null, 1]] }));
    mem.enqueue(8, put([m('e', 1, 1)]));
    expect(mem.queued).toBe(3);
    expect(mem.size).toBe(0);
    let caught: unknown;
    try {
      mem.index();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UnindexableEntry);
    expect((caught as UnindexableEntry).entryId).toBe(7);
    expect((caught as UnindexableEntry).message).toMatch(/entry 7: table "system_metrics": undecodable mutation body \(row 1: bad value "x" for column "cpu"\)/);
    // The bad body stays at the head: nothing after it is indexed, ever.
    expect(mem.size).toBe(2);
    expect(mem.queued).toBe(2);
    expect(() => mem.index()).toThrow(UnindexableEntry);
    expect(mem.size).toBe(2);
    expect(() => mem.scan()).toThrow(/not indexed/);
  });

  it('counts a queued body at QUEUED_BODY_EXPANSION bytes per byte until it is indexed, then at its rows', () => {
    const mem = new QueuedMemtable(layout);
    const bodies = [put([m('a', 1, 1), m('b', 2, 0.5)]), del([{ host: 'a', idc: 'dc1', ts: 1 }])];
    for (const [i, body] of bodies.entries()) mem.enqueue(6 + i, body);
    const queuedBytes = bodies.reduce((n, b) => n + b.length, 0);
    expect(mem.bytes).toBe(Math.round(queuedBytes * QUEUED_BODY_EXPANSION));
    expect(mem.index()).toBe(true);
    expect(mem.bytes).toBe(rowBytes(['a', 'dc1', null, null, null, 1], 0, 6) + rowBytes(['b', 'dc1', 0.5, null, null, 2], 0, 6));
  });

  it('expands the benchmark rows by about QUEUED_BODY_EXPANSION (the documented measurement)', () => {
    const schema: TableSchema = {
      name: 'system_metrics',
      columns: [
        { name: 'host', type: 'string', role: 'tag' },
        { name: 'idc', type: 'string', role: 'tag' },
        { name: 'cpu_util', type: 'float64', role: 'field' },
        { name: 'memory_util', type: 'float64', role: 'field' },
        { name: 'disk_util', type: 'float64', role: 'field' },
        { name: 'ts', type: 'timestamp', role: 'time' },
      ],
    };
    const rows = Array.from({ length: 100 }, (_, k) => ({
      host: `host_000_w0_${k % 50}`,
      idc: `idc_${'abcd'[(k / 50) & 3]}`,
      cpu_util: ((k * 0.618034 * 97.1) % 100) + 0.001,
      memory_util: ((k * 0.618034 * 31.7) % 100) + 0.001,
      disk_util: ((k * 0.618034 * 13.3) % 100) + 0.001,
      ts: 1_667_446_797_450 + Math.floor(k / 200) * 1000,
    }));
    const mem = new QueuedMemtable(layoutOf(schema));
    const body = putBody(schema, rows);
    mem.enqueue(1, body);
    mem.index();
    expect(mem.bytes / body.length).toBeGreaterThan(QUEUED_BODY_EXPANSION * 0.9);
    expect(mem.bytes / body.length).toBeLessThan(QUEUED_BODY_EXPANSION * 1.1);
  });
});

describe('TableRegion with a queue of mutations', () => {
  it('decodes nothing on apply: an undecodable body is accepted there and only found when indexed', async () => {
    const { region } = await setup();
    region.apply(6, new Uint8Array([0xc1]));
    expect(region.appliedEntryId()).toBe(6);
    expect(region.memtableBytes()).toBe(Math.round(QUEUED_BODY_EXPANSION));
    await expectError(() => queryRows(region), 'REGION_FAILED', 'table "system_metrics"', 'region 1', 'entry 6');
    await region.close();
  });

  it('keeps entry order between queued bodies and later writes (upserts and deletes across queued and indexed rows)', async () => {
    const { region } = await setup();
    // A replayed log: bodies queued as they are read.
    region.apply(6, put([m('a', 1, 1), m('b', 1, 1), m('c', 1, 1)]));
    region.apply(7, put([m('a', 1, 2)]));
    region.apply(8, del([{ host: 'b', idc: 'dc1', ts: 1 }]));
    // Entries at or below appliedEntryId are ignored, queued or not.
    region.apply(7, put([m('a', 1, 99)]));
    region.apply(6, put([m('z', 1, 99)]));
    // Then writes, after the replayed entries in id order.
    region.apply(9, put([m('a', 1, 3), m('b', 1, 3)]));
    expect(brief(await queryRows(region))).toEqual(['a/1=3', 'b/1=3', 'c/1=1']);
    // Indexed rows, then queued changes to them.
    region.apply(10, del([{ host: 'a', idc: 'dc1', ts: 1 }]));
    region.apply(11, put([m('c', 1, 4), m('d', 2, 4)]));
    region.apply(12, put([m('a', 1, 5)]));
    region.apply(13, del([{ host: 'd', idc: 'dc1', ts: 2 }]));
    expect(brief(await queryRows(region))).toEqual(['a/1=5', 'b/1=3', 'c/1=4']);
    expect(brief(await queryRows(region, { where: { host: 'c' } }))).toEqual(['c/1=4']);
    await region.close();
  });

  it('hides rows of flushed SSTs behind queued deletes and upserts', async () => {
    const { region } = await setup();
    region.apply(6, put([m('a', 1, 1), m('b', 1, 1)]));
    expect(await region.flush(6)).toMatchObject({ flushedEntryId: 6, rows: 2 });
    region.apply(7, del([{ host: 'a', idc: 'dc1', ts: 1 }]));
    region.apply(8, put([m('b', 1, 2)]));
    expect(brief(await queryRows(region))).toEqual(['b/1=2']);
    await region.close();
  });

  it('indexes the frozen queue when flushing, while newer writes queue in the new memtable', async () => {
    const { store, engine, region } = await setup();
    region.apply(6, put([m('a', 1, 1), m('b', 1, 1)]));
    region.apply(7, put([m('a', 1, 2)]));
    const flushing = region.flush(7);
    region.apply(8, put([m('a', 1, 3)]));
    region.apply(9, del([{ host: 'b', idc: 'dc1', ts: 1 }]));
    expect(await flushing).toMatchObject({ flushedEntryId: 7, rows: 2 });
    expect(brief(await queryRows(region))).toEqual(['a/1=3']);
    // The SST holds exactly the frozen entries, in order.
    const reopened = await engine.openRegion(desc, store, LEADER);
    expect(brief(await queryRows(reopened))).toEqual(['a/1=2', 'b/1=1']);
    await reopened.close();
    await region.close();
  });

  it('answers every limit like the unlimited answer cut, across an SST, a frozen memtable and tombstones in the active one', async () => {
    // SST puts are held, so the second flush keeps its memtable frozen while the queries run.
    const fs = new FsObjectStore(await tempDir());
    let hold: Promise<void> | undefined;
    const store: ObjectStore = Object.assign(Object.create(fs) as ObjectStore, {
      put: async (key: string, data: Uint8Array) => {
        if (hold !== undefined && key.includes('/sst/')) await hold;
        return fs.put(key, data);
      },
    });
    const region = await new TableEngine().openRegion(desc, store, LEADER);
    region.apply(6, put(['e', 'f'].flatMap((h) => [1, 2, 3].map((t) => m(h, t, 10)))));
    await region.flush(6);
    region.apply(7, put(['a', 'b', 'c', 'e'].flatMap((h) => [2, 4].map((t) => m(h, t, 20)))));
    let release = () => undefined as void;
    hold = new Promise<void>((resolve) => (release = resolve));
    const flushing = region.flush(7); // entry 7 is a frozen memtable until the put is released
    // The active memtable: tombstones hide the frozen one's first live rows and an SST row; an upsert; rows at the end of the key range.
    region.apply(8, del([{ host: 'a', idc: 'dc1', ts: 2 }, { host: 'a', idc: 'dc1', ts: 4 }, { host: 'e', idc: 'dc1', ts: 1 }]));
    region.apply(9, put([m('c', 2, 30), m('z', 1, 30), m('z', 2, 30)]));
    expect(region.stats().frozenMemtables).toBe(1);
    const all = brief(await queryRows(region));
    expect(all).toEqual(['b/2=20', 'b/4=20', 'c/2=30', 'c/4=20', 'e/2=20', 'e/3=10', 'e/4=20', 'f/1=10', 'f/2=10', 'f/3=10', 'z/1=30', 'z/2=30']);
    for (let limit = 1; limit <= all.length + 1; limit++) expect(brief(await queryRows(region, { limit })), `limit ${limit}`).toEqual(all.slice(0, limit));
    expect(region.stats().frozenMemtables).toBe(1);
    release();
    await flushing;
    for (let limit = 1; limit <= all.length + 1; limit++) expect(brief(await queryRows(region, { limit })), `limit ${limit}, flushed`).toEqual(all.slice(0, limit));
    await region.close();
  });

  it('advances the flushed entry id without an SST when the queue held no rows', async () => {
    const { store, region } = await setup();
    region.apply(6, encode({ op: 'put', rows: [] }));
    expect(region.memtableBytes()).toBeGreaterThan(0);
    expect(await region.flush(6)).toEqual({ flushedEntryId: 6, bytes: 0, rows: 0 });
    expect(await store.list('regions/1/sst/')).toEqual([]);
    expect(region.memtableBytes()).toBe(0);
    await region.close();
  });

  it('reports a bad body found by a flush from the flush, and from every later apply, query and flush', async () => {
    const { region } = await setup();
    region.apply(6, put([m('a', 1, 1)]));
    region.apply(7, bad);
    const failed = ['REGION_FAILED', 'region 1', 'entry 7', 'table "system_metrics"'] as const;
    await expectError(() => region.flush(7), ...failed);
    expect(region.flushedEntryId()).toBe(5);
    await expectError(() => region.apply(8, put([m('b', 1)])), ...failed);
    await expectError(() => queryRows(region, { where: { host: 'a' } }), ...failed);
    await expectError(() => region.flush(8), ...failed);
    // Reported already: close does not report it again.
    await region.close();
  });

  it('indexes what is queued on close, rejecting with a bad body nothing had reported', async () => {
    const { region } = await setup();
    region.apply(6, put([m('a', 1, 1)]));
    region.apply(7, bad);
    await expectError(() => region.close(), 'REGION_FAILED', 'region 1', 'entry 7');
    await expectError(() => queryRows(region), 'CLOSED');
    const ok = (await setup()).region;
    ok.apply(6, put([m('a', 1, 1)]));
    await ok.close();
  });

  it('indexes in the background once idle, in order, while writes keep coming', async () => {
    const { region } = await setup();
    const model = new Map<string, number>();
    let id = 6;
    let bytesBefore = 0;
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 50; i++) {
        const host = `h${(round * 7 + i * 13) % 17}`;
        const ts = i % 3;
        region.apply(id++, put([m(host, ts, round * 100 + i)]));
        model.set(`${host}/${ts}`, round * 100 + i);
      }
      if (round === 19) bytesBefore = region.memtableBytes();
      // Sometimes long enough for the background to index (all or some), sometimes not.
      await sleep(round % 3 === 0 ? 80 : round % 3 === 1 ? 10 : 0);
    }
    // Indexed in the background (in slices, once idle): the size becomes the rows' own, no longer the queued estimate.
    for (let i = 0; i < 300 && region.stats().queuedMutations > 0; i++) await sleep(10);
    expect(region.stats().queuedMutations).toBe(0);
    const idle = region.memtableBytes();
    expect(idle).not.toBe(bytesBefore);
    const rows = await queryRows(region);
    expect(region.memtableBytes()).toBe(idle);
    expect(Object.fromEntries(rows.map((r) => [`${r.host}/${r.ts}`, r.cpu]))).toEqual(Object.fromEntries(model));
    await region.close();
  });

  it('finds a bad body in the background and reports it on the next apply', async () => {
    const { region } = await setup();
    region.apply(6, bad);
    expect(region.stats().queuedMutations).toBe(1);
    // Found in the background, once idle; it stays queued (nothing of it applied).
    await sleep(300);
    await expectError(() => region.apply(7, put([m('a', 1)])), 'REGION_FAILED', 'entry 6');
    await region.close();
  });
});

describe('the flush policy with queued bodies', () => {
  it('flushes by memtable size on the write path, with nothing ever queried', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-queue-flush-'));
    try {
      const db = await open({ dataDir: dir, shards: 1, logger: false, flush: { memtableBytes: 64 * 1024, walBytes: 1 << 30 } });
      await db.createTable({ ...metrics, partition: undefined });
      const flushedAt = () => db.status().nodes[0]!.shards[0]!.regions[0]!.flushedEntryId;
      const before = flushedAt();
      // ~26 bytes of body per row: 64 KiB at the expansion factor is ~1,000 rows.
      for (let i = 0; i < 30; i++) {
        await db.insert(
          'system_metrics',
          Array.from({ length: 100 }, (_, k) => m(`host_${k % 20}`, i * 100 + k, k / 7)),
        );
      }
      for (let i = 0; i < 50 && flushedAt() === before; i++) await sleep(10);
      expect(flushedAt()).toBeGreaterThan(before);
      expect(await db.query('system_metrics', {})).toHaveLength(3000);
      await db.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
