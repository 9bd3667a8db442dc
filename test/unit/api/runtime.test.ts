import { cp, mkdtemp, rename, rm, readdir, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { collectGarbage } from '../../../bench/lib/fixtures.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { ClassicLevel } from 'classic-level';
import { TableEngine } from '../../../src/engine/table/table-engine.js';
import { isRepriseError } from '../../../src/errors.js';
import { HIGH_WATER_FILE } from '../../../src/wal/high-water.js';
import { readU32 } from '../../../src/wal/bytes.js';
import { metaKey, metaValue, recordKey } from '../../../src/wal/local-log-keys.js';
import { encodeEntry } from '../../../src/wal/codec.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import { waitUntil } from '../../harness/wait.js';

const schema = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'idc', type: 'string', role: 'tag' },
    { name: 'cpu_util', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'z'] },
};

function rows(n: number, start = 0) {
  return Array.from({ length: n }, (_, i) => ({
    host: ['alpha', 'golf', 'zulu'][(start + i) % 3]!,
    idc: `idc${(start + i) % 2}`,
    cpu_util: start + i,
    ts: 1_000 + start + i,
  }));
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isRepriseError(err) ? err.code : err).toBe(code);
}

describe('embedded runtime', () => {
  let dir: string;
  let db: Reprise | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-runtime-'));
  });
  afterEach(async () => {
    await db?.close();
    db = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  const reopen = async (opts: Partial<Parameters<typeof open>[0]> = {}) => {
    await db?.close();
    db = await open({ dataDir: dir, logger: false, ...opts });
    return db;
  };

  it('creates a partitioned table, inserts, queries in key order across regions', async () => {
    const rt = await reopen();
    const table = await rt.createTable(schema);
    expect(table.regions).toHaveLength(3);
    expect(new Set(table.regions.map((r) => r.shard)).size).toBe(3);
    expect(await rt.insert('system_metrics', rows(30))).toEqual({ written: 30 });
    const all = await rt.query('system_metrics');
    expect(all).toHaveLength(30);
    const keys = all.map((r) => `${r.host}|${r.idc}|${String(r.ts).padStart(8, '0')}`);
    expect(keys).toEqual([...keys].sort());
    const golf = await rt.query('system_metrics', { where: { host: 'golf' }, columns: ['host', 'cpu_util'], limit: 3 });
    expect(golf).toHaveLength(3);
    expect(Object.keys(golf[0]!)).toEqual(['host', 'cpu_util']);
    const range = await rt.query('system_metrics', { where: { host: { gte: 'a', lt: 'h' } }, timeRange: { from: 1_005, to: 1_020 } });
    expect(range.every((r) => (r.host === 'alpha' || r.host === 'golf') && (r.ts as number) >= 1_005 && (r.ts as number) < 1_020)).toBe(true);
  });

  it('does not hold the rows of an insert while it waits for the WAL', async () => {
    // Rows held until their batch is durable outlive young-generation GCs;
    // with many writers that GC costs as much as encoding them.
    const rt = await reopen({ shards: 1 });
    await rt.createTable(schema);
    const append = LocalLogStore.prototype.append;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const appendSpy = vi.spyOn(LocalLogStore.prototype, 'append').mockImplementation(async function (this: LocalLogStore, ...args) {
      await held;
      return append.apply(this, args);
    });
    try {
      let batch: ReturnType<typeof rows> | undefined = rows(3);
      const batchRef = new WeakRef(batch);
      const inserted = rt.insert('system_metrics', batch);
      batch = undefined;
      await waitUntil(() => appendSpy.mock.calls.length > 0, 'the insert reaches the WAL');
      collectGarbage();
      expect(batchRef.deref()).toBeUndefined();
      release();
      expect(await inserted).toEqual({ written: 3 });
    } finally {
      release();
      appendSpy.mockRestore();
    }
    expect(await rt.query('system_metrics')).toHaveLength(3);
  });

  it('status shows every node, shard and region serving with epochs and entry ids', async () => {
    const rt = await reopen({ shards: 2 });
    await rt.createTable(schema);
    await rt.insert('system_metrics', rows(3));
    // Embedded: one node, nobody to migrate to; the shard keeps serving.
    await expectCode(rt.migrateShard(0, 'node-2'), 'INVALID_ARGUMENT');
    const status = rt.status();
    expect(status.wal.provider).toBe('local');
    expect(status.nodes).toHaveLength(1);
    const node = status.nodes[0]!;
    expect(node.state).toBe('serving');
    expect(node.shards).toHaveLength(2);
    for (const shard of node.shards) {
      expect(shard.state).toBe('serving');
      expect(shard.role).toBe('leader');
      expect(shard.epoch).toBe(1);
      expect(shard.lastEntryId).toBeGreaterThan(0);
    }
    expect(node.shards.flatMap((s) => s.regions).map((r) => r.state)).toEqual(['serving', 'serving', 'serving']);
  });

  it('survives reopen without flush: rows come back from WAL replay, epochs grow', async () => {
    let rt = await reopen();
    await rt.createTable(schema);
    await rt.insert('system_metrics', rows(50));
    await rt.delete('system_metrics', [{ host: 'alpha', idc: 'idc0', ts: 1_000 }]);
    await rt.close({ flush: false });
    rt = await reopen();
    expect(await rt.query('system_metrics')).toHaveLength(49);
    const shards = rt.status().nodes[0]!.shards;
    // Nothing was flushed: every region replayed its rows from the WAL.
    expect(shards.flatMap((s) => s.regions).every((r) => r.appliedEntryId > r.flushedEntryId)).toBe(true);
    expect(rt.status().nodes[0]!.shards.every((s) => s.epoch === 2)).toBe(true);
  });

  it('a delete reports the rows it removed: keys live in an SST or a memtable, not ones never written or already deleted (issue 14, smaller list)', async () => {
    const rt = await reopen();
    await rt.createTable(schema);
    await rt.insert('system_metrics', rows(30));
    await rt.flush();
    await rt.insert('system_metrics', rows(6, 30));
    expect(await rt.delete('system_metrics', [{ host: 'alpha', idc: 'idc0', ts: 1_000 }])).toEqual({ deleted: 1 });
    const keys = [
      { host: 'golf', idc: 'idc1', ts: 1_001 }, // in an SST, partition 1
      { host: 'zulu', idc: 'idc0', ts: 1_002 }, // in an SST, partition 2
      { host: 'alpha', idc: 'idc0', ts: 1_030 }, // in the memtable
      { host: 'alpha', idc: 'idc0', ts: 1_030 }, // the same key again
      { host: 'alpha', idc: 'idc0', ts: 1_000 }, // deleted above
      { host: 'alpha', idc: 'idc1', ts: 1_000 }, // never written (that series has other times)
      { host: 'nobody', idc: 'idc0', ts: 1_001 },
    ];
    expect(await rt.delete('system_metrics', keys)).toEqual({ deleted: 3 });
    expect(await rt.delete('system_metrics', keys)).toEqual({ deleted: 0 });
    expect(await rt.query('system_metrics')).toHaveLength(36 - 4);
    // Keys far apart in a long series: read up to 64 rows per key plus 4,096, then looked up one by one.
    await rt.insert('system_metrics', Array.from({ length: 6000 }, (_, i) => ({ host: 'bravo', idc: 'idc0', cpu_util: i, ts: 10_000 + i })));
    const sparse = [10_000, 15_999, 16_500].map((ts) => ({ host: 'bravo', idc: 'idc0', ts }));
    expect(await rt.delete('system_metrics', sparse)).toEqual({ deleted: 2 });
    expect(await rt.query('system_metrics', { where: { host: 'bravo' } })).toHaveLength(5998);
    expect(await rt.delete('system_metrics', Array.from({ length: 5998 }, (_, i) => ({ host: 'bravo', idc: 'idc0', ts: 10_001 + i })))).toEqual({ deleted: 5998 });
    // Every row of the table: each key looked up once.
    const all = (await rt.query('system_metrics')).map(({ host, idc, ts }) => ({ host, idc, ts }));
    const t0 = performance.now();
    expect(await rt.delete('system_metrics', all)).toEqual({ deleted: 32 });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(await rt.query('system_metrics')).toEqual([]);
  });

  it('a data dir keeps its shards: fewer asked for is refused naming both counts, more adds shards, none keeps them (issue 14, smaller list)', async () => {
    const shardCount = (rt: Reprise) => rt.status().nodes[0]!.shards.length;
    expect(shardCount(await reopen({ shards: 4 }))).toBe(4);
    await db!.close();
    db = undefined;
    const refused = await open({ dataDir: dir, logger: false, shards: 2 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isRepriseError(refused, 'INVALID_ARGUMENT')).toBe(true);
    expect((refused as Error).message).toMatch(/^2 shards asked for .* already has 4: shards are never removed/);
    expect(shardCount(await reopen())).toBe(4);
    expect(shardCount(await reopen({ shards: 6 }))).toBe(6);
    expect(shardCount(await reopen())).toBe(6);
  });

  it('flush writes SSTs, prunes the WAL, and reopen replays only what is newer', async () => {
    let rt = await reopen();
    await rt.createTable(schema);
    await rt.insert('system_metrics', rows(30));
    await rt.flush();
    const shards = rt.status().nodes[0]!.shards;
    for (const shard of shards) {
      for (const region of shard.regions) expect(region.flushedEntryId).toBeGreaterThanOrEqual(region.appliedEntryId);
    }
    await rt.insert('system_metrics', rows(30, 30));
    rt = await reopen();
    expect(await rt.query('system_metrics')).toHaveLength(60);
  });

  it('rejects bad input with codes and keeps serving', async () => {
    const rt = await reopen();
    await rt.createTable(schema);
    await expectCode(rt.createTable(schema), 'TABLE_EXISTS');
    await expectCode(rt.createTable({ name: 'bad', columns: [] }), 'INVALID_SCHEMA');
    await expectCode(rt.insert('nope', rows(1)), 'TABLE_NOT_FOUND');
    await expectCode(rt.insert('system_metrics', [{ host: 'a', idc: 'b', ts: 'yesterday' }]), 'INVALID_ROW');
    await expectCode(rt.insert('system_metrics', [{ idc: 'b', ts: 1 }]), 'INVALID_ROW');
    await expectCode(rt.query('system_metrics', { where: { nope: 1 } }), 'INVALID_QUERY');
    // A bad row anywhere rejects the whole request: nothing written.
    await expectCode(rt.insert('system_metrics', [...rows(5), { host: 'x', idc: 'y', ts: -1 }]), 'INVALID_ROW');
    expect(await rt.query('system_metrics')).toHaveLength(0);
    expect(await rt.insert('system_metrics', rows(2))).toEqual({ written: 2 });
  });

  it('drops a table and its files; the name can be reused', async () => {
    let rt = await reopen();
    await rt.createTable(schema);
    await rt.insert('system_metrics', rows(10));
    await rt.flush();
    await rt.dropTable('system_metrics');
    await expectCode(rt.query('system_metrics'), 'TABLE_NOT_FOUND');
    const left = await readdir(join(dir, 'objects', 'regions'), { recursive: true, withFileTypes: true }).catch(() => []);
    expect(left.filter((e) => e.isFile()).map((e) => e.name)).toEqual([]);
    await rt.createTable(schema);
    expect(await rt.query('system_metrics')).toHaveLength(0);
    rt = await reopen();
    expect(rt.listTables().map((t) => t.name)).toEqual(['system_metrics']);
  });

  it('a region whose SST is missing fails with a reason; other regions keep serving', async () => {
    let rt = await reopen();
    const table = await rt.createTable(schema);
    await rt.insert('system_metrics', rows(30));
    await rt.flush();
    await rt.close();
    db = undefined;
    const victim = table.regions[0]!.id;
    const sstDir = join(dir, 'objects', 'regions', String(victim), 'sst');
    for (const file of await readdir(sstDir)) await unlink(join(sstDir, file));
    rt = await reopen();
    const regions = rt.status().nodes[0]!.shards.flatMap((s) => s.regions);
    const failed = regions.find((r) => r.id === victim)!;
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/SST_MISSING/);
    await expectCode(rt.query('system_metrics', { where: { host: 'alpha' } }), 'REGION_FAILED');
    expect(await rt.query('system_metrics', { where: { host: 'golf' } })).toHaveLength(10);
    expect(await rt.insert('system_metrics', [{ host: 'golf', idc: 'x', ts: 5 }])).toEqual({ written: 1 });
  });

  it('orders desc with limit and aggregates per group and bucket across regions', async () => {
    await reopen();
    await db!.createTable(schema);
    await db!.insert('system_metrics', rows(60));
    await db!.flush();
    await db!.insert('system_metrics', rows(30, 60));
    // The latest point of one series: the newest row of zulu/idc1, from the memtable.
    expect(await db!.query('system_metrics', { where: { host: 'zulu', idc: 'idc1' }, order: 'desc', limit: 1 })).toEqual([
      { host: 'zulu', idc: 'idc1', cpu_util: 89, ts: 1089 },
    ]);
    // Descending across regions: zulu first.
    expect((await db!.query('system_metrics', { order: 'desc', limit: 2, columns: ['host', 'ts'] })).map((r) => `${r.host}@${r.ts}`)).toEqual(['zulu@1089', 'zulu@1083']);
    const perHost = await db!.query('system_metrics', {
      groupBy: ['host'],
      aggregates: [{ fn: 'max', column: 'cpu_util' }, { fn: 'count' }, { fn: 'avg', column: 'cpu_util', as: 'mean' }, { fn: 'last', column: 'cpu_util' }],
    });
    expect(perHost).toEqual([
      { host: 'alpha', 'max(cpu_util)': 87, 'count(*)': 30, mean: 43.5, 'last(cpu_util)': 87 },
      { host: 'golf', 'max(cpu_util)': 88, 'count(*)': 30, mean: 44.5, 'last(cpu_util)': 88 },
      { host: 'zulu', 'max(cpu_util)': 89, 'count(*)': 30, mean: 45.5, 'last(cpu_util)': 89 },
    ]);
    const buckets = await db!.query('system_metrics', { timeRange: { from: 1000, to: 1030 }, interval: 10, aggregates: [{ fn: 'sum', column: 'cpu_util' }], order: 'desc' });
    expect(buckets).toEqual([
      { ts: 1020, 'sum(cpu_util)': 245 },
      { ts: 1010, 'sum(cpu_util)': 145 },
      { ts: 1000, 'sum(cpu_util)': 45 },
    ]);
    await expectCode(db!.query('system_metrics', { groupBy: ['host'] }), 'INVALID_QUERY');
    await expectCode(db!.query('system_metrics', { aggregates: [{ fn: 'max', column: 'host' }] }), 'INVALID_QUERY');
    await expectCode(db!.query('system_metrics', { aggregates: [{ fn: 'median', column: 'cpu_util' }] }), 'INVALID_QUERY');
  });

  it('merges regions by key when the partition column is not the first key column', async () => {
    await reopen();
    await db!.createTable({ ...schema, partition: { column: 'idc', bounds: ['idc1'] } });
    await db!.insert('system_metrics', rows(30));
    const key = (r: Record<string, unknown>) => `${r.host}/${r.idc}/${r.ts}`;
    const expected = rows(30).map(key).sort((x, y) => {
      const [a, b] = [x.split('/'), y.split('/')];
      return a[0]! !== b[0]! ? (a[0]! < b[0]! ? -1 : 1) : a[1]! !== b[1]! ? (a[1]! < b[1]! ? -1 : 1) : Number(a[2]) - Number(b[2]);
    });
    expect(db!.describeTable('system_metrics').regions).toHaveLength(2);
    expect((await db!.query('system_metrics')).map(key)).toEqual(expected);
    expect((await db!.query('system_metrics', { order: 'desc', limit: 7 })).map(key)).toEqual([...expected].reverse().slice(0, 7));
  });

  it('a result past maxResultRows is QUERY_TOO_LARGE, and the data stays', async () => {
    await reopen({ memory: { maxResultRows: 10 } });
    await db!.createTable(schema);
    await db!.insert('system_metrics', rows(40));
    await db!.flush();
    await expectCode(db!.query('system_metrics', { where: { host: 'alpha' } }), 'QUERY_TOO_LARGE');
    await expectCode(db!.query('system_metrics', { where: { host: 'alpha' }, groupBy: ['host'], interval: 1, aggregates: [{ fn: 'count' }] }), 'QUERY_TOO_LARGE');
    expect(await db!.query('system_metrics', { where: { host: 'alpha' }, limit: 5 })).toHaveLength(5);
    expect(await db!.query('system_metrics', { groupBy: ['host'], aggregates: [{ fn: 'count' }] })).toEqual([
      { host: 'alpha', 'count(*)': 14 },
      { host: 'golf', 'count(*)': 13 },
      { host: 'zulu', 'count(*)': 13 },
    ]);
    expect(db!.status().memory).toMatchObject({ maxResultRows: 10, cacheBudgetBytes: 64 * 1024 * 1024, memtableBudgetBytes: 256 * 1024 * 1024 });
    const metrics = await db!.observer.registry.metrics();
    expect(metrics).toContain('reprise_memory_budget_bytes{kind="cache"} 67108864');
    expect(metrics).toMatch(/reprise_cache_lookups\{result="miss"\} [1-9]/);
  });

  it('reads racing writes on a region with SSTs all succeed', async () => {
    await reopen({ shards: 1 });
    await db!.createTable({ ...schema, partition: undefined });
    await db!.insert('system_metrics', rows(300));
    await db!.flush();
    const until = Date.now() + 1500;
    let written = 300;
    let reads = 0;
    const writer = async () => {
      while (Date.now() < until) {
        const start = written;
        written += 20;
        await db!.insert('system_metrics', rows(20, start));
      }
    };
    const reader = async () => {
      while (Date.now() < until) {
        const seen = (await db!.query('system_metrics', { columns: ['ts'] })).length;
        expect(seen).toBeGreaterThanOrEqual(300);
        reads++;
      }
    };
    await Promise.all([writer(), writer(), writer(), writer(), reader(), reader(), reader(), reader()]);
    expect(reads).toBeGreaterThan(4);
    expect(await db!.query('system_metrics', { columns: ['ts'] })).toHaveLength(written);
  });

  it('keeps the memtables of a node within its budget however many regions it hosts', async () => {
    await reopen({ shards: 4, memory: { memtableBytes: 1024 * 1024 } });
    const bounds = Array.from({ length: 39 }, (_, i) => `h${String(i + 1).padStart(2, '0')}`);
    await db!.createTable({ ...schema, partition: { column: 'host', bounds } });
    const batch = (n: number) =>
      Array.from({ length: 1000 }, (_, i) => ({ host: `h${String(i % 40).padStart(2, '0')}`, idc: 'x', cpu_util: i, ts: n * 1000 + i }));
    for (let n = 0; n < 40; n++) await db!.insert('system_metrics', batch(n));
    // 40,000 rows in 40 regions hold several MiB; the node flushes down to its 1 MiB budget.
    await waitUntil(() => (db!.status().memory?.memtableBytes ?? Infinity) <= 1024 * 1024, 'the memtables to fit the budget');
    const flushed = db!.status().nodes[0]!.shards.flatMap((s) => s.regions).filter((r) => r.flushedEntryId > 0);
    expect(flushed.length).toBeGreaterThan(0);
    expect(await db!.query('system_metrics', { aggregates: [{ fn: 'count' }] })).toEqual([{ 'count(*)': 40_000 }]);
  });

  it('a second process cannot open the same data dir', async () => {
    await reopen();
    await expect(open({ dataDir: dir, logger: false })).rejects.toThrow(/in use|lock/i);
  });
});

