import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN } from '../test/harness/standalone.js';
import { CORES_PER_HOST, CpuLines, FIELDS, MEASUREMENT, START_MS, STEP_MS, coreName, hostCount, hostName, prng } from './lib/cpu-lines.js';
import { collectGarbage, removeDir, sleep, tempDir } from './lib/fixtures.js';
import { closeIdleSockets, httpCall, postJson } from './lib/http.js';
import { freePort } from '../test/harness/nats-server.js';
import { diskBytes, memoryOf, spawnServer, waitQuiet, type ServerProcess } from './lib/proc.js';
import { passOf, type Metric } from './lib/report.js';
import { median, quantile } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';
import { runIngest } from './peer-ingest.js';

/**
 * reprise against InfluxDB 1.x (Debian's influxd) on the same data and the
 * same questions, both as real server processes on this machine:
 *
 *  - load: the same line-protocol bytes (lib/cpu-lines.ts: `cpu`, tags host
 *    and core, 3 float fields, 1,000 series x 10,000 points by default, ms
 *    timestamps 10 s apart), 8 concurrent clients posting 1,000-line
 *    batches, each acknowledged durably (influxd with wal-fsync-delay 0s);
 *    one system at a time, reprise first. Then reprise flushes (POST
 *    /v1/flush); influxd needs nothing. Disk is `du` of each data
 *    directory once both are quiet.
 *  - queries (below), each first answered by both and checked equal (values
 *    numerically, 1e-9 relative), then timed `--peer-runs` times with the
 *    two systems alternating request by request (so noise on this shared VM
 *    hits both), each run with its own parameters (series, host, window)
 *    drawn the same for both, and every timed answer checked equal too.
 *    A time is the request until its JSON answer is parsed.
 *  - RSS (VmRSS) of each process after those queries.
 *  - first query after a clean restart: SIGTERM, wait for the exit, start
 *    again with the same data, wait until ready (reprise /health, influxd
 *    /ping), then time one query of shape q2 for a host not queried before.
 *    3 restarts each, alternating which system goes first.
 *  - then, with those servers stopped, the ingest phase (peer-ingest.ts):
 *    fresh servers per run, line protocol at 1, 8 and 64 clients into both
 *    and reprise's JSON API at 8 and 64, with CPU per row and peak RSS.
 *
 * A query shape reprise does not support yet (400 INVALID_QUERY) is reported
 * as unsupported, and InfluxDB's times for it are still measured.
 */

const RUN_ID = 'peer';
export const DB = 'bench';
const CLIENTS = 8;
export const LINES_PER_BATCH = 1000;
export const SEED = 20260101;
export const QUERY_TIMEOUT_MS = 300_000;
const TOLERANCE = 1e-9;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export type SystemName = 'reprise' | 'influxdb';

// ---------------------------------------------------------------- servers

export interface Peer {
  readonly name: SystemName;
  /** Measured with du: the data directory (reprise) or meta + data + wal (influxd). */
  readonly dataDir: string;
  server: ServerProcess;
  start(): Promise<ServerProcess>;
  write(batch: string): Promise<void>;
}

async function startReprise(root: string, dataDir: string, seq: number, extraArgs: readonly string[] = [], env?: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  return spawnServer({
    name: 'reprise',
    command: process.execPath,
    args: [BIN, 'standalone', '--data-dir', dataDir, '--http-addr', `127.0.0.1:${port}`, '--log-level', 'warn', ...extraArgs],
    url,
    logFile: join(root, `reprise-${seq}.log`),
    ready: async () => (await httpCall(`${url}/health`, { timeoutMs: 5000 })).status === 200,
    ...(env ? { env } : {}),
  });
}

/**
 * Seconds without writes after which influxd writes its cache to TSM files
 * and drops the WAL segments (default 10 min): the at-rest state that
 * reprise's flush reaches, without waiting ten minutes.
 */
export const INFLUX_COLD_S = 5;

/** influxd's config: everything under `dir`, fsync per write, no reporting, no self-monitoring, no request logs. */
function influxConfig(dir: string, httpPort: number, rpcPort: number): string {
  return `reporting-enabled = false
bind-address = "127.0.0.1:${rpcPort}"

[meta]
  dir = "${join(dir, 'meta')}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "${join(dir, 'data')}"
  wal-dir = "${join(dir, 'wal')}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "${INFLUX_COLD_S}s"

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:${httpPort}"
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
`;
}

async function startInflux(root: string, dataDir: string, seq: number): Promise<ServerProcess> {
  const httpPort = await freePort();
  let rpcPort = await freePort();
  while (rpcPort === httpPort) rpcPort = await freePort();
  const configFile = join(root, `influxd-${seq}.conf`);
  await writeFile(configFile, influxConfig(dataDir, httpPort, rpcPort));
  const url = `http://127.0.0.1:${httpPort}`;
  return spawnServer({
    name: 'influxdb',
    command: 'influxd',
    args: ['-config', configFile],
    url,
    logFile: join(root, `influxd-${seq}.log`),
    ready: async () => (await httpCall(`${url}/ping`, { timeoutMs: 5000 })).status === 204,
  });
}

