import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { sleep } from './fixtures.js';

/**
 * Servers the benchmarks run as real child processes (reprise standalone,
 * influxd): start on a free port, wait until a probe answers, stop
 * gracefully, and read what the kernel says about them (memory, CPU, disk).
 */

const execFileAsync = promisify(execFile);


export interface ServerProcess {
  readonly name: string;
  readonly url: string;
  readonly pid: number;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** From spawn to the first successful probe, ms. */
  readonly startMs: number;
  /** SIGTERM and wait for the exit (SIGKILL after `timeoutMs`); resolves with how long it took, ms. */
  stop(timeoutMs?: number): Promise<number>;
}

export interface SpawnOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly url: string;
  /** Appended to: the server's stdout and stderr. */
  readonly logFile: string;
  /** Resolves true once the server is ready. Errors count as not ready. */
  readonly ready: () => Promise<boolean>;
  readonly readyTimeoutMs?: number;
  readonly env?: Record<string, string>;
}

function tail(file: string, bytes = 4000): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.slice(-bytes);
  } catch {
    return '';
  }
}

export async function spawnServer(options: SpawnOptions): Promise<ServerProcess> {
  const fd = openSync(options.logFile, 'a');
  const t0 = performance.now();
  const child = spawn(options.command, [...options.args], { stdio: ['ignore', fd, fd], env: { ...process.env, ...options.env } });
  closeSync(fd);
  // No server outlives the benchmark, even when it fails half-way.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      process.off('exit', reap);
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const spawnError = new Promise<Error>((resolve) => child.on('error', resolve));
  let failure: Error | undefined;
  void spawnError.then((err) => (failure = err));
  const deadline = t0 + (options.readyTimeoutMs ?? 120_000);
  for (;;) {
    if (failure) throw new Error(`${options.name}: cannot start ${options.command}: ${failure.message}`);
    if (exitInfo) throw new Error(`${options.name} exited (${exitInfo.code ?? exitInfo.signal}) before it was ready; log ${options.logFile}:\n${tail(options.logFile)}`);
    if (await options.ready().catch(() => false)) break;
    if (performance.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${options.name} not ready after ${options.readyTimeoutMs ?? 120_000} ms; log ${options.logFile}:\n${tail(options.logFile)}`);
    }
    await sleep(10);
  }
  const startMs = performance.now() - t0;
  if (child.pid === undefined) throw new Error(`${options.name}: no pid`);
  return {
    name: options.name,
    url: options.url,
    pid: child.pid,
    child,
    exited,
    startMs,
    async stop(timeoutMs = 120_000) {
      const s0 = performance.now();
      if (exitInfo) return 0;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const { code, signal } = await exited;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`${options.name} did not stop cleanly (exit ${code ?? signal}); log ${options.logFile}:\n${tail(options.logFile)}`);
      return performance.now() - s0;
    },
  };
}

export interface ProcessMemory {
  /** Resident set size now (VmRSS), bytes. */
  readonly rssBytes: number;
  /** Peak resident set size since the process started (VmHWM), bytes. */
  readonly peakRssBytes: number;
}

/** VmRSS and VmHWM of a process, from /proc/<pid>/status. */
export function memoryOf(pid: number): ProcessMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => {
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!match) throw new Error(`/proc/${pid}/status has no ${key}`);
    return Number(match[1]) * 1024;
  };
  return { rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') };
}

const CLOCK_TICKS_PER_S = 100;

/** utime + stime of a /proc/.../stat file (a process's or one thread's), seconds. */
function statCpuSeconds(file: string): number {
  const stat = readFileSync(file, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
}

/** CPU time a process has used (user + system, all its threads), seconds, from /proc/<pid>/stat. */
export function cpuSecondsOf(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/**
 * CPU time one thread of a process has used (user + system), seconds, from
 * /proc/<pid>/task/<tid>/stat. A process's main thread has tid = pid (for
 * node: the event loop, where JavaScript runs, without its workers, libuv's
 * pool or V8's helper threads).
 */
export function threadCpuSecondsOf(pid: number, tid: number): number {
  return statCpuSeconds(`/proc/${pid}/task/${tid}/stat`);
}

/**
 * Wait until every process uses less than `maxShare` of a core over a
 * `windowMs` window (background compaction, indexing or GC is done), or
 * `timeoutMs` passes. Resolves with how long it waited and whether they
 * went quiet.
 */
export async function waitQuiet(pids: readonly number[], options: { maxShare?: number; windowMs?: number; timeoutMs?: number } = {}): Promise<{ ms: number; quiet: boolean }> {
  const maxShare = options.maxShare ?? 0.05;
  const windowMs = options.windowMs ?? 2000;
  const t0 = performance.now();
  const deadline = t0 + (options.timeoutMs ?? 120_000);
  for (;;) {
    const before = pids.map(cpuSecondsOf);
    const w0 = performance.now();
    await sleep(windowMs);
    const seconds = (performance.now() - w0) / 1000;
    const busy = pids.map((pid, i) => (cpuSecondsOf(pid) - before[i]!) / seconds);
    if (busy.every((share) => share < maxShare)) return { ms: performance.now() - t0, quiet: true };
    if (performance.now() > deadline) return { ms: performance.now() - t0, quiet: false };
  }
}

/** Disk space a directory tree uses (allocated blocks, as `du -s` counts them), bytes. */
export async function diskBytes(dir: string): Promise<number> {
  const { stdout } = await execFileAsync('du', ['-s', '-B1', dir]);
  return Number(stdout.split(/\s/)[0]);
}

/** The apparent size of a directory tree (the sum of file lengths, `du -s -b`), bytes. */
export async function apparentBytes(dir: string): Promise<number> {
  const { stdout } = await execFileAsync('du', ['-s', '-b', dir]);
  return Number(stdout.split(/\s/)[0]);
}
