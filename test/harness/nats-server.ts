/**
 * A real nats-server for tests (Debian's `nats-server` package), on a free
 * loopback port, that a test can crash (SIGKILL) and start again on the same
 * port. nats-server cannot report a port it picked itself, so the port is
 * found by binding a socket to port 0 and closing it, then handed to
 * nats-server; a lost race (someone took the port meanwhile) is retried.
 *
 * The binary is looked up as $NATS_SERVER_BIN, then on PATH, then in the
 * sbin directories (Debian installs it as /usr/sbin/nats-server, and /usr/sbin
 * is not on every user's PATH).
 *
 * With `inNetwork` the server runs inside a host of a test network
 * (test/harness/netns.ts) and listens on that host's ip, so a test can cut
 * it off from other hosts with a real partition.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createConnection, createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import type { TestNetwork } from './netns.js';

export interface TestNatsServer {
  /** `nats://127.0.0.1:<port>`, or the host's ip instead of 127.0.0.1 with `inNetwork`. */
  readonly url: string;
  readonly port: number;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Crash it: SIGKILL, and wait for the process to be gone. */
  kill(): Promise<void>;
  /** Start it again on the same port (after `kill`); resolves once it accepts clients. */
  start(): Promise<void>;
  /** `kill()`, then `start()`. */
  restart(): Promise<void>;
  /** Shut it down for good (SIGTERM, SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

export interface StartNatsServerOptions {
  /** Extra nats-server arguments, e.g. `['-js']` or `['--user', 'u', '--pass', 'p']`. */
  readonly args?: readonly string[];
  /** How long to wait for the server to accept clients (default 10 s). */
  readonly startTimeoutMs?: number;
  /**
   * Run the server inside this host of a test network, listening on the host's
   * ip instead of 127.0.0.1. Starting probes it from the test process, so the
   * host must not be partitioned from 'root' then.
   */
  readonly inNetwork?: { readonly network: TestNetwork; readonly host: string };
  /**
   * JetStream on (`-js`), with a store directory of its own (removed by
   * stop), as `reprise meta` needs for its election.
   */
  readonly jetstream?: boolean;
}

const INSTALL_HINT = 'install it with: apt-get install -y nats-server (or set NATS_SERVER_BIN)';

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The program `name` on PATH or in the sbin directories (which not every user's PATH has), if there is one. */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter).filter(Boolean), '/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/local/bin'];
  return dirs.map((dir) => join(dir, name)).find(isExecutable);
}

/** The nats-server binary, or a clear error saying how to install it. */
export function findNatsServer(): string {
  const explicit = process.env['NATS_SERVER_BIN'];
  if (explicit) {
    if (isExecutable(explicit)) return explicit;
    throw new Error(`NATS_SERVER_BIN=${explicit} is not an executable file; ${INSTALL_HINT}`);
  }
  const found = findExecutable('nats-server');
  if (found) return found;
  throw new Error(`nats-server not found on PATH nor in /usr/sbin; ${INSTALL_HINT}`);
}

/** A loopback port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not get a free port'))));
    });
  });
}

/** Whether a NATS server answers at host:port: it greets every client with an INFO line. */
function greets(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let buffered = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      if (buffered.startsWith('INFO ')) done(true);
    });
  });
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function killAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** Start a nats-server on a free loopback port (or a free port of its host with `inNetwork`). */
export async function startNatsServer(options: StartNatsServerOptions = {}): Promise<TestNatsServer> {
  const bin = findNatsServer();
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const placement = options.inNetwork;
  // The test process reaches a host's ip over the network's bridge, so the readiness probe and the url work from here.
  const address = placement ? placement.network.host(placement.host).ip : '127.0.0.1';
  const spawnServer = (args: string[], spawnOptions: SpawnOptions) =>
    placement ? placement.network.spawn(placement.host, bin, args, spawnOptions) : spawn(bin, args, spawnOptions);
  killAllOnExit();

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let port = 0;
  let stopped = false;
  const storeDir = options.jetstream ? mkdtempSync(join(tmpdir(), 'reprise-nats-js-')) : undefined;
  const extraArgs = [...(storeDir ? ['-js', '-sd', storeDir] : []), ...(options.args ?? [])];

  async function launch(): Promise<void> {
    const args = ['-a', address, '-p', String(port), ...extraArgs];
    const proc = spawnServer(args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-4000);
    });
    let hasExited = false;
    let exitInfo = '';
    exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        hasExited = true;
        exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        live.delete(proc);
        resolve();
      });
      proc.once('error', (err) => {
        hasExited = true;
        exitInfo = err.message;
        live.delete(proc);
        resolve();
      });
    });
    live.add(proc);
    child = proc;
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      if (hasExited) {
        throw new Error(`nats-server (${bin} ${args.join(' ')}) exited at start (${exitInfo}):\n${log.trim()}`);
      }
      if (await greets(address, port)) return;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        await exited;
        throw new Error(`nats-server did not accept clients on port ${port} within ${startTimeoutMs} ms:\n${log.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function kill(): Promise<void> {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    child = undefined;
  }

  // The port is only "probably free": retry a few times on a lost race. (freePort
  // asks the root namespace; a host's namespace has only what the test started in it.)
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      if (attempt >= 3 || !/address already in use|bind/i.test((err as Error).message)) throw err;
    }
  }

  const handle: TestNatsServer = {
    url: `nats://${address}:${port}`,
    port,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    kill,
    async start() {
      if (stopped) throw new Error('this nats-server was stopped for good');
      if (child && child.exitCode === null && child.signalCode === null) throw new Error(`nats-server on port ${port} is already running`);
      // The port was ours a moment ago; after a crash it can take a moment to be free again.
      for (let attempt = 1; ; attempt++) {
        try {
          await launch();
          return;
        } catch (err) {
          if (attempt >= 50 || !/address already in use|bind/i.test((err as Error).message)) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async restart() {
      await kill();
      await handle.start();
    },
    async stop() {
      stopped = true;
      const proc = child;
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
        child = undefined;
      }
      if (storeDir) rmSync(storeDir, { recursive: true, force: true });
    },
  };
  return handle;
}
