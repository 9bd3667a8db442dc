import { CpuLines, FIELDS, MEASUREMENT } from './lib/cpu-lines.js';
import { removeDir, sleep, tempDir } from './lib/fixtures.js';
import { closeIdleSockets, httpCall } from './lib/http.js';
import { cpuSecondsOf, memoryOf, threadCpuSecondsOf, waitQuiet } from './lib/proc.js';
import type { Metric } from './lib/report.js';
import { median } from './lib/stats.js';
import type { SuiteContext, SuiteResult } from './lib/suite.js';
import { DB, INFLUX_COLD_S, LINES_PER_BATCH, QUERY_TIMEOUT_MS, SEED, expectStatus, makeInflux, makeReprise, pair, queryReprise, sideBySide, type Peer, type SystemName } from './peer.js';

/**
 * The peer suite's ingest phase (issue 19): durable ingest throughput of
 * reprise and InfluxDB 1.x side by side, with what each run costs the
 * server in CPU and memory.
 *
 *  - line protocol, the same bytes into both (lib/cpu-lines.ts, the load
 *    phase's seed, SHA-256 of the bytes checked equal), 1,000 lines per
 *    request, at 1, 8 and 64 concurrent clients; each client posts its next
 *    batch once the previous one is acknowledged (204, durable: reprise's
 *    WAL, influxd with wal-fsync-delay 0s). The first batch goes alone (it
 *    creates reprise's table), as in the load phase.
 *  - reprise's JSON row API (`POST /v1/tables/cpu/rows`, 100 rows a
 *    request, the table created first with POST /v1/tables with the columns
 *    line protocol gives it) at 8 and 64 clients: reprise alone (InfluxDB
 *    has no JSON row API), acknowledged by 200 {"written": n}.
 *  - every (system, protocol, clients) on a fresh server with its own temp
 *    directory, stopped and removed after; for each client count the two
 *    systems take turns going first.
 *  - CPU over the load (first request sent to last acknowledgement), per
 *    acknowledged row: the whole process (/proc/<pid>/stat) and, for
 *    reprise, its main thread (/proc/<pid>/task/<pid>/stat, where the
 *    JavaScript runs); then, once the server is quiet again (reprise
 *    indexes memtables while idle; influxd snapshots its cache after
 *    INFLUX_COLD_S cold seconds, waited for), the process's CPU including
 *    that work after the load.
 *  - memory: VmRSS sampled every 100 ms over the load, the maximum
 *    reported, VmHWM kept too. reprise runs with explicit budgets
 *    (REPRISE_INGEST_MEMORY) and its peak is checked against a bound: the
 *    RSS of the idle server after start + memtableBytes + cacheBytes +
 *    maxWriteBytesInFlight + NEW_SPACE_BYTES per V8 isolate (the main
 *    thread and each ingest thread, /v1/status `ingest.threads`).
 *
 * A request answered otherwise than durably fails the suite with its status
 * and body; a row counts only when its request is acknowledged, and after
 * each run the server is asked to count the rows it holds.
 */

const RUN_ID = 'peer';

/**
 * What one V8 isolate's young generation grows to under ingest's allocation
 * rate: from 1 MiB idle to two 16 MiB semi-spaces (V8's default on 64-bit;
 * measured: new_space 34 MB in an ingest worker under 8 clients). It is not
 * a budget reprise sets, but it is fixed: it does not grow with the data.
 */
const NEW_SPACE_BYTES = 32 * 1024 * 1024;
const CLIENT_COUNTS = [1, 8, 64] as const;
const JSON_CLIENT_COUNTS = [8, 64] as const;
const JSON_ROWS_PER_BATCH = 100;
const RSS_SAMPLE_MS = 100;
const MiB = 1024 * 1024;

/** Targets: reprise/influxdb rows/s at least this, line protocol, by client count. */
const LINE_TARGETS: Record<number, number> = { 1: 1, 8: 1.5, 64: 1.5 };

/**
 * reprise's memory settings for the ingest phase, passed as their
 * environment variables (src/cli/config.ts ENV_KEYS). memtableBytes below
 * what a 1M-row run holds, so a flush happens under load; in-flight writes
 * above what 64 clients of 1,000 lines (about 88 KB each) hold at once, so
 * no request is refused OVERLOADED.
 */