describe('embedded runtime over a damaged WAL', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-damaged-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Two tables on two shards, rows written and not flushed. */
  async function seed(): Promise<{ victimShard: number }> {
    const db = await open({ dataDir: dir, shards: 2, logger: false });
    const a = await db.createTable({ ...schema, name: 'a', partition: undefined });
    await db.createTable({ ...schema, name: 'b', partition: undefined });
    await db.insert('a', rows(20));
    await db.insert('b', rows(20));
    await db.close({ flush: false });
    return { victimShard: a.regions[0]!.shard };
  }

  it('a record failing its checksum fails its shard with WAL_CORRUPT naming topic and id; the other shard serves', async () => {
    const { victimShard } = await seed();
    const log = await LocalLogStore.open(join(dir, 'wal'));
    const topic = `reprise_wal_${victimShard}`;
    const [record] = encodeEntry({ kind: 'data', region: 1, epoch: 1, body: new Uint8Array([1, 2, 3]) });
    record![record!.length - 1]! ^= 0xff;
    const [badId] = await log.append(topic, [record!]);
    await log.close();

    const db = await open({ dataDir: dir, shards: 2, logger: false });
    try {
      const shards = db.status().nodes[0]!.shards;
      const victim = shards.find((s) => s.id === victimShard)!;
      expect(victim.state).toBe('failed');
      expect(victim.error).toMatch(/WAL_CORRUPT/);
      expect(victim.error).toContain(topic);
      expect(victim.error).toContain(String(badId));
      expect(victim.regions.every((r) => r.state === 'failed')).toBe(true);
      await expectCode(db.query('a'), 'REGION_FAILED');
      await expectCode(db.insert('a', rows(1)), 'SHARD_NOT_SERVING');
      expect(await db.query('b')).toHaveLength(20);
      expect(await db.insert('b', rows(1, 100))).toEqual({ written: 1 });
    } finally {
      await db.close();
    }
  });

  it('an entry whose body the engine cannot decode fails its region (machine included) when read; the other table serves', async () => {
    const { victimShard } = await seed();
    const log = await LocalLogStore.open(join(dir, 'wal'));
    const topic = `reprise_wal_${victimShard}`;
    const db0Regions = 1; // table 'a' has one region, id 1
    // A valid frame (checksum fine) around a body that is not a mutation.
    const [badId] = await log.append(topic, encodeEntry({ kind: 'data', region: db0Regions, epoch: 1, body: new Uint8Array([0xc1, 0xc1]) }));
    await log.close();

    const db = await open({ dataDir: dir, shards: 2, logger: false });
    try {
      await expectCode(db.query('a'), 'REGION_FAILED');
      const region = db.status().nodes[0]!.shards.find((s) => s.id === victimShard)!.regions.find((r) => r.id === db0Regions)!;
      expect(region.state).toBe('failed');
      expect(region.error).toContain(String(badId));
      await expectCode(db.insert('a', rows(1)), 'REGION_FAILED');
      expect(await db.query('b')).toHaveLength(20);
    } finally {
      await db.close().catch(() => undefined);
    }
  });

  it('entries a region needs but the log no longer holds fail that region with WAL_TRUNCATED', async () => {
    const { victimShard } = await seed();
    const log = await LocalLogStore.open(join(dir, 'wal'));
    const topic = `reprise_wal_${victimShard}`;
    const { next } = await log.bounds(topic);
    await log.prune(topic, next); // as retention would
    await log.close();

    const db = await open({ dataDir: dir, shards: 2, logger: false });
    try {
      const region = db.status().nodes[0]!.shards.find((s) => s.id === victimShard)!.regions[0]!;
      expect(region.state).toBe('failed');
      expect(region.error).toMatch(new RegExp(`WAL_TRUNCATED: region ${region.id} needs entries from \\d+ of topic '${topic}' but the earliest entry the log holds is ${next} \\(next ${next}\\)`));
      await expectCode(db.query('a'), 'REGION_FAILED');
      expect(await db.query('b')).toHaveLength(20);
    } finally {
      await db.close();
    }
  });
});

