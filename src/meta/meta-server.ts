import type { Logger } from 'pino';
import type { TableSchema } from '../engine/schema.js';
import { isRepriseError, RepriseError } from '../errors.js';
import type { ProcedurePause, TestFaults } from '../testing/faults.js';
import { RequestDeclined, type Subscription, type Transport } from '../transport/transport.js';
import type { EntryId } from '../wal/log-store.js';
import type { MetaService } from './meta-service.js';
import type { MetaMemberStatus, ProcedureInfo, ShardInfo, ShardReport, TableInfo } from './model.js';
import { isClosing } from './procedure-driver.js';
import { ProcedureRunner, type ProcedureHost } from './procedure-runner.js';
import { planFollowers, planLeaders } from './placement.js';

/**
 * Meta as a service of the cluster: the MetaService's operations as
 * request/reply subjects (`reprise.<cluster>.meta.<op>`), node heartbeats
 * with leases, failure detection and shard placement.
 *
 * Leases: a node's lease runs `leaseMs` from the moment it *sent* a
 * heartbeat that meta answered; meta declares a node dead `failureTimeoutMs`
 * after it *received* its last heartbeat. Receive is after send, and
 * failureTimeoutMs > leaseMs, so a node stops writing (its lease is gone)
 * before meta can give its shards to anyone else. Epoch markers in the log
 * fence whatever slips through (e.g. a paused process).
 *
 * Placement: shards nobody holds go to the live node with the fewest shards.
 * Topology `dynamic` also moves the shards of a dead node to live nodes
 * (failover); `static` leaves them until their node is back (HoraeDB's
 * TOPOLOGY_TYPE). Nodes learn their assignment from heartbeat replies and
 * open or close shards to match. Failovers, migrations, (dynamic)
 * rebalancing and table creations are procedures recorded step by step in
 * the meta log and resumed by the next meta if this one dies mid-way
 * (procedure-runner.ts).
 */

export type Topology = 'static' | 'dynamic';

export interface MetaServerOptions {
  readonly heartbeatMs: number;
  readonly leaseMs: number;
  readonly failureTimeoutMs: number;
  readonly topology: Topology;
  /**
   * Place shards nobody holds only once this many nodes are alive, so that
   * nodes starting together share the shards at once (rather than by rebalancing moves later).
   */
  readonly minNodes: number;
  /**
   * Hot standbys per shard: nodes other than the leader that tail its topic
   * and take over first on failover (fewer while there are not enough live
   * nodes).
   */
  readonly followers: number;
}

/** Defaults for about one second of failure detection on a LAN. */
export const DEFAULT_META_SERVER_OPTIONS: MetaServerOptions = {
  heartbeatMs: 200,
  leaseMs: 800,
  failureTimeoutMs: 1000,
  topology: 'dynamic',
  minNodes: 1,
  followers: 1,
};

/** What a node reports with each heartbeat. */
export interface HeartbeatRequest {
  readonly node: string;
  /** Shards the node holds (leads, or follows as a hot standby), with their epochs, a follower's lag, and what failed. */
  readonly shards: ShardReport[];
}

export interface HeartbeatReply {
  readonly leaseMs: number;
  /** Shards meta assigns to this node: it should lead exactly these. */
  readonly assigned: number[];
  /** Shards this node should hold hot standbys of. */
  readonly following: number[];
  /** Meta log entry the assignment reflects (for the node's replica). */
  readonly entryId: EntryId;
}

export interface NodeLiveness {
  readonly id: string;
  readonly alive: boolean;
  readonly lastHeartbeatMsAgo: number | null;
  readonly shards: HeartbeatRequest['shards'];
}

/** What meta's scheduler has done since this meta process started. */
export interface MetaCounters {
  /** Shards placed on a node for the first time. */
  placements: number;
  /** Shards moved off a node declared dead. */
  failovers: number;
  /** Planned migrations that completed, and their total duration. */
  migrations: number;
  migrationMs: number;
  /** Nodes that left cleanly (their shards handed off at once). */
  leaves: number;
  /** Migrations made by rebalancing (counted in `migrations` too). */
  rebalanceMoves: number;
}

