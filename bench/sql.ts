import mysql from 'mysql2/promise';
import pg from 'pg';
import { freePort } from '../test/harness/nats-server.js';
import { CORES_PER_HOST, MEASUREMENT, START_MS, STEP_MS, coreName, hostCount, hostName } from './lib/cpu-lines.js';
import { collectGarbage, removeDir, tempDir } from './lib/fixtures.js';
import { closeIdleSockets, httpCall, postJson } from './lib/http.js';
import { waitQuiet } from './lib/proc.js';
import type { Metric } from './lib/report.js';
import { quantile } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';
import { expectStatus, load, makeReprise, seededDraws, type Peer } from './peer.js';

/**
 * The SQL front doors against the JSON query API, on one `reprise standalone`
 * loaded the way the peer suite loads it (lib/cpu-lines.ts, 1,000 series x
 * 1,000 points by default, then POST /v1/flush). Every SQL SELECT is planned
 * onto the same engine query as the JSON API, so the difference is what each
 * door costs for the same answer: parsing and planning the SQL, and encoding
 * the rows for its protocol (and the client decoding them).
 *
 * Doors: the JSON API (POST /v1/tables/cpu/query), POST /v1/sql (form field
 * `sql`), MySQL (mysql2/promise, one connection, text `query`) and PostgreSQL
 * (pg, one Client, simple query). Once the server's CPU is quiet after the
 * load, each shape's first query (untimed) is
 * answered by every door and the row counts checked equal; then `--peer-runs`
 * runs, each with its own host/series/window (the same sequence for every
 * door), the doors taking turns within a run (rotating who goes first), and
 * every run's row counts checked equal too. A time is the request until the
 * client has the rows.
 */

const RUN_ID = 'sql';
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const TIMEOUT_MS = 300_000;

const DOORS = ['json', 'http_sql', 'mysql', 'postgres'] as const;
type DoorName = (typeof DOORS)[number];
const DOOR_LABEL: Record<DoorName, string> = { json: 'JSON API', http_sql: '/v1/sql', mysql: 'MySQL', postgres: 'PostgreSQL' };

/** One question, asked of the JSON API and in SQL. */
interface Case {
  readonly label: string;
  readonly json: Record<string, unknown>;
  readonly sql: string;
}

interface Shape {
  readonly id: string;
  readonly name: string;
  /** The query of timed run `i` (i = -1: the first check, untimed). */
  make(i: number): Case;
}

type Door = (q: Case) => Promise<number>;

function shapes(series: number, points: number): Shape[] {
  const hosts = hostCount(series);
  const spanMs = points * STEP_MS;
  const endMs = START_MS + spanMs;
  const { draw, windowStart } = seededDraws(29, spanMs);
  const series1 = (key: string, i: number) => {
    const s = draw(key, i, series);
    return { host: hostName(Math.floor(s / CORES_PER_HOST)), core: coreName(s % CORES_PER_HOST) };
  };
  return [
    {
      id: 's1',
      name: 's1 one series, 10 min',
      make(i) {
        const { host, core } = series1('s1', i);
        const from = windowStart('s1w', i, 10 * MINUTE);
        const to = from + 10 * MINUTE;
        return {
          label: `s1 ${host}/${core} @${from}`,
          json: { where: { host, core }, timeRange: { from, to } },
          sql: `SELECT * FROM ${MEASUREMENT} WHERE host = '${host}' AND core = '${core}' AND ts >= ${from} AND ts < ${to}`,
        };
      },
    },
    {
      id: 's2',
      name: 's2 one host (5 series), 1 h',
      make(i) {
        const host = hostName(draw('s2', i, hosts));
        const from = windowStart('s2w', i, HOUR);
        const to = from + HOUR;
        return {
          label: `s2 ${host} @${from}`,
          json: { where: { host }, timeRange: { from, to } },
          sql: `SELECT * FROM ${MEASUREMENT} WHERE host = '${host}' AND ts >= ${from} AND ts < ${to}`,
        };
      },
    },
    {
      id: 's3',
      name: 's3 last point of one series',
      make(i) {
        const { host, core } = series1('s3', i);
        return {
          label: `s3 ${host}/${core}`,
          json: { where: { host, core }, order: 'desc', limit: 1 },
          sql: `SELECT * FROM ${MEASUREMENT} WHERE host = '${host}' AND core = '${core}' ORDER BY ts DESC LIMIT 1`,
        };
      },
    },
    {
      id: 's4',
      name: 's4 max per 10 min, one host, all',
      make(i) {
        const host = hostName(draw('s4', i, hosts));
        return {
          label: `s4 ${host}`,
          json: { where: { host }, timeRange: { from: START_MS, to: endMs }, groupBy: ['host'], interval: 10 * MINUTE, aggregates: [{ fn: 'max', column: 'usage_user' }] },
          sql:
            `SELECT host, date_bin(INTERVAL '10 minutes', ts) AS ts, max(usage_user) FROM ${MEASUREMENT} ` +
            `WHERE host = '${host}' AND ts >= ${START_MS} AND ts < ${endMs} GROUP BY host, date_bin(INTERVAL '10 minutes', ts)`,
        };
      },
    },
  ];
}

