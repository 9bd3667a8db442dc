import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import { parseAddr } from './http.js';
import { hostname } from 'node:os';
import type { ElectionStore } from '../meta/election-store.js';
import { MetaElection, type DeposedEvent, type ElectedEvent, type ElectionTestHooks } from '../meta/meta-election.js';
import { MetaMember, type ElectionStarter } from '../meta/meta-member.js';
import type { MetaServer, MetaServerOptions } from '../meta/meta-server.js';
import type { NatsTransport } from '../transport/nats.js';
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
  /** This replica's name among the cluster's metas (default `meta-<host>-<pid>`). */
  readonly id?: string;
  readonly election?: MetaElectionSettings;
  /** Serve `/health`, `/metrics` and `/v1/cluster/status` (meta's view) here, e.g. 127.0.0.1:4100 (port 0: any). */
  readonly httpAddr?: string;
  /** Tests only (src/testing/faults.ts): pauses in meta's procedures, deliberate bugs, the election's events and faults. */
  readonly testHooks?: MetaTestHooks;
}

/** What a test may inject into a meta replica (production passes none). */
export interface MetaTestHooks extends Pick<TestHooks, 'procedurePause' | 'faults' | 'onMetaElection'> {
  /** Faults of this replica's election (freeze it as a paused process would be). */
  readonly election?: ElectionTestHooks;
}

/** The meta leader election (src/meta/meta-election.ts), on the cluster's NATS JetStream. */
export interface MetaElectionSettings {
  /** A leader acts for this long after a renewal it sent; a successor takes over this long (plus a fifth) after the last one. Default 1000. */
  readonly leaseMs?: number;
  /** Replicas of the election's KV bucket when meta creates it: default 3 on a NATS cluster, 1 on a single server. */
  readonly replicas?: number;
  /** KV bucket of the election (default `reprise_meta_<cluster>`). */
  readonly bucket?: string;
  /**
   * The store to elect on instead of the transport's NATS JetStream: the
   * simulation's and in-process tests' MemoryElectionStore, shared by the
   * replicas of one cluster.
   */
  readonly store?: ElectionStore;
}

export const DEFAULT_META_ELECTION_LEASE_MS = 1_000;

export interface MetaProcess {
  /** This replica: its machine state, the leader it sees, its peers. */
  readonly member: MetaMember;
  /** The server while this replica leads; throws UNAVAILABLE while it follows. */
  readonly server: MetaServer;
  /** Resolves with the server once this replica leads. */
  leading(timeoutMs?: number): Promise<MetaServer>;
  /** Where the HTTP endpoint listens, when `httpAddr` was given. */
  readonly url?: string;
  close(): Promise<void>;
}

/** Meta's Prometheus metrics, read from the member (and its server while it leads) at scrape time. */
function metaRegistry(member: MetaMember): Registry {
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
  const server = () => member.server;
  counter('reprise_meta_shard_placements_total', 'Shards placed on a node for the first time (by this replica while it led)', () => server()?.counters.placements ?? 0);
  counter('reprise_meta_failovers_total', 'Shards moved off a node declared dead', () => server()?.counters.failovers ?? 0);
  counter('reprise_meta_migrations_total', 'Planned shard migrations completed', () => server()?.counters.migrations ?? 0);
  counter('reprise_meta_migration_seconds_total', 'Time spent in completed migrations', () => (server()?.counters.migrationMs ?? 0) / 1000);
  counter('reprise_meta_node_leaves_total', 'Nodes that left cleanly, handing their shards off', () => server()?.counters.leaves ?? 0);
  counter('reprise_meta_rebalance_moves_total', 'Shard migrations made by rebalancing (also counted in reprise_meta_migrations_total)', () => server()?.counters.rebalanceMoves ?? 0);
  counter('reprise_meta_leader_changes_total', 'New meta leaders (epochs) this replica has observed since it started', () => member.electionStats()?.leaderChanges ?? 0);
  counter('reprise_meta_takeovers_total', 'Times this replica became the meta leader', () => member.counters.takeovers);
  new Gauge({
    name: 'reprise_meta_leader',
    help: '1 while this replica leads, else 0',
    registers: [registry],
    collect() {
      this.set(member.server ? 1 : 0);
    },
  });
  new Gauge({
    name: 'reprise_meta_election_seconds',
    help: 'The last meta election observed: from the previous leader\'s last renewal to the new epoch',
    registers: [registry],
    collect() {
      const ms = member.electionStats()?.lastElectionMs;
      if (ms !== undefined) this.set(ms / 1000);
    },
  });
  new Gauge({
    name: 'reprise_meta_takeover_seconds',
    help: 'This replica\'s last takeover: from elected to serving (marker, fold, roll-backs)',
    registers: [registry],
    collect() {
      this.set(member.counters.lastTakeoverMs / 1000);
    },
  });
  new Gauge({
    name: 'reprise_meta_procedures',
    help: 'Procedures running (recorded in the meta log, resumed after a meta restart) by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const running = server()?.status().procedures ?? [];
      for (const kind of PROCEDURE_KINDS) this.set({ kind }, running.filter((p) => p.kind === kind).length);
    },
  });
  new Gauge({
    name: 'reprise_meta_nodes',
    help: 'Registered nodes by liveness (as the leader sees them)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const nodes = server()?.status().nodes ?? [];
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
      for (const shard of server()?.status().shards ?? []) this.set({ shard: String(shard.id) }, shard.epoch);
    },
  });
  return registry;
}

