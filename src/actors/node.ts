import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { codeOfReason, RepriseError } from '../errors.js';
import { MEMTABLE_BUDGET_CHECK_MS, reportTransitions, runThrough, type ActorContext } from './context.js';
import { nodeMachine, type NodeState } from './node-machine.js';
import { ShardActor, type ShardStatus } from './shard.js';

/** How long a handed-off shard waits for meta to move it before it may reopen here. */
const HAND_OFF_GRACE_MS = 5_000;

export interface NodeStatus {
  readonly id: string;
  readonly state: NodeState;
  readonly shards: ShardStatus[];
  readonly error?: string;
  /** Cluster mode: whether its lease from meta holds (while it has lapsed, no shard acknowledges a write). */
  readonly leaseHeld?: boolean;
}

/**
 * A node: the node machine and the shards it leads. It registers with meta,
 * opens (and so replays) its shards in parallel, and routes operations to
 * them.
 */
export class NodeActor {
  readonly actor: Actor<typeof nodeMachine>;
  private readonly shards = new Map<number, ShardActor>();
  private flushOnClose = true;
  /** Why the close failed (shards that failed while closing), for close() to throw. */
  private closeError: RepriseError | undefined;
  private reconciling: Promise<void> = Promise.resolve();
  /**
   * Shards handed off, and when: not reopened while meta still lists them
   * here (it moves them right after the hand-off), unless that takes longer
   * than HAND_OFF_GRACE_MS (meta crashed mid-migration): then they reopen here.
   */
  private readonly handedOff = new Map<number, number>();
  /** Hand-offs under way, by shard. */
  private readonly handingOff = new Map<number, Promise<void>>();
  private budgetTimer: NodeJS.Timeout | undefined;
  /** A flush the memtable budget started, until it ends. */
  private budgetFlush: Promise<void> | undefined;

  constructor(private readonly ctx: ActorContext) {
    const machine = nodeMachine.provide({
      actors: {
        registerNode: fromPromise(async () => ctx.meta.registerNode(ctx.nodeId)),
        openShards: fromPromise(async () => {
          const shards = ctx.meta.shardsFor(ctx.nodeId).map((s) => new ShardActor(s.id, ctx));
          for (const shard of shards) this.shards.set(shard.id, shard);
          // A shard that fails keeps its reason in status; the node serves the others.
          await Promise.all(shards.map((s) => s.start()));
        }),
        flushNode: fromPromise(async () => {
          await Promise.all([...this.shards.values()].map((s) => s.flush()));
        }),
        closeNode: fromPromise(async () => {
          const shards = [...this.shards.values()];
          const failedBefore = new Set(shards.filter((s) => s.state() === 'failed'));
          await Promise.all(shards.map((s) => s.close({ flush: this.flushOnClose })));
          // Shards that failed while closing (a flush on a full disk): the shutdown is incomplete, and says so.
          const failed = shards.filter((s) => !failedBefore.has(s) && s.state() === 'failed').map((s) => s.status());
          if (failed.length > 0) {
            const reasons = failed.map((s) => `shard ${s.id}: ${s.error}`);
            this.closeError = new RepriseError(
              codeOfReason(failed[0]!.error),
              `node '${ctx.nodeId}' closed, but ${reasons.join('; ')}; nothing acknowledged is lost: the next start replays from the WAL what was not flushed`,
              { shards: failed.map((s) => s.id) },
            );
            throw this.closeError;
          }
        }),
      },
    });
    this.actor = createActor(machine, { input: { nodeId: ctx.nodeId } });
    reportTransitions(this.actor, 'node', ctx.nodeId, ctx);
  }

  get id(): string {
    return this.ctx.nodeId;
  }

