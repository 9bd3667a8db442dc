import type { Logger } from 'pino';
import type { NodeActor, NodeStatus } from '../actors/node.js';
import type { PreparedMutation, RegionQueryResult } from '../engine/region-engine.js';
import type { TableQuery, TableSchema } from '../engine/schema.js';
import { deadlineExceeded, deadlinePassed, earlier, type Deadline } from '../deadline.js';
import { isRepriseError, RepriseError, type ErrorCode } from '../errors.js';
import type { MetaReplica } from '../meta/meta-replica.js';
import type { RegionInfo } from '../meta/model.js';
import type { Subscription, Transport } from '../transport/transport.js';
import type { EntryId } from '../wal/log-store.js';

/**
 * Where the API's operations on a shard go. Embedded: the shard actor in
 * this process. In a cluster: the node meta says leads the shard, over the
 * transport, retried while leadership moves. The API (runtime.ts) is the
 * same above both.
 */
export interface ShardRouter {
  /** Not sent, or dropped by the shard before its append, once `deadline` has passed (DEADLINE_EXCEEDED: not written). */
  write(shard: number, regionId: number, mutation: PreparedMutation, deadline?: Deadline): Promise<EntryId>;
  query(shard: number, regionId: number, q: TableQuery): Promise<RegionQueryResult>;
  createRegion(shard: number, info: RegionInfo, schema: TableSchema): Promise<EntryId>;
  dropRegion(shard: number, regionId: number): Promise<void>;
  /** Flush every shard (every node's, in a cluster). */
  flush(): Promise<void>;
  /** Every node's actor tree (this node's only, embedded). */
  nodes(): Promise<NodeStatus[]>;
}

export class LocalShardRouter implements ShardRouter {
  constructor(private readonly node: NodeActor) {}
  write(shard: number, regionId: number, mutation: PreparedMutation, deadline?: Deadline): Promise<EntryId> {
    return this.node.shard(shard).write(regionId, mutation, deadline);
  }
  query(shard: number, regionId: number, q: TableQuery): Promise<RegionQueryResult> {
    return this.node.shard(shard).query(regionId, q);
  }
  createRegion(shard: number, info: RegionInfo, schema: TableSchema): Promise<EntryId> {
    return this.node.shard(shard).createRegion(info, schema);
  }
  dropRegion(shard: number, regionId: number): Promise<void> {
    return this.node.shard(shard).dropRegion(regionId);
  }
  flush(): Promise<void> {
    return this.node.flush();
  }
  async nodes(): Promise<NodeStatus[]> {
    return [this.node.status()];
  }
}

/** The node subjects: `reprise.<cluster>.node.<nodeId>.<op>`. */
const NODE_OPS = ['write', 'query', 'create_region', 'drop_region', 'flush', 'status', 'hand_off'] as const;
type NodeOp = (typeof NODE_OPS)[number];

/** Errors that mean "leadership is moving or the leader is not ready yet": ask meta's replica again and retry. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set(['NOT_LEADER', 'UNAVAILABLE', 'SHARD_NOT_SERVING', 'REGION_NOT_SERVING', 'TIMEOUT']);

export interface ClusterRoutingOptions {
  /** Give up on a shard operation after this long (failover takes about a second). Default 15000. */
  readonly deadlineMs?: number;
  /** Per attempt. Default 3000 (a write waits for the WAL; a cut-off leader costs one attempt). */
  readonly requestTimeoutMs?: number;
}

/**
 * Serve this node's shards to the cluster: the node subjects, answered by
 * the local NodeActor. A shard this node does not lead answers NOT_LEADER,
 * which sends the caller back to meta's replica for the new leader.
 */
export async function serveNode(transport: Transport, nodeId: string, node: NodeActor): Promise<Subscription[]> {
  const handlers: Record<NodeOp, (req: never) => unknown> = {
    // `deadline`: when the sender's attempt gives up (epoch ms); past it the shard drops the write unwritten.
    write: (req: { shard: number; region: number; body: Uint8Array; deadline?: number }) =>
      node.shard(req.shard).write(req.region, { body: req.body }, req.deadline === undefined ? undefined : { at: req.deadline }),
    query: (req: { shard: number; region: number; q: TableQuery }) => node.shard(req.shard).query(req.region, req.q),
    create_region: (req: { shard: number; info: RegionInfo; schema: TableSchema }) => node.shard(req.shard).createRegion(req.info, req.schema),
    drop_region: async (req: { shard: number; region: number }) => {
      await node.shard(req.shard).dropRegion(req.region);
      return {};
    },
    flush: async () => {
      await node.flush();
      return {};
    },
    status: () => node.status(),
    hand_off: async (req: { shard: number; to: string }) => {
      await node.handOff(req.shard, req.to);
      return {};
    },
  };
  const subs: Subscription[] = [];
  for (const op of NODE_OPS) subs.push(await transport.serve(transport.subject('node', nodeId, op), handlers[op] as (req: unknown) => unknown));
  return subs;
}

export class ClusterShardRouter implements ShardRouter {
  private readonly deadlineMs: number;
  private readonly requestTimeoutMs: number;

  constructor(
    private readonly transport: Transport,
    private readonly replica: MetaReplica,
    private readonly logger: Logger,
    options: ClusterRoutingOptions = {},
  ) {
    this.deadlineMs = options.deadlineMs ?? 15_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 3_000;
  }

