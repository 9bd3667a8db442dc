import { setFlagsFromString } from 'node:v8';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import type { ReplayProgress } from '../actors/context.js';
import { createHttpServer, parseAddr, warmHttpQueries, warmHttpQueriesWhenIdle } from '../api/http.js';
import { defaultIngestThreads, IngestPool, inlineEncoder, type WriteEncoder } from '../api/ingest-pool.js';
import { startMysqlServer } from '../api/mysql.js';
import { startPostgresServer } from '../api/postgres.js';
import { parseUserProvider } from '../api/users.js';
import { sqlSessions } from '../frontend/sql/session.js';
import { Reprise } from '../api/runtime.js';
import { packageVersion, sqlServerVersion } from '../api/version.js';
import { isRepriseError, RepriseError } from '../errors.js';
import { startMeta } from '../api/meta-process.js';
import type { NatsTransport } from '../transport/nats.js';
import { procedurePauseOf } from '../testing/faults.js';
import type { KafkaWalOptions } from '../wal/open-log-store.js';
import { commaList, redactConfig, resolveConfig, storageOptionsOf, walOptionsOf, type StandaloneConfig } from './config.js';
import { renderClusterStatus, renderRows, renderSqlOutput, renderStatus } from './render.js';

const DEFAULT_SERVER = 'http://127.0.0.1:4000';

/** What --data-dir and --http-addr are to `standalone` (and `config print`). */
const STANDALONE_PLACES = {
  dataDir: 'where the WAL, meta and SSTs live (default ./reprise_data; env REPRISE_DATA_DIR)',
  httpAddr: 'HTTP API address (default 127.0.0.1:4000; env REPRISE_HTTP_ADDR)',
};

function integer(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`'${value}' is not an integer`);
  return n;
}

function json(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    throw new InvalidArgumentError(`'${value}' is not valid JSON`);
  }
}

/** A one-line replay progress bar on an interactive stderr. */
function progressBar(): (p: ReplayProgress) => void {
  return (p) => {
    if (!process.stderr.isTTY) return;
    const done = p.targetId > 0 ? Math.min(1, (p.lastId + 1) / p.targetId) : 1;
    const width = 30;
    const bar = '#'.repeat(Math.round(done * width)).padEnd(width, '.');
    const rate = Math.round(p.entries / Math.max(p.elapsedMs / 1000, 1e-3));
    process.stderr.write(`\rreplaying shard ${p.shardId} [${bar}] ${(done * 100).toFixed(0)}% ${p.entries} entries ${rate}/s   `);
    if (done >= 1) process.stderr.write('\n');
  };
}

interface ClusterFlags extends StandaloneFlags {
  nats?: string[];
  cluster?: string;
  id?: string;
  /** `reprise meta --id`: the replica's name (--id is a node's id on `reprise node`). */
  metaId?: string;
  topology?: string;
  minNodes?: number;
  followers?: number;
}

interface StandaloneFlags {
  config?: string;
  dataDir?: string;
  httpAddr?: string;
  mysqlAddr?: string;
  postgresAddr?: string;
  userProvider?: string;
  shards?: number;
  ingestThreads?: number;
  logLevel?: string;
  wal?: string;
  brokers?: string[];
  walSkipCorrupt?: boolean;
}

/** The effective configuration: flags > REPRISE_* env > config file > defaults. */
function configOf(flags: StandaloneFlags & Partial<ClusterFlags>): StandaloneConfig {
  return resolveConfig({
    ...(flags.config ? { configFile: flags.config } : {}),
    env: process.env,
    flags: {
      dataDir: flags.dataDir,
      httpAddr: flags.httpAddr,
      mysqlAddr: flags.mysqlAddr,
      postgresAddr: flags.postgresAddr,
      userProvider: flags.userProvider,
      shards: flags.shards,
      ingestThreads: flags.ingestThreads,
      logLevel: flags.logLevel,
      wal: { provider: flags.wal, brokerEndpoints: flags.brokers, skipCorrupt: flags.walSkipCorrupt },
      cluster: { natsServers: flags.nats, name: flags.cluster, nodeId: flags.id, metaId: flags.metaId, topology: flags.topology, minNodes: flags.minNodes, followers: flags.followers },
    },
  });
}

