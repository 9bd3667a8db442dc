/**
 * reprise benchmarks: `npm run bench [-- options]`.
 *
 *   --quick              short smoke run (small logs, short runs)
 *   --only a,b           suites to run: insert, latency, replay, cost, kafka, cluster, objects, peer, scale, sql
 *                        (default all but peer, scale and sql, which run only when named)
 *   --runs N             repetitions per measurement, median reported (default 3)
 *   --insert-ms MS       duration of one insert-throughput run (default 1500)
 *   --latency-ops N      single-row inserts per latency run (default 1000)
 *   --replay-entries N   100-row entries in the replay log (default 8000)
 *   --replay-small N     1-row entries in the second replay log (default 100000; 0 skips it)
 *   --peer-series N      peer and sql: series loaded into reprise and InfluxDB (default 1000; 5 per host)
 *   --peer-points N      peer and sql: points per series (default 10000)
 *   --peer-runs N        peer, scale and sql: timed runs per query shape and system (default 50)
 *   --peer-ingest-rows N peer: rows of each ingest run, per system and client count (default 1000000; 0 skips it)
 *   --peer-ingest-rounds N peer: rounds of ingest runs, medians reported (default 3; --quick 1)
 *   --objects-rows N     objects: rows flushed at once over 4 regions (default 200000)
 *   --objects-scan-rows N objects: rows of the region opened and scanned (default 200000)
 *   --out DIR            where JSON results go (default bench/results)
 *   --strict             exit 1 when a target is missed
 *
 * Prints a table to stdout (progress to stderr) and writes
 * <out>/<timestamp>.json and <out>/latest.json.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { clusterSuite } from './cluster.js';
import { costSuite } from './cost.js';
import { insertSuite } from './insert.js';
import { kafkaSuite } from './kafka.js';
import { latencySuite } from './latency.js';
import { objectsSuite } from './objects.js';
import { peerSuite } from './peer.js';
import { replaySuite } from './replay.js';
import { scaleSuite } from './scale.js';
import { sqlSuite } from './sql.js';
import { machineInfo, passOf, renderTable, writeResults, type Metric } from './lib/report.js';
import type { BenchOptions, Suite } from './lib/suite.js';

const SUITES: readonly Suite[] = [insertSuite, latencySuite, replaySuite, costSuite, kafkaSuite, clusterSuite, objectsSuite, peerSuite, scaleSuite, sqlSuite];

function usage(): string {
  return [
    'usage: npm run bench -- [--quick] [--only insert,latency,replay,cost,kafka,cluster,objects,peer,scale,sql] [--runs N] [--insert-ms MS]',
    '                        [--latency-ops N] [--replay-entries N] [--replay-small N]',
    '                        [--peer-series N] [--peer-points N] [--peer-runs N] [--peer-ingest-rows N] [--peer-ingest-rounds N] [--objects-rows N] [--objects-scan-rows N]',
    '                        [--out DIR] [--strict]',
    '',
    ...SUITES.map((s) => `  ${s.name.padEnd(8)} ${s.description}${s.optIn ? ' (only with --only)' : ''}`),
  ].join('\n');
}

function positiveInt(name: string, raw: string | undefined, fallback: number, allowZero = false): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < (allowZero ? 0 : 1)) throw new Error(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got '${raw}'`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      runs: { type: 'string' },
      'insert-ms': { type: 'string' },
      'latency-ops': { type: 'string' },
      'replay-entries': { type: 'string' },
      'replay-small': { type: 'string' },
      'peer-series': { type: 'string' },
      'peer-points': { type: 'string' },
      'peer-runs': { type: 'string' },
      'peer-ingest-rows': { type: 'string' },
      'peer-ingest-rounds': { type: 'string' },
      'objects-rows': { type: 'string' },
      'objects-scan-rows': { type: 'string' },
      out: { type: 'string' },
      strict: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage());
    return 0;
  }
  const quick = values.quick ?? false;
  const options: BenchOptions = {
    quick,
    runs: positiveInt('runs', values.runs, quick ? 1 : 3),
    insertMs: positiveInt('insert-ms', values['insert-ms'], quick ? 300 : 1500),
    latencyOps: positiveInt('latency-ops', values['latency-ops'], quick ? 200 : 1000),
    replayEntries: positiveInt('replay-entries', values['replay-entries'], quick ? 1000 : 8000, true),
    replaySmallEntries: positiveInt('replay-small', values['replay-small'], quick ? 10000 : 100000, true),
    peerSeries: positiveInt('peer-series', values['peer-series'], quick ? 100 : 1000),
    peerPoints: positiveInt('peer-points', values['peer-points'], quick ? 2000 : 10000),
    peerRuns: positiveInt('peer-runs', values['peer-runs'], quick ? 20 : 50),
    peerIngestRows: positiveInt('peer-ingest-rows', values['peer-ingest-rows'], quick ? 200_000 : 1_000_000, true),
    peerIngestRounds: positiveInt('peer-ingest-rounds', values['peer-ingest-rounds'], quick ? 1 : 3),
    objectsRows: positiveInt('objects-rows', values['objects-rows'], quick ? 50_000 : 200_000),
    objectsScanRows: positiveInt('objects-scan-rows', values['objects-scan-rows'], quick ? 100_000 : 200_000),
  };
  let suites = SUITES.filter((s) => !s.optIn);
  if (values.only !== undefined) {
    const wanted = values.only.split(',').map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((w) => !SUITES.some((s) => s.name === w));
    if (unknown.length > 0) throw new Error(`unknown suite(s) ${unknown.join(', ')}; known: ${SUITES.map((s) => s.name).join(', ')}`);
    suites = SUITES.filter((s) => wanted.includes(s.name));
  }

  const startedAt = new Date();
  const machine = machineInfo();
  const log = (message: string) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${message}\n`);
  const t0 = performance.now();
  log(`${machine.cpuCount} x ${machine.cpuModel}, node ${machine.node}; suites ${suites.map((s) => s.name).join(', ')}; ${JSON.stringify(options)}`);

  const metrics: Metric[] = [];
  const tables: string[] = [];
  const details: Record<string, unknown> = {};
  const durations: Record<string, number> = {};
  for (const suite of suites) {
    const s0 = performance.now();
    const result = await suite.run({ options, log });
    durations[suite.name] = Math.round(performance.now() - s0);
    metrics.push(...result.metrics);
    tables.push(...(result.tables ?? []));
    details[suite.name] = result.details;
  }

  console.log(renderTable(metrics));
  for (const table of tables) console.log(`\n${table}`);
  const targets = metrics.filter((m) => passOf(m) !== undefined);
  const failed = targets.filter((m) => passOf(m) === false);
  console.log(`\ntargets: ${targets.length - failed.length}/${targets.length} met (ratios are measured in this run; bench/README.md says how each suite pairs them)`);

  const files = await writeResults(
    resolve(values.out ?? 'bench/results'),
    {
      startedAt: startedAt.toISOString(),
      totalMs: Math.round(performance.now() - t0),
      machine,
      options,
      suites: suites.map((s) => s.name),
      durationsMs: durations,
      metrics: metrics.map((m) => ({ ...m, pass: passOf(m) ?? null })),
      details,
    },
    startedAt,
  );
  log(`results: ${files.join(', ')}`);
  return values.strict && failed.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    console.error(usage());
    process.exitCode = 2;
  },
);
