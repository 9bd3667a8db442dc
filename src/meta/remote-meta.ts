import type { TableSchema } from '../engine/schema.js';
import { isRepriseError, RepriseError } from '../errors.js';
import type { Transport } from '../transport/transport.js';
import type { EntryId } from '../wal/log-store.js';
import type { MetaReplica } from './meta-replica.js';
import type { ClusterMetaStatus, HeartbeatReply, HeartbeatRequest, MetaOp } from './meta-server.js';
import type { RegionInfo, ShardInfo, TableInfo, TableStatus } from './model.js';

/** How long a meta request may take before it fails with TIMEOUT (per attempt). */
const META_TIMEOUT_MS = 5_000;
/** How long a request is sent again while no meta leads: a meta leader change takes about the election lease and a margin. */
const META_FAILOVER_WAIT_MS = 10_000;
const META_FAILOVER_POLL_MS = 50;
/** How long a migration meta did not answer in time is followed in its log (meta allows a hand-off a minute). */
const MIGRATE_OUTCOME_MS = 90_000;

/**
 * Meta as seen from a node or a frontend in a cluster: changes go to the
 * meta process over the transport; reads come from a local replica of the
 * meta log, which is first brought up to the entry each change returned, so
 * a caller always reads its own writes.
 */
export class RemoteMeta {
  constructor(
    private readonly transport: Transport,
    readonly replica: MetaReplica,
  ) {}

  private async call<T extends { entryId: EntryId }>(op: MetaOp, payload: unknown, retries = 2, abandoned?: () => boolean): Promise<T> {
    const reply = await this.request<T>(op, payload, retries, abandoned);
    await this.replica.waitFor(reply.entryId);
    return reply;
  }

  /**
   * One meta request. While no meta leads (between a leader's end and its
   * successor's start nobody serves the subjects) it is sent again until
   * META_FAILOVER_WAIT_MS: UNAVAILABLE means it was never delivered, so
   * that is safe for every operation. `retries`: after a TIMEOUT too, for
   * the operations that may run twice. `abandoned`: the caller has given
   * up on this request (and may have sent another), so it is not sent again.
   */
  private async request<T>(op: MetaOp, payload: unknown, retries: number, abandoned = () => false): Promise<T> {
    const until = Date.now() + META_FAILOVER_WAIT_MS;
    for (;;) {
      try {
        return await this.transport.request<unknown, T>(this.transport.subject('meta', op), payload, { timeoutMs: META_TIMEOUT_MS, retries });
      } catch (err) {
        if (!isRepriseError(err, 'UNAVAILABLE') || Date.now() >= until || abandoned()) throw err;
        await new Promise((resolve) => setTimeout(resolve, META_FAILOVER_POLL_MS));
      }
    }
  }

  /** Bring the replica up to everything meta has written so far (read-your-writes across frontends). */
  async sync(): Promise<void> {
    await this.call('sync', {});
  }

  async registerNode(nodeId: string): Promise<void> {
    await this.call('register', { node: nodeId });
  }

  /**
   * Move a shard's leadership to another node (planned: hand-off, then open
   * there). The migration is a procedure in meta's log, which goes on
   * without this caller: when meta's reply does not come in time (the
   * source's flush is long, or meta restarted and resumed the procedure),
   * its outcome is read from the log instead, for up to MIGRATE_OUTCOME_MS.
   * If the meta leader changes meanwhile (a newer epoch marker in the log),
   * its answer cannot come: a procedure it recorded is in the log before the
   * new marker and is followed there; if there is none, the request died
   * with that leader and goes to its successor. A copy sent again that meets
   * the shard already led by `to` (the earlier copy reached the successor
   * after all) or its migration there running, ends as that does.
   */
  async migrate(shardId: number, to: string): Promise<{ shard: number; from: string; to: string; ms: number }> {
    const started = Date.now();
    const from = this.replica.shard(shardId).leader;
    for (let attempt = 0; ; attempt++) {
      const sentAt = this.replica.metaEpoch;
      const leaderChanged = this.metaLeaderChange(sentAt);
      try {
        const reply = await Promise.race([this.call<{ shard: number; from: string; to: string; ms: number; entryId: EntryId }>('migrate', { shard: shardId, to }, 0, () => this.replica.metaEpoch > sentAt), leaderChanged.promise]);
        return { shard: reply.shard, from: reply.from, to: reply.to, ms: reply.ms };
      } catch (err) {
        // Sent again: the earlier request may have reached the new leader after all (sent while no meta led, it is sent again until one does), so its migration may be running or done; the log says which.
        if (attempt > 0 && from !== null) {
          await this.sync();
          const running = this.replica.procedureOfShard(shardId);
          const ours = running === undefined ? this.replica.shard(shardId).leader === to : running.kind === 'migrate' && running.to === to;
          if (!ours) throw err;
          await this.migrationOutcome(shardId, to, started + MIGRATE_OUTCOME_MS - Date.now(), err as RepriseError);
          return { shard: shardId, from, to, ms: Date.now() - started };
        }
        const changed = this.replica.metaEpoch > sentAt;
        if ((!changed && !isRepriseError(err, 'TIMEOUT')) || from === null) throw err;
        const lost = changed && this.replica.procedureOfShard(shardId) === undefined && this.replica.shard(shardId).leader === from;
        if (lost && Date.now() < started + MIGRATE_OUTCOME_MS) continue;
        await this.migrationOutcome(shardId, to, started + MIGRATE_OUTCOME_MS - Date.now(), err as RepriseError);
        return { shard: shardId, from, to, ms: Date.now() - started };
      } finally {
        leaderChanged.cancel();
      }
    }
  }

