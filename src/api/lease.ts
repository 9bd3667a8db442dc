import type { Logger } from 'pino';
import type { NodeActor } from '../actors/node.js';
import { isRepriseError } from '../errors.js';
import type { TestFaults } from '../testing/faults.js';
import type { RemoteMeta } from '../meta/remote-meta.js';

/**
 * A cluster node's side of leases: heartbeat meta every `heartbeatMs`; each
 * answer extends the lease to (send time + leaseMs) and says which shards
 * this node should lead, which the node then opens or closes. When the
 * lease runs out (meta unreachable, process paused) every shard stops
 * writing at once, before meta can give them to another node.
 */
export class LeaseKeeper {
  private leaseUntil = 0;
  private held = false;
  /**
   * The lease ran out (and every shard was told LEASE_LOST): it does not
   * count as held again, even once a later heartbeat is answered, until the
   * node has reconciled with that answer. An answer after a lapse may come
   * from a meta that has meanwhile declared this node dead and given its
   * shards to others; until the shards that failed on LEASE_LOST are closed,
   * a write of theirs still in flight (appended after the new leader's epoch
   * marker, so fenced by every reader) must not be acknowledged, and the
   * shards check only leaseHeld() after their append. Found by
   * test/kafka/cluster-faults.test.ts: a SIGSTOPped leader, resumed after
   * failover, acknowledged its in-flight writes under the renewed lease and
   * those rows were lost.
   */
  private fenced = false;
  private stopped = false;
  private beating: Promise<void> = Promise.resolve();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly nodeId: string,
    private readonly node: NodeActor,
    private readonly meta: RemoteMeta,
    private readonly logger: Logger,
    private readonly heartbeatMs: number,
    /** `skipLeaseFencing`: a deliberate bug, for tests only. */
    private readonly faults: TestFaults = {},
  ) {}

  /** For the actors: whether writes may be acknowledged now. */
  readonly leaseHeld = (): boolean => !this.fenced && Date.now() < this.leaseUntil;

  start(): void {
    this.heartbeatTimer = setInterval(() => {
      // One heartbeat at a time: a slow one is not overtaken by the next.
      this.beating = this.beating.then(() => this.beat());
    }, this.heartbeatMs);
    this.watchdog = setInterval(() => this.check(), Math.max(10, Math.floor(this.heartbeatMs / 4)));
    this.beating = this.beat();
  }

  /** Heartbeat now rather than at the next tick: meta changed this node's assignment. */
  beatNow(): void {
    if (this.stopped) return;
    this.beating = this.beating.then(() => this.beat());
  }

  private async beat(): Promise<void> {
    if (this.stopped) return;
    const sentAt = Date.now();
    try {
      const shards = this.node.status().shards.map((s) => {
        const failedRegions = s.regions.filter((r) => r.state === 'failed').map((r) => ({ id: r.id, error: r.error ?? 'failed' }));
        return {
          id: s.id,
          epoch: s.epoch,
          state: s.state,
          role: s.role,
          lastEntryId: s.lastEntryId,
          ...(s.lag ? { lag: s.lag } : {}),
          // What failed, for meta: a migration fails when its target cannot open the shard.
          ...(s.state === 'failed' && s.error ? { error: s.error } : {}),
          ...(failedRegions.length > 0 ? { failedRegions } : {}),
        };
      });
      const reply = await this.meta.heartbeat({ node: this.nodeId, shards }, this.heartbeatMs * 2);
      // A lapse the watchdog has not seen yet (the process was paused, or its
      // event loop stalled) is fenced before the answer extends the lease.
      this.check();
      this.leaseUntil = sentAt + reply.leaseMs;
      if (!this.fenced) this.nowHeld();
      await this.meta.replica.waitFor(reply.entryId);
      await this.node.reconcile(reply.assigned, reply.following);
      // The shards that failed on LEASE_LOST are closed now (reconcile closes
      // failed shards, draining their writers: in-flight writes refused), so
      // the renewed lease may count. A reconcile that did not run (node not
      // serving) leaves them failed: stay fenced until one does.
      if (this.fenced && Date.now() < this.leaseUntil && !this.node.status().shards.some((s) => s.state === 'failed')) {
        this.fenced = false;
        this.nowHeld();
      }
    } catch (err) {
      // Meta restarted from an older log, or forgot us: register again.
      if (isRepriseError(err, 'NOT_FOUND')) await this.meta.registerNode(this.nodeId).catch(() => undefined);
      else this.logger.debug({ err }, 'heartbeat failed');
    }
  }

  private nowHeld(): void {
    if (!this.held) this.logger.info({ node: this.nodeId }, `node '${this.nodeId}' holds its lease`);
    this.held = true;
  }

  private check(): void {
    if (this.held && Date.now() >= this.leaseUntil && !this.faults.skipLeaseFencing) {
      this.held = false;
      this.fenced = true;
      this.logger.warn({ node: this.nodeId }, `node '${this.nodeId}' lost its lease: its shards stop writing`);
      this.node.leaseLost();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.watchdog);
    await this.beating;
  }
}