  /** Rejects UNAVAILABLE once meta's replica names another leader for the shard (checked on each change it applies), until cancelled. */
  private leaderMoved(shard: number, from: string): { promise: Promise<never>; cancel: () => void } {
    let stopWatching = (): void => undefined;
    const promise = new Promise<never>((_, reject) => {
      const check = () => {
        const now = this.replica.shard(shard).leader;
        if (now === from) return;
        stopWatching();
        reject(new RepriseError('UNAVAILABLE', `shard ${shard} moved from '${from}' to '${now}'`, { shard }));
      };
      stopWatching = this.replica.onChange(check);
      // It may have moved between reading the leader and watching.
      check();
    });
    promise.catch(() => undefined);
    return { promise, cancel: () => stopWatching() };
  }

  /**
   * Send an operation to the shard's leader, as meta's replica knows it;
   * while leadership moves (not leader, nobody serving, shard still
   * replaying, a leader that does not answer) wait a little, look again and
   * retry, until the deadline. Table writes are upserts and deletes by
   * primary key, so a retried write that had in fact landed changes
   * nothing; creating a region is not retried after a TIMEOUT.
   *
   * `caller`: once it has passed (a client that went away), no attempt is
   * sent any more. Each attempt's payload is built with the time that
   * attempt gives up (epoch ms), which a write carries to the shard so that
   * a leader reading it late (paused, partitioned) drops it unwritten.
   */
  private async toLeader<T>(shard: number, op: NodeOp, payload: (attemptDeadline: number) => unknown, idempotent: boolean, caller?: Deadline): Promise<T> {
    const deadline = earlier(Date.now() + this.deadlineMs, caller?.at)!;
    let previous: string | null | undefined;
    let sent = 0;
    let lastError: unknown;
    for (let attempt = 0; ; attempt++) {
      // Nothing sent: certainly not carried out. Otherwise the last attempt's answer stands.
      if (deadlinePassed(caller)) throw sent === 0 ? deadlineExceeded(`shard ${shard}: ${op}`, caller) : lastError;
      const leader = this.replica.shard(shard).leader;
      // A new leader is likely serving soon: back off from the start again.
      if (previous !== undefined && leader !== previous) attempt = 0;
      previous = leader;
      try {
        if (leader === null) throw new RepriseError('UNAVAILABLE', `shard ${shard} has no leader yet`);
        const timeoutMs = Math.max(1, Math.min(this.requestTimeoutMs, deadline - Date.now()));
        const request = this.transport.request<unknown, T>(this.transport.subject('node', leader, op), payload(Date.now() + timeoutMs), { timeoutMs });
        sent++;
        if (!idempotent) return await request;
        // A leader that does not answer (paused, cut off) holds the request
        // until its timeout; once meta has moved the shard, retry at the
        // new leader instead of waiting that out.
        const moved = this.leaderMoved(shard, leader);
        try {
          return await Promise.race([request, moved.promise]);
        } finally {
          moved.cancel();
          request.catch(() => undefined);
        }
      } catch (err) {
        lastError = err;
        const retry = isRepriseError(err) && RETRYABLE.has(err.code) && (idempotent || err.code !== 'TIMEOUT');
        if (!retry || Date.now() >= deadline) throw err;
        if (attempt === 0) this.logger.debug({ shard, leader, op, code: (err as RepriseError).code }, `shard ${shard}: ${op} on '${leader}' refused, waiting for its leader`);
        // Wait for the backoff, or less if meta names a new leader meanwhile.
        const moved = leader === null ? undefined : this.leaderMoved(shard, leader);
        await Promise.race([new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 500))), moved?.promise.catch(() => undefined)]);
        moved?.cancel();
      }
    }
  }

  write(shard: number, regionId: number, mutation: PreparedMutation, deadline?: Deadline): Promise<EntryId> {
    return this.toLeader(shard, 'write', (attemptDeadline) => ({ shard, region: regionId, body: mutation.body, deadline: attemptDeadline }), true, deadline);
  }

  query(shard: number, regionId: number, q: TableQuery): Promise<RegionQueryResult> {
    return this.toLeader(shard, 'query', () => ({ shard, region: regionId, q }), true);
  }

  createRegion(shard: number, info: RegionInfo, schema: TableSchema): Promise<EntryId> {
    return this.toLeader(shard, 'create_region', () => ({ shard, info, schema }), false);
  }

  async dropRegion(shard: number, regionId: number): Promise<void> {
    await this.toLeader(shard, 'drop_region', () => ({ shard, region: regionId }), true);
  }

  /** The nodes that lead shards, each asked once. */
  private leaders(): string[] {
    return [...new Set(this.replica.shards().map((s) => s.leader).filter((l): l is string => l !== null))].sort();
  }

  async flush(): Promise<void> {
    await Promise.all(this.leaders().map((n) => this.transport.request(this.transport.subject('node', n, 'flush'), {}, { timeoutMs: 60_000 })));
  }

  async nodes(): Promise<NodeStatus[]> {
    const ids = this.replica.nodes().map((n) => n.id);
    const statuses = await Promise.all(
      ids.map((id) =>
        this.transport.request<unknown, NodeStatus>(this.transport.subject('node', id, 'status'), {}, { timeoutMs: 2_000 }).catch(
          (err: unknown): NodeStatus => ({ id, state: 'failed', shards: [], error: `unreachable: ${(err as Error).message}` }) as NodeStatus,
        ),
      ),
    );
    return statuses;
  }
}