/**
 * Run a long-lived service (standalone, meta, node) until SIGTERM/SIGINT.
 * `start` opens it and returns how to close it. Exit codes: 0 after a clean
 * shutdown; 1 if startup or shutdown failed, or a second signal forced the
 * exit; 2 for a usage error (see main). A signal during startup (e.g. a
 * long replay) shuts down as soon as the service is up.
 */
async function runService(logger: pino.Logger, what: string, start: () => Promise<() => Promise<void>>): Promise<void> {
  let stopping = false;
  let shutdown: ((signal: string) => void) | undefined;
  let early: string | undefined;
  const onSignal = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now without finishing the shutdown (the next start replays the WAL)');
      process.exit(1);
    }
    stopping = true;
    if (shutdown) shutdown(signal);
    else {
      early = signal;
      logger.info({ signal }, `signal during startup: shutting down once ${what} is up`);
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  const close = await start();
  shutdown = (signal: string) => {
    logger.info({ signal }, `shutting down ${what}`);
    void close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  if (early) shutdown(early);
}

/** Whether a listen address is on the loopback interface (served without a user provider, it warns otherwise). */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Where writes are parsed and encoded: ingestThreads worker threads, or the main thread for 0. */
function writeEncoderOf(config: StandaloneConfig, logger: pino.Logger): WriteEncoder {
  const threads = config.ingestThreads ?? defaultIngestThreads();
  return threads === 0 ? inlineEncoder : new IngestPool({ threads, logger });
}

/**
 * Serve a runtime's protocols: the HTTP API, and MySQL and PostgreSQL
 * unless their address is ''. They share one SQL session factory and one
 * user provider. Resolves with a close that stops them, then the runtime.
 */
async function serveProtocols(runtime: Reprise, config: StandaloneConfig, logger: pino.Logger, what: string): Promise<() => Promise<void>> {
  const closers: (() => Promise<void>)[] = [];
  const encoder = writeEncoderOf(config, logger);
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((err: unknown) => logger.warn({ err }, 'closing a protocol server failed'));
    await runtime.close();
    await encoder.close();
  };
  try {
    const users = config.userProvider === undefined ? undefined : parseUserProvider(config.userProvider);
    const sessions = sqlSessions(runtime, { version: sqlServerVersion() });
    const { host, port } = parseAddr(config.httpAddr);
    const listens = [host];
    const app = createHttpServer(runtime, {
      logger,
      bodyLimit: config.bodyLimitBytes,
      autoCreateTables: config.autoCreateTables,
      processMetrics: true,
      // The name it listens on is one it answers to.
      allowedHosts: [...config.allowedHosts, host],
      allowedOrigins: config.allowedOrigins,
      requestTimeoutMs: config.httpRequestTimeoutMs,
      maxConnections: config.httpMaxConnections,
      maxTablesPerWrite: config.limits.maxTablesPerWrite,
      maxRowsPerWrite: config.limits.maxRowsPerWrite,
      maxWriteBytesInFlight: config.limits.maxWriteBytesInFlight,
      encoder,
      sqlSessions: sessions,
      ...(users ? { users } : {}),
    });
    const warm = await warmHttpQueries(app, runtime, logger);
    logger.debug(warm, 'query path warmed');
    const url = await app.listen({ host, port });
    closers.push(() => app.close());
    if (warm.table === undefined) {
      const stop = warmHttpQueriesWhenIdle(app, runtime, logger);
      closers.push(async () => stop());
    }
    const served: Record<string, string> = { http: url };
    if (config.mysqlAddr !== '') {
      const addr = parseAddr(config.mysqlAddr, 'mysql');
      listens.push(addr.host);
      const mysql = await startMysqlServer({ ...addr, sessions, logger, serverVersion: sqlServerVersion(), ...(users ? { users } : {}) }).catch((err: Error) => {
        throw new Error(`cannot serve MySQL on ${config.mysqlAddr} (--mysql-addr; '' turns it off): ${err.message}`);
      });
      closers.push(() => mysql.close());
      served.mysql = `${mysql.address.host}:${mysql.address.port}`;
    }
    if (config.postgresAddr !== '') {
      const addr = parseAddr(config.postgresAddr, 'postgres');
      listens.push(addr.host);
      const postgres = await startPostgresServer({ ...addr, sessions, logger, ...(users ? { users } : {}) }).catch((err: Error) => {
        throw new Error(`cannot serve PostgreSQL on ${config.postgresAddr} (--postgres-addr; '' turns it off): ${err.message}`);
      });
      closers.push(() => postgres.close());
      served.postgres = `${postgres.address.host}:${postgres.address.port}`;
    }
    if (users === undefined && listens.some((h) => !isLoopback(h))) {
      logger.warn({ listens }, 'serving on a non-loopback address without a user provider: anyone who can reach it can read, write and drop tables (set --user-provider static_user_provider:file:<path>)');
    }
    logger.info({ url, ...served, dataDir: config.dataDir }, `reprise ${what} serving on ${url}`);
  } catch (err) {
    await closeAll();
    throw err;
  }
  return closeAll;
}

