import type { Logger } from 'pino';
import type { NodeActor } from '../actors/node.js';
import { isRepriseError } from '../errors.js';
import { TEST_FAULTS } from '../testing/faults.js';
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
  ) {}

  /** For the actors: whether writes may be acknowledged now. */
  readonly leaseHeld = (): boolean => Date.now() < this.leaseUntil;

  start(): void {
    this.heartbeatTimer = setInterval(() => {
      // One heartbeat at a time: a slow one is not overtaken by the next.
      this.beating = this.beating.then(() => this.beat());
    }, this.heartbeatMs);
    this.watchdog = setInterval(() => this.check(), Math.max(10, Math.floor(this.heartbeatMs / 4)));
    this.beating = this.beat();
  }

  private async beat(): Promise<void> {
    if (this.stopped) return;
    const sentAt = Date.now();
    try {
      const shards = this.node.status().shards.map((s) => ({ id: s.id, epoch: s.epoch, state: s.state }));
      const reply = await this.meta.heartbeat({ node: this.nodeId, shards }, this.heartbeatMs * 2);
      this.leaseUntil = sentAt + reply.leaseMs;
      if (!this.held) this.logger.info({ node: this.nodeId }, `node '${this.nodeId}' holds its lease`);
      this.held = true;
      await this.meta.replica.waitFor(reply.entryId);
      await this.node.reconcile(reply.assigned);
    } catch (err) {
      // Meta restarted from an older log, or forgot us: register again.
      if (isRepriseError(err, 'NOT_FOUND')) await this.meta.registerNode(this.nodeId).catch(() => undefined);
      else this.logger.debug({ err }, 'heartbeat failed');
    }
  }

  private check(): void {
    if (this.held && !this.leaseHeld() && !TEST_FAULTS.skipLeaseFencing) {
      this.held = false;
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