export interface ClusterMetaStatus {
  readonly topology: Topology;
  readonly counters: MetaCounters;
  /** Procedures running now (failovers, migrations, rebalancing, table creations), oldest first; they resume if meta restarts. */
  readonly procedures: ProcedureInfo[];
  readonly nodes: NodeLiveness[];
  readonly shards: ShardInfo[];
  readonly entryId: EntryId;
  /** The meta replicas: which leads, at which epoch, how far each has applied the meta log. */
  readonly members: MetaMemberStatus[];
}

/**
 * The node subject (`reprise.<cluster>.node.<id>.<this>`) meta requests after
 * it changed what the node leads or follows: the node heartbeats at once and
 * so learns it without waiting for its next heartbeat.
 */
export const ASSIGNMENT_CHANGED = 'assignment_changed';

/** How long meta waits in all for a node to hand a shard off (it includes a flush). */
const HAND_OFF_MS = 60_000;

/** Every meta subject, in one place, for the server and its clients. */
export const META_OPS = ['register', 'heartbeat', 'grant', 'begin_create', 'commit_create', 'abort_create', 'drop_table', 'status', 'sync', 'leave', 'migrate'] as const;
export type MetaOp = (typeof META_OPS)[number];

interface NodeRecord {
  lastHeartbeat: number;
  shards: HeartbeatRequest['shards'];
}

export class MetaServer {
  private readonly live = new Map<string, NodeRecord>();
  private readonly subscriptions: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private placing: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly startedAt = Date.now();
  readonly counters: MetaCounters = { placements: 0, failovers: 0, migrations: 0, migrationMs: 0, leaves: 0, rebalanceMoves: 0 };
  /** Failovers, migrations and rebalancing, persisted step by step in the meta log (procedure-runner.ts). */
  private readonly procedures: ProcedureRunner;

  private constructor(
    private readonly meta: MetaService,
    private readonly transport: Transport,
    private readonly options: MetaServerOptions,
    private readonly logger: Logger,
    private readonly procedurePause: ProcedurePause | undefined,
    private readonly leading: () => boolean,
    private readonly members: () => MetaMemberStatus[],
  ) {
    if (options.failureTimeoutMs <= options.leaseMs) {
      throw new RepriseError('INVALID_ARGUMENT', `failureTimeoutMs (${options.failureTimeoutMs}) must exceed leaseMs (${options.leaseMs}): a node must lose its lease before meta moves its shards`);
    }
    this.procedures = new ProcedureRunner(this.procedureHost());
  }