describe('region files against the catalog (issue #14, finding 2)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-catalog-'));
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await rm(dir, { recursive: true, force: true });
  });

  async function files(sub: string): Promise<string[]> {
    const entries = await readdir(join(dir, sub), { recursive: true, withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
  }

  /** A table of three regions, flushed: its data is in SSTs, the WAL pruned. */
  async function flushedTable(): Promise<void> {
    const db = await open({ dataDir: dir, shards: 2, logger: false });
    await db.createTable(schema);
    await db.insert('system_metrics', rows(30));
    await db.flush();
    await db.close();
  }

  it('a deleted WAL directory: refuses to start with CATALOG_LOST naming the regions and the dirs, and deletes nothing', async () => {
    await flushedTable();
    const before = await files('objects');
    expect(before.length).toBeGreaterThan(3);
    await rm(join(dir, 'wal'), { recursive: true });

    const err = await open({ dataDir: dir, shards: 2, logger: false }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(isRepriseError(err, 'CATALOG_LOST'), String(err)).toBe(true);
    expect(err!.message).toContain('regions 1, 2, 3');
    expect(err!.message).toContain(join(dir, 'objects'));
    expect(err!.message).toContain(join(dir, 'wal'));
    expect(err!.message).toMatch(/is empty/);
    expect(await files('objects')).toEqual(before);
    // Every later start says the same (and still deletes nothing).
    await expectCode(open({ dataDir: dir, shards: 2, logger: false }), 'CATALOG_LOST');
    expect(await files('objects')).toEqual(before);

    // The documented way out: move the regions aside; they stay intact there.
    await rename(join(dir, 'objects', 'regions'), join(dir, 'regions.lost'));
    const db = await open({ dataDir: dir, shards: 2, logger: false });
    try {
      expect(db.listTables()).toEqual([]);
      await db.createTable(schema);
    } finally {
      await db.close();
    }
    expect((await files('regions.lost')).length).toBe(before.length);
  });

  it('a region the catalog never created, beside a live catalog: CATALOG_LOST, its files kept', async () => {
    await flushedTable();
    await cp(join(dir, 'objects', 'regions', '1'), join(dir, 'objects', 'regions', '7'), { recursive: true });
    const before = await files('objects');
    const err = await open({ dataDir: dir, shards: 2, logger: false }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(isRepriseError(err, 'CATALOG_LOST'), String(err)).toBe(true);
    expect(err!.message).toContain('region 7 ');
    expect(err!.message).toContain('its next region id is 4');
    expect(await files('objects')).toEqual(before);
  });

  it('files of a dropped table whose deletion was cut short are deleted at the next start', async () => {
    await flushedTable();
    const spy = vi.spyOn(TableEngine.prototype, 'destroyRegion').mockRejectedValue(new Error('crashed before deleting'));
    let db = await open({ dataDir: dir, shards: 2, logger: false });
    await expect(db.dropTable('system_metrics')).rejects.toThrow(/crashed before deleting/);
    await db.close();
    spy.mockRestore();
    expect((await files('objects/regions')).length).toBeGreaterThan(0);
    db = await open({ dataDir: dir, shards: 2, logger: false });
    try {
      expect(await files('objects/regions')).toEqual([]);
      // Region ids are not reused: the next table's regions come after the dropped ones.
      const table = await db.createTable(schema);
      expect(table.regions.map((r) => r.id)).toEqual([4, 5, 6]);
    } finally {
      await db.close();
    }
  });

  it('a shard whose log ends before a region\'s flushed entry id fails with WAL_TAIL_LOST and writes nothing', async () => {
    const first = await open({ dataDir: dir, shards: 1, logger: false });
    await first.createTable({ ...schema, partition: undefined });
    await first.insert('system_metrics', rows(10));
    await first.close(); // flushes
    // The shard's topic lost everything (records and pruning mark), and the high-water file that would have said so.
    const level = new ClassicLevel<Uint8Array, Uint8Array>(join(dir, 'wal'), { keyEncoding: 'view', valueEncoding: 'view' });
    const [meta] = await level.iterator({ gte: metaKey('reprise_wal_0'), lte: metaKey('reprise_wal_0') }).all();
    const no = readU32(meta![1], 1);
    await level.put(metaKey('reprise_wal_0'), metaValue(no, 0));
    await level.clear({ gte: recordKey(no, 0), lt: recordKey(no + 1, 0) });
    await level.close();
    await unlink(join(dir, 'wal', HIGH_WATER_FILE));

    const db = await open({ dataDir: dir, shards: 1, logger: false });
    try {
      const shard = db.status().nodes[0]!.shards[0]!;
      expect(shard.state).toBe('failed');
      expect(shard.error).toMatch(/WAL_TAIL_LOST/);
      expect(shard.error).toMatch(/WAL topic 'reprise_wal_0' of shard 0 is empty, but region 1 flushed up to entry id [1-9]\d*: the log lost its tail/);
      await expectCode(db.insert('system_metrics', rows(1)), 'SHARD_NOT_SERVING');
    } finally {
      await db.close();
    }
  });
});

describe('replay under the flush policy', () => {
  it('a long unflushed log is flushed during replay, not held whole in memtables', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-replay-flush-'));
    try {
      let db = await open({ dataDir: dir, shards: 1, logger: false });
      await db.createTable(schema);
      for (let i = 0; i < 40; i++) await db.insert('system_metrics', rows(50, i * 50));
      await db.close({ flush: false });
      const flushedDuringReplay: number[] = [];
      db = await open({
        dataDir: dir,
        shards: 1,
        flush: { walBytes: 16 * 1024 },
        logger: pino({ level: 'info' }, { write: (line: string) => /during replay/.test(line) && flushedDuringReplay.push(1) }),
      });
      try {
        expect(flushedDuringReplay.length).toBeGreaterThan(1);
        const regions = db.status().nodes[0]!.shards[0]!.regions;
        expect(regions.every((r) => r.flushedEntryId > 3)).toBe(true);
        expect(await db.query('system_metrics')).toHaveLength(2000);
      } finally {
        await db.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
