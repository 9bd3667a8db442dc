import { cpus, platform, release, totalmem, arch, hostname, loadavg } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One reported number: the median of its samples, with an optional ratio against a reference. */
export interface Metric {
  /** Stable key for JSON consumers, e.g. `insert.runtime_1shard.w8.rows_per_s`. */
  readonly id: string;
  readonly suite: string;
  /** Human-readable name for the table. */
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  /** Every sample the median was taken from, in run order. */
  readonly samples: readonly number[];
  /** Median of the per-run ratios value/reference, paired within each run. */
  readonly ratio?: {
    readonly of: string;
    readonly value: number;
    readonly samples: readonly number[];
    /** Pass when ratio >= target (targets are ratios, e.g. 0.8), or ratio <= target with `atMost`. */
    readonly target?: number;
    /** The target is a ceiling: e.g. a time or a size relative to a peer's, lower is better. */
    readonly atMost?: boolean;
  };
  /** Set when the system under test could not run this measurement (why): the value is NaN, and a target is missed. */
  readonly unsupported?: string;
  readonly note?: string;
}

export function passOf(m: Metric): boolean | undefined {
  if (m.ratio?.target === undefined) return undefined;
  if (m.unsupported !== undefined) return false;
  return m.ratio.atMost ? m.ratio.value <= m.ratio.target : m.ratio.value >= m.ratio.target;
}

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cpuCount: number;
  readonly node: string;
  readonly v8: string;
  readonly os: string;
  readonly arch: string;
  readonly totalMemMB: number;
  readonly hostname: string;
  readonly loadavgAtStart: number[];
}

export function machineInfo(): MachineInfo {
  const list = cpus();
  return {
    cpuModel: list[0]?.model ?? 'unknown',
    cpuCount: list.length,
    node: process.version,
    v8: process.versions.v8,
    os: `${platform()} ${release()}`,
    arch: arch(),
    totalMemMB: Math.round(totalmem() / 2 ** 20),
    hostname: hostname(),
    loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return String(value);
  if (unit === 'ms') return value < 10 ? value.toFixed(3) : value.toFixed(1);
  if (unit === 'MB/s' || unit === 'µs/batch') return value.toFixed(1);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(2);
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

/** The table printed to stdout. */
/** Ratios near 1 as a percentage; large ones (speedups) as a multiple. */
function formatRatio(value: number, of: string): string {
  return value >= 2 ? `${value.toFixed(1)}x vs ${of}` : `${(value * 100).toFixed(1)}% of ${of}`;
}

export function renderTable(metrics: readonly Metric[]): string {
  const header = ['benchmark', 'value', 'unit', 'ratio', 'target', 'result', 'spread', 'notes'];
  const rows = metrics.map((m) => {
    const pass = passOf(m);
    const s = m.samples.length > 1 ? (max(m.samples) - min(m.samples)) / (m.value || 1) : 0;
    return [
      m.name,
      m.unsupported !== undefined ? 'unsupported' : formatValue(m.value, m.unit),
      m.unit,
      m.ratio && m.unsupported === undefined ? formatRatio(m.ratio.value, m.ratio.of) : '',
      m.ratio?.target !== undefined ? `${m.ratio.atMost ? '<=' : '>='} ${(m.ratio.target * 100).toFixed(0)}%` : '',
      pass === undefined ? '' : pass ? 'PASS' : 'FAIL',
      m.samples.length > 1 && m.unsupported === undefined ? `±${((s / 2) * 100).toFixed(0)}%` : '',
      m.note ?? '',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const numeric = new Set([1]);
  const line = (cells: string[]) =>
    cells
      .map((c, i) => pad(c, widths[i]!, numeric.has(i)))
      .join('  ')
      .trimEnd();
  const out: string[] = [line(header), widths.map((w) => '-'.repeat(w)).join('  ')];
  let suite = metrics[0]?.suite;
  metrics.forEach((m, i) => {
    if (m.suite !== suite) {
      out.push('');
      suite = m.suite;
    }
    out.push(line(rows[i]!));
  });
  return out.join('\n');
}

function max(xs: readonly number[]): number {
  return Math.max(...xs);
}
function min(xs: readonly number[]): number {
  return Math.min(...xs);
}

export async function writeResults(dir: string, payload: unknown, startedAt: Date): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const text = `${JSON.stringify(payload, null, 2)}\n`;
  const files = [join(dir, `${stamp}.json`), join(dir, 'latest.json')];
  for (const f of files) await writeFile(f, text);
  return files;
}