export const REPRISE_INGEST_MEMORY = {
  memtableBytes: 64 * MiB,
  cacheBytes: 32 * MiB,
  maxWriteBytesInFlight: 16 * MiB,
} as const;

const REPRISE_INGEST_ENV: Record<string, string> = {
  REPRISE_MEMTABLE_BYTES: String(REPRISE_INGEST_MEMORY.memtableBytes),
  REPRISE_CACHE_BYTES: String(REPRISE_INGEST_MEMORY.cacheBytes),
  REPRISE_MAX_WRITE_BYTES_IN_FLIGHT: String(REPRISE_INGEST_MEMORY.maxWriteBytesInFlight),
};

/**
 * Flags of every reprise server in this phase, after makeReprise's own
 * (data dir, HTTP address, log level). The SQL protocols are off (nothing
 * here uses them, and their default ports may be taken). Add flags under
 * test here, e.g. '--ingest-threads', '2'.
 */
export const REPRISE_INGEST_ARGS: readonly string[] = ['--mysql-addr', '', '--postgres-addr', ''];

type Protocol = 'line' | 'json';

interface RssSampler {
  /** The largest VmRSS sampled so far, bytes. */
  peak(): number;
  stop(): { peakBytes: number; samples: number; maxGapMs: number };
}

/** VmRSS of `pid` every RSS_SAMPLE_MS (timer-driven: late when the event loop is busy, hence maxGapMs). */
function sampleRss(pid: number): RssSampler {
  let peak = memoryOf(pid).rssBytes;
  let samples = 1;
  let last = performance.now();
  let maxGapMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    try {
      peak = Math.max(peak, memoryOf(pid).rssBytes);
      samples++;
    } catch {
      // The process is gone: the run fails on its next request.
    }
  }, RSS_SAMPLE_MS);
  return {
    peak: () => peak,
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, memoryOf(pid).rssBytes);
      return { peakBytes: peak, samples: samples + 1, maxGapMs };
    },
  };
}

export interface IngestRun {
  /** 0-based: the round of runs this one belongs to. */
  readonly round: number;
  readonly system: SystemName;
  readonly protocol: Protocol;
  readonly clients: number;
  readonly rowsPerRequest: number;
  /** Acknowledged rows. */
  readonly rows: number;
  readonly requests: number;
  readonly bytes: number;
  readonly digest: string;
  /** First request sent to last acknowledgement. */
  readonly seconds: number;
  readonly rowsPerSec: number;
  readonly cpu: {
    readonly processSeconds: number;
    readonly processUsPerRow: number;
    /** reprise only: the main thread (tid = pid). */
    readonly mainThreadSeconds?: number;
    readonly mainThreadUsPerRow?: number;
    /** The process from the first request until quiet again after the load (influxd: after its cold snapshot). */
    readonly processWithSettleSeconds: number;
    readonly processWithSettleUsPerRow: number;
    readonly settleMs: number;
    readonly settleQuiet: boolean;
    /** The benchmark's own process over the load (generating and sending the requests), user + system. */
    readonly clientSeconds: number;
  };
  readonly rss: {
    /** After start, once quiet (reprise: with the table created for a JSON run). */
    readonly idleBytes: number;
    /** The largest VmRSS sampled over the load. */
    readonly peakBytes: number;
    readonly samples: number;
    readonly maxGapMs: number;
    /** VmRSS and VmHWM at the end of the load, and the largest sample through the settle. */
    readonly atEndBytes: number;
    readonly hwmAtEndBytes: number;
    readonly peakWithSettleBytes: number;
  };
  /** reprise only. */
  readonly bound?: { readonly bytes: number; readonly pass: boolean } & typeof REPRISE_INGEST_MEMORY;
  /** reprise only: /v1/status before and after the load (all top-level fields but `nodes`, which is summarised to its shards), and the write-admission lines of /metrics after it. */
  readonly status?: { readonly before: unknown; readonly afterLoad: unknown; readonly writeMetrics: string[] };
  /** Rows the server counted after the run. */
  readonly counted: number;
  readonly startMs: number;
}