  /**
   * `leading`: whether this meta still leads (its election lease holds); a
   * request that arrives or completes when it does not is not answered at
   * all (RequestDeclined), so the caller gets the new leader's answer.
   * `procedurePause`: tests only (pauses in the procedures this server runs).
   * `faults`: tests only (deliberate bugs, src/testing/faults.ts).
   */
  static async start(
    meta: MetaService,
    transport: Transport,
    logger: Logger,
    options: Partial<MetaServerOptions> = {},
    extras: { readonly leading?: () => boolean; readonly members?: () => MetaMemberStatus[]; readonly procedurePause?: ProcedurePause; readonly faults?: TestFaults } = {},
  ): Promise<MetaServer> {
    const leading = extras.leading ?? (() => true);
    const server = new MetaServer(meta, transport, { ...DEFAULT_META_SERVER_OPTIONS, ...options }, logger, extras.procedurePause, leading, extras.members ?? (() => []));
    // Honour the leases a previous meta (a predecessor that crashed, or was
    // deposed) may have granted: every known node gets a full failure
    // timeout from now to check in before it can be declared dead, and
    // failureTimeoutMs exceeds leaseMs. The predecessor answered no
    // heartbeat after its own election lease ended, which was before this
    // meta was elected, so every lease it granted ends before then.
    // (The deliberate bug skipMetaLeaseWait leaves them out: a node is alive only once this meta hears it.)
    if (!extras.faults?.skipMetaLeaseWait) for (const node of meta.nodes()) server.live.set(node.id, { lastHeartbeat: Date.now(), shards: [] });
    const handlers: Record<MetaOp, (req: never) => unknown> = {
      register: (req: { node: string }) => server.register(req.node),
      heartbeat: (req: HeartbeatRequest) => server.heartbeat(req),
      grant: async (req: { shard: number; node: string }) => {
        const granted = await meta.grantLeadership(req.shard, req.node);
        return { ...granted, entryId: meta.appliedEntryId };
      },
      begin_create: async (req: { schema: TableSchema }) => {
        const table: TableInfo = await meta.beginCreateTable(req.schema);
        return { table, entryId: meta.appliedEntryId };
      },
      commit_create: async (req: { tableId: number; createdAt: Record<number, EntryId> }) => {
        await meta.commitCreateTable(req.tableId, req.createdAt);
        return { entryId: meta.appliedEntryId };
      },
      abort_create: async (req: { tableId: number; reason?: string }) => {
        await meta.abortCreateTable(req.tableId, req.reason);
        return { entryId: meta.appliedEntryId };
      },
      drop_table: async (req: { name: string }) => {
        const table = await meta.dropTable(req.name);
        return { table, entryId: meta.appliedEntryId };
      },
      status: () => server.status(),
      sync: () => ({ entryId: meta.appliedEntryId }),
      leave: (req: { node: string }) => server.leave(req.node),
      migrate: (req: { shard: number; to: string }) => server.migrate(req.shard, req.to),
    };
    for (const op of META_OPS) {
      // No queue group: a deposed leader that has not noticed yet (paused)
      // may still be subscribed; every subscriber gets each request and
      // only the one that leads answers, so none is lost to the deposed one.
      const handler = handlers[op] as (req: unknown) => unknown;
      server.subscriptions.push(await transport.serve(transport.subject('meta', op), (req: unknown) => server.answerWhileLeading(op, handler, req)));
    }
    // Nodes whose lease lapsed while no meta led renew now rather than at their next heartbeat: their writes are waiting.
    for (const node of meta.nodes()) server.nudge(node.id);
    server.timer = setInterval(() => server.schedule(), Math.max(50, Math.floor(server.options.heartbeatMs / 2)));
    // Procedures a previous meta left unfinished go on from their last recorded step.
    server.procedures.resume();
    logger.info({ ...server.options }, `meta serving cluster '${transport.cluster}'`);
    return server;
  }

  /**
   * Run a request only while this meta leads, and answer it only if it
   * still does once done: an answer after the lease ran out could carry a
   * decision that a newer leader's marker has fenced.
   */
  private async answerWhileLeading(op: MetaOp, handler: (req: unknown) => unknown, req: unknown): Promise<unknown> {
    if (!this.leading()) throw new RequestDeclined(`meta ${op}: this meta does not lead`);
    try {
      const result = await handler(req);
      if (!this.leading()) throw new RequestDeclined(`meta ${op}: this meta stopped leading while answering`);
      return result;
    } catch (err) {
      if (!this.leading()) throw new RequestDeclined(`meta ${op}: this meta stopped leading while answering`);
      throw err;
    }
  }

  private async register(node: string): Promise<{ entryId: EntryId }> {
    await this.meta.registerNode(node);
    this.live.set(node, { lastHeartbeat: Date.now(), shards: [] });
    this.logger.info({ node }, `node '${node}' registered`);
    this.schedule();
    await this.placing;
    return { entryId: this.meta.appliedEntryId };
  }

