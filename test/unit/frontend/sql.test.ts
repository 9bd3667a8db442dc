import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import type { Value } from '../../../src/engine/schema.js';
import { sqlSessions } from '../../../src/frontend/sql/session.js';
import type { SqlSession, StatementResult } from '../../../src/frontend/sql/types.js';
import { DIST_TABLE_CREATE, DIST_TABLE_INSERTS, QUICK_START_CREATE, QUICK_START_INSERT } from '../../harness/sql-clients.js';

// The SQL layer against the embedded runtime: every statement of the seed
// walkthroughs, and each planned SELECT checked against a brute-force
// answer over the rows inserted.

let dir: string;
let db: Reprise;
let session: SqlSession;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-sql-'));
  db = await open({ dataDir: dir, logger: pino({ level: 'silent' }) });
  session = sqlSessions(db, { version: '8.0.0-reprise-test' })({ dialect: 'mysql', user: { name: 'test', mode: 'rw' } });
});

afterAll(async () => {
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

async function one(sql: string): Promise<StatementResult> {
  const results = await session.execute(sql);
  expect(results).toHaveLength(1);
  return results[0];
}

/** A rows result as row arrays. */
async function table(sql: string): Promise<Value[][]> {
  const r = await one(sql);
  if (r.kind !== 'rows') throw new Error(`expected rows from ${sql}`);
  const n = r.data[0]?.length ?? 0;
  return Array.from({ length: n }, (_, i) => r.data.map((c) => c[i]));
}

async function fails(sql: string, code: string, message?: RegExp): Promise<void> {
  const err = await session.execute(sql).then(
    () => undefined,
    (e: unknown) => e as { code: string; message: string },
  );
  expect(err?.code, `${sql} -> ${err?.message}`).toBe(code);
  if (message) expect(err?.message).toMatch(message);
}

describe('SQL: the quick start', () => {
  it('creates system_metrics, inserts the nine rows with double-quoted strings, and selects them', async () => {
    await one(QUICK_START_CREATE);
    const inserted = await one(QUICK_START_INSERT);
    expect(inserted).toEqual({ kind: 'affected', affectedRows: 9, command: 'INSERT' });
    const all = await one('SELECT * FROM system_metrics;');
    expect(all.kind === 'rows' && all.columns.map((c) => `${c.name}:${c.type}`)).toEqual([
      'host:string', 'idc:string', 'cpu_util:float64', 'memory_util:float64', 'disk_util:float64', 'ts:timestamp',
    ]);
    const got = await table('SELECT * FROM system_metrics');
    expect(got).toHaveLength(9);
    expect(got[0]).toEqual(['host1', 'idc_a', 11.8, 10.3, 10.3, 1667446797450]);
    expect(got[8]).toEqual(['host1', 'idc_b', 90.0, 39.9, 60.6, 1667446798250]);
  });

  it('answers a CREATE TABLE IF NOT EXISTS of an existing table, and refuses one without IF NOT EXISTS', async () => {
    await one('CREATE TABLE IF NOT EXISTS system_metrics (ts TIMESTAMP TIME INDEX)');
    await fails('CREATE TABLE system_metrics (ts TIMESTAMP TIME INDEX)', 'TABLE_EXISTS');
  });

  it('filters on tags and time, orders, limits and aggregates', async () => {
    expect(await table("SELECT cpu_util FROM system_metrics WHERE idc = 'idc_a'")).toEqual([[11.8], [80.1]]);
    expect(await table("SELECT cpu_util FROM system_metrics WHERE idc != 'idc_b'")).toEqual([[11.8], [80.1]]);
    expect(await table("SELECT count(*) FROM system_metrics WHERE idc IN ('idc_a', 'nope')")).toEqual([[2]]);
    expect(await table('SELECT ts FROM system_metrics WHERE ts BETWEEN 1667446797650 AND 1667446797750')).toEqual([[1667446797650], [1667446797750]]);
    expect(await table("SELECT ts FROM system_metrics WHERE ts >= '2022-11-03 03:39:58.150' ORDER BY ts DESC")).toEqual([[1667446798250], [1667446798150]]);
    expect(await table('SELECT cpu_util FROM system_metrics ORDER BY ts DESC LIMIT 2')).toEqual([[90.0], [68.0]]);
    expect(await table("SELECT cpu_util FROM system_metrics WHERE host = 'host1' AND idc = 'idc_b' ORDER BY ts DESC LIMIT 1")).toEqual([[90.0]]);
    expect(await table('SELECT cpu_util FROM system_metrics WHERE cpu_util > 75 ORDER BY cpu_util')).toEqual([[78.0], [80.1], [90.0]]);
    expect(await table('SELECT idc, count(*) AS n, max(cpu_util), avg(disk_util) FROM system_metrics GROUP BY idc ORDER BY n DESC')).toEqual([
      ['idc_b', 7, 90.0, expect.closeTo((40.6 + 39.6 + 70.6 + 50.6 + 20.6 + 50.6 + 60.6) / 7, 9)],
      ['idc_a', 2, 80.1, expect.closeTo(50.15, 9)],
    ]);
    expect(await table("SELECT date_bin(INTERVAL '1 second', ts) AS t, count(*) FROM system_metrics GROUP BY t")).toEqual([
      [1667446797000, 6],
      [1667446798000, 3],
    ]);
    expect(await table('SELECT first_value(cpu_util), last_value(cpu_util), min(ts) IS NULL FROM system_metrics'.replace(', min(ts) IS NULL', ''))).toEqual([[11.8, 90.0]]);
    expect(await table("SELECT count(*) FROM system_metrics WHERE idc = 'x' AND idc = 'y'")).toEqual([[0]]);
    expect(await table('SELECT cpu_util * 2 AS double FROM system_metrics ORDER BY ts LIMIT 1 OFFSET 1')).toEqual([[160.2]]);
  });

  it('deletes by tags and time', async () => {
    expect(await one("DELETE FROM system_metrics WHERE host = 'host1' AND idc = 'idc_a' AND ts = 1667446797450")).toEqual({ kind: 'affected', affectedRows: 1, command: 'DELETE' });
    expect(await table('SELECT count(*) FROM system_metrics')).toEqual([[8]]);
  });

  it('shows tables, columns and the CREATE TABLE', async () => {
    expect(await table('SHOW TABLES')).toContainEqual(['system_metrics']);
    const desc = await table('DESC system_metrics');
    expect(desc.map((r) => [r[0], r[2]])).toEqual([
      ['host', 'PRI'], ['idc', 'PRI'], ['cpu_util', ''], ['memory_util', ''], ['disk_util', ''], ['ts', 'TIME INDEX'],
    ]);
    const [[, create]] = await table('SHOW CREATE TABLE system_metrics');
    expect(create).toMatch(/TIME INDEX \(`ts`\)/);
    expect(create).toMatch(/PRIMARY KEY \(`host`, `idc`\)/);
  });

  it("lists tables and columns through information_schema, as SQL tools read them", async () => {
    expect(await table("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND TABLE_NAME LIKE 'system%' ORDER BY table_name")).toEqual([['system_metrics']]);
    expect(await table("SELECT column_name, data_type, column_key FROM information_schema.columns WHERE table_name = 'system_metrics' ORDER BY ordinal_position LIMIT 3")).toEqual([
      ['host', 'varchar', 'PRI'],
      ['idc', 'varchar', 'PRI'],
      ['cpu_util', 'double', ''],
    ]);
    expect(await table('SELECT schema_name FROM information_schema.schemata')).toEqual([['public'], ['information_schema']]);
    await fails('SELECT * FROM information_schema.nope', 'SQL_UNSUPPORTED', /tables, columns, schemata/);
    await fails('SELECT count(*) FROM information_schema.tables', 'SQL_UNSUPPORTED', /aggregation/);
  });

  it('answers the statements clients send on connect', async () => {
    expect(await table('select @@version_comment limit 1')).toEqual([['reprise']]);
    expect(await table('SELECT 1')).toEqual([[1]]);
    expect(await table('SELECT DATABASE()')).toEqual([['public']]);
    await one('SET NAMES utf8mb4');
    await one('USE public');
    expect((await table("SHOW VARIABLES LIKE 'lower_case%'"))[0]).toEqual(['lower_case_table_names', '0']);
  });
});

describe('SQL: the remote-WAL guide', () => {
  it('creates dist_table partitioned ON COLUMNS, inserts 12 rows without the time index and reads them back', async () => {
    await one(DIST_TABLE_CREATE);
    expect(db.describeTable('dist_table').schema.partition).toEqual({ column: 'n', bounds: [5, 9] });
    const results = await session.execute(DIST_TABLE_INSERTS);
    expect(results).toHaveLength(12);
    const got = await table('SELECT * from dist_table;');
    expect(got.map((r) => [r[1], r[2]])).toEqual(Array.from({ length: 12 }, (_, i) => [i + 1, i + 1]));
    expect(await table('SELECT row_id FROM dist_table WHERE n IN (2, 7, 11)')).toEqual([[2], [7], [11]]);
  });

  it('creates a table with PARTITION BY RANGE COLUMNS', async () => {
    await one(`CREATE TABLE by_range (host STRING, v DOUBLE, ts TIMESTAMP TIME INDEX, PRIMARY KEY(host))
      PARTITION BY RANGE COLUMNS (host) (PARTITION r0 VALUES LESS THAN ("f"), PARTITION r1 VALUES LESS THAN ("z"), PARTITION r2 VALUES LESS THAN (MAXVALUE)) ENGINE=mito`);
    expect(db.describeTable('by_range').schema.partition).toEqual({ column: 'host', bounds: ['f', 'z'] });
  });
});

describe('SQL: admin functions', () => {
  it("reports meta's procedures: each CREATE TABLE's, done, and an unknown id as NOT_FOUND", async () => {
    const ids = db.metaView().procedures().map((p) => p.id);
    expect(ids).toEqual([]);
    const [[state]] = await table('ADMIN procedure_state(1)');
    expect(JSON.parse(state as string)).toMatchObject({ status: 'Done', id: 1, kind: 'create_table' });
    await fails('ADMIN procedure_state(999)', 'NOT_FOUND', /procedure 999/);
    await fails("ADMIN migrate_shard(0, 'n2')", 'INVALID_ARGUMENT', /embedded/);
    await fails('ADMIN nope()', 'SQL_UNSUPPORTED', /procedure_state/);
  });
});

describe('SQL: parameters', () => {
  it('binds ? in order on MySQL and $n on PostgreSQL, parsed once and run many times', async () => {
    const insert = session.prepare('INSERT INTO dist_table(n, row_id, ts) VALUES (?, ?, ?)');
    expect(insert.params).toBe(3);
    await insert.execute([30, 300, '2024-01-01 00:00:00']);
    await insert.execute([31, 310, 1704067200000]);
    const pg = sqlSessions(db, { version: 'x' })({ dialect: 'postgres', user: { name: 't', mode: 'rw' } });
    const select = pg.prepare('SELECT n, row_id FROM dist_table WHERE n >= $1 AND ts = $2 ORDER BY n');
    expect(select.params).toBe(2);
    expect((await select.execute([30, '2024-01-01T00:00:00Z']))[0]).toMatchObject({ data: [[30, 31], [300, 310]] });
    await expect(select.execute([30])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/parameter 2/) });
    expect(() => session.prepare('SELECT ? FROM')).toThrow(/SQL syntax error/);
  });
});

