import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { PROJECT_ROOT } from './project-root.js';

/** The `reprise` command as a user runs it, from the built package. */
export const BIN = join(PROJECT_ROOT, 'bin', 'reprise.js');

export const SYSTEM_METRICS = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'idc', type: 'string', role: 'tag' },
    { name: 'cpu_util', type: 'float64', role: 'field' },
    { name: 'memory_util', type: 'float64', role: 'field' },
    { name: 'disk_util', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'z'] },
};

export const ROWS = [
  { host: 'host1', idc: 'idc_a', cpu_util: 11.8, memory_util: 10.3, disk_util: 10.3, ts: 1667446797450 },
  { host: 'host2', idc: 'idc_a', cpu_util: 80.1, memory_util: 70.3, disk_util: 90.0, ts: 1667446797450 },
  { host: 'host1', idc: 'idc_b', cpu_util: 50.0, memory_util: 66.7, disk_util: 40.6, ts: 1667446797450 },
  { host: 'apollo', idc: 'idc_c', cpu_util: 1.5, memory_util: 2.5, disk_util: 3.5, ts: 1667446797451 },
  { host: 'zeus', idc: 'idc_c', cpu_util: 9.5, memory_util: 8.5, disk_util: 7.5, ts: 1667446797452 },
];

export interface Server {
  url: string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `reprise standalone` as a user runs it, on a free port; resolves once it serves. */
export function startServer(dataDir: string, env: Record<string, string> = {}, args: string[] = []): Promise<Server> {
  return startReprise(['standalone', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', ...args], env, (log) => log.url as string | undefined);
}

/**
 * Any long-running `reprise` command as a real process; resolves once a
 * JSON log line makes `ready` return a URL (or any string: meta has no HTTP).
 */
export function startReprise(
  args: string[],
  env: Record<string, string>,
  ready: (log: Record<string, unknown>) => string | undefined,
  /** How to start the process: here, or e.g. inside a host of a test network (TestNetwork.spawn). */
  spawnProcess: (command: string, args: string[], options: SpawnOptions) => ChildProcess = spawn,
): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawnProcess(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // A test that times out before `ready` never gets the child to kill: do
    // it when this test process exits, so no server outlives its run.
    const reap = () => child.kill('SIGKILL');
    process.once('exit', reap);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
      child.on('exit', (code, signal) => {
        process.off('exit', reap);
        done({ code, signal });
      }),
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    void exited.then(({ code }) => reject(new Error(`reprise ${args[0]} exited (${code}) before it was ready: ${stderr}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let log: Record<string, unknown>;
      try {
        log = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // not a log line
      }
      const url = ready(log);
      if (url !== undefined) resolve({ url, child, exited });
    });
  });
}

export async function call(server: Server, method: string, path: string, body?: unknown, raw?: string) {
  const response = await fetch(new URL(path, server.url), {
    method,
    ...(body !== undefined || raw !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: raw ?? JSON.stringify(body) }
      : {}),
  });
  return { status: response.status, body: (await response.json()) as any };
}

