import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import { parseAddr } from './http.js';
import { MetaServer, type MetaServerOptions } from '../meta/meta-server.js';
import { MetaService } from '../meta/meta-service.js';
import { PROCEDURE_KINDS } from '../meta/model.js';
import type { Transport } from '../transport/transport.js';
import { RepriseError } from '../errors.js';
import type { LogStore } from '../wal/log-store.js';
import type { TestHooks } from '../testing/faults.js';
import { openLogStore, type KafkaWalOptions, type LocalWalOptions } from '../wal/open-log-store.js';
import { borrowedLog, loggerOf } from './runtime.js';

export interface MetaProcessOptions extends Partial<MetaServerOptions> {
  readonly transport: Transport;
  /** Meta's own log is `<topicPrefix>_meta` in the cluster's Kafka, which every node tails. */
  readonly wal: KafkaWalOptions | LocalWalOptions;
  /**
   * For tests and simulation: an already open LogStore to use instead of
   * opening one from `wal` (then only `wal.topicPrefix` is read and `wal` may
   * be `{ provider: 'local' }`). The caller owns it: close() leaves it open.
   */
  readonly log?: LogStore;
  /** Shards (WAL topics) created on first start. Default 4. */
  readonly shards?: number;
  readonly logger?: Logger | false;
  /** Serve `/health`, `/metrics` and `/v1/cluster/status` (meta's view) here, e.g. 127.0.0.1:4100 (port 0: any). */
  readonly httpAddr?: string;
  /** Tests only (src/testing/faults.ts): pauses in meta's procedures. */
  readonly testHooks?: Pick<TestHooks, 'procedurePause'>;
}

export interface MetaProcess {
  readonly server: MetaServer;
  /** Where the HTTP endpoint listens, when `httpAddr` was given. */
  readonly url?: string;
  close(): Promise<void>;
}

/** Meta's Prometheus metrics, read from the server at scrape time. */
function metaRegistry(server: MetaServer): Registry {
  const registry = new Registry();
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  counter('reprise_meta_shard_placements_total', 'Shards placed on a node for the first time', () => server.counters.placements);
  counter('reprise_meta_failovers_total', 'Shards moved off a node declared dead', () => server.counters.failovers);
  counter('reprise_meta_migrations_total', 'Planned shard migrations completed', () => server.counters.migrations);
  counter('reprise_meta_migration_seconds_total', 'Time spent in completed migrations', () => server.counters.migrationMs / 1000);
  counter('reprise_meta_node_leaves_total', 'Nodes that left cleanly, handing their shards off', () => server.counters.leaves);
  counter('reprise_meta_rebalance_moves_total', 'Shard migrations made by rebalancing (also counted in reprise_meta_migrations_total)', () => server.counters.rebalanceMoves);
  new Gauge({
    name: 'reprise_meta_procedures',
    help: 'Procedures running (recorded in the meta log, resumed after a meta restart) by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const running = server.status().procedures;
      for (const kind of PROCEDURE_KINDS) this.set({ kind }, running.filter((p) => p.kind === kind).length);
    },
  });
  new Gauge({
    name: 'reprise_meta_nodes',
    help: 'Registered nodes by liveness',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const nodes = server.status().nodes;
      this.set({ state: 'alive' }, nodes.filter((n) => n.alive).length);
      this.set({ state: 'dead' }, nodes.filter((n) => !n.alive).length);
    },
  });
  new Gauge({
    name: 'reprise_meta_shard_epoch',
    help: 'Leadership epoch of each shard',
    labelNames: ['shard'],
    registers: [registry],
    collect() {
      for (const shard of server.status().shards) this.set({ shard: String(shard.id) }, shard.epoch);
    },
  });
  return registry;
}

/**
 * The cluster's meta: the MetaService over the meta log, served on the
 * transport with heartbeats, leases, failure detection and placement.
 */
export async function startMeta(options: MetaProcessOptions): Promise<MetaProcess> {
  const logger = loggerOf(options.logger);
  if (!options.log && options.wal.provider !== 'kafka') {
    throw new RepriseError('INVALID_ARGUMENT', `meta needs the Kafka WAL (wal.provider 'kafka'), got '${options.wal.provider}'`);
  }
  const log = options.log ? borrowedLog(options.log) : await openLogStore(options.wal, '');
  try {
    const procedurePause = options.testHooks?.procedurePause;
    const meta = await MetaService.open(log, { topicPrefix: options.wal.topicPrefix ?? 'reprise_wal', numShards: options.shards, logger, ...(procedurePause ? { procedurePause } : {}) });
    // A create table cut short by a crash never became visible: roll it back.
    await meta.rollBackIncompleteCreates(logger);
    const { transport: _t, wal: _w, log: _g, shards: _s, logger: _l, httpAddr: _h, testHooks: _k, ...schedulerOptions } = options;
    const server = await MetaServer.start(meta, options.transport, logger, schedulerOptions, procedurePause);
    let app: FastifyInstance | undefined;
    let url: string | undefined;
    if (options.httpAddr) {
      const registry = metaRegistry(server);
      app = Fastify({ logger: false });
      app.get('/health', async () => ({ status: 'ok', role: 'meta' }));
      app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
      app.get('/v1/cluster/status', async () => ({ meta: server.status() }));
      url = await app.listen(parseAddr(options.httpAddr));
      logger.info({ url }, `meta HTTP on ${url}`);
    }
    return {
      server,
      ...(url ? { url } : {}),
      close: async () => {
        await app?.close();
        await server.close();
        await meta.close();
        await log.close();
      },
    };
  } catch (err) {
    await log.close().catch(() => undefined);
    throw err;
  }
}