/** The ingest phase: every run, then metrics and two tables. */
export async function runIngest(ctx: SuiteContext): Promise<SuiteResult> {
  const { peerSeries: series, peerIngestRows: rows } = ctx.options;
  const mb = REPRISE_INGEST_MEMORY;
  ctx.log(
    `peer ingest: ${rows.toLocaleString('en-US')} rows per run (${series} series), line protocol at ${CLIENT_COUNTS.join('/')} clients, JSON at ${JSON_CLIENT_COUNTS.join('/')}; ` +
      `reprise memtable ${mb.memtableBytes / MiB} MiB, cache ${mb.cacheBytes / MiB} MiB, writes in flight ${mb.maxWriteBytesInFlight / MiB} MiB, args ${JSON.stringify(REPRISE_INGEST_ARGS)}`,
  );
  const runs: IngestRun[] = [];
  const rounds = ctx.options.peerIngestRounds;
  for (let round = 0; round < rounds; round++) {
    for (const [k, clients] of CLIENT_COUNTS.entries()) {
      // Which system goes first alternates by client count and by round (noise on this shared VM hits both).
      const order: SystemName[] = (k + round) % 2 === 0 ? ['reprise', 'influxdb'] : ['influxdb', 'reprise'];
      const pairRuns: Partial<Record<SystemName, IngestRun>> = {};
      for (const system of order) runs.push((pairRuns[system] = await ingestRun(round, system, 'line', clients, series, rows, ctx)));
      if (pairRuns.reprise!.digest !== pairRuns.influxdb!.digest) throw new Error(`peer ingest: the two loads at ${clients} clients did not send the same bytes`);
    }
    for (const clients of JSON_CLIENT_COUNTS) runs.push(await ingestRun(round, 'reprise', 'json', clients, series, rows, ctx));
  }

  const metrics: Metric[] = [];
  const pairs: [Metric, Metric][] = [];
  /** The runs of one configuration, one per round, in round order. */
  const of = (system: SystemName, protocol: Protocol, clients: number) => runs.filter((r) => r.system === system && r.protocol === protocol && r.clients === clients);
  /** The median over the rounds, with each round's value as a sample (pair() pairs samples round by round). */
  const over = (xs: readonly IngestRun[], f: (r: IngestRun) => number) => {
    const samples = xs.map(f);
    return { value: median(samples), samples };
  };
  const med = (xs: readonly IngestRun[], f: (r: IngestRun) => number) => median(xs.map(f));
  for (const clients of CLIENT_COUNTS) {
    const r = of('reprise', 'line', clients);
    const i = of('influxdb', 'line', clients);
    const label = `ingest line protocol, ${clients} client${clients > 1 ? 's' : ''} x ${LINES_PER_BATCH.toLocaleString('en-US')} lines`;
    pairs.push(
      pair({
        id: `ingest.line.c${clients}.rows_per_s`,
        name: label,
        unit: 'rows/s',
        reprise: over(r, (x) => x.rowsPerSec),
        influxdb: over(i, (x) => x.rowsPerSec),
        atLeast: LINE_TARGETS[clients]!,
        note: `${rows.toLocaleString('en-US')} rows durable per run, fresh servers, median of ${r.length} rounds; higher is better`,
      }),
      pair({
        id: `ingest.line.c${clients}.process_cpu_us_per_row`,
        name: `${label}: process CPU`,
        unit: 'µs/row',
        reprise: over(r, (x) => x.cpu.processUsPerRow),
        influxdb: over(i, (x) => x.cpu.processUsPerRow),
        note: `over the load; with the work after it until quiet: reprise ${med(r, (x) => x.cpu.processWithSettleUsPerRow).toFixed(2)}, influxdb ${med(i, (x) => x.cpu.processWithSettleUsPerRow).toFixed(2)} µs/row (medians)`,
      }),
      pair({
        id: `ingest.line.c${clients}.peak_rss_mb`,
        name: `${label}: peak RSS`,
        unit: 'MB',
        reprise: over(r, (x) => x.rss.peakBytes / 1e6),
        influxdb: over(i, (x) => x.rss.peakBytes / 1e6),
        note: `VmRSS every ${RSS_SAMPLE_MS} ms over the load, median of the rounds' peaks`,
      }),
    );
  }
  metrics.push(...pairs.flat());
  const configurations = [...CLIENT_COUNTS.map((c) => ['line', c] as const), ...JSON_CLIENT_COUNTS.map((c) => ['json', c] as const)];
  for (const [protocol, clients] of configurations) {
    const r = of('reprise', protocol, clients);
    const key = `${RUN_ID}.reprise.ingest.${protocol}.c${clients}`;
    const label = `ingest ${protocol === 'line' ? 'line protocol' : 'JSON rows'}, ${clients} client${clients > 1 ? 's' : ''} x ${r[0]!.rowsPerRequest.toLocaleString('en-US')} ${protocol === 'line' ? 'lines' : 'rows'}`;
    const metric = (id: string, name: string, unit: string, f: (x: IngestRun) => number, note: string): Metric => ({ id: `${key}.${id}`, suite: RUN_ID, name: `${label}: ${name}reprise`, unit, note, ...over(r, f) });
    if (protocol === 'json') {
      metrics.push(metric('rows_per_s', '', 'rows/s', (x) => x.rowsPerSec, `${rows.toLocaleString('en-US')} rows durable per run (200 {"written": n}), median of ${r.length} rounds; no InfluxDB counterpart`));
      metrics.push(metric('process_cpu_us_per_row', 'process CPU: ', 'µs/row', (x) => x.cpu.processUsPerRow, `with the work after the load until quiet: ${med(r, (x) => x.cpu.processWithSettleUsPerRow).toFixed(2)} µs/row`));
    }
    metrics.push(metric('main_thread_cpu_us_per_row', 'main-thread CPU: ', 'µs/row', (x) => x.cpu.mainThreadUsPerRow!, '/proc/<pid>/task/<pid>/stat over the load'));
    const peak = over(r, (x) => x.rss.peakBytes / 1e6);
    const ratios = r.map((x) => x.rss.peakBytes / x.bound!.bytes);
    const bound = r[0]!.bound!;
    metrics.push({
      id: `${key}.peak_rss_vs_bound_mb`,
      suite: RUN_ID,
      name: `${label}: peak RSS vs bound: reprise`,
      unit: 'MB',
      ...peak,
      // The worst round decides: the bound is a ceiling.
      ratio: { of: 'RSS bound', value: Math.max(...ratios), samples: ratios, target: 1, atMost: true },
      note: `bound (per run) = idle + memtable ${bound.memtableBytes / MiB} MiB + cache ${bound.cacheBytes / MiB} MiB + writes in flight ${bound.maxWriteBytesInFlight / MiB} MiB + young generations of the V8 isolates; ratio: the worst round`,
    });
  }

  const title = `peer ingest: reprise vs InfluxDB, line protocol (${rows.toLocaleString('en-US')} rows per run, ${series} series, each run on a fresh server)`;
  return {
    metrics,
    tables: [
      `${title}\n${sideBySide(pairs, `reprise/influxdb: median / median over ${rounds} rounds; the rows/s targets are floors (reprise at least that multiple of InfluxDB)`)}`,
      `peer ingest: per run (${rows.toLocaleString('en-US')} rows each)\n${runTable(runs)}`,
    ],
    details: {
      rows,
      series,
      seed: SEED,
      clientCounts: CLIENT_COUNTS,
      jsonClientCounts: JSON_CLIENT_COUNTS,
      linesPerRequest: LINES_PER_BATCH,
      jsonRowsPerRequest: JSON_ROWS_PER_BATCH,
      rssSampleMs: RSS_SAMPLE_MS,
      repriseArgs: REPRISE_INGEST_ARGS,
      repriseEnv: REPRISE_INGEST_ENV,
      repriseMemory: REPRISE_INGEST_MEMORY,
      lineTargets: LINE_TARGETS,
      runs,
    },
  };
}