  /** Rejects UNAVAILABLE once the replica folds a meta epoch marker above `epoch` (a new meta leader), until cancelled. */
  private metaLeaderChange(epoch: number): { promise: Promise<never>; cancel: () => void } {
    let stop = (): void => undefined;
    const promise = new Promise<never>((_, reject) => {
      stop = this.replica.onChange(() => {
        if (this.replica.metaEpoch > epoch) reject(new RepriseError('UNAVAILABLE', `the meta leader changed (epoch ${epoch} -> ${this.replica.metaEpoch})`));
      });
    });
    promise.catch(() => undefined);
    return { promise, cancel: () => stop() };
  }

  /**
   * Resolves once the log shows the shard led by `to` with no procedure on
   * it (the migration ends only once `to` serves it); rejects once no
   * procedure runs on it and it is led by another node (the migration
   * failed, or gave the shard back), or when `waitMs` has passed with one
   * still running.
   */
  private migrationOutcome(shardId: number, to: string, waitMs: number, timeout: RepriseError): Promise<void> {
    return new Promise((resolve, reject) => {
      const what = `no answer from meta within ${META_TIMEOUT_MS} ms to the migration of shard ${shardId} to '${to}'`;
      const check = (expired: boolean) => {
        const running = this.replica.procedureOfShard(shardId);
        const { leader } = this.replica.shard(shardId);
        if (running === undefined && leader === to) return settle();
        if (running === undefined) {
          return settle(new RepriseError('TIMEOUT', `${what}, and meta's log shows none running: shard ${shardId} is led by '${leader}' (the migration failed, gave the shard back, or never reached meta; see \`reprise cluster status\`)`, { shard: shardId, to }, { cause: timeout }));
        }
        if (expired) {
          return settle(new RepriseError('TIMEOUT', `${what}; ${running.kind} #${running.id} of shard ${shardId} is still at step ${running.state}: see \`reprise cluster status\``, { shard: shardId, to }, { cause: timeout }));
        }
      };
      const stopListening = this.replica.onChange(() => check(false));
      const timer = setTimeout(() => check(true), Math.max(0, waitMs));
      const settle = (err?: RepriseError) => {
        stopListening();
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      check(false);
    });
  }

  /** Tell meta this node is leaving (its shards are flushed and closed): they move now. */
  async leave(nodeId: string): Promise<void> {
    await this.call('leave', { node: nodeId }, 0);
  }

  /** One heartbeat; the caller times the lease from before it sent this. */
  heartbeat(req: HeartbeatRequest, timeoutMs: number): Promise<HeartbeatReply> {
    return this.transport.request<HeartbeatRequest, HeartbeatReply>(this.transport.subject('meta', 'heartbeat'), req, { timeoutMs });
  }

  /** In a cluster a node leads only what meta assigned to it. */
  shardsFor(nodeId: string): ShardInfo[] {
    return this.replica.shardsFor(nodeId, false);
  }

  shard(shardId: number): ShardInfo {
    return this.replica.shard(shardId);
  }

  shards(): ShardInfo[] {
    return this.replica.shards();
  }

  async grantLeadership(shardId: number, nodeId: string): Promise<{ epoch: number; topic: string }> {
    // Not retried: a grant that timed out may have happened (the next open asks again).
    const { epoch, topic } = await this.call<{ epoch: number; topic: string; entryId: EntryId }>('grant', { shard: shardId, node: nodeId }, 0);
    return { epoch, topic };
  }

  table(name: string): TableInfo {
    return this.replica.table(name);
  }

  tables(): TableInfo[] {
    return this.replica.tables();
  }

  tableStatus(name: string): TableStatus | undefined {
    return this.replica.tableStatus(name);
  }

  onChange(listener: () => void): () => void {
    return this.replica.onChange(listener);
  }

  regionsOfShard(shardId: number): RegionInfo[] {
    return this.replica.regionsOfShard(shardId);
  }

  creatingRegionsOfShard(shardId: number): RegionInfo[] {
    return this.replica.creatingRegionsOfShard(shardId);
  }

  regionById(regionId: number): { region: RegionInfo; schema: TableSchema } | undefined {
    return this.replica.regionById(regionId);
  }

  /** Shards meta wants this node to hold hot standbys of. */
  shardsFollowedBy(nodeId: string): ShardInfo[] {
    return this.replica.shardsFollowedBy(nodeId);
  }

  async beginCreateTable(schema: TableSchema): Promise<TableInfo> {
    return (await this.call<{ table: TableInfo; entryId: EntryId }>('begin_create', { schema }, 0)).table;
  }

  async commitCreateTable(tableId: number, createdAt: Record<number, EntryId>): Promise<void> {
    await this.call('commit_create', { tableId, createdAt }, 0);
  }

  async abortCreateTable(tableId: number, reason?: string): Promise<void> {
    await this.call('abort_create', reason === undefined ? { tableId } : { tableId, reason }, 0);
  }

  async dropTable(name: string): Promise<TableInfo> {
    return (await this.call<{ table: TableInfo; entryId: EntryId }>('drop_table', { name }, 0)).table;
  }

  status(): Promise<ClusterMetaStatus> {
    return this.request<ClusterMetaStatus>('status', {}, 2);
  }
}