/** The election on the store given, else on the transport's NATS JetStream (a KV bucket per cluster). */
function electionOf(options: MetaProcessOptions, id: string, logger: Logger): ElectionStarter {
  const leaseMs = options.election?.leaseMs ?? DEFAULT_META_ELECTION_LEASE_MS;
  const hooks = options.testHooks;
  const timing = { candidateId: id, leaseMs, renewMs: Math.max(10, Math.floor(leaseMs / 4)), logger, ...(hooks?.election ? { testHooks: hooks.election } : {}) };
  const observed = hooks?.onMetaElection ? observedElection(hooks.onMetaElection) : <T>(on: T) => on;
  const store = options.election?.store;
  if (store) return (minEpoch, on) => MetaElection.start({ store, ...timing, minEpoch, on: observed(on) });
  // By shape, not instanceof: the NATS client is loaded only by the processes that connect to NATS.
  const { nc, cluster } = options.transport as Partial<NatsTransport>;
  if (nc === undefined || cluster === undefined) {
    throw new RepriseError('INVALID_ARGUMENT', `meta replica '${id}': the meta election runs on NATS JetStream, and the transport given is not NATS (give election.store)`);
  }
  if (nc.info && !nc.info.jetstream) {
    throw new RepriseError('UNAVAILABLE', `meta replica '${id}': the NATS server ${nc.info.server_name ?? ''} at ${nc.getServer()} has no JetStream, which the meta election needs: start nats-server with -js (and -sd <dir>)`);
  }
  // One server: R1 (a bucket cannot have more replicas than servers); a NATS cluster: R3.
  const replicas = options.election?.replicas ?? (nc.info?.cluster ? 3 : 1);
  const bucket = options.election?.bucket ?? `reprise_meta_${cluster}`;
  return (minEpoch, on) => MetaElection.start({ nc, bucket, replicas, ...timing, minEpoch, on: observed(on) });
}

type ElectionListeners = Parameters<ElectionStarter>[1];

/** The member's election listeners, with the test's observer told first. */
function observedElection(observe: NonNullable<TestHooks['onMetaElection']>) {
  return (on: ElectionListeners): ElectionListeners => ({
    elected: (e: ElectedEvent) => {
      observe({ kind: 'elected', epoch: e.epoch, at: e.at, leaseEnd: e.leaseEnd });
      on.elected(e);
    },
    deposed: (e: DeposedEvent) => {
      observe({ kind: 'deposed', epoch: e.epoch, at: e.at, leaseEnd: e.leaseEnd });
      on.deposed(e);
    },
  });
}

/**
 * One replica of the cluster's meta: it tails the meta log and campaigns
 * in the election; while it leads, it is the MetaService over the meta log,
 * served on the transport with heartbeats, leases, failure detection and
 * placement (src/meta/meta-member.ts). Resolves once the replica follows or
 * leads.
 */
export async function startMeta(options: MetaProcessOptions): Promise<MetaProcess> {
  const logger = loggerOf(options.logger);
  if (!options.log && options.wal.provider !== 'kafka') {
    throw new RepriseError('INVALID_ARGUMENT', `meta needs the Kafka WAL (wal.provider 'kafka'), got '${options.wal.provider}'`);
  }
  const id = options.id ?? `meta-${hostname()}-${process.pid}`;
  const startElection = electionOf(options, id, logger);
  const log = options.log ? borrowedLog(options.log) : await openLogStore(options.wal, '');
  let member: MetaMember | undefined;
  let app: FastifyInstance | undefined;
  try {
    const { transport: _t, wal: _w, log: _g, shards: _s, logger: _l, httpAddr: _h, testHooks: _k, id: _i, election: _e, ...serverOptions } = options;
    const procedurePause = options.testHooks?.procedurePause;
    const faults = options.testHooks?.faults;
    member = new MetaMember({
      id,
      log,
      topicPrefix: options.wal.topicPrefix ?? 'reprise_wal',
      transport: options.transport,
      logger,
      startElection,
      ...(options.shards !== undefined ? { numShards: options.shards } : {}),
      server: serverOptions,
      ...(procedurePause ? { procedurePause } : {}),
      ...(faults ? { faults } : {}),
    });
    await member.start();
    const started = member;
    let url: string | undefined;
    if (options.httpAddr) {
      const registry = metaRegistry(started);
      app = Fastify({ logger: false });
      app.get('/health', async () => ({ status: 'ok', role: 'meta', member: started.status() }));
      app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
      // A follower answers with what it knows: the members and who leads (its log view is the replica's).
      app.get('/v1/cluster/status', async () => ({ meta: started.server?.status() ?? null, members: started.members() }));
      url = await app.listen(parseAddr(options.httpAddr));
      logger.info({ url }, `meta HTTP on ${url}`);
    }
    return {
      member: started,
      get server() {
        const server = started.server;
        if (!server) throw new RepriseError('UNAVAILABLE', `meta replica '${id}' does not lead (it is ${started.state})`);
        return server;
      },
      leading: (timeoutMs) => started.leading(timeoutMs),
      ...(url ? { url } : {}),
      close: async () => {
        await app?.close();
        await started.stop();
        await log.close();
      },
    };
  } catch (err) {
    await app?.close().catch(() => undefined);
    await member?.stop().catch(() => undefined);
    await log.close().catch(() => undefined);
    throw err;
  }
}
