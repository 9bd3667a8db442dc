import type { Logger } from 'pino';
import type { NodeActor } from '../actors/node.js';
import { isRepriseError } from '../errors.js';
import type { TestFaults } from '../testing/faults.js';
import type { RemoteMeta } from '../meta/remote-meta.js';

/**
 * A cluster node's side of leases: heartbeat meta every `heartbeatMs`; each
 * answer extends the lease to (send time + leaseMs) and says which shards
 * this node should lead, which the node then opens or closes.
 *
 * When the lease runs out (meta unreachable or changing leader, process
 * paused) the lease has *lapsed*: no shard starts or acknowledges an append,
 * and writes wait (awaitLease) rather than fail. The shards keep serving
 * state: nothing is closed or replayed. The next answered heartbeat ends the
 * lapse only after the node has checked, against meta's log as of that
 * answer, that meta still has it leading each shard at the shard's own
 * epoch; a shard meta has meanwhile given to another node (or to this one
 * at a newer epoch) fails instead, and is closed by the reconcile. A meta
 * leader change therefore costs the writes of the gap only their wait.
 *
 * Why a confirmed shard may go on at once: meta grants a shard to another
 * node (a new epoch) only in its log, before that node's marker reaches the
 * shard's topic. If the log, as of meta's answer, still shows this node
 * leading at its epoch, no newer marker precedes anything this node
 * appended before the heartbeat was sent, and the renewed lease covers what
 * it appends from then on.
 */
export class LeaseKeeper {
  private leaseUntil = 0;
  private held = false;
  /**
   * The lease ran out: it does not count as held again, even once a later
   * heartbeat is answered, until the node has confirmed its shards with that
   * answer (and closed those that failed). An answer after a lapse may come
   * from a meta that has meanwhile declared this node dead and given its
   * shards to others; a write of theirs still in flight (appended after the
   * new leader's epoch marker, so fenced by every reader) must not be
   * acknowledged, and the shards check only leaseHeld() after their append.
   * Found by test/kafka/cluster-faults.test.ts: a SIGSTOPped leader, resumed
   * after failover, acknowledged its in-flight writes under the renewed
   * lease and those rows were lost.
   */
  private lapsed = false;
  private stopped = false;
  private beating: Promise<void> = Promise.resolve();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  /** Writes waiting for the lapse to end. */
  private readonly waiters = new Set<(held: boolean) => void>();

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
  readonly leaseHeld = (): boolean => !this.lapsed && Date.now() < this.leaseUntil;

  /** For the actors: resolves true once the lease is held (at once if it is), false after `timeoutMs` or on stop. */
  readonly awaitLease = (timeoutMs: number): Promise<boolean> => {
    if (this.leaseHeld()) return Promise.resolve(true);
    if (this.stopped || timeoutMs <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (held: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(held);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(done);
    });
  };

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
      if (!this.lapsed) this.nowHeld();
      await this.meta.replica.waitFor(reply.entryId);
      // After a lapse: a shard meta no longer has this node leading at its epoch fails here (not acknowledged, closed by the reconcile).
      if (this.lapsed) this.node.confirmLeadership((shard) => this.meta.replica.shard(shard));
      await this.node.reconcile(reply.assigned, reply.following);
      // The shards that failed are closed now (reconcile closes failed
      // shards, draining their writers: in-flight writes refused), so the
      // renewed lease may count. A reconcile that did not run (node not
      // serving) leaves them failed: stay lapsed until one does.
      if (this.lapsed && Date.now() < this.leaseUntil && !this.node.status().shards.some((s) => s.state === 'failed')) {
        this.lapsed = false;
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
    for (const wake of [...this.waiters]) wake(true);
  }

  private check(): void {
    if (this.held && Date.now() >= this.leaseUntil && !this.faults.skipLeaseFencing) {
      this.held = false;
      this.lapsed = true;
      this.logger.warn({ node: this.nodeId }, `node '${this.nodeId}' lost its lease: its shards stop acknowledging writes until meta renews it`);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const wake of [...this.waiters]) wake(false);
    clearInterval(this.heartbeatTimer);
    clearInterval(this.watchdog);
    await this.beating;
  }
}
