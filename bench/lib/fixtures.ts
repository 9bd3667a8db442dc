import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Row, TableSchema } from '../../src/engine/schema.js';
import { tableMutationCodec } from '../../src/engine/table/codec.js';
import { validateSchema } from '../../src/engine/table/validate.js';

/**
 * The table every benchmark writes: system_metrics as in the README, with
 * range partitioning on `host`. `regions` partitions: bounds
 * host_001 .. host_<regions-1>, so a host named `host_<r>_...` (r zero-padded to 3)
 * lands in region index r.
 */
export function metricsSchema(regions: number, name = 'system_metrics'): TableSchema {
  const bounds: string[] = [];
  for (let r = 1; r < regions; r++) bounds.push(regionPrefix(r));
  return validateSchema({
    name,
    columns: [
      { name: 'host', type: 'string', role: 'tag' },
      { name: 'idc', type: 'string', role: 'tag' },
      { name: 'cpu_util', type: 'float64', role: 'field' },
      { name: 'memory_util', type: 'float64', role: 'field' },
      { name: 'disk_util', type: 'float64', role: 'field' },
      { name: 'ts', type: 'timestamp', role: 'time' },
    ],
    ...(bounds.length > 0 ? { partition: { column: 'host', bounds } } : {}),
  });
}

export function regionPrefix(r: number): string {
  return `host_${String(r).padStart(3, '0')}`;
}

const IDCS = ['idc_a', 'idc_b', 'idc_c', 'idc_d'];
const HOSTS = 50;
const hostCache = new Map<string, string[]>();

/**
 * The 50 host names of a (region, writer), made once and flat: a string
 * built by concatenation is a V8 cons string, which costs every comparison
 * an extra indirection (about 25% more per memtable insert), while rows
 * from JSON.parse (the HTTP API) hold flat strings.
 */
function hostNames(region: number, writer: number): string[] {
  const key = `${region}/${writer}`;
  let names = hostCache.get(key);
  if (names === undefined) {
    const prefix = `${regionPrefix(region)}_w${writer}_`;
    names = JSON.parse(JSON.stringify(Array.from({ length: HOSTS }, (_, h) => prefix + String(h)))) as string[];
    hostCache.set(key, names);
  }
  return names;
}
const BASE_TS = 1_667_446_797_450;

/**
 * A batch of `n` rows for partition `region`, with primary keys unique per
 * (region, writer, seq): 50 hosts x 4 idcs, then time moves on, like a
 * scrape of a fleet every second. Values are fractional, as real gauges are
 * (so float64 encodes as 9 bytes, not as a small integer).
 */
export function metricsRows(region: number, writer: number, seq: number, n: number): Row[] {
  const rows: Row[] = new Array(n);
  const hosts = hostNames(region, writer);
  for (let i = 0; i < n; i++) {
    const k = seq * n + i;
    const x = k * 0.618034;
    rows[i] = {
      host: hosts[k % HOSTS]!,
      idc: IDCS[(k / 50) & 3]!,
      cpu_util: (x * 97.1) % 100,
      memory_util: (x * 31.7) % 100,
      disk_util: (x * 13.3) % 100,
      ts: BASE_TS + Math.floor(k / 200) * 1000 + writer,
    };
  }
  return rows;
}

/**
 * The WAL entry body the runtime writes for rows of one partition (as
 * metricsRows makes them): validated and encoded by the runtime's own codec,
 * so the bytes match.
 */
export function putBody(schema: TableSchema, rows: readonly Row[]): Uint8Array {
  const { parts } = tableMutationCodec.preparePuts(schema, rows);
  if (parts.length !== 1) throw new Error(`expected rows of one partition, got ${parts.length} partitions`);
  return parts[0]!.mutation.body;
}

export async function tempDir(tag: string): Promise<string> {
  return mkdtemp(join(process.env.REPRISE_BENCH_TMP ?? tmpdir(), `reprise-bench-${tag}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

let gcFn: (() => void) | undefined;

/** Full GC between measurements, so one run's garbage is not collected during the next. */
export function collectGarbage(): void {
  if (gcFn === undefined) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Before each measurement: a full GC (the previous run's garbage is not
 * collected during this one), then a pause so V8's concurrent sweeping and
 * LevelDB's closing threads are done before the clock starts.
 */
export async function settle(pauseMs = 100): Promise<void> {
  collectGarbage();
  await sleep(pauseMs);
}