/**
 * Bound how far V8 grows the heap past what its last full GC kept. By
 * default it grows up to 4x under a high allocation rate, which ingest is,
 * and rarely gives pages back: measured on 10M rows of line protocol, 20%
 * took RSS after ingest from 347 to 249 MB (peak 621 to 336) and after
 * queries from 375 to 210 MB, query p50s unchanged. V8 reads the flag at
 * each GC, so setting it at start takes effect.
 */
function limitHeapGrowth(percent: number): void {
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}

async function standalone(flags: StandaloneFlags): Promise<void> {
  const config = configOf(flags);
  limitHeapGrowth(config.memory.heapGrowthPercent);
  const logger = pino({ level: config.logLevel });
  await runService(logger, 'standalone (closing HTTP, flushing regions, closing the WAL)', async () => {
    const runtime = await Reprise.open({
      dataDir: config.dataDir,
      shards: config.shards,
      wal: walOptionsOf(config.wal),
      storage: storageOptionsOf(config.storage),
      memory: config.memory,
      limits: config.limits,
      logger,
      onReplayProgress: progressBar(),
    });
    return serveProtocols(runtime, config, logger, 'standalone');
  });
}

/** The Kafka WAL a cluster needs (meta's log and every shard's topic are shared by all processes). */
function clusterWal(config: StandaloneConfig): KafkaWalOptions {
  const wal = walOptionsOf(config.wal);
  if (wal.provider !== 'kafka') {
    throw new RepriseError('INVALID_ARGUMENT', 'a cluster needs the kafka WAL, which every process shares: --wal kafka --brokers host:port,...');
  }
  return wal;
}

async function connect(config: StandaloneConfig, name: string): Promise<NatsTransport> {
  // Loaded only by the cluster's processes: the NATS client adds ~60 ms to every start.
  const { NatsTransport } = await import('../transport/nats.js');
  return NatsTransport.connect({ servers: config.cluster.natsServers, cluster: config.cluster.name, name });
}

