/**
 * A real 3-server (or N-server) nats-server cluster with JetStream for tests:
 * each server has its own client port, cluster port, store directory and
 * `server_name`, and routes to the others. Built on `startNatsServer`
 * (test/harness/nats-server.ts), which owns the process, the client port and
 * kill/start on the same port; this file adds the config file each server
 * reads (`-c`), so a server killed with SIGKILL restarts with the same name,
 * cluster port and store directory, and rejoins with its JetStream state.
 *
 * `startNatsCluster` returns once JetStream has a meta leader (the account
 * info request answers), so a test can create a replicated stream or KV
 * bucket at once.
 *
 * With `inNetwork`, server i runs inside host i of a test network
 * (test/harness/netns.ts): its client port and cluster route listen on that
 * host's ip, and the routes name the other hosts' ips, so partitioning the
 * hosts partitions the cluster.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import type { TestNetwork } from './netns.js';
import { freePort, startNatsServer, type TestNatsServer } from './nats-server.js';

export interface TestNatsClusterServer {
  /** `server_name`, as JetStream reports it in stream and meta leader info: `n0`, `n1`, ... */
  readonly name: string;
  readonly server: TestNatsServer;
  readonly url: string;
  readonly clusterPort: number;
  readonly storeDir: string;
  /** The test network host it runs in (with `inNetwork`). */
  readonly host: string | undefined;
}

export interface TestNatsCluster {
  readonly servers: readonly TestNatsClusterServer[];
  /** Every server's client URL (a client given all of them fails over between them). */
  readonly urls: string[];
  /** The server named `name`. */
  byName(name: string): TestNatsClusterServer;
  /** SIGKILL server `i` (0-based) and wait for the process to be gone. */
  kill(i: number): Promise<void>;
  /** Start server `i` again: same ports, name and store dir. Resolves once it accepts clients. */
  start(i: number): Promise<void>;
  /** Wait until JetStream answers an account info request through `urls` (it has a meta leader). */
  waitForJetStream(timeoutMs?: number): Promise<void>;
  /** The server name of the current leader of a stream (e.g. `KV_<bucket>`), or undefined if none now. */
  streamLeader(stream: string): Promise<string | undefined>;
  /** Stop every server and remove the store directories. Idempotent. */
  stop(): Promise<void>;
}

export interface StartNatsClusterOptions {
  /** Number of servers (default 3, or one per host with `inNetwork`). */
  readonly size?: number;
  /** Cluster name (default `reprise-test`). */
  readonly name?: string;
  /** How long to wait for a JetStream meta leader (default 20 s). */
  readonly readyTimeoutMs?: number;
  /** Run server i inside `hosts[i]` of `network`, on that host's ip; one host per server. */
  readonly inNetwork?: { readonly network: TestNetwork; readonly hosts: readonly string[] };
}

const quietDelay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One short-lived connection to the cluster; `fn` runs on it, then it is closed. */
async function withConnection<T>(urls: string[], fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await connect({ servers: urls, timeout: 1000, reconnect: false, maxReconnectAttempts: 0 });
  try {
    return await fn(nc);
  } finally {
    await nc.close().catch(() => {});
  }
}

export async function startNatsCluster(options: StartNatsClusterOptions = {}): Promise<TestNatsCluster> {
  const placement = options.inNetwork;
  const size = options.size ?? placement?.hosts.length ?? 3;
  if (placement && placement.hosts.length !== size) {
    throw new Error(`startNatsCluster: ${size} servers need ${size} hosts, got ${placement.hosts.length} (${placement.hosts.join(', ')})`);
  }
  const addressOf = (i: number) => (placement ? placement.network.host(placement.hosts[i]!).ip : '127.0.0.1');
  const clusterName = options.name ?? 'reprise-test';
  const root = mkdtempSync(join(tmpdir(), 'reprise-nats-cluster-'));
  // Cluster ports are chosen before any server starts, as every config names all routes.
  const clusterPorts: number[] = [];
  while (clusterPorts.length < size) {
    const port = await freePort();
    if (!clusterPorts.includes(port)) clusterPorts.push(port);
  }
  const servers: TestNatsClusterServer[] = [];
  try {
    for (let i = 0; i < size; i++) {
      const name = `n${i}`;
      const storeDir = join(root, name);
      const routes = clusterPorts.map((p, j) => `nats-route://${addressOf(j)}:${p}`).filter((_, j) => j !== i);
      const config = [
        `server_name: ${name}`,
        `jetstream {`,
        `  store_dir: "${storeDir}"`,
        `}`,
        `cluster {`,
        `  name: ${clusterName}`,
        `  listen: ${addressOf(i)}:${clusterPorts[i]}`,
        `  routes: [`,
        ...routes.map((r) => `    ${r}`),
        `  ]`,
        `}`,
        '',
      ].join('\n');
      const configFile = join(root, `${name}.conf`);
      writeFileSync(configFile, config);
      const host = placement?.hosts[i];
      const inNetwork = placement && host !== undefined ? { network: placement.network, host } : undefined;
      const server = await startNatsServer({ args: ['-c', configFile], inNetwork });
      servers.push({ name, server, url: server.url, clusterPort: clusterPorts[i]!, storeDir, host });
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.server.stop()));
    rmSync(root, { recursive: true, force: true });
    throw err;
  }

  const urls = servers.map((s) => s.url);
  let stopped = false;
  const cluster: TestNatsCluster = {
    servers,
    urls,
    byName(name) {
      const found = servers.find((s) => s.name === name);
      if (!found) throw new Error(`no server named ${name} in this cluster (${servers.map((s) => s.name).join(', ')})`);
      return found;
    },
    kill: (i) => servers[i]!.server.kill(),
    start: (i) => servers[i]!.server.start(),
    async waitForJetStream(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last: unknown;
      for (;;) {
        try {
          // Through a server that runs: the account info request needs the JetStream meta leader.
          const live = servers.filter((s) => s.server.running).map((s) => s.url);
          await withConnection(live, async (nc) => {
            const jsm = await nc.jetstreamManager({ timeout: 1000 });
            await jsm.getAccountInfo();
          });
          return;
        } catch (err) {
          last = err;
        }
        if (Date.now() > deadline) throw new Error(`JetStream had no meta leader within ${timeoutMs} ms: ${(last as Error)?.message ?? last}`);
        await quietDelay(100);
      }
    },
    async streamLeader(stream) {
      const live = servers.filter((s) => s.server.running).map((s) => s.url);
      try {
        return await withConnection(live, async (nc) => {
          const jsm = await nc.jetstreamManager({ timeout: 1000 });
          const info = await jsm.streams.info(stream);
          return info.cluster?.leader;
        });
      } catch {
        return undefined;
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all(servers.map((s) => s.server.stop()));
      rmSync(root, { recursive: true, force: true });
    },
  };
  try {
    await cluster.waitForJetStream(options.readyTimeoutMs ?? 20_000);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