export async function expectStatus(what: string, response: Promise<{ status: number; body: Buffer }>, status: number): Promise<Buffer> {
  const res = await response;
  if (res.status !== status) throw new Error(`${what}: HTTP ${res.status} (expected ${status}): ${res.body.toString('utf8').slice(0, 2000)}`);
  return res.body;
}

/**
 * reprise standalone under `root`; `extraArgs` go after peer's own flags (the sql suite's --mysql-addr, --postgres-addr),
 * `env` over this process's environment (the ingest phase's REPRISE_MEMTABLE_BYTES and the like).
 */
export async function makeReprise(root: string, extraArgs: readonly string[] = [], env?: Record<string, string>): Promise<Peer> {
  const dataDir = join(root, 'reprise-data');
  let seq = 0;
  const peer: Peer = {
    name: 'reprise',
    dataDir,
    server: await startReprise(root, dataDir, seq++, extraArgs, env),
    start: () => startReprise(root, dataDir, seq++, extraArgs, env),
    async write(batch) {
      await expectStatus(
        'reprise write',
        httpCall(`${peer.server.url}/v1/influxdb/write?db=${DB}&precision=ms`, { method: 'POST', body: batch, headers: { 'content-type': 'text/plain' }, timeoutMs: QUERY_TIMEOUT_MS }),
        204,
      );
    },
  };
  return peer;
}