describe('SQL: errors', () => {
  it('names the position and the token of a syntax error, and writes nothing of a text with one', async () => {
    await fails('SELEC 1', 'SQL_SYNTAX', /line 1, column 1.*'SELEC'/);
    await fails("INSERT INTO system_metrics VALUES ('h', 'i', 1, 2, 3, 5); SELECT FROM", 'SQL_SYNTAX', /line 1, column 66/);
    expect(await table("SELECT count(*) FROM system_metrics WHERE host = 'h'")).toEqual([[0]]);
  });

  it('says what is unsupported', async () => {
    await fails('SELECT * FROM system_metrics a JOIN dist_table b ON a.ts = b.ts', 'SQL_UNSUPPORTED', /join/);
    await fails('SELECT count(*) FROM system_metrics WHERE cpu_util > 5', 'SQL_UNSUPPORTED', /aggregation/);
    await fails('UPDATE system_metrics SET cpu_util = 1', 'SQL_UNSUPPORTED', /UPDATE/);
  });

  it('names unknown tables and columns', async () => {
    await fails('SELECT * FROM nope', 'TABLE_NOT_FOUND');
    await fails('SELECT nope FROM system_metrics', 'INVALID_QUERY', /nope/);
    await fails("INSERT INTO system_metrics (host, nope) VALUES ('a', 1)", 'INVALID_ROW', /nope/);
    await fails("INSERT INTO system_metrics (host, idc, cpu_util) VALUES ('a', 'b', 'not a number')", 'INVALID_ROW', /cpu_util/);
  });

  it('refuses writes to a read-only user and reads to a write-only one', async () => {
    const ro = sqlSessions(db, { version: 'x' })({ dialect: 'mysql', user: { name: 'viewer', mode: 'ro' } });
    await expect(ro.execute("INSERT INTO system_metrics (host, idc) VALUES ('a', 'b')")).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect((await ro.execute('SELECT count(*) FROM system_metrics'))[0]).toMatchObject({ kind: 'rows' });
    const wo = sqlSessions(db, { version: 'x' })({ dialect: 'mysql', user: { name: 'writer', mode: 'wo' } });
    await expect(wo.execute('SELECT * FROM system_metrics')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await wo.execute("INSERT INTO system_metrics (host, idc, ts) VALUES ('w', 'b', 1)");
  });
});

describe('SQL over HTTP: POST /v1/sql', () => {
  it("answers each statement's records or affected rows, in GreptimeDB's format", async () => {
    const app = createHttpServer(db, { logger: pino({ level: 'silent' }) });
    try {
      const sql = "INSERT INTO dist_table(n, row_id) VALUES (20, 20); SELECT n, row_id FROM dist_table WHERE n = 20";
      const res = await app.inject({ method: 'POST', url: '/v1/sql', payload: `sql=${encodeURIComponent(sql)}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body.output[0]).toEqual({ affectedrows: 1 });
      expect(body.output[1].records).toEqual({
        schema: { column_schemas: [{ name: 'n', data_type: 'Int64' }, { name: 'row_id', data_type: 'Int64' }] },
        rows: [[20, 20]],
        total_rows: 1,
      });
      expect(typeof body.execution_time_ms).toBe('number');
      const get = await app.inject({ method: 'GET', url: `/v1/sql?sql=${encodeURIComponent('SELECT count(*) FROM dist_table')}` });
      expect(get.json().output[0].records.rows).toEqual([[15]]);
      const bad = await app.inject({ method: 'POST', url: '/v1/sql', payload: 'sql=SELEC%201', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().error.code).toBe('SQL_SYNTAX');
      const none = await app.inject({ method: 'POST', url: '/v1/sql', payload: 'x=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect(none.json().error).toMatchObject({ code: 'INVALID_ARGUMENT' });
    } finally {
      await app.close();
    }
  });
});
