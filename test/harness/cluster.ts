import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { usingRealKafka, type TestKafka } from './kafka-mock.js';
import type { TestNatsServer } from './nats-server.js';
import { startReprise, type Server } from './standalone.js';

/**
 * What the real-process cluster tests (and the cluster benchmark) share: a
 * three-region table, the environment of one cluster (its own NATS subjects,
 * Kafka topics and SST directory on a shared nats-server and Kafka), and the
 * processes of a test, with their logs kept for failure messages.
 */

export const CLUSTER_SCHEMA = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'cpu_util', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['h', 'p'] },
};
/** One host per region: partitions [..h), [h..p), [p..). */
export const CLUSTER_HOSTS = ['alpha', 'kilo', 'tango'];

let clusters = 0;

/** A process `ProcessGroup.launch` started: its Server, and the log record it was ready on. */
export interface LaunchedServer extends Server {
  /** The JSON log line with `url` (a node's or standalone's also has `mysql` / `postgres` when it serves them). */
  readonly ready: Record<string, unknown>;
}

/** Every process of the current test; `stop` kills them (SIGKILL ends a SIGSTOPped one too) and removes their directories. */
export class ProcessGroup {
  private readonly processes: Server[] = [];
  private readonly dirs: string[] = [];
  private readonly logs = new Map<string, string[]>();

  constructor(
    private readonly kafka: TestKafka,
    /** The NATS servers' URLs (`url` of a TestNatsServer, or a cluster's URLs joined by commas). */
    private readonly nats: Pick<TestNatsServer, 'url'>,
    /** Names this suite's topics and subjects. */
    private readonly label: string,
  ) {}

  /** The environment of a new cluster: `REPRISE_*` for the Kafka WAL, NATS, 3 shards and a fresh SST directory. */
  async clusterEnv(): Promise<Record<string, string>> {
    const objects = await mkdtemp(join(tmpdir(), `reprise-${this.label}-objects-`));
    this.dirs.push(objects);
    const n = clusters++;
    return {
      REPRISE_WAL_PROVIDER: 'kafka',
      REPRISE_WAL_BROKER_ENDPOINTS: this.kafka.brokers.join(','),
      REPRISE_WAL_IDEMPOTENT: String(usingRealKafka()),
      REPRISE_WAL_TOPIC_PREFIX: `${this.label}_${process.pid}_${Date.now().toString(36)}_${n}`,
      REPRISE_NATS_SERVERS: this.nats.url,
      REPRISE_CLUSTER_NAME: `${this.label}${process.pid}x${n}`,
      REPRISE_SHARDS: '3',
      REPRISE_DATA_DIR: objects,
    };
  }

  /** A fresh directory removed by `stop` (a node's own data dir, for storage s3). */
  async tempDir(name: string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), `reprise-${this.label}-${name}-`));
    this.dirs.push(dir);
    return dir;
  }

  /**
   * A `reprise` process (meta or node, with --http-addr) that resolves once
   * it serves; its stdout is kept under `name`. `spawnProcess`: to start it
   * elsewhere, e.g. in a host of a test network (its --http-addr then on that host's ip).
   */
  async launch(name: string, args: string[], env: Record<string, string>, spawnProcess?: Parameters<typeof startReprise>[3]): Promise<LaunchedServer> {
    let ready: Record<string, unknown> | undefined;
    const started = await startReprise(
      args,
      env,
      (log) => {
        const url = log.url as string | undefined;
        if (url !== undefined) ready ??= log; // the first: lines after it may be read before this resolves
        return url;
      },
      spawnProcess,
    );
    const server: LaunchedServer = { ...started, ready: ready! };
    this.processes.push(server);
    const lines: string[] = [];
    this.logs.set(name, lines);
    let partial = '';
    server.child.stdout!.on('data', (chunk: Buffer) => {
      const parts = (partial + chunk.toString()).split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
      if (lines.length > 2000) lines.splice(0, lines.length - 2000);
    });
    return server;
  }

  /** The last log lines of a process (JSON lines from pino), for a failure message. */
  tail(name: string, n = 40): string {
    return (this.logs.get(name) ?? []).slice(-n).join('\n');
  }

  async stop(): Promise<void> {
    const running = this.processes.splice(0);
    for (const p of running) p.child.kill('SIGKILL');
    await Promise.all(running.map((p) => p.exited));
    for (const dir of this.dirs.splice(0)) await rm(dir, { recursive: true, force: true });
    this.logs.clear();
  }
}