async function metaCommand(flags: ClusterFlags): Promise<void> {
  const { id, ...rest } = flags;
  const config = configOf({ ...rest, ...(id !== undefined ? { metaId: id } : {}) });
  limitHeapGrowth(config.memory.heapGrowthPercent);
  const logger = pino({ level: config.logLevel });
  await runService(logger, 'meta', async () => {
    const { heartbeatMs, leaseMs, failureTimeoutMs, topology, minNodes, followers, metaId, metaElectionLeaseMs, metaElectionReplicas } = config.cluster;
    const transport = await connect(config, metaId ? `reprise-meta-${metaId}` : 'reprise-meta');
    // Meta has HTTP only when asked: --http-addr here, or cluster.metaHttpAddr.
    const httpAddr = flags.httpAddr ?? config.cluster.metaHttpAddr;
    const meta = await startMeta({
      transport,
      wal: clusterWal(config),
      shards: config.shards,
      logger,
      heartbeatMs,
      leaseMs,
      failureTimeoutMs,
      topology,
      minNodes,
      followers,
      ...(metaId ? { id: metaId } : {}),
      election: { leaseMs: metaElectionLeaseMs, ...(metaElectionReplicas !== undefined ? { replicas: metaElectionReplicas } : {}) },
      ...(httpAddr ? { httpAddr } : {}),
      // The one way a test reaches into a meta process (test/kafka/cluster-procedures.test.ts).
      ...(process.env.REPRISE_TEST_PROCEDURE_PAUSE ? { testHooks: { procedurePause: procedurePauseOf(process.env.REPRISE_TEST_PROCEDURE_PAUSE) } } : {}),
    });
    return async () => {
      await meta.close();
      await transport.close();
    };
  });
}

async function nodeCommand(flags: ClusterFlags): Promise<void> {
  const config = configOf(flags);
  limitHeapGrowth(config.memory.heapGrowthPercent);
  const logger = pino({ level: config.logLevel });
  const nodeId = config.cluster.nodeId;
  if (!nodeId) throw new RepriseError('INVALID_ARGUMENT', 'a node needs an id: --id <node> (or REPRISE_NODE_ID)');
  await runService(logger, `node '${nodeId}' (closing HTTP, flushing its shards)`, async () => {
    const transport = await connect(config, `reprise-node-${nodeId}`);
    try {
      const runtime = await Reprise.join({
        nodeId,
        transport,
        wal: clusterWal(config),
        // Storage local: the data dir is the SST directory every node shares;
        // s3: the bucket is, and the data dir is this node's own (its cache).
        objectStoreDir: config.dataDir,
        storage: storageOptionsOf(config.storage),
        dataDir: config.dataDir,
        heartbeatMs: config.cluster.heartbeatMs,
        memory: config.memory,
        limits: config.limits,
        logger,
        onReplayProgress: progressBar(),
      });
      const close = await serveProtocols(runtime, config, logger, `node '${nodeId}'`);
      return async () => {
        await close();
        await transport.close();
      };
    } catch (err) {
      await transport.close();
      throw err;
    }
  });
}

async function request(server: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const url = new URL(path, server);
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw new Error(`cannot reach reprise at ${server}: ${(err as Error).cause ?? (err as Error).message}`);
  }
  const payload = (await response.json()) as { error?: { code: string; message: string } };
  if (!response.ok) throw new Error(`${payload.error?.code ?? response.status}: ${payload.error?.message ?? response.statusText}`);
  return payload;
}

