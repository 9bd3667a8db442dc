import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { call, startServer, type Server } from '../harness/standalone.js';
import { until } from '../harness/wait.js';

// The HTTP counterpart of test/e2e/crash.test.ts: a real `reprise
// standalone` SIGKILLed while 8 clients post batches over line protocol and
// JSON, restarted on the same data dir each time, then every acknowledged
// batch must be there whole, each row once, with the values sent.

const ITERATIONS = Number(process.env.REPRISE_INGEST_CRASH_ITERATIONS ?? 3);

/**
 * `--ingest-threads` of each run (worker threads encoding writes; 0: the
 * main thread); undefined passes no flag, the server's default (cores - 1).
 */
const THREAD_SETTINGS: (number | undefined)[] = [undefined, 0, 2];

const CLIENTS = 8;
const LINES = 500;
/** Batches one client may send in one run: timestamps are derived from the batch number below it. */
const MAX_BATCHES = 10_000;
const T0 = 1_700_000_000_000;

// One table per endpoint, unpartitioned: a batch is then one insert into one
// region, one WAL entry, so it must appear whole or not at all.
const schema = (name: string) => ({
  name,
  columns: [
    { name: 'batch', type: 'string', role: 'tag' },
    { name: 'i', type: 'int64', role: 'field' },
    { name: 'v', type: 'float64', role: 'field' },
    { name: 's', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
});
const LP_TABLE = 'ingest_lp';
const JSON_TABLE = 'ingest_json';

interface Row {
  batch: string;
  i: number;
  v: number;
  s: string;
  ts: number;
}

/** A batch: client `client`'s `n`th of run `run`; even batches go over line protocol, odd ones as JSON rows. */
interface Batch {
  id: string;
  run: number;
  client: number;
  n: number;
}

const batchId = (run: number, client: number, n: number) => `${run}-${client}-${n}`;

function parseBatch(id: string): Batch | undefined {
  const match = /^(\d+)-(\d+)-(\d+)$/.exec(id);
  return match ? { id, run: Number(match[1]), client: Number(match[2]), n: Number(match[3]) } : undefined;
}

const tableOf = (b: Batch) => ((b.client + b.n) % 2 === 0 ? LP_TABLE : JSON_TABLE);

/** Every run's timestamps lie in [runStart(run), runStart(run + 1)): distinct for every row ever sent. */
const runStart = (run: number) => T0 + run * CLIENTS * MAX_BATCHES * LINES;

/** Row `i` of a batch, derived from its id alone. */
function rowOf(b: Batch, i: number): Row {
  const seq = (b.run * CLIENTS + b.client) * MAX_BATCHES + b.n;
  // A float that is not a short decimal, and a string that line protocol must quote (space, comma, =).
  return { batch: b.id, i, v: (seq % 997) + i / 7, s: `${b.id} #${i}, k=v`, ts: T0 + seq * LINES + i };
}

function request(b: Batch): { path: string; init: RequestInit; acknowledged: (status: number, text: string) => boolean } {
  const rows = Array.from({ length: LINES }, (_, i) => rowOf(b, i));
  if (tableOf(b) === LP_TABLE) {
    const body = rows.map((r) => `${LP_TABLE},batch=${r.batch} i=${r.i}i,v=${r.v},s="${r.s}" ${r.ts}`).join('\n');
    return { path: '/v1/influxdb/write?precision=ms', init: { method: 'POST', body }, acknowledged: (status, text) => status === 204 && text === '' };
  }
  return {
    path: `/v1/tables/${JSON_TABLE}/rows`,
    init: { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rows) },
    acknowledged: (status, text) => status === 200 && text === JSON.stringify({ written: LINES }),
  };
}

interface Ledger {
  /** Batches whose request was started. */
  tried: Set<string>;
  /** Batches answered 204 (line protocol) or 200 {"written": 500} (JSON). */
  acked: Set<string>;
  /** Anything but an acknowledgement, except a connection failing after the kill. */
  unexpected: string[];
}

/**
 * One run: start the server, let 8 clients write until steady (the first
 * acknowledgement), SIGKILL it `killAfterMs` later, and wait for every
 * client to stop.
 */
async function writeAndKill(dataDir: string, args: string[], run: number, killAfterMs: number, ledger: Ledger): Promise<{ acked: number }> {
  const server = await startServer(dataDir, {}, args);
  if (run === 0) {
    for (const name of [LP_TABLE, JSON_TABLE]) expect((await call(server, 'POST', '/v1/tables', schema(name))).status).toBe(201);
  }
  let killed = false;
  let acked = 0;
  const client = async (c: number) => {
    for (let n = 0; !killed; n++) {
      if (n >= MAX_BATCHES) throw new Error(`client ${c} sent ${MAX_BATCHES} batches in run ${run}: timestamps would collide`);
      const b = { id: batchId(run, c, n), run, client: c, n };
      const { path, init, acknowledged } = request(b);
      ledger.tried.add(b.id);
      let status: number;
      let text: string;
      try {
        const response = await fetch(new URL(path, server.url), init);
        status = response.status;
        text = await response.text();
      } catch (err) {
        // The connection failing is what the kill does; before it, it is a fault.
        if (!killed) ledger.unexpected.push(`${b.id}: ${String(err)} ${String((err as { cause?: unknown }).cause ?? '')}`);
        return;
      }
      if (acknowledged(status, text)) {
        ledger.acked.add(b.id);
        acked++;
      } else {
        ledger.unexpected.push(`${b.id}: ${status} ${text.slice(0, 300)}`);
      }
    }
  };
  const clients = Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  try {
    await until(() => (acked > 0 ? true : undefined), `a first acknowledged batch in run ${run}`, { timeoutMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, killAfterMs));
    expect(server.child.exitCode, 'the server exited by itself').toBeNull();
  } finally {
    killed = true;
    server.child.kill('SIGKILL');
  }
  expect((await server.exited).signal).toBe('SIGKILL');
  await clients;
  return { acked };
}

/** Every row of `table`, one run's time range per query (a run's rows fit in one answer). */
async function readAll(server: Server, table: string, runs: number): Promise<Row[]> {
  const rows: Row[] = [];
  for (let run = 0; run < runs; run++) {
    const answer = await call(server, 'POST', `/v1/tables/${table}/query`, { timeRange: { from: runStart(run), to: runStart(run + 1) } });
    expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(200);
    for (const row of answer.body.rows as Row[]) rows.push(row);
  }
  // Nothing outside the runs' ranges either.
  const outside = await call(server, 'POST', `/v1/tables/${table}/query`, { timeRange: { from: runStart(runs), to: Number.MAX_SAFE_INTEGER } });
  for (const row of outside.body.rows as Row[]) rows.push(row);
  const before = await call(server, 'POST', `/v1/tables/${table}/query`, { timeRange: { from: 0, to: T0 } });
  for (const row of before.body.rows as Row[]) rows.push(row);
  return rows;
}

/** Every acknowledged batch whole, each row once with the values sent; no row of a batch never sent; unacknowledged batches absent or whole. */
function expectBatches(table: string, rows: Row[], ledger: Ledger, context: string): void {
  const byBatch = new Map<string, Set<number>>();
  const problems: string[] = [];
  for (const row of rows) {
    const b = parseBatch(row.batch);
    if (!b || !ledger.tried.has(row.batch)) {
      problems.push(`row of a batch never sent: ${JSON.stringify(row)}`);
      continue;
    }
    if (tableOf(b) !== table) problems.push(`batch ${b.id} found in ${table}: ${JSON.stringify(row)}`);
    let seen = byBatch.get(b.id);
    if (!seen) byBatch.set(b.id, (seen = new Set()));
    if (seen.has(row.i)) problems.push(`row ${b.id}#${row.i} read twice`);
    seen.add(row.i);
    const expected = Number.isInteger(row.i) && row.i >= 0 && row.i < LINES ? rowOf(b, row.i) : undefined;
    if (JSON.stringify(row) !== JSON.stringify(expected)) problems.push(`row ${b.id}#${row.i} is ${JSON.stringify(row)}, sent ${JSON.stringify(expected)}`);
  }
  for (const [id, seen] of byBatch) if (seen.size !== LINES) problems.push(`batch ${id} is partial: ${seen.size} of ${LINES} rows`);
  const lost = [...ledger.acked].filter((id) => tableOf(parseBatch(id)!) === table && !byBatch.has(id));
  if (lost.length > 0) problems.push(`${lost.length} acknowledged batches lost: ${lost.slice(0, 20).join(', ')}`);
  expect(problems.slice(0, 20), `${table}: ${problems.length} problems (${context})`).toEqual([]);
}

describe('crash safety over HTTP: SIGKILL of reprise standalone mid-ingest, restart, check', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  for (const threads of THREAD_SETTINGS) {
    const args = threads === undefined ? [] : ['--ingest-threads', String(threads)];
    const setting = threads === undefined ? 'the default ingest threads' : `--ingest-threads ${threads}`;

    it(`a crash (SIGKILL) mid-ingest loses nothing acknowledged: ${ITERATIONS} kills, line protocol and JSON, ${setting}`, async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'reprise-ingest-crash-'));
      dirs.push(dataDir);
      const ledger: Ledger = { tried: new Set(), acked: new Set(), unexpected: [] };
      const runs: string[] = [];
      for (let run = 0; run < ITERATIONS; run++) {
        const killAfterMs = 300 + Math.floor(Math.random() * 1700);
        const { acked } = await writeAndKill(dataDir, args, run, killAfterMs, ledger);
        runs.push(`run ${run}: killed ${killAfterMs} ms into steady writes, ${acked} batches acknowledged`);
      }
      const context = runs.join('; ');
      expect(ledger.unexpected.slice(0, 20), `answers that were neither an acknowledgement nor the kill (${context})`).toEqual([]);
      // Both endpoints were acknowledged in every run (not vacuous).
      for (let run = 0; run < ITERATIONS; run++) {
        const ofRun = [...ledger.acked].map((id) => parseBatch(id)!).filter((b) => b.run === run);
        expect(new Set(ofRun.map(tableOf)), `endpoints acknowledged in run ${run} (${context})`).toEqual(new Set([LP_TABLE, JSON_TABLE]));
      }

      const server = await startServer(dataDir, {}, args);
      try {
        for (const table of [LP_TABLE, JSON_TABLE]) expectBatches(table, await readAll(server, table, ITERATIONS), ledger, context);
      } finally {
        server.child.kill('SIGKILL');
        await server.exited;
      }
    });
  }
});