/** One run: a fresh server of `system`, `rows` rows at `clients` clients, measured, counted, stopped, removed. */
async function ingestRun(round: number, system: SystemName, protocol: Protocol, clients: number, series: number, rows: number, ctx: SuiteContext): Promise<IngestRun> {
  const name = `${system} ${protocol} c${clients}`;
  const root = await tempDir(`peer-ingest-${system}-${protocol}-c${clients}`);
  let peer: Peer | undefined;
  let completed = false;
  try {
    peer = system === 'reprise' ? await makeReprise(root, REPRISE_INGEST_ARGS, REPRISE_INGEST_ENV) : await makeInflux(root);
    const { pid, url } = peer.server;
    if (protocol === 'json') await createJsonTable(url);
    // Idle: once the fresh server has settled (reprise warms its read path at start).
    await waitQuiet([pid], { windowMs: 1000, timeoutMs: 15_000 });
    const idleBytes = memoryOf(pid).rssBytes;
    const before = system === 'reprise' ? await statusOf(url) : undefined;

    const rowsPerRequest = protocol === 'line' ? LINES_PER_BATCH : JSON_ROWS_PER_BATCH;
    const lines = new CpuLines(series, Math.ceil(rows / series), SEED);
    const take = (): { body: string; rows: number } | undefined => {
      const n = Math.min(rowsPerRequest, rows - lines.lines);
      if (n <= 0) return undefined;
      const had = lines.lines;
      const body = protocol === 'line' ? lines.next(n) : lines.nextJson(n);
      return body === undefined ? undefined : { body, rows: lines.lines - had };
    };
    const send: (batch: { body: string; rows: number }) => Promise<void> = protocol === 'line' ? (b) => peer!.write(b.body) : (b) => writeJson(url, b.body, b.rows);

    const sampler = sampleRss(pid);
    const cpu0 = cpuSecondsOf(pid);
    const main0 = system === 'reprise' ? threadCpuSecondsOf(pid, pid) : 0;
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    const { acked, requests } = await drive(take, send, clients, rows, name, ctx);
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = cpuSecondsOf(pid);
    const main1 = system === 'reprise' ? threadCpuSecondsOf(pid, pid) : 0;
    const client = process.cpuUsage(client0);
    const peakBytes = sampler.peak();
    const atEnd = memoryOf(pid);
    const afterLoad = system === 'reprise' ? await statusOf(url) : undefined;
    const writeMetrics = system === 'reprise' ? await writeMetricLines(url) : [];

    // The work after the last acknowledgement: reprise indexes while idle, influxd snapshots once cold.
    const s0 = performance.now();
    if (system === 'influxdb') await sleep((INFLUX_COLD_S + 2) * 1000);
    const quiet = await waitQuiet([pid], { timeoutMs: 60_000 });
    const settleMs = performance.now() - s0;
    const cpu2 = cpuSecondsOf(pid);
    const rss = sampler.stop();
    const counted = await countRows(peer);
    if (counted !== acked) throw new Error(`peer ingest ${name}: ${acked} rows acknowledged, but the server counts ${counted}`);

    const us = (s: number) => (s * 1e6) / acked;
    // /proc counts clock ticks (10 ms): no more digits than that.
    const ticks = (s: number) => Math.round(s * 100) / 100;
    const memory = REPRISE_INGEST_MEMORY;
    const isolates = 1 + ((afterLoad as { ingest?: { threads?: number } } | undefined)?.ingest?.threads ?? 0);
    const boundBytes = idleBytes + memory.memtableBytes + memory.cacheBytes + memory.maxWriteBytesInFlight + isolates * NEW_SPACE_BYTES;
    const run: IngestRun = {
      round,
      system,
      protocol,
      clients,
      rowsPerRequest,
      rows: acked,
      requests,
      bytes: lines.bytes,
      digest: lines.digest(),
      seconds,
      rowsPerSec: acked / seconds,
      cpu: {
        processSeconds: ticks(cpu1 - cpu0),
        processUsPerRow: us(cpu1 - cpu0),
        ...(system === 'reprise' ? { mainThreadSeconds: ticks(main1 - main0), mainThreadUsPerRow: us(main1 - main0) } : {}),
        processWithSettleSeconds: ticks(cpu2 - cpu0),
        processWithSettleUsPerRow: us(cpu2 - cpu0),
        settleMs,
        settleQuiet: quiet.quiet,
        clientSeconds: (client.user + client.system) / 1e6,
      },
      rss: { idleBytes, peakBytes, samples: rss.samples, maxGapMs: rss.maxGapMs, atEndBytes: atEnd.rssBytes, hwmAtEndBytes: atEnd.peakRssBytes, peakWithSettleBytes: rss.peakBytes },
      ...(system === 'reprise' ? { bound: { bytes: boundBytes, pass: peakBytes <= boundBytes, ...memory }, status: { before, afterLoad, writeMetrics } } : {}),
      counted,
      startMs: peer.server.startMs,
    };
    const mbs = (b: number) => `${(b / 1e6).toFixed(0)} MB`;
    ctx.log(
      `  ${name}: ${acked.toLocaleString('en-US')} rows in ${seconds.toFixed(2)} s = ${Math.round(run.rowsPerSec).toLocaleString('en-US')} rows/s; ` +
        `CPU ${run.cpu.processUsPerRow.toFixed(2)} µs/row${run.cpu.mainThreadUsPerRow !== undefined ? ` (main thread ${run.cpu.mainThreadUsPerRow.toFixed(2)})` : ''}, ${run.cpu.processWithSettleUsPerRow.toFixed(2)} with the ${(settleMs / 1000).toFixed(1)} s after; ` +
        `RSS idle ${mbs(idleBytes)}, peak ${mbs(peakBytes)}${run.bound ? ` (bound ${mbs(boundBytes)}: ${run.bound.pass ? 'PASS' : 'FAIL'})` : ''}; counted ${counted.toLocaleString('en-US')}`,
    );
    completed = true;
    return run;
  } finally {
    closeIdleSockets();
    await peer?.server.stop().catch((err: unknown) => ctx.log(`  ${name}: ${(err as Error).message.split('\n')[0]}`));
    // A failed run keeps the server's log and data to look at.
    if (completed) await removeDir(root);
    else ctx.log(`  peer ingest: kept ${root} (log, data) after the failure`);
  }
}