export function buildProgram(): Command {
  const program = new Command('reprise')
    .description('Event-sourced actor runtime: regions, shards and nodes as explicit state machines over a WAL')
    .version(packageVersion())
    .showHelpAfterError()
    // Usage errors become CommanderErrors, so main can exit 2 for them (1 stays for failures).
    .exitOverride();

  /** The options that make up the configuration (shared by every service and `config print`); `places`: what --data-dir and --http-addr are to this command. */
  const configOptions = (command: Command, places: { dataDir: string; httpAddr: string } = STANDALONE_PLACES) =>
    command
      .option('-c, --config <file>', 'config file: TOML (*.toml) or JSON (the same keys)')
      .option('--data-dir <dir>', places.dataDir)
      .option('--http-addr <host:port>', places.httpAddr)
      .option('--mysql-addr <host:port>', "MySQL protocol address (default 127.0.0.1:4002; '' turns it off; env REPRISE_MYSQL_ADDR)")
      .option('--postgres-addr <host:port>', "PostgreSQL protocol address (default 127.0.0.1:4003; '' turns it off; env REPRISE_POSTGRES_ADDR)")
      .option('--user-provider <spec>', 'who may connect: static_user_provider:file:<path> (user=password, or user:ro=password, per line); env REPRISE_USER_PROVIDER')
      .option('--shards <n>', 'shards (WAL topics) on first start (default 4; env REPRISE_SHARDS); later, more adds shards and fewer is refused', integer)
      .option('--ingest-threads <n>', 'worker threads parsing and encoding writes (default: cores - 1, at least 1; 0: the main thread; env REPRISE_INGEST_THREADS)', integer)
      .addOption(new Option('--log-level <level>', 'log level (env REPRISE_LOG_LEVEL)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
      .addOption(new Option('--wal <provider>', 'WAL provider (default local; env REPRISE_WAL_PROVIDER)').choices(['local', 'kafka']))
      .option('--brokers <list>', 'Kafka bootstrap brokers, host:port,... (env REPRISE_WAL_BROKER_ENDPOINTS)', commaList)
      .option(
        '--wal-skip-corrupt',
        'local WAL: start even if it is damaged or lost its tail, skipping the lost entries (logged, their ids never reused, damaged files copied to <wal>/quarantine/); env REPRISE_WAL_SKIP_CORRUPT',
      );

  configOptions(
    program.command('standalone').description('run meta and one node in this process, with the HTTP API and dashboard (WAL: local LevelDB by default, or Kafka)'),
  ).action(standalone);

  /** The distributed mode's options, on top of the configuration's. */
  const clusterOptions = (command: Command, places: { dataDir: string; httpAddr: string }) =>
    configOptions(command, places)
      .option('--nats <list>', 'NATS servers, host:port,... (default 127.0.0.1:4222; env REPRISE_NATS_SERVERS)', commaList)
      .option('--cluster <name>', 'cluster name: subjects are reprise.<name>.* (default reprise; env REPRISE_CLUSTER_NAME)');

  clusterOptions(
    program
      .command('meta')
      .description("run a replica of the cluster's meta: tables, shards, leases, failure detection and failover (needs --wal kafka, and NATS with JetStream: nats-server -js). Run several: one is elected leader, the others follow and take over if it fails"),
    {
    dataDir: 'not used by meta: its state is the meta log in Kafka, and it writes nothing to disk',
    httpAddr: 'serve /health, /metrics and /v1/cluster/status at this address (no HTTP unless set; env REPRISE_META_HTTP_ADDR)',
  })
    .addOption(new Option('--topology <kind>', "dynamic: a dead node's shards move to live nodes; static: they wait for it (env REPRISE_CLUSTER_TOPOLOGY)").choices(['static', 'dynamic']))
    .option('--min-nodes <n>', 'place shards once this many nodes are up (default 1; env REPRISE_CLUSTER_MIN_NODES)', integer)
    .option('--followers <n>', 'hot-standby followers per shard, on other nodes (default 1; env REPRISE_CLUSTER_FOLLOWERS)', integer)
    .option('--id <name>', "this meta replica's name, unique among the cluster's metas (default meta-<host>-<pid>; env REPRISE_META_ID)")
    .action(metaCommand);

  clusterOptions(program.command('node').description('run a cluster node: leads the shards meta assigns, serves the HTTP API for the whole cluster (--data-dir: the shared SST directory, or with storage s3 its own cache)'), {
    dataDir:
      'storage local: the SST and manifest directory every node shares; storage s3: this node\'s own, its SST cache in <dir>/cache (default ./reprise_data; env REPRISE_DATA_DIR); the WAL and meta are in Kafka',
    httpAddr: STANDALONE_PLACES.httpAddr,
  })
    .option('--id <node>', 'this node\'s id (env REPRISE_NODE_ID)')
    .action(nodeCommand);

  program
    .command('migrate')
    .description('move a shard\'s leadership to another node: the leader flushes and hands off, then the target opens it; answers once the target serves it (if it cannot, the shard goes back and this fails)')
    .requiredOption('--shard <id>', 'shard id', integer)
    .requiredOption('--to <node>', 'target node id')
    .option('-s, --server <url>', 'any node\'s URL', DEFAULT_SERVER)
    .action(async (opts: { shard: number; to: string; server: string }) => {
      const result = (await request(opts.server, 'POST', `/v1/shards/${opts.shard}/migrate`, { to: opts.to })) as { from: string; to: string; ms: number };
      process.stdout.write(`shard ${opts.shard}: ${result.from} -> ${result.to} in ${result.ms} ms\n`);
    });

  program
    .command('cluster')
    .description('the cluster as a running node sees it')
    .command('status')
    .description('nodes (alive, last heartbeat), shards (leader, epoch) and every node\'s regions with their states')
    .option('-s, --server <url>', 'a node\'s URL', DEFAULT_SERVER)
    .option('--json', 'print the raw JSON')
    .action(async (opts: { server: string; json?: boolean }) => {
      const status = await request(opts.server, 'GET', '/v1/cluster/status');
      process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : renderClusterStatus(status as Parameters<typeof renderClusterStatus>[0]));
    });

  const config = program.command('config').description('the standalone configuration');
  configOptions(
    config
      .command('print')
      .description('print the effective configuration as JSON (flags > REPRISE_* env > config file > defaults; secrets shown as ***)'),
  ).action((flags: StandaloneFlags) => {
    process.stdout.write(`${JSON.stringify(redactConfig(configOf(flags)), null, 2)}\n`);
  });

  program
    .command('status')
    .description('show the actor tree of a running server: node, shards and regions with their states')
    .option('-s, --server <url>', 'server URL', DEFAULT_SERVER)
    .option('--json', 'print the raw JSON')
    .action(async (opts: { server: string; json?: boolean }) => {
      const status = await request(opts.server, 'GET', '/v1/status');
      process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status as Parameters<typeof renderStatus>[0]));
    });

  program
    .command('query')
    .description('query a table on a running server')
    .argument('<table>', 'table name')
    .option('-s, --server <url>', 'server URL', DEFAULT_SERVER)
    .option('-w, --where <json>', 'conditions, e.g. \'{"host":"h1"}\' or \'{"host":{"gte":"a","lt":"f"}}\'', json)
    .option('--from <ms>', 'time range start (inclusive, epoch ms)', integer)
    .option('--to <ms>', 'time range end (exclusive, epoch ms)', integer)
    .option('--columns <list>', 'comma-separated columns', (v: string) => v.split(',').map((c) => c.trim()))
    .option('-l, --limit <n>', 'maximum rows', integer)
    .option('--json', 'print the raw JSON')
    .action(async (table: string, opts: { server: string; where?: unknown; from?: number; to?: number; columns?: string[]; limit?: number; json?: boolean }) => {
      const body: Record<string, unknown> = {};
      if (opts.where !== undefined) body.where = opts.where;
      if (opts.from !== undefined || opts.to !== undefined) body.timeRange = { from: opts.from, to: opts.to };
      if (opts.columns) body.columns = opts.columns;
      if (opts.limit !== undefined) body.limit = opts.limit;
      const result = (await request(opts.server, 'POST', `/v1/tables/${encodeURIComponent(table)}/query`, body)) as { rows: Record<string, unknown>[] };
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n` : renderRows(result.rows));
    });

  program
    .command('sql')
    .description('run SQL statements on a running server (POST /v1/sql) and print each result')
    .argument('[sql...]', 'the statements; read from stdin when none are given')
    .option('-s, --server <url>', 'server URL', DEFAULT_SERVER)
    .option('--json', 'print the raw JSON')
    .action(async (words: string[], opts: { server: string; json?: boolean }) => {
      const sql = words.length > 0 ? words.join(' ') : await readStdin();
      const result = (await request(opts.server, 'POST', '/v1/sql', { sql })) as Parameters<typeof renderSqlOutput>[0];
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n` : renderSqlOutput(result));
    });

  return program;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Run the CLI. Exit codes: 0 success; 1 a failure (startup, a request, a
 * failed shutdown); 2 a usage error (unknown command or option, bad option
 * value), reported by commander with the help.
 */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    // Commander already printed its message (and help, for usage errors).
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    const message = isRepriseError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
    process.stderr.write(`reprise: ${message}\n`);
    process.exit(1);
  }
}
