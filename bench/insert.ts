import { join } from 'node:path';
import type { Transition } from '../src/actors/context.js';
import { open, type Reprise } from '../src/api/runtime.js';
import { DEFAULT_MAX_BATCH_BYTES } from '../src/wal/entry.js';
import { LocalLogStore } from '../src/wal/local-log-store.js';
import { TopicWriter } from '../src/wal/topic-writer.js';
import { cpuNow, cpuPer } from './lib/cpu.js';
import { metricsRows, metricsSchema, putBody, removeDir, settle, tempDir } from './lib/fixtures.js';
import { metric } from './lib/metric.js';
import type { Metric } from './lib/report.js';
import { median } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * Durable insert throughput: `writers` concurrent loops, each inserting
 * batches of 100 rows and awaiting each before the next, for a fixed time.
 *
 *  - raw:        the local log alone: a TopicWriter (the runtime's group
 *                commit) over a LocalLogStore, one topic, each writer
 *                appending a pre-encoded 100-row data entry (the bytes the
 *                runtime would write). The ceiling.
 *  - runtime_1:  the embedded runtime with 1 shard (one WAL topic, the fair
 *                comparison to raw): validate and encode, group-commit, apply
 *                (queue the body in the region's memtable), acknowledge.
 *                Indexing the queued bodies is deferred to the next query or
 *                flush (or idle time): each run ends with a query over every
 *                region, timed apart, and "+ indexing" counts that time too.
 *  - runtime_4:  the default 4 shards; the table's 4 regions sit on 4 topics
 *                that share LevelDB's own group commit.
 * The table has 4 regions (partitioned on host); writer w writes region
 * w % 4, so every batch is one WAL entry in every mode.
 */

export const ROWS_PER_BATCH = 100;
const WRITERS = [1, 8, 64] as const;
const REGIONS = 4;
const TABLE = 'system_metrics';

type Mode = 'raw' | 'runtime_1' | 'runtime_4';
const MODES: readonly Mode[] = ['raw', 'runtime_1', 'runtime_4'];

interface RunResult {
  readonly batches: number;
  readonly seconds: number;
  readonly rowsPerSec: number;
  readonly batchesPerSec: number;
  /** raw only: store appends, to show the group-commit batch size. */
  readonly appends?: number;
  /** runtime only: the query after the run that indexes what the run queued. */
  readonly indexMs?: number;
  /** runtime only: shard flushes the flush policy started during the run (their work competes with the writes). */
  readonly flushes?: number;
  /** CPU per batch during the run: the main thread's (undefined off Linux) and the process's, µs. */
  readonly cpuMainUs: number | undefined;
  readonly cpuProcessUs: number;
}

/** Drive `writers` loops of `step` for `ms`, then wait for the batches in flight. */
export async function drive(
  writers: number,
  ms: number,
  step: (writer: number, seq: number) => Promise<void>,
): Promise<{ batches: number; seconds: number; cpuMainUs: number | undefined; cpuProcessUs: number }> {
  let stop = false;
  let batches = 0;
  const cpu0 = cpuNow();
  const started = performance.now();
  const timer = setTimeout(() => {
    stop = true;
  }, ms);
  const loops = Array.from({ length: writers }, async (_, w) => {
    let seq = 0;
    while (!stop) {
      await step(w, seq++);
      batches++;
    }
  });
  try {
    await Promise.all(loops);
  } finally {
    clearTimeout(timer);
  }
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuPer(cpu0, cpuNow(), Math.max(1, batches));
  return { batches, seconds, cpuMainUs: cpu.mainUs, cpuProcessUs: cpu.processUs };
}

export async function runRaw(writers: number, ms: number): Promise<RunResult> {
  const dir = await tempDir('insert-raw');
  const store = await LocalLogStore.open(join(dir, 'wal'));
  try {
    const topic = 'reprise_wal_0';
    await store.createTopic(topic);
    const schema = metricsSchema(REGIONS);
    const bodies = Array.from({ length: writers }, (_, w) =>
      putBody(schema, metricsRows(w % REGIONS, w, 0, ROWS_PER_BATCH)),
    );
    const writer = new TopicWriter(store, topic, { maxBatchBytes: DEFAULT_MAX_BATCH_BYTES });
    // The runtime's first entries: topic marker, epoch, region_create.
    await writer.append({ kind: 'epoch', region: 0, epoch: 1, body: new Uint8Array() });
    const before = writer.stats.appends;
    const { batches, seconds, cpuMainUs, cpuProcessUs } = await drive(writers, ms, async (w) => {
      await writer.append({ kind: 'data', region: (w % REGIONS) + 1, epoch: 1, body: bodies[w]! });
    });
    const appends = writer.stats.appends - before;
    await writer.close();
    return { batches, seconds, rowsPerSec: (batches * ROWS_PER_BATCH) / seconds, batchesPerSec: batches / seconds, appends, cpuMainUs, cpuProcessUs };
  } finally {
    await store.close();
    await removeDir(dir);
  }
}

export async function runRuntime(shards: number, writers: number, ms: number): Promise<RunResult> {
  const dir = await tempDir(`insert-rt${shards}`);
  let db: Reprise | undefined;
  try {
    let flushes = 0;
    const onTransition = (t: Transition) => {
      if (t.kind === 'shard' && t.to === 'flushing') flushes++;
    };
    db = await open({ dataDir: dir, shards, logger: false, onTransition });
    await db.createTable(metricsSchema(REGIONS, TABLE));
    const rt = db;
    const flushesBefore = flushes;
    const { batches, seconds, cpuMainUs, cpuProcessUs } = await drive(writers, ms, async (w, seq) => {
      const { written } = await rt.insert(TABLE, metricsRows(w % REGIONS, w, seq, ROWS_PER_BATCH));
      if (written !== ROWS_PER_BATCH) throw new Error(`insert wrote ${written} rows, expected ${ROWS_PER_BATCH}`);
    });
    const flushesDuringRun = flushes - flushesBefore;
    // Sanity: every batch is one entry applied by a shard.
    const shardsStatus = rt.status().nodes[0]!.shards;
    const regionsWithData = shardsStatus.flatMap((s) => s.regions).filter((r) => r.appliedEntryId > 0 && r.memtableBytes > 0).length;
    if (regionsWithData < Math.min(REGIONS, writers)) {
      throw new Error(`expected rows in ${Math.min(REGIONS, writers)} regions, found ${regionsWithData}`);
    }
    // The work the run deferred: a query over every region indexes what they queued.
    const q0 = performance.now();
    if ((await rt.query(TABLE, { limit: 1 })).length !== 1) throw new Error('the query after the run found no row');
    const indexMs = performance.now() - q0;
    return { batches, seconds, rowsPerSec: (batches * ROWS_PER_BATCH) / seconds, batchesPerSec: batches / seconds, indexMs, flushes: flushesDuringRun, cpuMainUs, cpuProcessUs };
  } finally {
    // No final flush: it is not part of the measurement and the directory goes away.
    await db?.close({ flush: false });
    await removeDir(dir);
  }
}

function runMode(mode: Mode, writers: number, ms: number): Promise<RunResult> {
  if (mode === 'raw') return runRaw(writers, ms);
  return runRuntime(mode === 'runtime_1' ? 1 : 4, writers, ms);
}

export const insertSuite: Suite = {
  name: 'insert',
  description: 'durable insert throughput, runtime vs raw batched append of the local log, at 1/8/64 writers',
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    const { runs, insertMs } = ctx.options;
    // Warm up the JIT on every path, not measured.
    for (const mode of MODES) await runMode(mode, 8, Math.min(500, insertMs));

    const results = new Map<string, RunResult[]>();
    const key = (mode: Mode, w: number) => `${mode}/${w}`;
    for (let run = 0; run < runs; run++) {
      for (const writers of WRITERS) {
        // Rotate the order so no mode always runs first (or last) in a round.
        const order = MODES.map((_, i) => MODES[(i + run) % MODES.length]!);
        if (run % 2 === 1) order.reverse();
        for (const mode of order) {
          await settle();
          const r = await runMode(mode, writers, insertMs);
          const list = results.get(key(mode, writers)) ?? [];
          list.push(r);
          results.set(key(mode, writers), list);
        }
        const line = MODES.map((m) => `${m} ${Math.round(results.get(key(m, writers))!.at(-1)!.rowsPerSec).toLocaleString('en-US')}`);
        ctx.log(`insert run ${run + 1}/${runs}, ${writers} writers: ${line.join(', ')} rows/s`);
      }
    }

    const metrics: Metric[] = [];
    for (const writers of WRITERS) {
      const raw = results.get(key('raw', writers))!;
      const rt1 = results.get(key('runtime_1', writers))!;
      const rt4 = results.get(key('runtime_4', writers))!;
      const rawRows = raw.map((r) => r.rowsPerSec);
      const perAppend = median(raw.map((r) => r.batches / Math.max(1, r.appends ?? 1)));
      const w = `${writers} writer${writers === 1 ? '' : 's'}`;
      metrics.push(
        metric({
          id: `insert.raw.w${writers}.rows_per_s`,
          suite: 'insert',
          name: `raw batched append, ${w}`,
          unit: 'rows/s',
          samples: rawRows,
          note: `${fmt(median(raw.map((r) => r.batchesPerSec)))} batches/s, ${perAppend.toFixed(1)} entries/append; ${cpuNote(raw)}`,
        }),
        metric({
          id: `insert.runtime_1shard.w${writers}.rows_per_s`,
          suite: 'insert',
          name: `runtime insert 1 shard, ${w}`,
          unit: 'rows/s',
          samples: rt1.map((r) => r.rowsPerSec),
          versus: { of: 'raw', samples: rawRows, target: 0.8 },
          note: `${fmt(median(rt1.map((r) => r.batchesPerSec)))} batches/s; ${cpuNote(rt1)}; flushes per run ${rt1.map((r) => r.flushes).join('/')}`,
        }),
        metric({
          id: `insert.runtime_1shard_indexed.w${writers}.rows_per_s`,
          suite: 'insert',
          name: `runtime insert 1 shard + indexing, ${w}`,
          unit: 'rows/s',
          samples: rt1.map((r) => (r.batches * ROWS_PER_BATCH) / (r.seconds + (r.indexMs as number) / 1000)),
          versus: { of: 'raw', samples: rawRows },
          note: `the run + the query indexing what it queued: ${fmt(median(rt1.map((r) => r.indexMs as number)))} ms, ${median(rt1.map((r) => ((r.indexMs as number) * 1000) / r.batches)).toFixed(0)} µs per batch`,
        }),
        metric({
          id: `insert.runtime_4shards.w${writers}.rows_per_s`,
          suite: 'insert',
          name: `runtime insert 4 shards, ${w}`,
          unit: 'rows/s',
          samples: rt4.map((r) => r.rowsPerSec),
          versus: { of: 'raw', samples: rawRows },
          note: `${fmt(median(rt4.map((r) => r.batchesPerSec)))} batches/s`,
        }),
      );
    }
    const details: Record<string, unknown> = { rowsPerBatch: ROWS_PER_BATCH, regions: REGIONS, durationMs: insertMs, runs: Object.fromEntries(results) };
    return { metrics, details };
  },
};

/** Median CPU per batch of a measurement's runs. */
function cpuNote(runs: readonly RunResult[]): string {
  const main = runs.map((r) => r.cpuMainUs).filter((x): x is number => x !== undefined);
  const mainPart = main.length > 0 ? `main thread ${median(main).toFixed(0)} µs, ` : '';
  return `CPU/batch: ${mainPart}process ${median(runs.map((r) => r.cpuProcessUs)).toFixed(0)} µs`;
}

function fmt(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}
