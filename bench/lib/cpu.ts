import { readFileSync } from 'node:fs';

/**
 * CPU time consumed so far, in microseconds: the main (JavaScript) thread's
 * alone, and the whole process's (LevelDB's threads, V8's GC helpers, ...).
 * The main thread's comes from Linux's schedstat (nanoseconds on the CPU);
 * elsewhere it is undefined. Unlike wall time, neither counts the time the
 * thread waited for the disk, nor (mostly) time a busy host took from this
 * VM, so per-batch CPU explains a throughput gap that fsync latency and
 * noise hide.
 */
export interface CpuSnapshot {
  readonly mainUs: number | undefined;
  readonly processUs: number;
}

const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;

export function cpuNow(): CpuSnapshot {
  const { user, system } = process.cpuUsage();
  return { mainUs: mainThreadUs(), processUs: user + system };
}

/** CPU used between two snapshots, per `n` (e.g. per batch). */
export function cpuPer(from: CpuSnapshot, to: CpuSnapshot, n: number): { mainUs: number | undefined; processUs: number } {
  const main = from.mainUs !== undefined && to.mainUs !== undefined ? (to.mainUs - from.mainUs) / n : undefined;
  return { mainUs: main, processUs: (to.processUs - from.processUs) / n };
}

function mainThreadUs(): number | undefined {
  try {
    return Number(readFileSync(SCHEDSTAT, 'utf8').split(' ')[0]) / 1000;
  } catch {
    return undefined;
  }
}
