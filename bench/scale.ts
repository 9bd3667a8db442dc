import { load, makeReprise, queryReprise, shapes, type Shape } from './peer.js';
import { closeIdleSockets, httpCall } from './lib/http.js';
import { collectGarbage, removeDir, tempDir } from './lib/fixtures.js';
import { diskBytes, memoryOf, waitQuiet } from './lib/proc.js';
import type { Metric } from './lib/report.js';
import { quantile } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * Whether query time and memory grow with the table rather than with the
 * answer. The peer suite's load (bench/lib/cpu-lines.ts: 1,000 series,
 * points 10 s apart, 8 clients x 1,000 lines of line protocol) at two sizes,
 * each into a fresh reprise server process, then flushed: 1M and 10M rows
 * (--quick: 100k and 1M). Once the server is quiet, the peer suite's one-series 10-minute
 * query (q1) and one-host hour (q2) are timed --peer-runs times, then the
 * process's RSS is read: after ingest and queries, as a user's server
 * would be. Targets (ceilings): the larger table's q1 p50 within 1.5x of the
 * smaller's, its RSS within 1.2x.
 */

const SERIES = 1000;

interface SizeResult {
  readonly rows: number;
  readonly loadRowsPerSec: number;
  readonly q1: number[];
  readonly q2: number[];
  readonly rssBytes: number;
  readonly peakRssBytes: number;
  readonly diskBytes: number;
}

async function timeShape(url: string, shape: Shape): Promise<number[]> {
  await queryReprise(url, shape.make(-1)); // the first, untimed
  const samples: number[] = [];
  collectGarbage();
  for (let i = 0; i < shape.runs; i++) {
    const t0 = performance.now();
    await queryReprise(url, shape.make(i));
    samples.push(performance.now() - t0);
  }
  return samples;
}

async function measureSize(rows: number, ctx: SuiteContext): Promise<SizeResult> {
  const root = await tempDir('scale');
  const points = rows / SERIES;
  const peer = await makeReprise(root);
  try {
    const loaded = await load(peer, SERIES, points, ctx);
    const flushed = await httpCall(`${peer.server.url}/v1/flush`, { method: 'POST', timeoutMs: 300_000 });
    if (flushed.status !== 200) throw new Error(`scale: flush answered HTTP ${flushed.status}: ${flushed.body.toString('utf8').slice(0, 500)}`);
    // As the peer suite: queries start once the server's CPU is quiet (a compaction the flush started has finished).
    await waitQuiet([peer.server.pid], { timeoutMs: 120_000 });
    const { timed } = shapes(SERIES, points, ctx.options.peerRuns, 0);
    const q1 = await timeShape(peer.server.url, timed[0]!);
    const q2 = await timeShape(peer.server.url, timed[1]!);
    const memory = memoryOf(peer.server.pid);
    const disk = await diskBytes(peer.dataDir);
    const p50 = (xs: number[]) => quantile(xs, 0.5).toFixed(2);
    ctx.log(`  ${rows.toLocaleString('en-US')} rows: q1 p50 ${p50(q1)} ms, q2 p50 ${p50(q2)} ms, RSS ${(memory.rssBytes / 1e6).toFixed(0)} MB (peak ${(memory.peakRssBytes / 1e6).toFixed(0)}), disk ${(disk / 1e6).toFixed(1)} MB`);
    return { rows, loadRowsPerSec: loaded.rowsPerSec, q1, q2, rssBytes: memory.rssBytes, peakRssBytes: memory.peakRssBytes, diskBytes: disk };
  } finally {
    closeIdleSockets();
    await peer.server.stop();
    await removeDir(root);
  }
}

export const scaleSuite: Suite = {
  name: 'scale',
  description: 'growth of one-series query time and RSS from 1M to 10M rows (reprise alone, server process)',
  optIn: true,
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    const sizes = ctx.options.quick ? [100_000, 1_000_000] : [1_000_000, 10_000_000];
    const results: SizeResult[] = [];
    for (const rows of sizes) results.push(await measureSize(rows, ctx));
    const [small, large] = results as [SizeResult, SizeResult];
    const tag = (n: number) => `${n / 1e6}M`;
    const metrics: Metric[] = [];
    for (const r of results) {
      for (const [id, name, xs] of [['q1', 'one series, 10 min', r.q1], ['q2', 'one host, 1 h', r.q2]] as const) {
        metrics.push({ id: `scale.${tag(r.rows)}.${id}.p50_ms`, suite: 'scale', name: `${tag(r.rows)} rows: ${id} ${name} p50`, value: quantile(xs, 0.5), unit: 'ms', samples: xs });
      }
      metrics.push({ id: `scale.${tag(r.rows)}.rss_mb`, suite: 'scale', name: `${tag(r.rows)} rows: RSS after ingest and queries`, value: r.rssBytes / 1e6, unit: 'MB', samples: [r.rssBytes / 1e6], note: `peak ${(r.peakRssBytes / 1e6).toFixed(0)} MB; disk ${(r.diskBytes / 1e6).toFixed(1)} MB; load ${Math.round(r.loadRowsPerSec)} rows/s` });
    }
    const growth = (id: string, name: string, a: number, b: number, target: number, unit: string): Metric => ({
      id: `scale.growth.${id}`,
      suite: 'scale',
      name: `${name}, ${tag(large.rows)} over ${tag(small.rows)}`,
      value: b,
      unit,
      samples: [b],
      ratio: { of: `${tag(small.rows)} rows`, value: b / a, samples: [b / a], target, atMost: true },
    });
    metrics.push(growth('q1_p50', 'q1 p50', quantile(small.q1, 0.5), quantile(large.q1, 0.5), 1.5, 'ms'));
    metrics.push(growth('q2_p50', 'q2 p50', quantile(small.q2, 0.5), quantile(large.q2, 0.5), 1.5, 'ms'));
    metrics.push(growth('rss', 'RSS', small.rssBytes / 1e6, large.rssBytes / 1e6, 1.2, 'MB'));
    return { metrics, details: { sizes: results } };
  },
};