export async function makeInflux(root: string): Promise<Peer> {
  const dataDir = join(root, 'influxdb');
  await mkdir(dataDir, { recursive: true });
  let seq = 0;
  const peer: Peer = {
    name: 'influxdb',
    dataDir,
    server: await startInflux(root, dataDir, seq++),
    start: () => startInflux(root, dataDir, seq++),
    async write(batch) {
      await expectStatus(
        'influxdb write',
        httpCall(`${peer.server.url}/write?db=${DB}&precision=ms`, { method: 'POST', body: batch, headers: { 'content-type': 'text/plain' }, timeoutMs: QUERY_TIMEOUT_MS }),
        204,
      );
    },
  };
  const created = await httpCall(`${peer.server.url}/query`, {
    method: 'POST',
    body: `q=${encodeURIComponent(`CREATE DATABASE ${DB}`)}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  if (created.status !== 200 || /"error"/.test(created.body.toString())) throw new Error(`influxdb: CREATE DATABASE: ${created.status} ${created.body.toString()}`);
  return peer;
}

// ---------------------------------------------------------------- queries

type Cell = string | number | null;
type CanonRow = Record<string, Cell>;

/** One query, phrased for each system, and how to bring both answers to the same rows. */
export interface QueryCase {
  readonly label: string;
  readonly reprise: Record<string, unknown>;
  readonly influxql: string;
  /** Columns of the canonical rows; `keys` of them sort the rows. */
  readonly columns: readonly string[];
  readonly keys: readonly string[];
  /** reprise's column name -> canonical name (default: the same). */
  readonly repriseNames?: Record<string, string>;
  /** InfluxDB's column -> canonical name; `time` is dropped unless mapped. */
  readonly influxNames?: Record<string, string>;
}

export interface Shape {
  readonly id: string;
  readonly name: string;
  readonly runs: number;
  /** The query of timed run `i` (i = -1: the first check, untimed). */
  make(i: number): QueryCase;
}

class Unsupported extends Error {}

interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: Cell[][];
}

export async function queryReprise(url: string, q: QueryCase): Promise<unknown[]> {
  const { status, json } = await postJson(`${url}/v1/tables/${MEASUREMENT}/query`, q.reprise, QUERY_TIMEOUT_MS);
  if (status === 400 && json?.error?.code === 'INVALID_QUERY') throw new Unsupported(String(json.error.message));
  if (status !== 200 || !Array.isArray(json?.rows)) throw new Error(`reprise query ${q.label}: HTTP ${status}: ${JSON.stringify(json).slice(0, 2000)}\nquery: ${JSON.stringify(q.reprise)}`);
  return json.rows as unknown[];
}

async function queryInflux(url: string, q: QueryCase): Promise<InfluxSeries[]> {
  const res = await httpCall(`${url}/query?db=${DB}&epoch=ms&q=${encodeURIComponent(q.influxql)}`, { timeoutMs: QUERY_TIMEOUT_MS });
  const json = JSON.parse(res.body.toString('utf8')) as { results?: { error?: string; series?: InfluxSeries[] }[]; error?: string };
  const error = json.error ?? json.results?.[0]?.error;
  if (res.status !== 200 || error !== undefined) throw new Error(`influxdb query ${q.label}: HTTP ${res.status}: ${error ?? res.body.toString('utf8').slice(0, 2000)}\nquery: ${q.influxql}`);
  return json.results?.[0]?.series ?? [];
}

function canonReprise(q: QueryCase, rows: unknown[]): CanonRow[] {
  const names = q.repriseNames ?? {};
  return rows.map((raw) => {
    const row = raw as Record<string, Cell>;
    const out: CanonRow = {};
    for (const [k, v] of Object.entries(row)) out[names[k] ?? k] = v;
    return pick(q, out);
  });
}

function canonInflux(q: QueryCase, series: InfluxSeries[]): CanonRow[] {
  const names = { ...q.influxNames };
  const out: CanonRow[] = [];
  for (const s of series) {
    for (const values of s.values) {
      const row: CanonRow = { ...s.tags };
      s.columns.forEach((c, i) => {
        const name = names[c] ?? (c === 'time' ? undefined : c);
        if (name !== undefined) row[name] = values[i]!;
      });
      out.push(pick(q, row));
    }
  }
  return out;
}

function pick(q: QueryCase, row: CanonRow): CanonRow {
  const out: CanonRow = {};
  for (const c of q.columns) out[c] = row[c] ?? null;
  return out;
}

function compareCells(a: Cell, b: Cell): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b));
}

function sortRows(q: QueryCase, rows: CanonRow[]): CanonRow[] {
  return [...rows].sort((x, y) => {
    for (const k of q.keys) {
      const c = compareCells(x[k]!, y[k]!);
      if (c !== 0) return c;
    }
    return 0;
  });
}

function sameCell(a: Cell, b: Cell): boolean {
  if (typeof a === 'number' && typeof b === 'number') return Math.abs(a - b) <= TOLERANCE * Math.max(1, Math.abs(a), Math.abs(b));
  return a === b;
}

/** Throws, with a diff, unless both systems' answers are the same rows. */
function assertEqual(q: QueryCase, repriseRows: unknown[], influxSeries: InfluxSeries[]): number {
  const a = sortRows(q, canonReprise(q, repriseRows));
  const b = sortRows(q, canonInflux(q, influxSeries));
  const diffs: string[] = [];
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n && diffs.length < 10; i++) {
    const x = a[i];
    const y = b[i];
    if (x && y && q.columns.every((c) => sameCell(x[c]!, y[c]!))) continue;
    diffs.push(`  row ${i}:\n    reprise  ${JSON.stringify(x ?? null)}\n    influxdb ${JSON.stringify(y ?? null)}`);
  }
  if (a.length === 0 && b.length === 0) diffs.push('  both answered no rows: the query selects nothing, which checks nothing');
  if (diffs.length > 0) {
    throw new Error(
      `peer: ${q.label}: reprise and InfluxDB disagree (${a.length} vs ${b.length} rows):\n${diffs.join('\n')}\n` +
        `reprise query: ${JSON.stringify(q.reprise)}\ninfluxql: ${q.influxql}`,
    );
  }
  return a.length;
}

const quote = (s: string) => `'${s.replace(/'/g, "\\'")}'`;
const ALL_FIELDS = FIELDS.join(', ');

/**
 * Seeded draws for timed runs: `draw(key, i, n)` is the same number in
 * [0, n) for (key, run i) every time it is asked for; `windowStart` a
 * 10-minute aligned start, inside data spanning `spanMs` when a window of
 * `ms` fits.
 */
export function seededDraws(seed: number, spanMs: number): { draw: (key: string, i: number, n: number) => number; windowStart: (key: string, i: number, ms: number) => number } {
  const random = prng(seed);
  const draws = new Map<string, number[]>();
  const draw = (key: string, i: number, n: number) => {
    let list = draws.get(key);
    if (!list) draws.set(key, (list = []));
    while (list.length <= i + 1) list.push(random());
    return Math.floor(list[i + 1]! * n);
  };
  const windowStart = (key: string, i: number, ms: number) => START_MS + draw(key, i, Math.max(1, Math.floor((spanMs - ms) / (10 * MINUTE)) + 1)) * 10 * MINUTE;
  return { draw, windowStart };
}

export function shapes(series: number, points: number, runs: number, restarts: number): { timed: Shape[]; restart: Shape } {
  const hosts = hostCount(series);
  const spanMs = points * STEP_MS;
  const { draw, windowStart } = seededDraws(7, spanMs);
  // q3's hosts (one per restart) are kept out of q2's draws: never queried before their restart.
  const q2Hosts = Math.max(1, hosts - restarts);
  const rawRows = (label: string, where: Record<string, unknown>, influxWhere: string, from: number, to: number): QueryCase => ({
    label,
    reprise: { where, timeRange: { from, to } },
    influxql: `SELECT ${ALL_FIELDS} FROM ${MEASUREMENT} WHERE ${influxWhere} AND time >= ${from}ms AND time < ${to}ms GROUP BY host, core`,
    columns: ['host', 'core', 'ts', ...FIELDS],
    keys: ['host', 'core', 'ts'],
    influxNames: { time: 'ts' },
  });
  const oneHostHour = (label: string, host: string, from: number) => rawRows(label, { host }, `host = ${quote(host)}`, from, from + HOUR);

  const q1: Shape = {
    id: 'q1',
    name: 'q1 one series, 10 min',
    runs,
    make(i) {
      const s = draw('q1', i, series);
      const host = hostName(Math.floor(s / CORES_PER_HOST));
      const core = coreName(s % CORES_PER_HOST);
      const from = windowStart('q1w', i, 10 * MINUTE);
      return rawRows(`q1 ${host}/${core} @${from}`, { host, core }, `host = ${quote(host)} AND core = ${quote(core)}`, from, from + 10 * MINUTE);
    },
  };
  const q2: Shape = {
    id: 'q2',
    name: 'q2 one host (5 series), 1 h',
    runs,
    make(i) {
      const host = hostName(draw('q2', i, q2Hosts));
      return oneHostHour(`q2 ${host}`, host, windowStart('q2w', i, HOUR));
    },
  };
  const q4: Shape = {
    id: 'q4',
    name: 'q4 last point of 100 series',
    runs,
    make(i) {
      // 20 consecutive hosts (100 series), or every host when there are fewer.
      const n = Math.min(20, hosts);
      const first = draw('q4', i, hosts - n + 1);
      const names = Array.from({ length: n }, (_, k) => hostName(first + k));
      return {
        label: `q4 ${names[0]}..${names.at(-1)}`,
        reprise: {
          where: { host: { gte: names[0], lte: names.at(-1) } },
          groupBy: ['host', 'core'],
          aggregates: FIELDS.map((f) => ({ fn: 'last', column: f, as: f })),
        },
        // The fastest of the forms measured on influxd 1.6 (last() of each field, last(*), ORDER BY time DESC LIMIT 1):
        // a selector with the point's other fields. Every point has all three fields, so it is the same answer.
        influxql: `SELECT last(usage_user) AS usage_user, usage_system, usage_idle FROM ${MEASUREMENT} WHERE host =~ /^(${names.join('|')})$/ GROUP BY host, core`,
        columns: ['host', 'core', ...FIELDS],
        keys: ['host', 'core'],
      };
    },
  };
  const q5: Shape = {
    id: 'q5',
    name: 'q5 max per 10 min, one host, 1 day',
    runs,
    make(i) {
      const host = hostName(draw('q5', i, hosts));
      const from = windowStart('q5w', i, DAY);
      const to = from + DAY;
      return {
        label: `q5 ${host} @${from}`,
        reprise: { where: { host }, timeRange: { from, to }, groupBy: ['host'], interval: 10 * MINUTE, aggregates: [{ fn: 'max', column: 'usage_user' }] },
        influxql: `SELECT max(usage_user) FROM ${MEASUREMENT} WHERE host = ${quote(host)} AND time >= ${from}ms AND time < ${to}ms GROUP BY time(10m), host fill(none)`,
        columns: ['host', 'ts', 'max'],
        keys: ['host', 'ts'],
        repriseNames: { 'max(usage_user)': 'max' },
        influxNames: { time: 'ts' },
      };
    },
  };
  const q6: Shape = {
    id: 'q6',
    name: 'q6 max per host, whole table',
    // A scan of every row: fewer runs.
    runs: Math.max(5, Math.ceil(runs / 5)),
    make() {
      return {
        label: 'q6',
        reprise: { groupBy: ['host'], aggregates: [{ fn: 'max', column: 'usage_user' }] },
        influxql: `SELECT max(usage_user) FROM ${MEASUREMENT} GROUP BY host`,
        columns: ['host', 'max'],
        keys: ['host'],
        repriseNames: { 'max(usage_user)': 'max' },
      };
    },
  };
  const q3: Shape = {
    id: 'q3',
    name: 'q3 first query after restart (q2 shape)',
    runs: restarts,
    make(i) {
      const host = hostName(Math.max(0, hosts - 1 - Math.max(0, i)) % hosts);
      return oneHostHour(`q3 ${host}`, host, windowStart('q3w', i, HOUR));
    },
  };
  return { timed: [q1, q2, q4, q5, q6], restart: q3 };
}


interface ShapeResult {
  readonly id: string;
  readonly name: string;
  readonly reprise: number[];
  readonly influxdb: number[];
  /** Rows each answer had (the same on both, checked). */
  readonly rows: number[];
  readonly unsupported?: string;
}

async function timeOne(peer: Peer, q: QueryCase): Promise<{ ms: number; answer: unknown }> {
  const t0 = performance.now();
  const answer = peer.name === 'reprise' ? await queryReprise(peer.server.url, q) : await queryInflux(peer.server.url, q);
  return { ms: performance.now() - t0, answer };
}

async function runShape(shape: Shape, peers: Record<SystemName, Peer>, ctx: SuiteContext): Promise<ShapeResult> {
  const first = shape.make(-1);
  let unsupported: string | undefined;
  let repriseAnswer: unknown[] | undefined;
  try {
    repriseAnswer = await queryReprise(peers.reprise.server.url, first);
  } catch (err) {
    if (!(err instanceof Unsupported)) throw err;
    unsupported = err.message;
    ctx.log(`  ${shape.id}: reprise answers 400 INVALID_QUERY (unsupported): ${err.message}`);
  }
  const influxAnswer = await queryInflux(peers.influxdb.server.url, first);
  if (repriseAnswer) {
    const n = assertEqual(first, repriseAnswer, influxAnswer);
    ctx.log(`  ${shape.id}: both answer the same ${n} rows (${first.label})`);
  }
  const samples: Record<SystemName, number[]> = { reprise: [], influxdb: [] };
  const rows: number[] = [];
  collectGarbage();
  for (let i = 0; i < shape.runs; i++) {
    const q = shape.make(i);
    const order: SystemName[] = unsupported ? ['influxdb'] : i % 2 === 0 ? ['reprise', 'influxdb'] : ['influxdb', 'reprise'];
    const answers: Partial<Record<SystemName, unknown>> = {};
    for (const name of order) {
      const { ms, answer } = await timeOne(peers[name], q);
      samples[name].push(ms);
      answers[name] = answer;
    }
    if (!unsupported) rows.push(assertEqual(q, answers.reprise as unknown[], answers.influxdb as InfluxSeries[]));
  }
  const fmt = (xs: number[]) => (xs.length ? `p50 ${quantile(xs, 0.5).toFixed(2)} p99 ${quantile(xs, 0.99).toFixed(2)} ms` : 'unsupported');
  ctx.log(`  ${shape.name} (${shape.runs} runs): reprise ${fmt(samples.reprise)}, influxdb ${fmt(samples.influxdb)}`);
  return { id: shape.id, name: shape.name, reprise: samples.reprise, influxdb: samples.influxdb, rows, ...(unsupported ? { unsupported } : {}) };
}

interface RestartSample {
  readonly system: SystemName;
  readonly stopMs: number;
  readonly readyMs: number;
  readonly firstQueryMs: number;
}

/** Restart `peer` cleanly and time its first query of `q`. */
async function restartAndQuery(peer: Peer, q: QueryCase): Promise<{ sample: RestartSample; answer: unknown; unsupported?: string }> {
  closeIdleSockets();
  const stopMs = await peer.server.stop();
  peer.server = await peer.start();
  try {
    const { ms, answer } = await timeOne(peer, q);
    return { sample: { system: peer.name, stopMs, readyMs: peer.server.startMs, firstQueryMs: ms }, answer };
  } catch (err) {
    if (!(err instanceof Unsupported)) throw err;
    return { sample: { system: peer.name, stopMs, readyMs: peer.server.startMs, firstQueryMs: Number.NaN }, answer: undefined, unsupported: err.message };
  }
}

// ---------------------------------------------------------------- load

export interface LoadResult {
  readonly rows: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly rowsPerSec: number;
  readonly digest: string;
}

export async function load(peer: Peer, series: number, points: number, ctx: SuiteContext): Promise<LoadResult> {
  const lines = new CpuLines(series, points, SEED);
  const total = lines.total;
  let nextReport = 0.1;
  const t0 = performance.now();
  const client = async () => {
    for (;;) {
      const batch = lines.next(LINES_PER_BATCH);
      if (batch === undefined) return;
      await peer.write(batch);
      if (lines.lines / total >= nextReport) {
        nextReport += 0.1;
        ctx.log(`  ${peer.name} load: ${Math.round((lines.lines / total) * 100)}%, ${Math.round(lines.lines / ((performance.now() - t0) / 1000)).toLocaleString('en-US')} rows/s so far`);
      }
    }
  };
  // The first batch goes alone: it creates the table in reprise. (Before
  // 63ea4aa, concurrent first writes to a new measurement raced there and
  // some got TABLE_NOT_FOUND; alone, the suite also runs on such commits.)
  await peer.write(lines.next(LINES_PER_BATCH)!);
  await Promise.all(Array.from({ length: CLIENTS }, client));
  const seconds = (performance.now() - t0) / 1000;
  const result = { rows: lines.lines, bytes: lines.bytes, seconds, rowsPerSec: lines.lines / seconds, digest: lines.digest() };
  ctx.log(`  ${peer.name} load: ${result.rows.toLocaleString('en-US')} rows (${(result.bytes / 1e6).toFixed(0)} MB of line protocol) in ${seconds.toFixed(1)} s: ${Math.round(result.rowsPerSec).toLocaleString('en-US')} rows/s`);
  return result;
}

// ---------------------------------------------------------------- metrics

export interface PairSpec {
  readonly id: string;
  readonly name: string;
  readonly unit: string;
  readonly reprise: { value: number; samples: readonly number[] };
  readonly influxdb: { value: number; samples: readonly number[] };
  /** Pass when reprise/influxdb <= target (times, sizes: lower is better). */
  readonly atMost?: number;
  /** Pass when reprise/influxdb >= target (throughput: higher is better). */
  readonly atLeast?: number;
  readonly unsupported?: string;
  readonly note?: string;
}

/** A reprise metric with its ratio to InfluxDB's (reprise / influxdb), and InfluxDB's own. */
export function pair(spec: PairSpec): [Metric, Metric] {
  const { reprise, influxdb } = spec;
  const n = Math.min(reprise.samples.length, influxdb.samples.length);
  const paired = Array.from({ length: n }, (_, i) => reprise.samples[i]! / influxdb.samples[i]!);
  const r: Metric = {
    id: `${RUN_ID}.reprise.${spec.id}`,
    suite: RUN_ID,
    name: `${spec.name}: reprise`,
    value: spec.unsupported ? Number.NaN : reprise.value,
    unit: spec.unit,
    samples: [...reprise.samples],
    ratio: {
      of: 'influxdb',
      value: spec.unsupported ? Number.NaN : reprise.value / influxdb.value,
      samples: paired,
      ...(spec.atMost !== undefined ? { target: spec.atMost, atMost: true } : spec.atLeast !== undefined ? { target: spec.atLeast } : {}),
    },
    ...(spec.unsupported ? { unsupported: spec.unsupported } : {}),
    ...(spec.note !== undefined ? { note: spec.note } : {}),
  };
  const i: Metric = {
    id: `${RUN_ID}.influxdb.${spec.id}`,
    suite: RUN_ID,
    name: `${spec.name}: influxdb`,
    value: influxdb.value,
    unit: spec.unit,
    samples: [...influxdb.samples],
  };
  return [r, i];
}

const SIDE_BY_SIDE_NOTE = 'reprise/influxdb: reprise p50 / influxdb p50 (p99 / p99, median / median, value / value); targets are ceilings';

export function sideBySide(pairs: [Metric, Metric][], note = SIDE_BY_SIDE_NOTE): string {
  const header = ['peer', 'reprise', 'influxdb', 'unit', 'reprise/influxdb', 'target', 'result'];
  const fmt = (m: Metric) => (m.unsupported ? 'unsupported' : formatNumber(m.value, m.unit));
  const rows = pairs.map(([r, i]) => {
    const target = r.ratio?.target;
    const pass = passOf(r);
    return [
      r.name.replace(/: reprise$/, ''),
      fmt(r),
      fmt(i),
      r.unit,
      r.unsupported ? '-' : `${r.ratio!.value.toFixed(2)}`,
      target !== undefined ? `${r.ratio!.atMost ? '<=' : '>='} ${target}` : '',
      pass === undefined ? '' : pass ? 'PASS' : 'FAIL',
    ];
  });
  const widths = header.map((h, k) => Math.max(h.length, ...rows.map((row) => row[k]!.length)));
  const right = new Set([1, 2, 4]);
  const line = (cells: string[]) => cells.map((c, k) => (right.has(k) ? c.padStart(widths[k]!) : c.padEnd(widths[k]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), '', note].join('\n');
}

function formatNumber(value: number, unit: string): string {
  if (unit === 'ms') return value < 10 ? value.toFixed(2) : value.toFixed(1);
  if (unit === 'µs/row') return value.toFixed(2);
  if (unit === 'MB') return value.toFixed(1);
  return Math.round(value).toLocaleString('en-US');
}

// ---------------------------------------------------------------- suite

async function describeReprise(url: string): Promise<unknown> {
  const res = await httpCall(`${url}/v1/tables/${MEASUREMENT}`);
  return JSON.parse(res.body.toString('utf8'));
}

async function topLevelSizes(dir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const entry of await readdir(dir)) out[entry] = await diskBytes(join(dir, entry));
  return out;
}

export const peerSuite: Suite = {
  name: 'peer',
  description: 'reprise vs InfluxDB 1.x (influxd): line-protocol load, 6 queries checked equal, disk, RSS; durable ingest at 1/8/64 clients, CPU/row, RSS',
  optIn: true,
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    // The load + query phase first, its servers stopped before the ingest phase starts its own.
    const queries = await loadAndQuery(ctx);
    if (ctx.options.peerIngestRows === 0) return queries;
    const ingest = await runIngest(ctx);
    return {
      metrics: [...queries.metrics, ...ingest.metrics],
      tables: [...(queries.tables ?? []), ...(ingest.tables ?? [])],
      details: { ...queries.details, ingest: ingest.details },
    };
  },
};

