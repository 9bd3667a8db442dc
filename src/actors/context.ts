import type { Logger } from 'pino';
import { waitFor, type AnyActorRef, type SnapshotFrom } from 'xstate';
import type { ObjectStore } from '../engine/object-store.js';
import type { RegionEngine } from '../engine/region-engine.js';
import type { TableSchema } from '../engine/schema.js';
import type { RegionInfo, ShardInfo, TableInfo } from '../meta/model.js';
import type { LogStore } from '../wal/log-store.js';
import type { TestHooks } from '../testing/faults.js';

/** Which actor changed state, for logs, status, metrics and the dashboard. */
export interface Transition {
  readonly kind: 'node' | 'shard' | 'region';
  readonly id: string | number;
  readonly from: string;
  readonly to: string;
  readonly at: number;
  readonly reason?: string;
}

export interface ReplayProgress {
  readonly shardId: number;
  readonly topic: string;
  readonly entries: number;
  readonly bytes: number;
  readonly lastId: number;
  readonly targetId: number;
  readonly elapsedMs: number;
}

export interface FollowerApply {
  readonly shardId: number;
  readonly entryId: number;
  readonly lagMs: number;
}

export interface FlushPolicy {
  /** Flush a shard when one of its regions' memtables holds this many bytes. */
  readonly memtableBytes: number;
  /** Flush a shard when this many WAL bytes were appended since its last flush. */
  readonly walBytes: number;
  /**
   * The node's memtable budget: while its led shards' memtables hold more
   * than this, the node flushes the shard holding most (checked every
   * MEMTABLE_BUDGET_CHECK_MS), so memory is set by configuration however
   * many regions the node hosts.
   */
  readonly nodeMemtableBytes: number;
}

/** Defaults bound memtables per shard to about 128 MiB of WAL (a few hundred MiB of heap). */
export const DEFAULT_FLUSH_POLICY: FlushPolicy = { memtableBytes: 64 * 1024 * 1024, walBytes: 128 * 1024 * 1024, nodeMemtableBytes: 256 * 1024 * 1024 };

export const MEMTABLE_BUDGET_CHECK_MS = 200;

/**
 * What actors need from meta: the MetaService itself when embedded, a
 * RemoteMeta (changes over the transport, reads from a replica of the meta
 * log) in a cluster.
 */
export interface ActorMeta {
  registerNode(nodeId: string): Promise<void>;
  /** Shards this node should lead. */
  shardsFor(nodeId: string): ShardInfo[];
  shard(shardId: number): ShardInfo;
  grantLeadership(shardId: number, nodeId: string): Promise<{ epoch: number; topic: string }>;
  tables(): TableInfo[];
  regionsOfShard(shardId: number): RegionInfo[];
  /** A region of an active table or of one being created (a follower meets its region_create entry). */
  regionById(regionId: number): { region: RegionInfo; schema: TableSchema } | undefined;
  /** Regions on this shard of tables whose create has begun and not committed. */
  creatingRegionsOfShard(shardId: number): RegionInfo[];
  /** Bring reads up to everything meta has written (a replica may lag a little). */
  sync(): Promise<void>;
}

/** Everything an actor needs from the layers below, injected by whoever assembles the runtime. */
export interface ActorContext {
  readonly nodeId: string;
  readonly meta: ActorMeta;
  /**
   * Whether this node's lease from meta is still valid (cluster mode). A
   * shard neither starts nor acknowledges an append without it. Embedded:
   * absent, always held.
   */
  readonly leaseHeld?: () => boolean;
  /** Resolves true once the lease is held again after a lapse (at once if held), false after `timeoutMs`. */
  readonly awaitLease?: (timeoutMs: number) => Promise<boolean>;
  readonly log: LogStore;
  readonly engine: RegionEngine;
  readonly objects: ObjectStore;
  readonly logger: Logger;
  readonly maxBatchBytes: number;
  readonly flushPolicy: FlushPolicy;
  readonly onTransition?: (t: Transition) => void;
  readonly onReplayProgress?: (p: ReplayProgress) => void;
  /** A follower applied a data entry `lagMs` after its append (where the log knows when). */
  readonly onFollowerApply?: (a: FollowerApply) => void;
  /** Deliberate bugs and observation, for tests only (src/testing/faults.ts). */
  readonly testHooks?: TestHooks;
}

/** Subscribe to an actor's state changes and report each transition once. */
export function reportTransitions(
  actor: { subscribe(cb: (s: { value: unknown; context: { error?: string | undefined } }) => void): unknown; getSnapshot(): { value: unknown } },
  kind: Transition['kind'],
  id: string | number,
  ctx: ActorContext,
): void {
  let current = String(actor.getSnapshot().value);
  actor.subscribe((snapshot) => {
    const next = String(snapshot.value);
    if (next === current) return;
    const transition: Transition = {
      kind,
      id,
      from: current,
      to: next,
      at: Date.now(),
      ...(snapshot.context.error && (next === 'failed' || next === 'serving') ? { reason: snapshot.context.error } : {}),
    };
    current = next;
    const level = next === 'failed' ? 'error' : kind === 'region' ? 'debug' : 'info';
    ctx.logger[level]({ [kind]: id, from: transition.from, to: next, reason: transition.reason }, `${kind} ${id}: ${transition.from} -> ${next}`);
    ctx.onTransition?.(transition);
  });
}

/**
 * Run an actor through its `busy` state: send `event` when it is `idle`, and
 * resolve with the snapshot once it has left `busy`. A call made while it is
 * already busy waits for that run to end and then for one started after the
 * call (its own, or one another caller started meanwhile). Resolves
 * undefined, sending nothing, when the actor is in neither state.
 */
export async function runThrough<A extends AnyActorRef>(
  actor: A,
  idle: string,
  busy: string,
  event: Parameters<A['send']>[0],
): Promise<SnapshotFrom<A> | undefined> {
  const notBusy = (s: { value?: unknown }) => s.value !== busy;
  const state = () => (actor.getSnapshot() as { value: unknown }).value;
  if (state() === busy) await waitFor(actor, notBusy, { timeout: Infinity });
  if (state() === idle) actor.send(event);
  else if (state() !== busy) return undefined;
  return waitFor(actor, notBusy, { timeout: Infinity });
}