// ---------------------------------------------------------------- doors

function jsonDoor(url: string): Door {
  return async (q) => {
    const { status, json } = await postJson(`${url}/v1/tables/${MEASUREMENT}/query`, q.json, TIMEOUT_MS);
    if (status !== 200 || !Array.isArray(json?.rows)) throw new Error(`sql: JSON API ${q.label}: HTTP ${status}: ${JSON.stringify(json).slice(0, 2000)}\nquery: ${JSON.stringify(q.json)}`);
    return json.rows.length as number;
  };
}

function httpSqlDoor(url: string): Door {
  return async (q) => {
    const res = await httpCall(`${url}/v1/sql`, {
      method: 'POST',
      body: new URLSearchParams({ sql: q.sql }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      timeoutMs: TIMEOUT_MS,
    });
    const json = JSON.parse(res.body.toString('utf8')) as { output?: { records?: { rows?: unknown[][] } }[] };
    const rows = json.output?.[0]?.records?.rows;
    if (res.status !== 200 || !Array.isArray(rows)) throw new Error(`sql: /v1/sql ${q.label}: HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 2000)}\nsql: ${q.sql}`);
    return rows.length;
  };
}

/** "host:port" of a door from its flag. */
function addr(port: number): string {
  return `127.0.0.1:${port}`;
}

// ---------------------------------------------------------------- metrics

interface ShapeResult {
  readonly id: string;
  readonly name: string;
  readonly ms: Record<DoorName, number[]>;
  /** Rows of each run's answer (the same from every door, checked). */
  readonly rows: number[];
}

async function runShape(shape: Shape, doors: Record<DoorName, Door>, runs: number, ctx: SuiteContext): Promise<ShapeResult> {
  const countAll = async (q: Case, order: readonly DoorName[], ms?: Record<DoorName, number[]>) => {
    const counts = {} as Record<DoorName, number>;
    for (const name of order) {
      const t0 = performance.now();
      counts[name] = await doors[name](q);
      ms?.[name].push(performance.now() - t0);
    }
    if (DOORS.some((d) => counts[d] !== counts.json)) {
      throw new Error(`sql: ${q.label}: the doors answer different row counts: ${JSON.stringify(counts)}\nJSON: ${JSON.stringify(q.json)}\nSQL: ${q.sql}`);
    }
    return counts.json;
  };
  const first = shape.make(-1);
  const n = await countAll(first, DOORS);
  if (n === 0) throw new Error(`sql: ${first.label}: every door answered no rows: the query selects nothing, which checks nothing\nSQL: ${first.sql}`);
  ctx.log(`  ${shape.id}: every door answers the same ${n} rows (${first.label})`);
  const ms: Record<DoorName, number[]> = { json: [], http_sql: [], mysql: [], postgres: [] };
  const rows: number[] = [];
  collectGarbage();
  for (let i = 0; i < runs; i++) {
    // The doors take turns, rotating who goes first, so noise on the VM hits all of them.
    const order = DOORS.map((_, k) => DOORS[(i + k) % DOORS.length]!);
    rows.push(await countAll(shape.make(i), order, ms));
  }
  const fmt = (d: DoorName) => `${d} ${quantile(ms[d], 0.5).toFixed(2)}/${quantile(ms[d], 0.99).toFixed(2)}`;
  ctx.log(`  ${shape.name} (${runs} runs, p50/p99 ms): ${DOORS.map(fmt).join(', ')}`);
  return { id: shape.id, name: shape.name, ms, rows };
}

function metricsOf(s: ShapeResult): Metric[] {
  const out: Metric[] = [];
  const json50 = quantile(s.ms.json, 0.5);
  const rows = quantile(s.rows, 0.5);
  for (const door of DOORS) {
    const xs = s.ms[door];
    const p50 = quantile(xs, 0.5);
    out.push({
      id: `${RUN_ID}.${s.id}.${door}.p50_ms`,
      suite: RUN_ID,
      name: `${s.name}: ${DOOR_LABEL[door]} p50`,
      value: p50,
      unit: 'ms',
      samples: [...xs],
      ...(door === 'json' ? {} : { ratio: { of: 'JSON API', value: p50 / json50, samples: xs.map((x, i) => x / s.ms.json[i]!) } }),
      note: `${xs.length} runs, ${rows} rows`,
    });
    out.push({
      id: `${RUN_ID}.${s.id}.${door}.p99_ms`,
      suite: RUN_ID,
      name: `${s.name}: ${DOOR_LABEL[door]} p99`,
      value: quantile(xs, 0.99),
      unit: 'ms',
      samples: [...xs],
    });
  }
  return out;
}

/** Shapes down, doors across: p50 / p99 ms and p50 / the JSON API's p50. */
function sideBySide(results: readonly ShapeResult[]): string {
  const header = ['sql', ...DOORS.map((d) => `${DOOR_LABEL[d]} p50/p99 ms`), ...DOORS.slice(1).map((d) => `${DOOR_LABEL[d]}/JSON`)];
  const rows = results.map((s) => {
    const p = (d: DoorName, q: number) => quantile(s.ms[d], q);
    return [s.name, ...DOORS.map((d) => `${p(d, 0.5).toFixed(2)} / ${p(d, 0.99).toFixed(2)}`), ...DOORS.slice(1).map((d) => (p(d, 0.5) / p('json', 0.5)).toFixed(2))];
  });
  const widths = header.map((h, k) => Math.max(h.length, ...rows.map((row) => row[k]!.length)));
  const line = (cells: string[]) => cells.map((c, k) => (k === 0 ? c.padEnd(widths[k]!) : c.padStart(widths[k]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), '', 'X/JSON: that door\'s p50 / the JSON API\'s p50 (informational, no targets)'].join('\n');
}

// ---------------------------------------------------------------- suite

export const sqlSuite: Suite = {
  name: 'sql',
  description: 'SQL front doors (/v1/sql, MySQL, PostgreSQL) against the JSON query API on the same queries',
  optIn: true,
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    const { peerSeries: series, peerPoints: points, peerRuns: runs } = ctx.options;
    const root = await tempDir('sql');
    const ports = { mysql: await freePort(), postgres: await freePort() };
    while (ports.postgres === ports.mysql) ports.postgres = await freePort();
    ctx.log(`sql: ${series} series x ${points} points = ${(series * points).toLocaleString('en-US')} rows; ${runs} runs per query and door; temp ${root}`);
    let reprise: Peer | undefined;
    let my: mysql.Connection | undefined;
    let pgClient: pg.Client | undefined;
    let completed = false;
    try {
      reprise = await makeReprise(root, ['--mysql-addr', addr(ports.mysql), '--postgres-addr', addr(ports.postgres)]);
      const url = reprise.server.url;
      ctx.log(`  reprise pid ${reprise.server.pid} at ${url}, MySQL ${addr(ports.mysql)}, PostgreSQL ${addr(ports.postgres)}`);
      const loaded = await load(reprise, series, points, ctx);
      const f0 = performance.now();
      await expectStatus('reprise flush', httpCall(`${url}/v1/flush`, { method: 'POST', timeoutMs: TIMEOUT_MS }), 200);
      const flushMs = performance.now() - f0;
      ctx.log(`  reprise flush: ${flushMs.toFixed(0)} ms`);
      // Queries start once background work after the load (indexing, compaction, GC) is done.
      const quiet = await waitQuiet([reprise.server.pid], { timeoutMs: ctx.options.quick ? 20_000 : 120_000 });
      ctx.log(`  reprise quiet after ${(quiet.ms / 1000).toFixed(1)} s${quiet.quiet ? '' : ' (timed out: still busy)'}`);

      my = await mysql.createConnection({ host: '127.0.0.1', port: ports.mysql, user: 'bench', database: 'public' });
      pgClient = new pg.Client({ host: '127.0.0.1', port: ports.postgres, user: 'bench', database: 'public' });
      await pgClient.connect();
      const myConn = my;
      const pgConn = pgClient;
      const doors: Record<DoorName, Door> = {
        json: jsonDoor(url),
        http_sql: httpSqlDoor(url),
        mysql: async (q) => {
          const [rows] = await myConn.query(q.sql);
          return (rows as unknown[]).length;
        },
        postgres: async (q) => (await pgConn.query(q.sql)).rows.length,
      };

      const results: ShapeResult[] = [];
      for (const shape of shapes(series, points)) results.push(await runShape(shape, doors, runs, ctx));
      completed = true;
      const rows = series * points;
      return {
        metrics: results.flatMap(metricsOf),
        tables: [`sql: front doors on the same queries (${rows.toLocaleString('en-US')} rows, ${series} series, ${runs} runs each)\n${sideBySide(results)}`],
        details: { series, points, rows, runs, load: loaded, flushMs, quietAfterLoad: quiet, queries: results },
      };
    } finally {
      await my?.end().catch(() => undefined);
      await pgClient?.end().catch(() => undefined);
      closeIdleSockets();
      await reprise?.server.stop().catch((err: unknown) => ctx.log(`  reprise: ${(err as Error).message.split('\n')[0]}`));
      if (completed) await removeDir(root);
      else ctx.log(`  sql: kept ${root} (log, data) after the failure`);
    }
  },
};