  /**
   * A node shutting down cleanly, its shards flushed and closed: it counts
   * as gone at once, so (dynamic topology) its shards move now rather than
   * after the failure timeout, with nothing to replay.
   */
  private async leave(node: string): Promise<{ entryId: EntryId }> {
    const record = this.live.get(node);
    if (record) record.lastHeartbeat = -Infinity;
    this.counters.leaves++;
    this.logger.info({ node }, `node '${node}' left the cluster`);
    this.schedule();
    await this.placing;
    return { entryId: this.meta.appliedEntryId };
  }

  /**
   * Planned migration: the current leader hands the shard off (stops
   * writing, flushes, closes), and only then does meta assign it to `to`,
   * which opens it with a new epoch and nothing to replay. Two leaders never
   * serve the shard at once; writes pause for the flush and the open.
   * Resolves once `to` reports the shard serving; if it fails to open it
   * (or does not serve it in time) the shard goes back to its source and
   * this rejects (SHARD_NOT_SERVING, naming shard and target).
   */
  async migrate(shardId: number, to: string): Promise<{ shard: number; from: string; to: string; entryId: EntryId; ms: number }> {
    const shard = this.meta.shard(shardId);
    const target = this.live.get(to);
    if (!target || !this.isAlive(target)) throw new RepriseError('INVALID_ARGUMENT', `cannot migrate shard ${shardId} to '${to}': no live node of that id`);
    const from = shard.leader;
    if (from === null) throw new RepriseError('SHARD_NOT_SERVING', `shard ${shardId} has no leader yet`);
    if (from === to) throw new RepriseError('INVALID_ARGUMENT', `shard ${shardId} is already led by '${to}'`);
    // One procedure per shard; a table being created with a region here holds it too (its new leader would not host that region).
    const running = this.meta.procedureOfShard(shardId) ?? this.meta.creationsOnShard(shardId)[0];
    if (running) throw new RepriseError('PROCEDURE_RUNNING', `shard ${shardId} already has a procedure running: ${running.kind} #${running.id} (${running.state}); one procedure per shard at a time`, { shard: shardId, procedure: running.id });
    this.logger.info({ shard: shardId, from, to }, `migrating shard ${shardId} from '${from}' to '${to}'`);
    // A procedure: each step is in the meta log before it runs, so a meta
    // restarted mid-way finishes it (procedure-runner.ts).
    const { ms } = await this.procedures.migrate({ shard: shardId, from, to });
    return { shard: shardId, from, to, entryId: this.meta.appliedEntryId, ms };
  }

  /** What the procedures need from this server: the log, liveness, heartbeat reports and the hand-off request. */
  private procedureHost(): ProcedureHost {
    return {
      meta: this.meta,
      logger: this.logger,
      topology: this.options.topology,
      counters: this.counters,
      pollMs: this.options.heartbeatMs,
      ...(this.procedurePause ? { procedurePause: this.procedurePause } : {}),
      settleTimeoutMs: Math.max(5_000, 10 * this.options.failureTimeoutMs),
      rebalanceBackoffMs: Math.max(2_000, 2 * this.options.failureTimeoutMs),
      handOff: (shard, from, to) => this.requestHandOff(shard, from, to),
      nudge: (node) => this.nudge(node),
      liveNodes: () => [...this.live].filter(([, r]) => this.isAlive(r)).map(([id]) => id).sort(),
      report: (node, shard) => this.live.get(node)?.shards.find((s) => s.id === shard),
    };
  }

