import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';

// Property: a query asked through POST /v1/sql answers what the same query
// asked through the JSON query API answers: the same rows (or groups), in
// the same order, over a partitioned table with rows in SSTs and memtables.

const HOSTS = ['alpha', 'bravo', 'golf', 'kilo', 'tango', 'zulu'];
const IDCS = ['east', 'west'];
const FIELDS = ['cpu', 'mem'];
const FNS = ['count', 'sum', 'avg', 'min', 'max', 'first', 'last'] as const;
const SQL_FN: Record<(typeof FNS)[number], string> = { count: 'count', sum: 'sum', avg: 'avg', min: 'min', max: 'max', first: 'first_value', last: 'last_value' };

let dir: string;
let db: Reprise;
let app: ReturnType<typeof createHttpServer>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-sql-prop-'));
  db = await open({ dataDir: dir, logger: pino({ level: 'silent' }) });
  app = createHttpServer(db, { logger: pino({ level: 'silent' }) });
  await db.createTable({
    name: 'metrics',
    columns: [
      { name: 'host', type: 'string', role: 'tag' },
      { name: 'idc', type: 'string', role: 'tag' },
      { name: 'cpu', type: 'float64', role: 'field' },
      { name: 'mem', type: 'float64', role: 'field' },
      { name: 'ts', type: 'timestamp', role: 'time' },
    ],
    partition: { column: 'host', bounds: ['c', 'p'] },
  });
  const rows = [];
  for (let i = 0; i < 3_000; i++) {
    rows.push({ host: HOSTS[i % HOSTS.length], idc: IDCS[(i >> 3) % 2], cpu: (i * 37) % 101, mem: i % 7 === 0 ? null : (i * 13) % 17, ts: 1_000 + i * 250 });
  }
  await db.insert('metrics', rows.slice(0, 2_000));
  await db.flush();
  await db.insert('metrics', rows.slice(2_000));
});

