import { join } from 'node:path';
import { open, type Reprise } from '../src/api/runtime.js';
import { LocalLogStore } from '../src/wal/local-log-store.js';
import { TopicWriter } from '../src/wal/topic-writer.js';
import { metricsRows, metricsSchema, putBody, removeDir, settle, tempDir } from './lib/fixtures.js';
import { metric } from './lib/metric.js';
import { max, median, quantile } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * Single-row insert latency: one writer, one row per insert, each awaited
 * before the next, so every insert is its own synced LevelDB write. Next to
 * it, for context, the same through a bare TopicWriter on the local log
 * (a pre-encoded one-row entry): the floor set by the synced write.
 */

const TABLE = 'system_metrics';
const WARMUP = 100;

interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

function summarise(samples: number[]): Percentiles {
  return {
    p50: quantile(samples, 0.5),
    p99: quantile(samples, 0.99),
    max: max(samples),
    mean: samples.reduce((a, b) => a + b, 0) / samples.length,
  };
}

async function runtimeLatency(ops: number): Promise<Percentiles> {
  const dir = await tempDir('latency-rt');
  let db: Reprise | undefined;
  try {
    db = await open({ dataDir: dir, shards: 1, logger: false });
    await db.createTable(metricsSchema(4, TABLE));
    for (let i = 0; i < WARMUP; i++) await db.insert(TABLE, metricsRows(0, 0, i, 1));
    const samples = new Array<number>(ops);
    for (let i = 0; i < ops; i++) {
      const rows = metricsRows(i & 3, 1, i, 1);
      const t0 = performance.now();
      await db.insert(TABLE, rows);
      samples[i] = performance.now() - t0;
    }
    return summarise(samples);
  } finally {
    await db?.close({ flush: false });
    await removeDir(dir);
  }
}

async function rawLatency(ops: number): Promise<Percentiles> {
  const dir = await tempDir('latency-raw');
  const store = await LocalLogStore.open(join(dir, 'wal'));
  try {
    await store.createTopic('reprise_wal_0');
    const writer = new TopicWriter(store, 'reprise_wal_0');
    const schema = metricsSchema(4, TABLE);
    const body = putBody(schema, metricsRows(0, 0, 0, 1));
    for (let i = 0; i < WARMUP; i++) await writer.append({ kind: 'data', region: 1, epoch: 1, body });
    const samples = new Array<number>(ops);
    for (let i = 0; i < ops; i++) {
      const t0 = performance.now();
      await writer.append({ kind: 'data', region: 1 + (i & 3), epoch: 1, body });
      samples[i] = performance.now() - t0;
    }
    await writer.close();
    return summarise(samples);
  } finally {
    await store.close();
    await removeDir(dir);
  }
}

export const latencySuite: Suite = {
  name: 'latency',
  description: 'single-row insert latency (sequential, each a synced write)',
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    const { latencyOps } = ctx.options;
    // Latency runs are short: repeat more than the others.
    const runs = Math.max(ctx.options.runs, 5);
    const rt: Percentiles[] = [];
    const raw: Percentiles[] = [];
    for (let run = 0; run < runs; run++) {
      const pair = run % 2 === 0 ? (['rt', 'raw'] as const) : (['raw', 'rt'] as const);
      for (const which of pair) {
        await settle();
        if (which === 'rt') rt.push(await runtimeLatency(latencyOps));
        else raw.push(await rawLatency(latencyOps));
      }
      ctx.log(
        `latency run ${run + 1}/${runs}: runtime p50 ${rt.at(-1)!.p50.toFixed(3)} p99 ${rt.at(-1)!.p99.toFixed(3)} ms, ` +
          `raw p50 ${raw.at(-1)!.p50.toFixed(3)} p99 ${raw.at(-1)!.p99.toFixed(3)} ms`,
      );
    }
    const pick = (xs: Percentiles[], k: keyof Percentiles) => xs.map((x) => x[k]);
    const note = `${latencyOps} inserts x ${runs} runs; median of per-run values`;
    const metrics = [
      metric({ id: 'latency.runtime.p50_ms', suite: 'latency', name: 'runtime single-row insert p50', unit: 'ms', samples: pick(rt, 'p50'), note }),
      metric({ id: 'latency.runtime.p99_ms', suite: 'latency', name: 'runtime single-row insert p99', unit: 'ms', samples: pick(rt, 'p99') }),
      metric({ id: 'latency.runtime.max_ms', suite: 'latency', name: 'runtime single-row insert max', unit: 'ms', samples: pick(rt, 'max') }),
      metric({ id: 'latency.raw.p50_ms', suite: 'latency', name: 'raw single-entry append p50', unit: 'ms', samples: pick(raw, 'p50'), note: 'context: one synced LevelDB write' }),
      metric({ id: 'latency.raw.p99_ms', suite: 'latency', name: 'raw single-entry append p99', unit: 'ms', samples: pick(raw, 'p99') }),
      metric({ id: 'latency.raw.max_ms', suite: 'latency', name: 'raw single-entry append max', unit: 'ms', samples: pick(raw, 'max') }),
    ];
    return { metrics, details: { ops: latencyOps, warmup: WARMUP, runs: { runtime: rt, raw }, runtimeMeanMs: median(pick(rt, 'mean')) } };
  },
};
