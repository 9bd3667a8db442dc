import { createHash, type Hash } from 'node:crypto';

/**
 * The `cpu` measurement the peer benchmark loads, as InfluxDB line protocol
 * (precision ms), generated on the fly and deterministically:
 *
 *   cpu,host=host_0007,core=c3 usage_user=23.41,usage_system=4.07,usage_idle=72.52 1767225600000
 *
 * Series s is host_<floor(s / 5)> (zero-padded to 4 digits), core c<s % 5>:
 * 1,000 series are 200 hosts x 5 cores. Each series is a random walk
 * (usage_user in [0, 90], usage_system in [0, 10], usage_idle the rest,
 * rounded to 2 decimals), one point every 10 s from 2026-01-01T00:00:00Z.
 * Lines come time-major, as a collector scraping the fleet sends them:
 * every series at t0, then every series at t0 + 10 s, ..., cut into batches
 * of `linesPerBatch` lines. The same seed gives the same bytes, so both
 * systems are loaded with identical requests without keeping them in memory.
 */

export const MEASUREMENT = 'cpu';
export const CORES_PER_HOST = 5;
export const START_MS = Date.UTC(2026, 0, 1);
export const STEP_MS = 10_000;
export const FIELDS = ['usage_user', 'usage_system', 'usage_idle'] as const;

export function hostName(h: number): string {
  return `host_${String(h).padStart(4, '0')}`;
}

export function coreName(c: number): string {
  return `c${c}`;
}

export function hostCount(series: number): number {
  return Math.ceil(series / CORES_PER_HOST);
}

/** mulberry32: a small, fast, seeded PRNG (uniform in [0, 1)). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const round2 = (x: number) => Math.round(x * 100) / 100;

/** Reflect a walk back into [lo, hi]. */
function reflect(x: number, lo: number, hi: number): number {
  if (x < lo) return lo + (lo - x);
  if (x > hi) return hi - (x - hi);
  return x;
}

export class CpuLines {
  private readonly random: () => number;
  private readonly user: Float64Array;
  private readonly system: Float64Array;
  /** Series key prefixes (`cpu,host=...,core=... `), built once. */
  private readonly keys: string[];
  /** The same as JSON row prefixes (`{"host":"...","core":"...",`). */
  private readonly jsonKeys: string[];
  private point = 0;
  private seriesIndex = 0;
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  lines = 0;

  constructor(
    readonly series: number,
    readonly points: number,
    seed = 42,
  ) {
    this.random = prng(seed);
    this.user = new Float64Array(series);
    this.system = new Float64Array(series);
    this.keys = [];
    this.jsonKeys = [];
    for (let s = 0; s < series; s++) {
      this.user[s] = 5 + this.random() * 55;
      this.system[s] = 1 + this.random() * 7;
      this.keys.push(`${MEASUREMENT},host=${hostName(Math.floor(s / CORES_PER_HOST))},core=${coreName(s % CORES_PER_HOST)} `);
      this.jsonKeys.push(`{"host":"${hostName(Math.floor(s / CORES_PER_HOST))}","core":"${coreName(s % CORES_PER_HOST)}",`);
    }
  }

  get total(): number {
    return this.series * this.points;
  }

  /** The next batch of up to `linesPerBatch` lines (newline-separated), or undefined at the end. */
  next(linesPerBatch: number): string | undefined {
    if (this.point >= this.points) return undefined;
    const out: string[] = [];
    while (out.length < linesPerBatch && this.point < this.points) {
      const { s, user, system, idle, ts } = this.step();
      out.push(`${this.keys[s]}usage_user=${user},usage_system=${system},usage_idle=${idle} ${ts}`);
    }
    return this.emit(out.join('\n'), out.length);
  }

  /**
   * The same points as `next` would give, as the body of reprise's JSON row
   * API (`POST /v1/tables/cpu/rows`): an array of up to `rowsPerBatch` row
   * objects {host, core, usage_user, usage_system, usage_idle, ts (epoch ms)}.
   */
  nextJson(rowsPerBatch: number): string | undefined {
    if (this.point >= this.points) return undefined;
    const out: string[] = [];
    while (out.length < rowsPerBatch && this.point < this.points) {
      const { s, user, system, idle, ts } = this.step();
      out.push(`${this.jsonKeys[s]}"usage_user":${user},"usage_system":${system},"usage_idle":${idle},"ts":${ts}}`);
    }
    return this.emit(`[${out.join(',')}]`, out.length);
  }

  /** The next point: series s at the current time, rounded values. */
  private step(): { s: number; user: number; system: number; idle: number; ts: number } {
    const s = this.seriesIndex;
    const u = reflect(this.user[s]! + (this.random() - 0.5) * 4, 0, 90);
    const sy = reflect(this.system[s]! + (this.random() - 0.5) * 1, 0, 10);
    this.user[s] = u;
    this.system[s] = sy;
    const ur = round2(u);
    const sr = round2(sy);
    const point = { s, user: ur, system: sr, idle: round2(100 - ur - sr), ts: START_MS + this.point * STEP_MS };
    if (++this.seriesIndex === this.series) {
      this.seriesIndex = 0;
      this.point++;
    }
    return point;
  }

  private emit(batch: string, lines: number): string {
    this.hash.update(batch);
    this.hash.update('\n');
    this.bytes += Buffer.byteLength(batch) + 1;
    this.lines += lines;
    return batch;
  }

  /** SHA-256 of every batch handed out so far (each followed by a newline): the same for both systems' loads. */
  digest(): string {
    return this.hash.copy().digest('hex');
  }
}