/** The load, the queries, disk, RSS and the restarts, on one reprise and one influxd. */
async function loadAndQuery(ctx: SuiteContext): Promise<SuiteResult> {
  const { peerSeries: series, peerPoints: points, peerRuns: runs, quick } = ctx.options;
  const restarts = quick ? 2 : 3;
  const root = await tempDir('peer');
  ctx.log(`peer: ${series} series x ${points} points = ${(series * points).toLocaleString('en-US')} rows; ${runs} runs per query; temp ${root}`);
  const peers: Partial<Record<SystemName, Peer>> = {};
  let completed = false;
  try {
    peers.reprise = await makeReprise(root);
    peers.influxdb = await makeInflux(root);
    const all = peers as Record<SystemName, Peer>;
    ctx.log(`  reprise pid ${all.reprise.server.pid} at ${all.reprise.server.url}; influxd pid ${all.influxdb.server.pid} at ${all.influxdb.server.url}`);

    // Load, one system at a time; reprise flushes after.
    const loads = {} as Record<SystemName, LoadResult>;
    loads.reprise = await load(all.reprise, series, points, ctx);
    const f0 = performance.now();
    await expectStatus('reprise flush', httpCall(`${all.reprise.server.url}/v1/flush`, { method: 'POST', timeoutMs: QUERY_TIMEOUT_MS }), 200);
    const flushMs = performance.now() - f0;
    ctx.log(`  reprise flush: ${flushMs.toFixed(0)} ms`);
    loads.influxdb = await load(all.influxdb, series, points, ctx);
    // influxd snapshots its cache once the shard has been cold for INFLUX_COLD_S (checked every second).
    await sleep((INFLUX_COLD_S + 2) * 1000);
    if (loads.reprise.digest !== loads.influxdb.digest) throw new Error('peer: the two loads did not send the same bytes');
    const table = await describeReprise(all.reprise.server.url);
    ctx.log(`  reprise table: ${JSON.stringify((table as { schema?: unknown }).schema)}`);

    const quiet = await waitQuiet([all.reprise.server.pid, all.influxdb.server.pid], { timeoutMs: quick ? 20_000 : 120_000 });
    ctx.log(`  both quiet after ${(quiet.ms / 1000).toFixed(1)} s${quiet.quiet ? '' : ' (timed out: still busy)'}`);
    const disk = { reprise: await diskBytes(all.reprise.dataDir), influxdb: await diskBytes(all.influxdb.dataDir) };
    const diskParts = { reprise: await topLevelSizes(all.reprise.dataDir), influxdb: await topLevelSizes(all.influxdb.dataDir) };
    ctx.log(`  disk: reprise ${(disk.reprise / 1e6).toFixed(1)} MB ${JSON.stringify(diskParts.reprise)}, influxdb ${(disk.influxdb / 1e6).toFixed(1)} MB ${JSON.stringify(diskParts.influxdb)}`);

    // Queries.
    const { timed, restart } = shapes(series, points, runs, restarts);
    const results: ShapeResult[] = [];
    for (const shape of timed) results.push(await runShape(shape, all, ctx));
    const memory = { reprise: memoryOf(all.reprise.server.pid), influxdb: memoryOf(all.influxdb.server.pid) };
    ctx.log(`  RSS after the queries: reprise ${(memory.reprise.rssBytes / 1e6).toFixed(0)} MB (peak ${(memory.reprise.peakRssBytes / 1e6).toFixed(0)}), influxdb ${(memory.influxdb.rssBytes / 1e6).toFixed(0)} MB (peak ${(memory.influxdb.peakRssBytes / 1e6).toFixed(0)})`);

    // First query after a clean restart.
    const restartSamples: RestartSample[] = [];
    let restartUnsupported: string | undefined;
    for (let r = 0; r < restarts; r++) {
      const q = restart.make(r);
      const order: SystemName[] = r % 2 === 0 ? ['reprise', 'influxdb'] : ['influxdb', 'reprise'];
      const answers: Partial<Record<SystemName, unknown>> = {};
      for (const name of order) {
        const { sample, answer, unsupported } = await restartAndQuery(all[name], q);
        if (unsupported) restartUnsupported = unsupported;
        restartSamples.push(sample);
        answers[name] = answer;
        ctx.log(`  restart ${r + 1}/${restarts} ${name}: stop ${sample.stopMs.toFixed(0)} ms, start to ready ${sample.readyMs.toFixed(0)} ms, first query ${sample.firstQueryMs.toFixed(2)} ms`);
      }
      if (answers.reprise !== undefined) assertEqual(q, answers.reprise as unknown[], answers.influxdb as InfluxSeries[]);
    }
    const memoryAfterRestart = { reprise: memoryOf(all.reprise.server.pid), influxdb: memoryOf(all.influxdb.server.pid) };
    const diskAtEnd = { reprise: await diskBytes(all.reprise.dataDir), influxdb: await diskBytes(all.influxdb.dataDir) };

    // Metrics.
    const rows = series * points;
    const pairs: [Metric, Metric][] = [];
    pairs.push(
      pair({
        id: 'load.rows_per_s',
        name: 'load (8 clients x 1,000 lines)',
        unit: 'rows/s',
        reprise: { value: loads.reprise.rowsPerSec, samples: [loads.reprise.rowsPerSec] },
        influxdb: { value: loads.influxdb.rowsPerSec, samples: [loads.influxdb.rowsPerSec] },
        note: `${rows.toLocaleString('en-US')} rows, one load each; higher is better`,
      }),
    );
    for (const s of results) {
      const p = (xs: number[], q: number) => ({ value: quantile(xs, q), samples: xs });
      pairs.push(
        pair({
          id: `${s.id}.p50_ms`,
          name: `${s.name} p50`,
          unit: 'ms',
          reprise: p(s.reprise, 0.5),
          influxdb: p(s.influxdb, 0.5),
          atMost: 1,
          ...(s.unsupported ? { unsupported: s.unsupported } : {}),
          note: `${s.influxdb.length} runs${s.rows.length ? `, ${median(s.rows)} rows` : ''}`,
        }),
      );
      pairs.push(
        pair({
          id: `${s.id}.p99_ms`,
          name: `${s.name} p99`,
          unit: 'ms',
          reprise: p(s.reprise, 0.99),
          influxdb: p(s.influxdb, 0.99),
          ...(s.unsupported ? { unsupported: s.unsupported } : {}),
        }),
      );
    }
    const of = (system: SystemName, k: keyof RestartSample) => restartSamples.filter((x) => x.system === system).map((x) => x[k] as number);
    pairs.push(
      pair({
        id: 'q3.first_query_ms',
        name: restart.name,
        unit: 'ms',
        reprise: { value: median(of('reprise', 'firstQueryMs')), samples: of('reprise', 'firstQueryMs') },
        influxdb: { value: median(of('influxdb', 'firstQueryMs')), samples: of('influxdb', 'firstQueryMs') },
        atMost: 1,
        ...(restartUnsupported ? { unsupported: restartUnsupported } : {}),
        note: `median of ${restarts} restarts`,
      }),
    );
    pairs.push(
      pair({
        id: 'restart.ready_ms',
        name: 'restart: start to ready',
        unit: 'ms',
        reprise: { value: median(of('reprise', 'readyMs')), samples: of('reprise', 'readyMs') },
        influxdb: { value: median(of('influxdb', 'readyMs')), samples: of('influxdb', 'readyMs') },
        note: 'spawn to /health 200 (reprise), /ping 204 (influxd)',
      }),
    );
    const mb = (bytes: number) => bytes / 1e6;
    const parts = (sizes: Record<string, number>) =>
      Object.entries(sizes)
        .map(([k, v]) => `${k} ${mb(v).toFixed(1)}`)
        .join(', ');
    pairs.push(
      pair({
        id: 'disk_mb',
        name: 'disk after flush',
        unit: 'MB',
        reprise: { value: mb(disk.reprise), samples: [mb(disk.reprise)] },
        influxdb: { value: mb(disk.influxdb), samples: [mb(disk.influxdb)] },
        atMost: 1,
        note: `du; bytes/row: reprise ${(disk.reprise / rows).toFixed(1)}, influxdb ${(disk.influxdb / rows).toFixed(1)}; reprise ${parts(diskParts.reprise)}; influxdb ${parts(diskParts.influxdb)}`,
      }),
    );
    pairs.push(
      pair({
        id: 'rss_mb',
        name: 'RSS after the queries',
        unit: 'MB',
        reprise: { value: mb(memory.reprise.rssBytes), samples: [mb(memory.reprise.rssBytes)] },
        influxdb: { value: mb(memory.influxdb.rssBytes), samples: [mb(memory.influxdb.rssBytes)] },
        atMost: 1.5,
        note: `VmRSS; peak (VmHWM): reprise ${mb(memory.reprise.peakRssBytes).toFixed(0)}, influxdb ${mb(memory.influxdb.peakRssBytes).toFixed(0)} MB`,
      }),
    );
    const table2 = sideBySide(pairs);
    completed = true;
    return {
      metrics: pairs.flat(),
      tables: [`peer: reprise vs InfluxDB (${rows.toLocaleString('en-US')} rows, ${series} series)\n${table2}`],
      details: {
        series,
        points,
        rows,
        runs,
        restarts,
        clients: CLIENTS,
        linesPerBatch: LINES_PER_BATCH,
        seed: SEED,
        startMs: START_MS,
        stepMs: STEP_MS,
        loads,
        repriseFlushMs: flushMs,
        repriseTable: table,
        quietAfterLoad: quiet,
        disk,
        diskParts,
        diskAtEnd,
        memory,
        memoryAfterRestart,
        queries: results,
        restartRuns: restartSamples,
        influxdVersion: await influxVersion(),
      },
    };
  } finally {
    closeIdleSockets();
    for (const peer of Object.values(peers)) {
      await peer.server.stop().catch((err: unknown) => ctx.log(`  ${peer.name}: ${(err as Error).message.split('\n')[0]}`));
    }
    // A failed run keeps the servers' logs and data to look at.
    if (completed) await removeDir(root);
    else ctx.log(`  peer: kept ${root} (logs, data) after the failure`);
  }
}

async function influxVersion(): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve) => execFile('influxd', ['version'], (err, stdout) => resolve(err ? 'unknown' : stdout.trim())));
}
