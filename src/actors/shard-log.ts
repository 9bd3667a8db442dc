import type { Entry } from '../wal/entry.js';
import type { EntryId } from '../wal/log-store.js';
import { EpochFence } from '../wal/shard-reader.js';
import type { TestFaults } from '../testing/faults.js';
import type { FlushPolicy } from './context.js';
import type { RegionActor } from './region.js';

/**
 * Where an entry reaching a shard comes from:
 * - `written`: the leader's own append, once durable (TopicWriter's onDurable);
 * - `replayed`: a leader's replay before it serves;
 * - `followed`: a follower's replay, its tail, and its catch-up when promoted.
 * Entries read again for some regions only (a follower's regions after a
 * reload, a region opened late) go through `reapply`: their data, nothing
 * else, and the shard's position does not move.
 */
export type EntrySource = 'written' | 'replayed' | 'followed';

/** What the shard does about what its log says; the log applier decides when. */
export interface ShardLogHost {
  region(regionId: number): RegionActor | undefined;
  /** A written or replayed data entry took a region past the flush policy. */
  flushDue(entryId: EntryId, source: 'written' | 'replayed'): void | Promise<void>;
  /** A follower saw the leader create, drop or flush regions, or take an epoch. */
  followRegionCreate(regionId: number, createdAt: EntryId): void | Promise<void>;
  followRegionDrop(regionId: number): void | Promise<void>;
  followFlush(at: EntryId): void | Promise<void>;
  followEpoch(epoch: number): void;
  /** A followed data entry with its append time (from a tail): the follower's lag. */
  followedAt(entryId: EntryId, appendedAt: number): void;
}

/**
 * The one path by which entries reach a shard's regions, whatever their
 * source: it keeps the shard's position in its log (the last entry applied),
 * the WAL bytes since the last flush and the epoch fence every read of the
 * topic shares, and has one switch over entry kinds. As mito2's
 * RegionWriteCtx serves both its write and its replay paths.
 */
export class ShardLog {
  /** Epoch markers seen by every read of this shard's topic. */
  readonly fence: EpochFence;
  private applied: EntryId = -1;
  private walBytes = 0;

  constructor(
    private readonly host: ShardLogHost,
    private readonly policy: FlushPolicy,
    faults: TestFaults = {},
  ) {
    this.fence = new EpochFence(faults);
  }

  /** The last entry applied (written, replayed or followed). */
  get appliedEntryId(): EntryId {
    return this.applied;
  }

  /** The shard has seen the log up to `id` without entries to apply (a replay's start, its end, its own marker). */
  advanceTo(id: EntryId): void {
    this.applied = Math.max(this.applied, id);
  }

  /** A flush is starting: the WAL bytes it covers no longer count towards the next. */
  flushStarted(): void {
    this.walBytes = 0;
  }

  /** An entry read again for the regions in `only` (see EntrySource): its data, if it is for one of them. */
  reapply(entry: Entry, id: EntryId, only: ReadonlyMap<number, RegionActor>): void {
    if (entry.kind === 'data') only.get(entry.region)?.apply(id, entry.body);
  }

  /**
   * Apply one entry. `appendedAt`: for a tailed entry, when it was appended
   * (positional, not an options object: this runs once per entry written).
   */
  apply(entry: Entry, id: EntryId, source: EntrySource, appendedAt?: number): void | Promise<void> {
    this.applied = Math.max(this.applied, id);
    const follower = source === 'followed';
    switch (entry.kind) {
      case 'data': {
        if (!follower) this.walBytes += entry.body.byteLength;
        const region = this.host.region(entry.region);
        if (!region) return;
        region.apply(id, entry.body);
        if (follower) {
          if (appendedAt !== undefined) this.host.followedAt(id, appendedAt);
          return;
        }
        if (region.memtableBytes() >= this.policy.memtableBytes || this.walBytes >= this.policy.walBytes) return this.host.flushDue(id, source);
        return;
      }
      // A leader's own creates, drops, flushes and markers (written or
      // replayed) have taken effect already; a follower learns of them here.
      case 'region_create':
        return follower ? this.host.followRegionCreate(entry.region, id) : undefined;
      case 'region_drop':
        return follower ? this.host.followRegionDrop(entry.region) : undefined;
      case 'flushed':
        return follower ? this.host.followFlush(id) : undefined;
      case 'epoch':
        if (follower) this.host.followEpoch(entry.epoch);
        return;
      default:
        return;
    }
  }
}