afterAll(async () => {
  await app?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

const quote = (s: string) => `'${s}'`;

const hostCondition = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom(...HOSTS).map((h) => ({ json: h as unknown, sql: `host = ${quote(h)}` })),
  fc.uniqueArray(fc.constantFrom(...HOSTS), { minLength: 1, maxLength: 3 }).map((hs) => ({ json: { in: hs } as unknown, sql: `host IN (${hs.map(quote).join(', ')})` })),
  fc.constantFrom(...HOSTS).map((h) => ({ json: { notIn: [h] } as unknown, sql: `host != ${quote(h)}` })),
  fc.tuple(fc.constantFrom(...HOSTS), fc.constantFrom(...HOSTS)).map(([a, b]) => {
    const [lo, hi] = a < b ? [a, b] : [b, a];
    return { json: { gte: lo, lt: hi } as unknown, sql: `host >= ${quote(lo)} AND host < ${quote(hi)}` };
  }),
);
const idcCondition = fc.oneof(fc.constant(undefined), fc.constantFrom(...IDCS).map((d) => ({ json: d as unknown, sql: `idc = ${quote(d)}` })));
const timeRange = fc.oneof(
  fc.constant(undefined),
  // On the rows' own times (1,000 + 250 i) half the time, so bounds land on rows.
  fc.tuple(fc.integer({ min: 0, max: 3_200 }), fc.integer({ min: 1, max: 1_600 }), fc.boolean()).map(([k, span, onRow]) => ({ from: 1_000 + k * 250 + (onRow ? 0 : 7), to: 1_000 + (k + span) * 250 })),
);

const query = fc.record({
  host: hostCondition,
  idc: idcCondition,
  time: timeRange,
  limit: fc.option(fc.integer({ min: 1, max: 50 }), { nil: undefined }),
  desc: fc.boolean(),
  aggregate: fc.option(
    fc.record({
      groupBy: fc.subarray(['host', 'idc']),
      interval: fc.option(fc.constantFrom(1_000, 60_000, 3_600_000), { nil: undefined }),
      fns: fc.uniqueArray(fc.tuple(fc.constantFrom(...FNS), fc.constantFrom(...FIELDS)), { minLength: 1, maxLength: 3, selector: ([f, c]) => `${f}(${c})` }),
    }),
    { nil: undefined },
  ),
  columns: fc.subarray(['host', 'idc', 'cpu', 'mem', 'ts'], { minLength: 1 }),
});

type Query = typeof query extends fc.Arbitrary<infer Q> ? Q : never;

function asJson(q: Query): Record<string, unknown> {
  const where: Record<string, unknown> = {};
  if (q.host) where.host = q.host.json;
  if (q.idc) where.idc = q.idc.json;
  return {
    ...(Object.keys(where).length > 0 ? { where } : {}),
    ...(q.time ? { timeRange: q.time } : {}),
    ...(q.limit !== undefined ? { limit: q.limit } : {}),
    ...(q.aggregate
      ? {
          ...(q.aggregate.groupBy.length > 0 ? { groupBy: q.aggregate.groupBy } : {}),
          ...(q.aggregate.interval !== undefined ? { interval: q.aggregate.interval } : {}),
          aggregates: q.aggregate.fns.map(([fn, column]) => ({ fn, column })),
        }
      : { columns: q.columns, ...(q.desc ? { order: 'desc' } : {}) }),
  };
}

function asSql(q: Query): string {
  const conditions = [q.host?.sql, q.idc?.sql, q.time ? `ts >= ${q.time.from} AND ts < ${q.time.to}` : undefined].filter((c) => c !== undefined);
  const where = conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
  const limit = q.limit !== undefined ? ` LIMIT ${q.limit}` : '';
  if (q.aggregate) {
    const bucket = q.aggregate.interval !== undefined ? `date_bin(INTERVAL '${q.aggregate.interval} milliseconds', ts)` : undefined;
    const keys = [...q.aggregate.groupBy, ...(bucket ? [bucket] : [])];
    const items = [...q.aggregate.groupBy, ...(bucket ? [`${bucket} AS ts`] : []), ...q.aggregate.fns.map(([fn, c]) => `${SQL_FN[fn]}(${c}) AS "${fn}(${c})"`)];
    return `SELECT ${items.join(', ')} FROM metrics${where}${keys.length > 0 ? ` GROUP BY ${keys.join(', ')}` : ''}${limit}`;
  }
  const order = q.desc ? ' ORDER BY host DESC, idc DESC, ts DESC' : '';
  return `SELECT ${q.columns.join(', ')} FROM metrics${where}${order}${limit}`;
}

describe('/v1/sql against the JSON query API', () => {
  it('answers the same rows and groups for the same query', async () => {
    await fc.assert(
      fc.asyncProperty(query, async (q) => {
        const json = await app.inject({ method: 'POST', url: '/v1/tables/metrics/query', payload: asJson(q) });
        expect(json.statusCode, json.body).toBe(200);
        const expected = (json.json() as { rows: Record<string, unknown>[] }).rows;
        const sqlText = asSql(q);
        const sql = await app.inject({ method: 'POST', url: '/v1/sql', payload: { sql: sqlText } });
        expect(sql.statusCode, `${sqlText}: ${sql.body}`).toBe(200);
        const { records } = (sql.json() as { output: { records: { schema: { column_schemas: { name: string }[] }; rows: unknown[][] } }[] }).output[0];
        const names = records.schema.column_schemas.map((c) => c.name);
        const got = records.rows.map((row) => Object.fromEntries(names.map((n, i) => [n, row[i]])));
        // A whole-table aggregate over no rows: SQL answers one row (count 0), the JSON API none.
        if (q.aggregate && q.aggregate.groupBy.length === 0 && q.aggregate.interval === undefined && expected.length === 0) {
          expect(got).toHaveLength(1);
          return;
        }
        expect(got, sqlText).toEqual(expected);
      }),
      { numRuns: 150, seed: 20261203 },
    );
  });
});