  /**
   * Ask `from` to hand the shard off. The hand-off includes a flush, so it
   * may take a while; a request or reply that was lost is sent again after
   * a few heartbeats (the node joins the hand-off under way, or answers at
   * once for one done), for up to HAND_OFF_MS in all. If the source dies
   * meanwhile, stop waiting (UNAVAILABLE): failover takes the shard over.
   */
  private async requestHandOff(shardId: number, from: string, to: string): Promise<void> {
    const subject = this.transport.subject('node', from, 'hand_off');
    const attemptMs = Math.max(1_000, 10 * this.options.heartbeatMs);
    const deadline = Date.now() + HAND_OFF_MS;
    let gaveUp = false;
    const handOff = (async () => {
      for (;;) {
        try {
          return await this.transport.request(subject, { shard: shardId, to }, { timeoutMs: Math.min(attemptMs, Math.max(1, deadline - Date.now())) });
        } catch (err) {
          if (gaveUp || !isRepriseError(err, 'TIMEOUT') || Date.now() >= deadline) throw err;
          this.logger.warn({ shard: shardId, from, to }, `no reply to the hand-off of shard ${shardId} from '${from}' in ${attemptMs} ms: asking again`);
        }
      }
    })();
    handOff.catch(() => undefined);
    const watch = this.watchForDeath(from, `shard ${shardId} was being migrated to '${to}'; failover takes it over`);
    try {
      await Promise.race([handOff, watch.dead]);
    } finally {
      gaveUp = true;
      watch.cancel();
    }
  }

  /** `dead` rejects UNAVAILABLE once `node` is declared dead (checked every heartbeat interval), until cancelled. */
  private watchForDeath(node: string, what: string): { dead: Promise<never>; cancel: () => void } {
    let timer: NodeJS.Timeout | undefined;
    const dead = new Promise<never>((_, reject) => {
      timer = setInterval(() => {
        const record = this.live.get(node);
        if (record && this.isAlive(record)) return;
        clearInterval(timer);
        reject(new RepriseError('UNAVAILABLE', `node '${node}' died: ${what}`));
      }, this.options.heartbeatMs);
    });
    dead.catch(() => undefined);
    return { dead, cancel: () => clearInterval(timer) };
  }

  private async heartbeat(req: HeartbeatRequest): Promise<HeartbeatReply> {
    if (!this.meta.hasNode(req.node)) throw new RepriseError('NOT_FOUND', `node '${req.node}' is not registered with meta`);
    const record = this.live.get(req.node);
    if (record && !this.isAlive(record)) this.logger.info({ node: req.node }, `node '${req.node}' is back`);
    const now = Date.now();
    if (this.live.size > 1 && ![...this.live.values()].some((r) => this.isAlive(r, now))) {
      // Nobody reached meta for a whole failure timeout: more likely meta was
      // cut off (e.g. NATS restarted) than every node died. As after a meta
      // restart, every known node gets a full timeout to check in, rather
      // than the first one back taking every shard.
      for (const r of this.live.values()) r.lastHeartbeat = now;
      this.logger.warn({ node: req.node }, 'no node had reached meta for a failure timeout: every node gets a full timeout to check in');
    }
    this.live.set(req.node, { lastHeartbeat: Date.now(), shards: req.shards });
    return {
      leaseMs: this.options.leaseMs,
      assigned: this.meta.shardsFor(req.node, false).map((s) => s.id),
      following: this.meta.shardsFollowedBy(req.node).map((s) => s.id),
      entryId: this.meta.appliedEntryId,
    };
  }

  /** Tell a node its assignment changed (best effort: its next heartbeat tells it anyway). */
  private nudge(node: string): void {
    this.transport.request(this.transport.subject('node', node, ASSIGNMENT_CHANGED), {}, { timeoutMs: 1_000 }).catch(() => undefined);
  }

  private isAlive(record: NodeRecord, now = Date.now()): boolean {
    return now - record.lastHeartbeat < this.options.failureTimeoutMs;
  }

  /**
   * Place unowned shards, and (dynamic topology) the shards of dead nodes, on
   * live nodes; then, dynamic and settled, start a rebalance if leader
   * counts differ by more than one. One run at a time.
   */
  private schedule(): void {
    // Rebalancing only starts a procedure here (it runs in the background): placement never waits for a migration.
    this.placing = this.placing.then(() => this.place()).then(() => this.procedures.rebalanceIfNeeded()).catch((err: unknown) => {
      if (this.closed && isClosing(err)) return;
      this.logger.error({ err }, 'shard placement failed; retrying on the next tick');
    });
  }