  /** Start and wait until the node serves; rejects if it failed. */
  async start(): Promise<void> {
    this.actor.start();
    const snapshot = await waitFor(this.actor, (s) => s.value === 'serving' || s.status === 'done', { timeout: Infinity });
    if (snapshot.value !== 'serving') {
      throw new RepriseError('INTERNAL', `node '${this.id}' failed to start: ${snapshot.context.error ?? snapshot.value}`);
    }
    this.budgetTimer = setInterval(() => this.keepMemtableBudget(), MEMTABLE_BUDGET_CHECK_MS);
    this.budgetTimer.unref();
  }

  /** Bytes in the memtables of the shards this node leads. */
  memtableBytes(): number {
    let bytes = 0;
    for (const shard of this.shards.values()) if (shard.shardRole === 'leader') bytes += shard.memtableBytes();
    return bytes;
  }

  /** Over the node's memtable budget: flush the led, serving shard that holds most (one flush at a time). */
  private keepMemtableBudget(): void {
    if (this.budgetFlush !== undefined || this.memtableBytes() <= this.ctx.flushPolicy.nodeMemtableBytes) return;
    let largest: ShardActor | undefined;
    for (const shard of this.shards.values()) {
      if (shard.shardRole !== 'leader' || shard.state() !== 'serving') continue;
      if (largest === undefined || shard.memtableBytes() > largest.memtableBytes()) largest = shard;
    }
    if (largest === undefined) return;
    const shard = largest;
    this.ctx.logger.info({ shard: shard.id, memtableBytes: this.memtableBytes() }, `node '${this.id}' is over its memtable budget: flushing shard ${shard.id}`);
    this.budgetFlush = shard
      .flush()
      .catch((err: unknown) => this.ctx.logger.warn({ shard: shard.id, err }, `flush of shard ${shard.id} for the memtable budget failed`))
      .finally(() => (this.budgetFlush = undefined));
  }

  state(): NodeState {
    return this.actor.getSnapshot().value as NodeState;
  }

  shard(shardId: number): ShardActor {
    const shard = this.shards.get(shardId);
    if (!shard) throw new RepriseError('NOT_LEADER', `shard ${shardId} is not hosted by node '${this.id}'`, { shard: shardId });
    return shard;
  }

  /**
   * Flush every shard through the node machine's flushing state. A call
   * made while a flush runs waits for it and then for a flush that started
   * after the call (its own, or one another caller started meanwhile).
   */
  async flush(): Promise<void> {
    const snapshot = await runThrough(this.actor, 'serving', 'flushing', { type: 'FLUSH' });
    if (!snapshot) throw new RepriseError('CLOSED', `node '${this.id}' is ${this.state()}`);
    const error = snapshot.context.error;
    if (error) throw new RepriseError(codeOfReason(error), `flush failed on node '${this.id}': ${error}`);
  }

  /**
   * Cluster mode: lead exactly the shards meta assigns to this node and
   * hold hot standbys of the ones it says to follow. Opens what it does not
   * hold (and reopens failed shards, e.g. after a lost lease); promotes a
   * follower that caught up when meta makes it leader (one still catching
   * up is promoted on a later call, once it follows); closes without
   * flushing what it should no longer hold: the leader owns the manifests.
   * Calls are serialised.
   */
  reconcile(assigned: readonly number[], following: readonly number[] = []): Promise<void> {
    this.reconciling = this.reconciling.then(async () => {
      if (this.state() !== 'serving') return;
      const lead = new Set(assigned);
      const now = Date.now();
      for (const [id, at] of [...this.handedOff]) {
        if (!lead.has(id) || now - at > HAND_OFF_GRACE_MS) this.handedOff.delete(id);
        else lead.delete(id);
      }
      const follow = new Set(following.filter((id) => !lead.has(id)));
      for (const [id, shard] of [...this.shards]) {
        const state = shard.state();
        if (state !== 'failed' && state !== 'closed') {
          if (lead.has(id) && shard.shardRole === 'leader') continue;
          if (lead.has(id) && state === 'following') {
            // Not awaited, like an open: a failed promotion is reopened as a leader next time.
            void shard.promoteToLeader().catch(() => undefined);
            continue;
          }
          if (lead.has(id) && (state === 'opening' || state === 'replaying' || state === 'promoting')) continue;
          if (follow.has(id) && shard.shardRole === 'follower') continue;
        }
        this.shards.delete(id);
        await shard.close({ flush: false });
      }
      for (const [ids, role] of [[lead, 'leader'], [follow, 'follower']] as const) {
        for (const id of ids) {
          if (this.shards.has(id)) continue;
          const shard = new ShardActor(id, this.ctx, role);
          this.shards.set(id, shard);
          // Not awaited: one slow replay must not hold up the others.
          void shard.start();
        }
      }
    });
    return this.reconciling;
  }