/**
 * `clients` concurrent clients, each sending the next batch once its last
 * is acknowledged, after the first batch alone. Resolves with the rows
 * acknowledged; the first failure stops every client and rejects.
 */
async function drive(
  take: () => { body: string; rows: number } | undefined,
  send: (batch: { body: string; rows: number }) => Promise<void>,
  clients: number,
  total: number,
  name: string,
  ctx: SuiteContext,
): Promise<{ acked: number; requests: number }> {
  let acked = 0;
  let requests = 0;
  let failed = false;
  let nextReport = 0.25;
  const t0 = performance.now();
  const one = async (batch: { body: string; rows: number }) => {
    await send(batch);
    acked += batch.rows;
    requests++;
    if (acked / total >= nextReport) {
      nextReport += 0.25;
      ctx.log(`  ${name}: ${Math.round((acked / total) * 100)}%, ${Math.round(acked / ((performance.now() - t0) / 1000)).toLocaleString('en-US')} rows/s so far`);
    }
  };
  const client = async () => {
    while (!failed) {
      const batch = take();
      if (batch === undefined) return;
      try {
        await one(batch);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const first = take();
  if (first === undefined) throw new Error(`peer ingest ${name}: no rows to send`);
  await one(first);
  await Promise.all(Array.from({ length: clients }, client));
  return { acked, requests };
}

const JSON_COLUMNS = [
  { name: 'host', type: 'string', role: 'tag' },
  { name: 'core', type: 'string', role: 'tag' },
  ...FIELDS.map((name) => ({ name, type: 'float64', role: 'field' })),
  { name: 'ts', type: 'timestamp', role: 'time' },
];

/** The table line protocol would create (tags host, core; the three fields; ts), made through the JSON API. */
async function createJsonTable(url: string): Promise<void> {
  await expectStatus('reprise create table', httpCall(`${url}/v1/tables`, { method: 'POST', body: JSON.stringify({ name: MEASUREMENT, columns: JSON_COLUMNS }), headers: { 'content-type': 'application/json' } }), 201);
}

/** One JSON write: durable is 200 {"written": rows}; anything else fails the run. */
async function writeJson(url: string, body: string, rows: number): Promise<void> {
  const res = await httpCall(`${url}/v1/tables/${MEASUREMENT}/rows`, { method: 'POST', body, headers: { 'content-type': 'application/json' }, timeoutMs: QUERY_TIMEOUT_MS });
  const text = res.body.toString('utf8');
  let written: unknown;
  try {
    written = (JSON.parse(text) as { written?: unknown }).written;
  } catch {
    written = undefined;
  }
  if (res.status !== 200 || written !== rows) throw new Error(`reprise JSON write: HTTP ${res.status} (expected 200 {"written":${rows}}): ${text.slice(0, 2000)}`);
}

/** /v1/status: every top-level field, `nodes` cut down to each shard's entry ids and region count. */
async function statusOf(url: string): Promise<unknown> {
  const res = await httpCall(`${url}/v1/status`, { timeoutMs: 10_000 });
  if (res.status !== 200) return { status: res.status, body: res.body.toString('utf8').slice(0, 500) };
  const body = JSON.parse(res.body.toString('utf8')) as Record<string, unknown> & { nodes?: { id: string; state: string; shards?: { id: number; role: string; lastEntryId: number; flushedEntryId: number; regions?: unknown[] }[] }[] };
  const { nodes, ...rest } = body;
  return {
    ...rest,
    nodes: nodes?.map((n) => ({
      id: n.id,
      state: n.state,
      shards: n.shards?.map((s) => ({ id: s.id, role: s.role, lastEntryId: s.lastEntryId, flushedEntryId: s.flushedEntryId, regions: s.regions?.length ?? 0 })),
    })),
  };
}

/** The lines of /metrics about write admission and ingest (bytes in flight, refusals, anything named ingest). */
async function writeMetricLines(url: string): Promise<string[]> {
  const res = await httpCall(`${url}/metrics`, { timeoutMs: 10_000 });
  if (res.status !== 200) return [`HTTP ${res.status}`];
  return res.body
    .toString('utf8')
    .split('\n')
    .filter((l) => !l.startsWith('#') && /^reprise_(http_write|[a-z_]*ingest)/.test(l));
}

/** Rows the server holds in `cpu`, asked after the run. */
async function countRows(peer: Peer): Promise<number> {
  const url = peer.server.url;
  if (peer.name === 'reprise') {
    const rows = await queryReprise(url, { label: 'count', reprise: { aggregates: [{ fn: 'count', as: 'n' }] }, influxql: '', columns: [], keys: [] });
    return Number((rows[0] as { n?: unknown } | undefined)?.n ?? 0);
  }
  const res = await httpCall(`${url}/query?db=${DB}&q=${encodeURIComponent(`SELECT count(${FIELDS[0]}) FROM ${MEASUREMENT}`)}`, { timeoutMs: QUERY_TIMEOUT_MS });
  const json = JSON.parse(res.body.toString('utf8')) as { results?: { series?: { values: [unknown, number][] }[] }[] };
  return Number(json.results?.[0]?.series?.[0]?.values[0]?.[1] ?? 0);
}

function runTable(runs: readonly IngestRun[]): string {
  const header = ['run', 'rows/s', 'main µs/row', 'process µs/row', '+ after load', 'idle RSS MB', 'peak RSS MB', 'RSS bound MB', 'bound', 'seconds'];
  const mb = (b: number) => (b / 1e6).toFixed(1);
  const rows = runs.map((r) => [
    `${r.round + 1}: ${r.system} ${r.protocol === 'line' ? 'line protocol' : 'JSON rows'}, ${r.clients} x ${r.rowsPerRequest}`,
    Math.round(r.rowsPerSec).toLocaleString('en-US'),
    r.cpu.mainThreadUsPerRow !== undefined ? r.cpu.mainThreadUsPerRow.toFixed(2) : '-',
    r.cpu.processUsPerRow.toFixed(2),
    r.cpu.processWithSettleUsPerRow.toFixed(2),
    mb(r.rss.idleBytes),
    mb(r.rss.peakBytes),
    r.bound ? mb(r.bound.bytes) : '-',
    r.bound ? (r.bound.pass ? 'PASS' : 'FAIL') : '',
    r.seconds.toFixed(1),
  ]);
  const widths = header.map((h, k) => Math.max(h.length, ...rows.map((row) => row[k]!.length)));
  const line = (cells: string[]) => cells.map((c, k) => (k === 0 || k === 8 ? c.padEnd(widths[k]!) : c.padStart(widths[k]!))).join('  ').trimEnd();
  return [
    line(header),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
    '',
    'CPU per acknowledged row over the load (first request to last acknowledgement): main = the server\'s main thread (reprise), process = all its threads;',
    '"+ after load": the process until quiet again (reprise indexes while idle; influxd snapshots its cache once cold). RSS: VmRSS every 100 ms over the load;',
    'bound = idle RSS + memtableBytes + cacheBytes + maxWriteBytesInFlight (reprise\'s settings for this phase) + 32 MiB of young generation per V8 isolate (main + ingest threads).',
  ].join('\n');
}