  private async place(): Promise<void> {
    const now = Date.now();
    const alive = [...this.live].filter(([, r]) => this.isAlive(r, now)).map(([id]) => id).sort();
    if (alive.length === 0) return;
    const shards = this.meta.shards();
    // Failover is a procedure of its own, one per shard: a failover already
    // moving the shard (one whose target died fails within a heartbeat
    // interval, and the next run starts another), or a migration, which
    // ends once its source is declared dead: wait for it.
    const plan = planLeaders(shards, alive, { placeNew: alive.length >= this.options.minNodes, topology: this.options.topology, busy: (id) => this.meta.procedureOfShard(id) !== undefined });
    for (const id of plan.waiting) this.procedures.ensureRunning(this.meta.procedureOfShard(id)!);
    for (const { shard, target } of plan.place) {
      await this.meta.assignShard(shard, target);
      this.nudge(target);
      this.counters.placements++;
      this.logger.info({ shard, node: target }, `shard ${shard} placed on node '${target}'`);
    }
    // Failovers start together, so that a dead node's last shard is not
    // assigned only after the others' records: each is one append (the
    // procedure's start) and then the assignment; waiting for the new
    // leader goes on in the background.
    await Promise.all(plan.failovers.map((f) => this.failover(this.meta.shard(f.shard), f.from, f.target, f.promoted, now)));
    await this.placeFollowers(alive);
  }

  /** Start a failover procedure (procedure-runner.ts); resolves once the shard is assigned to `target`. */
  private async failover(shard: ShardInfo, from: string, target: string, promoted: boolean, now: number): Promise<void> {
    let procedure: ProcedureInfo;
    try {
      procedure = await this.procedures.failover({ shard: shard.id, from, to: target, epoch: shard.epoch });
    } catch (err) {
      if (isRepriseError(err, 'PROCEDURE_RUNNING')) return; // a migration started meanwhile: the next run
      throw err;
    }
    if (this.meta.shard(shard.id).leader !== target) return;
    this.counters.failovers++;
    const since = now - (this.live.get(from)?.lastHeartbeat ?? this.startedAt);
    const how = promoted ? 'promotes its follower on' : 'moves to';
    this.logger.warn({ shard: shard.id, from, to: target, silentMs: since, promoted, procedure: procedure.id }, `failover #${procedure.id}: shard ${shard.id} of dead node '${from}' (silent ${since} ms) ${how} '${target}'`);
  }

  /** Keep `followers` hot standbys per led shard (planFollowers). */
  private async placeFollowers(alive: readonly string[]): Promise<void> {
    const want = Math.max(0, Math.min(this.options.followers, alive.length - 1));
    for (const { shard, followers } of planFollowers(this.meta.shards(), alive, want)) {
      const was = [...this.meta.shard(shard).followers];
      await this.meta.assignFollowers(shard, followers);
      for (const n of new Set([...followers, ...was])) this.nudge(n);
      this.logger.info({ shard, leader: this.meta.shard(shard).leader, followers, was }, `shard ${shard} followers: [${followers.join(', ')}]`);
    }
  }

  status(): ClusterMetaStatus {
    const now = Date.now();
    return {
      topology: this.options.topology,
      counters: { ...this.counters },
      nodes: this.meta.nodes().map((n) => {
        const record = this.live.get(n.id);
        return {
          id: n.id,
          alive: record !== undefined && this.isAlive(record, now),
          lastHeartbeatMsAgo: record ? now - record.lastHeartbeat : null,
          shards: record?.shards ?? [],
        };
      }),
      // Copies: the caller keeps a snapshot, not meta's live state.
      shards: this.meta.shards().map((s) => ({ ...s })),
      procedures: this.meta.procedures().map((p) => ({ ...p })),
      entryId: this.meta.appliedEntryId,
      members: this.members(),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    for (const s of this.subscriptions.splice(0)) await s.close();
    // Running procedures stop where they are (nothing more is recorded); the next meta resumes them.
    this.procedures.close();
    await this.placing;
  }
}
