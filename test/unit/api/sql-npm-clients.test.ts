import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMysqlServer } from '../../../src/api/mysql.js';
import { startPostgresServer } from '../../../src/api/postgres.js';
import type { SqlProtocolServer } from '../../../src/api/sql-protocol.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { sqlServerVersion } from '../../../src/api/version.js';
import { sqlSessions } from '../../../src/frontend/sql/session.js';

// The npm drivers applications use, mysql2 and pg, against the real SQL
// layer over both protocols: every statement kind, with parameters (mysql2's
// execute is a binary prepared statement, pg's parameterised query the
// extended protocol), and the errors each protocol codes.

const logger = pino({ level: 'silent' });
let dir: string;
let db: Reprise;
let mysqlServer: SqlProtocolServer;
let pgServer: SqlProtocolServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-npm-sql-'));
  db = await open({ dataDir: dir, logger });
  const sessions = sqlSessions(db, { version: sqlServerVersion() });
  mysqlServer = await startMysqlServer({ host: '127.0.0.1', port: 0, sessions, logger });
  pgServer = await startPostgresServer({ host: '127.0.0.1', port: 0, sessions, logger });
});

afterAll(async () => {
  await mysqlServer?.close();
  await pgServer?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

const CREATE = (name: string) => `CREATE TABLE ${name} (
  host STRING, region STRING, usage DOUBLE, cores BIGINT, up BOOLEAN, ts TIMESTAMP TIME INDEX,
  PRIMARY KEY (host, region)
) PARTITION ON COLUMNS (host) (host < 'm', host >= 'm')`;

describe('mysql2 (query and execute)', () => {
  it('runs every statement kind, with ? parameters, and reads typed values back', async () => {
    const conn = await mysql.createConnection({ host: '127.0.0.1', port: mysqlServer.address.port, user: 'app', database: 'public' });
    try {
      await conn.query('SET NAMES utf8mb4');
      await conn.query('USE public');
      await conn.query(CREATE('my_metrics'));
      const [created] = await conn.query('SHOW TABLES');
      expect(created).toContainEqual({ Tables: 'my_metrics' });
      const insert = 'INSERT INTO my_metrics (host, region, usage, cores, up, ts) VALUES (?, ?, ?, ?, ?, ?)';
      const [one] = await conn.execute(insert, ['alpha', 'eu', 12.5, 8, true, new Date(Date.UTC(2024, 0, 1))]);
      expect((one as mysql.ResultSetHeader).affectedRows).toBe(1);
      await conn.execute(insert, ['zulu', 'us', 99.5, 16, false, '2024-01-01 00:00:01.500']);
      await conn.query("INSERT INTO my_metrics VALUES ('mike', 'eu', NULL, 4, 1, 1704067202000), ('mike', 'us', 1.25, 2, 0, 1704067203000)");

      const [rows] = await conn.execute('SELECT host, usage, cores, up, ts FROM my_metrics WHERE region = ? AND ts >= ? ORDER BY host', ['eu', '2024-01-01']);
      expect(rows).toEqual([
        { host: 'alpha', usage: 12.5, cores: 8, up: 1, ts: new Date(Date.UTC(2024, 0, 1)) },
        { host: 'mike', usage: null, cores: 4, up: 1, ts: new Date(Date.UTC(2024, 0, 1, 0, 0, 2)) },
      ]);
      const [text] = await conn.query("SELECT host, ts FROM my_metrics WHERE host = 'zulu'");
      expect(text).toEqual([{ host: 'zulu', ts: new Date(Date.UTC(2024, 0, 1, 0, 0, 1, 500)) }]);
      const [agg] = await conn.execute("SELECT region, count(*) AS n, sum(cores) AS cores, max(usage) AS peak FROM my_metrics WHERE host IN (?, ?, ?) GROUP BY region", ['alpha', 'mike', 'zulu']);
      expect(agg).toEqual([
        { region: 'eu', n: 2, cores: 12, peak: 12.5 },
        { region: 'us', n: 2, cores: 18, peak: 99.5 },
      ]);
      const [desc] = await conn.query('DESC my_metrics');
      expect((desc as { Column: string }[]).map((c) => c.Column)).toEqual(['host', 'region', 'usage', 'cores', 'up', 'ts']);
      const [show] = await conn.query('SHOW CREATE TABLE my_metrics');
      expect((show as Record<string, string>[])[0]['Create Table']).toMatch(/PARTITION ON COLUMNS \(`host`\)/);
      const [deleted] = await conn.execute('DELETE FROM my_metrics WHERE host = ? AND region = ?', ['mike', 'us']);
      expect((deleted as mysql.ResultSetHeader).affectedRows).toBe(1);
      const [flushed] = await conn.query("ADMIN flush_table('my_metrics')");
      expect(flushed).toHaveLength(1);
      const [after] = await conn.query('SELECT count(*) AS n FROM my_metrics');
      expect(after).toEqual([{ n: 3 }]);
      const [[version]] = (await conn.query('SELECT @@version_comment AS c, version() AS v')) as unknown as [{ c: string; v: string }[]];
      expect(version).toEqual({ c: 'reprise', v: sqlServerVersion() });
      await conn.query('DROP TABLE my_metrics');
      const [gone] = await conn.query('SHOW TABLES');
      expect(gone).not.toContainEqual({ Tables: 'my_metrics' });
    } finally {
      await conn.end();
    }
  });

  it('answers errors with their MySQL numbers and SQLSTATEs, and the connection goes on', async () => {
    const conn = await mysql.createConnection({ host: '127.0.0.1', port: mysqlServer.address.port, user: 'app' });
    try {
      const cases: [string, (string | number)[] | undefined, number, string, RegExp][] = [
        ['SELEC 1', undefined, 1064, '42000', /line 1, column 1.*'SELEC'/],
        ['SELECT * FROM nope', undefined, 1146, '42S02', /nope/],
        ['SELECT * FROM a JOIN b ON a.x = b.x', undefined, 1235, '42000', /join/],
        [CREATE('dup'), undefined, 0, '', /./],
        [CREATE('dup'), undefined, 1050, '42S01', /dup/],
        ['INSERT INTO dup (host, region, cores, ts) VALUES (?, ?, ?, ?)', ['h', 'r', 'many', 1], 1366, 'HY000', /cores/],
        ['SELECT host FROM dup WHERE host = ?', [], 1210, 'HY000', /takes 1 parameter, none were sent/],
      ];
      for (const [sql, params, errno, sqlState, message] of cases) {
        const run = params === undefined ? conn.query(sql) : conn.execute(sql, params);
        const err = await run.then(
          () => undefined,
          (e: { errno: number; sqlState: string; message: string }) => e,
        );
        if (errno === 0) expect(err, sql).toBeUndefined();
        else expect({ sql, errno: err?.errno, sqlState: err?.sqlState, message: err?.message }).toEqual({ sql, errno, sqlState, message: expect.stringMatching(message) });
      }
      const [ok] = await conn.query('SELECT 1 AS one');
      expect(ok).toEqual([{ one: 1 }]);
      expect(await db.query('dup')).toEqual([]);
    } finally {
      await conn.end();
    }
  });
});

describe('pg (simple and extended protocol)', () => {
  it('runs every statement kind, with $n parameters, and reads typed values back', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: pgServer.address.port, user: 'app', database: 'public' });
    await client.connect();
    try {
      await client.query(CREATE('pg_metrics'));
      const insert = 'INSERT INTO pg_metrics (host, region, usage, cores, up, ts) VALUES ($1, $2, $3, $4, $5, $6)';
      expect((await client.query(insert, ['alpha', 'eu', 12.5, 8, true, new Date(Date.UTC(2024, 0, 1))])).rowCount).toBe(1);
      expect((await client.query(insert, ['zulu', 'us', 99.5, 16, false, '2024-01-01 00:00:01.500'])).rowCount).toBe(1);
      const inserted = await client.query("INSERT INTO pg_metrics VALUES ('mike', 'eu', NULL, 4, true, 1704067202000), ('mike', 'us', 1.25, 2, false, 1704067203000)");
      expect([inserted.command, inserted.rowCount]).toEqual(['INSERT', 2]);

      const rows = await client.query('SELECT host, usage, cores, up, ts FROM pg_metrics WHERE region = $1 AND ts >= $2 ORDER BY host', ['eu', '2024-01-01']);
      expect(rows.fields.map((f) => [f.name, f.dataTypeID])).toEqual([['host', 25], ['usage', 701], ['cores', 20], ['up', 16], ['ts', 1114]]);
      // pg reads timestamp (no zone) as local time: compare the text it was sent.
      expect(rows.rows.map((r) => [r.host, r.usage, r.cores, r.up])).toEqual([
        ['alpha', 12.5, '8', true],
        ['mike', null, '4', true],
      ]);
      const times = await client.query({ text: 'SELECT ts FROM pg_metrics WHERE host = $1 ORDER BY ts', values: ['mike'], rowMode: 'array', types: { getTypeParser: () => (v: string) => v } as never });
      expect(times.rows).toEqual([['2024-01-01 00:00:02.000'], ['2024-01-01 00:00:03.000']]);
      const agg = await client.query('SELECT region, count(*) AS n, sum(cores) AS cores FROM pg_metrics GROUP BY region');
      expect(agg.rows).toEqual([
        { region: 'eu', n: '2', cores: '12' },
        { region: 'us', n: '2', cores: '18' },
      ]);
      const deleted = await client.query('DELETE FROM pg_metrics WHERE host = $1', ['mike']);
      expect([deleted.command, deleted.rowCount]).toEqual(['DELETE', 2]);
      expect((await client.query('SHOW TABLES')).rows).toContainEqual({ Tables: 'pg_metrics' });
      expect((await client.query('DESC pg_metrics')).rows.map((r) => r.Column)).toEqual(['host', 'region', 'usage', 'cores', 'up', 'ts']);
      expect((await client.query("ADMIN flush_table('pg_metrics')")).rows).toHaveLength(1);
      expect((await client.query('SELECT count(*) AS n FROM pg_metrics')).rows).toEqual([{ n: '2' }]);
      const dropped = await client.query('DROP TABLE pg_metrics');
      expect(dropped.command).toBe('DROP');
    } finally {
      await client.end();
    }
  });

  it('answers errors with their SQLSTATEs, and the connection goes on', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: pgServer.address.port, user: 'app', database: 'public' });
    await client.connect();
    try {
      const cases: [string, unknown[] | undefined, string, RegExp][] = [
        ['SELEC 1', undefined, '42601', /line 1, column 1.*'SELEC'/],
        ['SELECT * FROM nope', undefined, '42P01', /nope/],
        ['SELECT * FROM nope WHERE x = $1', [1], '42P01', /nope/],
        ['SELECT * FROM a JOIN b ON a.x = b.x', undefined, '0A000', /join/],
        ['UPDATE t SET x = 1', undefined, '0A000', /UPDATE/],
      ];
      for (const [sql, params, code, message] of cases) {
        const err = await client.query(sql, params).then(
          () => undefined,
          (e: { code: string; message: string }) => e,
        );
        expect({ sql, code: err?.code, message: err?.message }).toEqual({ sql, code, message: expect.stringMatching(message) });
      }
      expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: '1' }]);
    } finally {
      await client.end();
    }
  });
});