  /**
   * Planned migration, this node's part: the shard stops writing, flushes
   * and closes (its machine: serving -> migrating -> closed), and stays
   * closed here until meta has moved it. Idempotent: a shard this node does
   * not hold (any more) counts as handed off.
   */
  handOff(shardId: number, to: string): Promise<void> {
    // Meta sends the request again if no reply came in time: the repeat joins the hand-off under way.
    let running = this.handingOff.get(shardId);
    if (running === undefined) {
      running = this.handOffOnce(shardId, to).finally(() => this.handingOff.delete(shardId));
      this.handingOff.set(shardId, running);
    }
    return running;
  }

  private async handOffOnce(shardId: number, to: string): Promise<void> {
    const shard = this.shards.get(shardId);
    if (!shard || shard.shardRole === 'follower') {
      // Asked again (meta resumed the migration after a restart), never
      // opened here, or only followed: nothing of this node writes the
      // shard, so the hand-off stands. One already handed off stays closed for a new grace period.
      if (this.handedOff.has(shardId)) this.handedOff.set(shardId, Date.now());
      return;
    }
    this.handedOff.set(shardId, Date.now());
    try {
      await shard.handOff(to);
    } catch (err) {
      this.handedOff.delete(shardId);
      throw err;
    }
    this.shards.delete(shardId);
  }

  /**
   * After a lapsed lease, with meta's log as of the answer that renewed it:
   * a shard this node leads stays only while meta still has this node
   * leading it, at the shard's own epoch once it has one (a shard still
   * opening or promoting takes its epoch from meta, which refuses a node
   * that no longer leads it). Any other fails (LEASE_LOST, so nothing
   * in flight is acknowledged), and the reconcile then closes it.
   */
  confirmLeadership(metaShard: (shardId: number) => { readonly leader: string | null; readonly epoch: number }): void {
    for (const [id, shard] of this.shards) {
      if (shard.actor.getSnapshot().status !== 'active' || shard.shardRole !== 'leader') continue;
      const meta = metaShard(id);
      const state = shard.state();
      const epochFixed = state !== 'opening' && state !== 'promoting';
      if (meta.leader !== this.id || (epochFixed && meta.epoch !== shard.leaderEpoch)) shard.leaseLost();
    }
  }

  /** Close every shard (flushing, unless told not to); rejects if a shard failed while closing. */
  async close(options: { flush?: boolean } = {}): Promise<void> {
    clearInterval(this.budgetTimer);
    if (this.actor.getSnapshot().status === 'done') return;
    this.flushOnClose = options.flush ?? true;
    if (this.state() === 'flushing') await waitFor(this.actor, (s) => s.value !== 'flushing', { timeout: Infinity });
    this.actor.send({ type: 'CLOSE' });
    await waitFor(this.actor, (s) => s.status === 'done', { timeout: Infinity });
    if (this.closeError) throw this.closeError;
  }

  status(): NodeStatus {
    const snapshot = this.actor.getSnapshot();
    return {
      id: this.id,
      state: snapshot.value as NodeState,
      shards: [...this.shards.values()].map((s) => s.status()).sort((a, b) => a.id - b.id),
      ...(snapshot.context.error ? { error: snapshot.context.error } : {}),
      ...(this.ctx.leaseHeld ? { leaseHeld: this.ctx.leaseHeld() } : {}),
    };
  }
}
