import { RepriseError } from '../errors.js';
import type { TableSchema } from '../engine/schema.js';
import type { RegionInfo } from '../meta/model.js';
import type { EntryId, TailSubscription } from '../wal/log-store.js';
import { replayShard, tailEntries } from '../wal/shard-reader.js';
import type { ActorContext } from './context.js';
import type { RegionActor } from './region.js';
import type { ShardLog } from './shard-log.js';
import type { ShardState } from './shard-machine.js';

/** How often a follower compares its position with the end of the topic. */
const LAG_SAMPLE_MS = 250;

export interface FollowerLag {
  /** Entries in the topic the follower has not applied yet (sampled every LAG_SAMPLE_MS). */
  readonly entries: number;
  /** Time from the append of the last entry the follower applied to its apply (0 before any). */
  readonly ms: number;
}

/** What a follower needs of its shard. */
export interface FollowerShard {
  readonly id: number;
  readonly ctx: ActorContext;
  readonly log: ShardLog;
  readonly regions: Map<number, RegionActor>;
  topic(): string;
  state(): ShardState;
  addRegion(info: RegionInfo, schema: TableSchema): RegionActor;
  /** The fence each region's manifest recorded, again (after a reload). */
  seedFence(): void;
  /** The tail failed while the shard follows (or is being promoted): fail it with this reason. */
  fail(reason: string): void;
}

/**
 * A shard's hot standby: it tails the topic into read-only regions through
 * the shard's log applier, follows the leader's region creates, drops and
 * flushes (reloading the manifests after each), and measures its lag. It
 * writes nothing: the leader owns the files.
 */
export class ShardFollower {
  private tail: TailSubscription | undefined;
  private failure: string | undefined;
  private lagTimer: NodeJS.Timeout | undefined;
  /** Numbers, so the apply path allocates nothing. */
  private lagEntries = 0;
  private lagMs = 0;

  constructor(private readonly shard: FollowerShard) {}

  /** Tail the topic from `from`; rejects (INTERNAL) if the tail failed before it was set up. */
  async follow(from: EntryId): Promise<void> {
    const { ctx, log } = this.shard;
    this.failure = undefined;
    this.tail = await tailEntries(
      ctx.log,
      this.shard.topic(),
      from,
      log.fence,
      (entry, appendedAt) => log.apply(entry, entry.id, 'followed', appendedAt),
      (err) => this.failed(err),
    );
    this.lagTimer = setInterval(() => void this.sampleLag(), LAG_SAMPLE_MS);
    this.lagTimer.unref();
    if (this.failure) throw new RepriseError('INTERNAL', this.failure);
  }

  /** Stop tailing (promotion, close). */
  async stop(): Promise<void> {
    clearInterval(this.lagTimer);
    this.lagTimer = undefined;
    const tail = this.tail;
    this.tail = undefined;
    await tail?.close();
  }

  lag(): FollowerLag {
    return { entries: this.lagEntries, ms: this.lagMs };
  }

  /** A tailed data entry was applied: how long after its append. */
  applied(entryId: EntryId, appendedAt: number): void {
    this.lagMs = Math.max(0, Date.now() - appendedAt);
    this.shard.ctx.onFollowerApply?.({ shardId: this.shard.id, entryId, lagMs: this.lagMs });
  }

  /** The leader created a region: host it too (meta has the table, maybe only in the replica's next entries). */
  async regionCreated(regionId: number, createdAt: EntryId): Promise<void> {
    const { ctx, regions } = this.shard;
    if (regions.has(regionId)) return;
    let found = ctx.meta.regionById(regionId);
    if (!found) {
      await ctx.meta.sync();
      found = ctx.meta.regionById(regionId);
    }
    // Not in meta: the create was aborted or the table dropped since; nothing to host.
    if (!found) return;
    const region = this.shard.addRegion({ ...found.region, createdAt }, found.schema);
    const state = await region.opened();
    if (state === 'replaying' && this.shard.state() === 'following') region.actor.send({ type: 'FOLLOW' });
  }

  /** The leader dropped a region (and deletes its files): stop hosting it. */
  async regionDropped(regionId: number): Promise<void> {
    const region = this.shard.regions.get(regionId);
    if (!region) return;
    this.shard.regions.delete(regionId);
    await region.close();
  }

  /**
   * The leader flushed (its 'flushed' entry is `at`): switch each region to
   * its newest manifest and re-apply, from the log, the entries after the
   * new flushed id that the old memtable held. The leader prunes only below
   * the lowest flushed id, so they are still there.
   */
  async leaderFlushed(at: EntryId): Promise<void> {
    const reloaded = new Map<number, RegionActor>();
    let from = at;
    for (const region of this.shard.regions.values()) {
      const state = region.state();
      if (state !== 'following' && state !== 'replaying') continue;
      const flushed = await region.reload();
      if (flushed === undefined) continue;
      reloaded.set(region.id, region);
      from = Math.min(from, flushed + 1);
    }
    this.shard.seedFence();
    if (reloaded.size === 0 || from >= at) return;
    const { log } = this.shard;
    await replayShard(this.shard.ctx.log, this.shard.topic(), {
      from,
      to: at,
      fence: log.fence,
      onEntry: (entry) => log.reapply(entry, entry.id, reloaded),
    });
  }

  private failed(err: Error): void {
    this.failure = `shard ${this.shard.id} stopped following topic '${this.shard.topic()}': ${err.message}`;
    const state = this.shard.state();
    if (state === 'following' || state === 'promoting') this.shard.fail(this.failure);
  }

  private async sampleLag(): Promise<void> {
    try {
      const { next } = await this.shard.ctx.log.bounds(this.shard.topic());
      this.lagEntries = Math.max(0, next - 1 - this.shard.log.appliedEntryId);
    } catch {
      // The next sample tries again; status keeps the last one.
    }
  }
}
