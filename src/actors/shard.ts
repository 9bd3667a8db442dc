import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { deadlineExceeded, deadlinePassed, type Deadline } from '../deadline.js';
import { codeOfReason, isRepriseError, RepriseError } from '../errors.js';
import type { PreparedMutation, RegionQueryResult } from '../engine/region-engine.js';
import type { TableQuery, TableSchema } from '../engine/schema.js';
import type { RegionInfo } from '../meta/model.js';
import type { Entry, LoggedEntry } from '../wal/entry.js';
import type { EntryId } from '../wal/log-store.js';
import { replayShard } from '../wal/shard-reader.js';
import { TopicWriter } from '../wal/topic-writer.js';
import { reportTransitions, runThrough, type ActorContext } from './context.js';
import { RegionActor, type RegionStatus } from './region.js';
import { ShardFollower, type FollowerLag } from './shard-follower.js';
import { ShardLog } from './shard-log.js';

export type { FollowerLag } from './shard-follower.js';
import type { TestFaults } from '../testing/faults.js';
import { shardMachine, type ShardRole, type ShardState } from './shard-machine.js';

export interface ShardStatus {
  readonly id: number;
  readonly topic: string;
  readonly state: ShardState;
  readonly role: ShardRole;
  readonly epoch: number;
  /** Last entry id applied (replayed or written) by this shard. */
  readonly lastEntryId: EntryId;
  /** Lowest flushed entry id among its regions: replay starts after it. */
  readonly flushedEntryId: EntryId;
  readonly regions: RegionStatus[];
  /** A follower's distance behind the log: entries it has not applied, and how old its last applied entry was when applied. */
  readonly lag?: FollowerLag;
  readonly error?: string;
}

const EMPTY = new Uint8Array();
/** How long a write or read waits for a lapsed lease to be renewed (less if its deadline is sooner). */
const LAPSE_WAIT_MS = 5_000;
const LAPSE_REFUSAL_MARGIN_MS = 200;

/**
 * A shard on this node: the shard machine, its regions and, on the leader,
 * the group-committing writer of its topic. Entries are applied to regions
 * in entry id order, only after they are durable (the writer's onDurable
 * hook runs in id order before any caller is told of success).
 *
 * A follower (hot standby) holds no lease and writes nothing, not even a
 * manifest: it tails the topic into read-only regions. When the leader
 * flushes it appends a 'flushed' entry; the follower then reloads the
 * regions' manifests and drops from memory what the SSTs now hold.
 * Promotion takes a new epoch and applies only the entries the tail had not
 * delivered yet, so a standby serves after the last few entries, not after
 * a replay.
 */
export class ShardActor {
  readonly actor: Actor<typeof shardMachine>;
  private readonly regions = new Map<number, RegionActor>();
  private writer: TopicWriter | undefined;
  private topic: string;
  /** Every entry reaches the regions through it; it keeps the position, the bytes since a flush and the fence. */
  private readonly shardLog: ShardLog;
  private flushOnClose = true;
  /** Failed on LEASE_LOST: its data is intact, but until meta renews the lease and the shard is reopened, another node may lead it. */
  private fencedByLease = false;
  /** The hot-standby part: tail, lag, the leader's region changes. */
  private readonly follower: ShardFollower;
  /** Deliberate bugs a test switched on (none in production). */
  private readonly faults: TestFaults;

  constructor(
    readonly id: number,
    private readonly ctx: ActorContext,
    role: ShardRole = 'leader',
  ) {
    this.topic = ctx.meta.shard(id).topic;
    this.faults = ctx.testHooks?.faults ?? {};
    this.shardLog = new ShardLog(
      {
        region: (regionId) => this.regions.get(regionId),
        flushDue: (entryId, source) => {
          // A long log must not replay into unbounded memtables: flush as the write path would.
          if (source === 'replayed') return this.flushDuringReplay(entryId);
          if (this.state() === 'serving') this.actor.send({ type: 'FLUSH' });
        },
        followRegionCreate: (regionId, createdAt) => this.follower.regionCreated(regionId, createdAt),
        followRegionDrop: (regionId) => this.follower.regionDropped(regionId),
        followFlush: (at) => this.follower.leaderFlushed(at),
        // The leader's generation, for status (a follower writes nothing with it).
        followEpoch: (epoch) => this.actor.send({ type: 'EPOCH_SEEN', epoch }),
        followedAt: (entryId, appendedAt) => this.follower.applied(entryId, appendedAt),
      },
      ctx.flushPolicy,
      this.faults,
    );
    this.follower = new ShardFollower({
      id,
      ctx,
      log: this.shardLog,
      regions: this.regions,
      topic: () => this.topic,
      state: () => this.state(),
      addRegion: (info, schema) => this.addRegion(info, schema, undefined),
      seedFence: () => this.seedFence(),
      fail: (reason) => this.actor.send({ type: 'FAIL', reason }),
    });
    const machine = shardMachine.provide({
      actors: {
        openShard: fromPromise(async () => this.open()),
        replayShard: fromPromise(async ({ input }) => (this.role === 'follower' ? this.replayAndFollow() : this.replay(input.epoch))),
        promoteShard: fromPromise(async () => this.promote()),
        // Followers learn of the flush from the 'flushed' entry, in log order.
        flushShard: fromPromise(async () => {
          await this.flushRegionsAndPrune();
          await this.writer!.append({ kind: 'flushed', region: 0, epoch: this.epoch, body: EMPTY });
        }),
        // Hand-off: writes are already refused (migrating); drain the
        // writer and close. A target that follows the shard has it in
        // memory and is promoted, applying the last few entries; any other
        // target opens it from the manifests, so flush first and it has
        // nothing to replay. Only a cluster node (one with a lease) has
        // anyone to hand to.
        migrateShard: fromPromise<void, { shardId: number; to: string }>(async ({ input }) => {
          if (ctx.leaseHeld === undefined) throw new RepriseError('INVALID_ARGUMENT', `shard ${id} cannot migrate to '${input.to}': no other node in embedded mode`);
          this.flushOnClose = !ctx.meta.shard(id).followers.includes(input.to);
          await this.release();
        }),
        closeShard: fromPromise(async () => this.release()),
      },
    });
    this.actor = createActor(machine, { input: { shardId: id, role } });
    reportTransitions(this.actor, 'shard', id, ctx);
    // Regions cannot outlive a failed shard: they fail with the shard's reason.
    this.actor.subscribe((snapshot) => {
      if (snapshot.value !== 'failed') return;
      for (const region of this.regions.values()) {
        if (region.actor.getSnapshot().status !== 'done') {
          region.actor.send({ type: 'FAIL', reason: `shard ${id} failed: ${snapshot.context.error}` });
        }
      }
    });
  }

  /** Start the machine; resolves once the shard serves (or failed, with a reason in status). */
  async start(): Promise<ShardState> {
    this.actor.start();
    const snapshot = await waitFor(this.actor, (s) => s.value === 'serving' || s.status === 'done', { timeout: Infinity });
    return snapshot.value as ShardState;
  }

  state(): ShardState {
    return this.actor.getSnapshot().value as ShardState;
  }

  region(regionId: number): RegionActor | undefined {
    return this.regions.get(regionId);
  }

  // ---- effects ----

  private async open(): Promise<{ epoch: number }> {
    let epoch: number;
    if (this.role === 'follower') {
      ({ epoch, topic: this.topic } = this.ctx.meta.shard(this.id));
    } else {
      epoch = await this.takeLeadership();
    }
    const tables = new Map(this.ctx.meta.tables().map((t) => [t.id, t.schema]));
    for (const info of this.ctx.meta.regionsOfShard(this.id)) {
      this.addRegion(info, tables.get(info.tableId)!, this.role === 'follower' ? undefined : epoch);
    }
    await Promise.all([...this.regions.values()].map((r) => r.opened()));
    this.seedFence();
    return { epoch };
  }

  /**
   * The fence each region's manifest recorded at its flushed entry id: the
   * markers below it may be pruned, and every read of this shard starts
   * after some flushed id, so without these a deposed leader's entries that
   * landed after a pruned marker would be applied.
   */
  private seedFence(): void {
    for (const region of this.regions.values()) this.shardLog.fence.seed(region.flushedEntryId(), region.fenceEpoch());
  }

  /** A new epoch from meta (the machine records it once the effect is done), and the writer of the topic. */
  private async takeLeadership(): Promise<number> {
    const { epoch, topic } = await this.ctx.meta.grantLeadership(this.id, this.ctx.nodeId);
    this.topic = topic;
    this.writer = new TopicWriter(this.ctx.log, topic, {
      maxBatchBytes: this.ctx.maxBatchBytes,
      onDurable: (entry, id) => void this.shardLog.apply(entry, id, 'written'),
    });
    return epoch;
  }

  /**
   * Replay by shard: one pass over the topic from the lowest flushed entry id
   * + 1 among the regions, each entry routed to its region (entries a region
   * already flushed are skipped by the region). A region whose entries the log
   * no longer holds fails loudly; the others go on.
   */
  private async replay(epoch: number): Promise<{ lastEntryId: EntryId }> {
    const { from, next } = await this.replayStart();
    return { lastEntryId: await this.catchUpAndFence(from, next, epoch, 'replayed') };
  }

  /**
   * Where replay by shard starts: the lowest flushed entry id + 1 among the
   * regions being replayed. A region whose entries the log no longer holds
   * fails loudly; the others go on.
   */
  private async replayStart(): Promise<{ from: EntryId; next: EntryId }> {
    const { earliest, next } = await this.ctx.log.bounds(this.topic);
    this.checkTail(next);
    const replaying = [...this.regions.values()].filter((r) => r.state() === 'replaying');
    for (const region of replaying) {
      const needed = region.flushedEntryId() + 1;
      if (needed < earliest && needed < next) {
        region.actor.send({
          type: 'FAIL',
          reason: `WAL_TRUNCATED: region ${region.id} needs entries from ${needed} of topic '${this.topic}' but the earliest entry the log holds is ${earliest} (next ${next})`,
        });
      }
    }
    const live = replaying.filter((r) => r.state() === 'replaying');
    // A deliberate off-by-one, for tests only.
    const skip = this.faults.replayFromWrongId ? 2 : 1;
    const from = Math.max(earliest, Math.min(next, ...live.map((r) => r.flushedEntryId() + skip)));
    this.shardLog.advanceTo(from - 1);
    return { from, next };
  }

  /**
   * The log must reach past every entry a region's manifest flushed and
   * every region_create the catalog recorded: a topic that ends before one
   * of them lost its tail (a local WAL without its high-water file, a Kafka
   * topic deleted and recreated or an unclean leader election). Serving it
   * would hand out those entry ids again, and replay would skip the new
   * entries as already flushed. The shard fails before it appends anything.
   */
  private checkTail(next: EntryId): void {
    const ahead = [...this.regions.values()]
      .map((r) => ({ id: r.id, flushed: r.flushedEntryId(), created: r.info.createdAt }))
      .filter((r) => r.flushed >= next || r.created >= next);
    if (ahead.length === 0) return;
    const what = ahead
      .map((r) => (r.flushed >= next ? `region ${r.id} flushed up to entry id ${r.flushed}` : `region ${r.id} was created at entry id ${r.created}`))
      .join(', ');
    throw new RepriseError(
      'WAL_TAIL_LOST',
      `WAL topic '${this.topic}' of shard ${this.id} ${next > 0 ? `ends at entry id ${next - 1}` : 'is empty'}, but ${what}: the log lost its tail; ` +
        `refusing to write to it (new entries would reuse those ids); the shard stays failed until the log is restored`,
      { shard: this.id, topic: this.topic, next, regions: ahead.map((r) => r.id) },
    );
  }

  /**
   * A new leader's last step before serving: apply [from, next) and append
   * its epoch marker, which fences every older leader from here on; then
   * the entries an older leader got in between (they belong to the log: it
   * may have acknowledged them while its lease held). Regions then serve.
   */
  private async catchUpAndFence(from: EntryId, next: EntryId, epoch: number, source: 'replayed' | 'followed'): Promise<EntryId> {
    const onEntry = (entry: LoggedEntry) => this.shardLog.apply(entry, entry.id, source);
    if (from < next) await this.replayRange(from, next, onEntry);
    this.shardLog.advanceTo(next - 1);
    const marker = await this.writer!.append({ kind: 'epoch', region: 0, epoch, body: EMPTY });
    // Its own marker too: the fence at a flushed id (kept in the manifests) must count it.
    this.shardLog.fence.seed(marker, epoch);
    if (marker > next) await this.replayRange(next, marker, onEntry);
    this.shardLog.advanceTo(marker);
    const applied = this.shardLog.appliedEntryId;
    await this.pruneBelowFlushed(applied);
    for (const region of this.regions.values()) {
      const state = region.state();
      if (state === 'replaying' || state === 'following') region.actor.send({ type: 'REPLAYED', appliedEntryId: applied });
    }
    return applied;
  }

  // ---- hot standby ----

  /** A follower's replaying effect: replay as a leader would (no marker, no flush), then tail the topic. */
  private async replayAndFollow(): Promise<{ lastEntryId: EntryId }> {
    const { from, next } = await this.replayStart();
    const lastId = from < next ? await this.replayRange(from, next, (entry) => this.shardLog.apply(entry, entry.id, 'followed')) : from - 1;
    await this.follower.follow(lastId + 1);
    for (const region of this.regions.values()) if (region.state() === 'replaying') region.actor.send({ type: 'FOLLOW' });
    return { lastEntryId: this.shardLog.appliedEntryId };
  }

  /**
   * Follower to leader (meta assigned it this shard): a new epoch, the tail
   * stopped, then only what the tail had not delivered is applied before the
   * marker. Every region reopens its newest manifest as the files' owner
   * (reloaded if it moved on meanwhile: a flush whose 'flushed' entry was
   * not applied yet, e.g. the old leader's hand-off), and regions meta has
   * that this follower never saw created are opened; the one pass starts
   * low enough for all of them.
   */
  private async promote(): Promise<{ epoch: number; lastEntryId: EntryId }> {
    const epoch = await this.takeLeadership();
    await this.follower.stop();
    let from = this.shardLog.appliedEntryId + 1;
    for (const region of this.regions.values()) {
      const flushed = await region.promote(epoch);
      if (flushed !== undefined) from = Math.min(from, flushed + 1);
    }
    const tables = new Map(this.ctx.meta.tables().map((t) => [t.id, t.schema]));
    const missing = this.ctx.meta.regionsOfShard(this.id).filter((info) => !this.regions.has(info.id));
    for (const info of missing) {
      const region = this.addRegion(info, tables.get(info.tableId)!, epoch);
      if ((await region.opened()) === 'replaying') from = Math.min(from, region.flushedEntryId() + 1);
    }
    this.seedFence();
    const { earliest, next } = await this.ctx.log.bounds(this.topic);
    from = Math.max(from, earliest);
    const lastEntryId = await this.catchUpAndFence(from, next, epoch, 'followed');
    this.ctx.logger.info({ shard: this.id, epoch, from, to: lastEntryId }, `shard ${this.id} promoted: follower to leader at epoch ${epoch}`);
    return { epoch, lastEntryId };
  }

  /** Replay entries [from, to) of the topic through `onEntry`, with progress logs; returns the last entry id read. */
  private async replayRange(from: EntryId, to: EntryId, onEntry: (entry: LoggedEntry) => void | Promise<void>): Promise<EntryId> {
    const log = this.ctx.log;
    const stats = await replayShard(log, this.topic, {
      from,
      to,
      fence: this.shardLog.fence,
      onEntry,
      onProgress: (p) => {
        const rate = Math.round(p.entries / Math.max(p.elapsedMs / 1000, 1e-3));
        this.ctx.logger.info(
          { shard: this.id, topic: this.topic, lastId: p.lastId, targetId: p.targetId, entries: p.entries, entriesPerSec: rate },
          `shard ${this.id} replaying: entry ${p.lastId} of ${p.targetId - 1}, ${rate} entries/s`,
        );
        this.ctx.onReplayProgress?.({ shardId: this.id, topic: this.topic, ...p });
      },
    });
    this.ctx.logger.info(
      { shard: this.id, topic: this.topic, from, to: to - 1, entries: stats.entries, bytes: stats.bytes, ms: stats.elapsedMs,
        entriesPerSec: Math.round(stats.entries / Math.max(stats.elapsedMs / 1000, 1e-3)), torn: stats.tornEntries, fenced: stats.fencedEntries },
      `shard ${this.id} replayed ${stats.entries} entries`,
    );
    return stats.lastId;
  }

  /** Part of the replaying effect: flush the regions being replayed, up to the entry reached. */
  private async flushDuringReplay(coveredUpTo: EntryId): Promise<void> {
    this.shardLog.flushStarted();
    const replaying = [...this.regions.values()].filter((r) => r.state() === 'replaying');
    await Promise.all(replaying.map((r) => r.flushWhileReplaying(coveredUpTo)));
    this.ctx.logger.info({ shard: this.id, coveredUpTo }, `shard ${this.id} flushed its regions during replay at entry ${coveredUpTo}`);
  }

  /** Flush every region, compact, prune what all of them flushed; FLUSH_FAILED naming the regions whose flush failed (the others are flushed). */
  private async flushRegionsAndPrune(): Promise<void> {
    const coveredUpTo = this.shardLog.appliedEntryId;
    this.shardLog.flushStarted();
    const regions = [...this.regions.values()];
    const outcomes = await Promise.all(regions.map(async (r) => ({ id: r.id, error: await r.flush(coveredUpTo) })));
    for (const region of regions) await region.compact();
    await this.pruneBelowFlushed(coveredUpTo);
    const failed = outcomes.filter((o) => o.error !== undefined);
    if (failed.length > 0) {
      throw new RepriseError(
        'FLUSH_FAILED',
        `shard ${this.id}: ${failed.length} region${failed.length > 1 ? 's' : ''} not flushed: ${failed.map((f) => f.error).join('; ')}`,
        { shard: this.id, regions: failed.map((f) => f.id) },
      );
    }
  }

  /**
   * Prune the topic below the lowest flushed entry id + 1 of the regions.
   * The flushed ids live in the regions' manifests, so this is also how the
   * low-water mark of a provider that prunes only logically (Kafka without
   * DeleteRecords) is restored after a restart: no separate record to keep
   * in step with them.
   */
  private async pruneBelowFlushed(coveredUpTo: EntryId): Promise<void> {
    // A node whose lease lapsed prunes nothing: a newer leader may have read
    // manifests older than this node's and need the log below them. Checked
    // after those manifests were written; a new epoch is granted only once
    // the lease has run out, so a leader that gets one reads them.
    if (this.leaseLapsed) return;
    const regions = [...this.regions.values()];
    // A region that failed before its manifest was read pins the whole log.
    if (regions.some((r) => r.state() === 'failed' && r.flushedEntryId() < 0)) return;
    // So does a region of a table being created that another leader made
    // here: if the table commits, this shard opens it late from its log.
    if (this.ctx.meta.creatingRegionsOfShard(this.id).some((r) => !this.regions.has(r.id))) return;
    const minFlushed = Math.min(coveredUpTo, ...regions.map((r) => r.flushedEntryId()));
    await this.ctx.log.prune(this.topic, minFlushed + 1);
  }

  private async release(): Promise<void> {
    await this.follower.stop();
    // Let writes already handed to the writer finish; new ones are refused by state.
    await this.writer?.close();
    // A clean close flushes, so the next open has nothing to replay. A
    // follower never writes to the leader's files.
    // A failed flush fails the close (closing -> failed): the next start replays what it did not flush.
    try {
      if (this.flushOnClose && this.role === 'leader' && this.shardLog.appliedEntryId >= 0) await this.flushRegionsAndPrune();
    } finally {
      await Promise.all([...this.regions.values()].map((r) => r.close()));
    }
  }

  // ---- operations ----

  /** `writerEpoch`: this leader's epoch (it writes the region's files); undefined on a follower. */
  private addRegion(info: RegionInfo, schema: TableSchema, writerEpoch: number | undefined): RegionActor {
    const shardView = { appliedEntryId: () => this.shardLog.appliedEntryId, fenceEpochAt: (id: EntryId) => this.shardLog.fence.epochAt(id) };
    const region = new RegionActor(info, schema, this.ctx, shardView, writerEpoch).start();
    this.regions.set(info.id, region);
    return region;
  }

  private assertWritable(): TopicWriter {
    const state = this.state();
    if (this.actor.getSnapshot().hasTag('writable')) return this.writer!;
    if (state === 'migrating' || state === 'closing' || state === 'closed' || state === 'following') {
      throw new RepriseError('NOT_LEADER', `shard ${this.id} is ${state} on node '${this.ctx.nodeId}'`, { shard: this.id, state });
    }
    throw new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${state}${state === 'failed' ? `: ${this.actor.getSnapshot().context.error}` : ''}`, {
      shard: this.id,
      state,
    });
  }

  /**
   * Append a data entry for a region; resolves with its id once durable and
   * applied. `mutation` is the engine's prepared form of the body. A write
   * whose deadline passes before its append starts is dropped unwritten
   * (DEADLINE_EXCEEDED): a caller that gave up must not find it applied
   * later, e.g. after this node was paused with it queued.
   */
  async write(regionId: number, mutation: PreparedMutation, deadline?: Deadline): Promise<EntryId> {
    if (deadlinePassed(deadline)) throw deadlineExceeded(`shard ${this.id}: write to region ${regionId}`, deadline);
    if (this.leaseLapsed) await this.waitOutLapse(deadline);
    if (deadlinePassed(deadline)) throw deadlineExceeded(`shard ${this.id}: write to region ${regionId}`, deadline);
    const writer = this.assertWritable();
    const region = this.regions.get(regionId);
    if (!region) throw this.regionNotHosted(regionId);
    if (!region.acceptsWrites()) {
      const state = region.state();
      const code = state === 'failed' ? 'REGION_FAILED' : state === 'migrating' ? 'NOT_LEADER' : 'REGION_NOT_SERVING';
      const reason = region.status().error;
      throw new RepriseError(code, `region ${regionId} of table '${region.info.table}' is ${state}${reason ? `: ${reason}` : ''}`, {
        region: regionId,
        table: region.info.table,
        state,
      });
    }
    const entry: Entry = { kind: 'data', region: regionId, epoch: this.epoch, body: mutation.body };
    this.assertLease('refused');
    if (this.faults.ackBeforeDurable) {
      // Deliberate bug, for tests only: acknowledge before the append is durable.
      writer.append(entry).catch(() => undefined);
      this.ctx.testHooks?.onAck?.({ node: this.ctx.nodeId, shard: this.id, epoch: this.epoch, region: regionId, entryId: -1 });
      return -1;
    }
    const id = await writer.append(entry, deadline).catch((err: unknown) => this.stoppedHere(err, 'write'));
    if (this.leaseLapsed) await this.waitOutLapse(deadline);
    // Acknowledge only under a valid lease: meta gives the shard to another
    // node only after this lease has run out, and that node replays every
    // entry before its epoch marker, so what is acknowledged is never lost.
    this.assertLease(`not acknowledged (entry ${id} is in the log and may become visible)`);
    // A shard that failed meanwhile (its lease lapsed, then a heartbeat
    // renewed it before the shard was closed) may have appended after the
    // next leader's marker: never acknowledge that.
    if (this.state() === 'failed' && !this.faults.skipLeaseFencing) {
      throw new RepriseError('NOT_LEADER', `shard ${this.id} failed on node '${this.ctx.nodeId}' while entry ${id} was appended; not acknowledged (it may become visible)`, { shard: this.id });
    }
    this.ctx.testHooks?.onAck?.({ node: this.ctx.nodeId, shard: this.id, epoch: this.epoch, region: regionId, entryId: id });
    return id;
  }

  /** A region this shard does not hold: not yet (still opening, or opening late: retry) or not at all. */
  private regionNotHosted(regionId: number): RepriseError {
    const state = this.state();
    if (state === 'opening' || state === 'replaying') {
      return new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${state}; region ${regionId} is not open yet`, { region: regionId, shard: this.id, state });
    }
    const found = this.role === 'leader' && this.actor.getSnapshot().hasTag('writable') ? this.ctx.meta.regionById(regionId) : undefined;
    if (found && found.region.shard === this.id && found.region.createdAt >= 0) {
      void this.hostLateRegion(found.region, found.schema);
      return new RepriseError('REGION_NOT_SERVING', `region ${regionId} of table '${found.region.table}' is opening on shard ${this.id}`, { region: regionId, shard: this.id });
    }
    return new RepriseError('NOT_FOUND', `region ${regionId} is not hosted by shard ${this.id}`, { region: regionId, shard: this.id });
  }

  /**
   * Host a region meta lists on this shard that the shard did not open: its
   * table's create committed after this leader opened the shard (the region
   * was created by the previous leader, which failed over before the
   * commit, with no follower to carry it). Nothing of the region can be in
   * the log after its region_create but what a leader hosting it wrote, and
   * the one that did handed over no later than this leader's marker; the
   * region replays its range of the log all the same, then serves.
   */
  private async hostLateRegion(info: RegionInfo, schema: TableSchema): Promise<void> {
    if (this.regions.has(info.id)) return;
    const region = this.addRegion(info, schema, this.epoch);
    this.ctx.logger.info({ shard: this.id, region: info.id, table: info.table }, `shard ${this.id} opens region ${info.id} of table '${info.table}', created before this leader's epoch`);
    if ((await region.opened()) !== 'replaying') return;
    try {
      // Writes to the region are refused until it serves, so nothing of it lands beyond this id meanwhile.
      const upTo = this.shardLog.appliedEntryId;
      const only = new Map([[info.id, region]]);
      const from = region.flushedEntryId() + 1;
      if (from <= upTo) {
        await replayShard(this.ctx.log, this.topic, {
          from,
          to: upTo + 1,
          fence: this.shardLog.fence,
          onEntry: (entry) => this.shardLog.reapply(entry, entry.id, only),
        });
      }
      if (region.state() === 'replaying') region.actor.send({ type: 'REPLAYED', appliedEntryId: this.shardLog.appliedEntryId });
    } catch (err) {
      region.actor.send({ type: 'FAIL', reason: `opening late: ${(err as Error).message}` });
    }
  }

  /**
   * While the node's lease has lapsed (meta changing leader, a heartbeat
   * lost), wait for its renewal rather than refuse at once: the renewal
   * usually follows within a second, and refusing would cost the caller a
   * retry and its backoff. Bounded by the caller's deadline.
   */
  private async waitOutLapse(deadline?: Deadline): Promise<void> {
    if (!this.ctx.awaitLease) return;
    // Give up a little before the deadline, so the refusal (retryable: nothing was written) reaches the caller in time to try again.
    const left = deadline?.at === undefined ? LAPSE_WAIT_MS : Math.min(LAPSE_WAIT_MS, deadline.at - Date.now() - LAPSE_REFUSAL_MARGIN_MS);
    await this.ctx.awaitLease(left);
  }

  /** The node's lease from meta has lapsed (cluster mode). Checked before waiting, so a write under a held lease costs no extra await. */
  private get leaseLapsed(): boolean {
    return this.ctx.leaseHeld?.() === false;
  }

  private assertLease(what: string): void {
    if (this.leaseLapsed && !this.faults.skipLeaseFencing) {
      throw new RepriseError('NOT_LEADER', `shard ${this.id}: node '${this.ctx.nodeId}' lost its lease from meta; write ${what}`, { shard: this.id });
    }
  }

  /** The node's lease from meta ran out: fence the shard (its machine goes to failed), and say why to whoever asks. */
  leaseLost(): void {
    this.actor.send({ type: 'LEASE_LOST' });
    // States that do not fence on it (the machine says which) keep serving reads.
    this.fencedByLease = this.state() === 'failed';
  }

  async query(regionId: number, q: TableQuery): Promise<RegionQueryResult> {
    // Reads go to the leader: a follower may be a few entries behind.
    if (this.role === 'follower') {
      throw new RepriseError('NOT_LEADER', `shard ${this.id} is a follower on node '${this.ctx.nodeId}'`, { shard: this.id, state: this.state() });
    }
    if (this.leaseLapsed) await this.waitOutLapse();
    // Without a lease this node may no longer lead the shard: a retryable
    // refusal (the router asks again, here once the lease is renewed and the
    // shard reopened, or at the new leader), not its regions' REGION_FAILED.
    if ((this.fencedByLease && this.state() === 'failed') || this.leaseLapsed) {
      throw new RepriseError('SHARD_NOT_SERVING', `shard ${this.id}: node '${this.ctx.nodeId}' lost its lease from meta; reads wait until it is renewed or another node leads the shard`, {
        shard: this.id,
        state: this.state(),
      });
    }
    const region = this.regions.get(regionId);
    if (!region) throw this.regionNotHosted(regionId);
    // A leader still promoting (or opening, replaying) has not applied everything acknowledged yet.
    const snapshot = this.actor.getSnapshot();
    if (snapshot.status === 'active' && !snapshot.hasTag('readable')) {
      throw new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${this.state()} on node '${this.ctx.nodeId}': reads wait until it serves`, { shard: this.id, state: this.state() });
    }
    return region.query(q).catch((err: unknown) => this.stoppedHere(err, 'query'));
  }

  /**
   * An operation that was waiting when the shard stopped here (handed off,
   * or closed after a lost lease) meets its closed writer or regions
   * (CLOSED): for the caller that is NOT_LEADER, as for one arriving after
   * the stop, so a router looks the leader up again and retries there. That
   * is safe: a queued write was never appended, and one that was is an
   * idempotent upsert. Found by test/kafka/cluster-faults.test.ts (a
   * migration under concurrent writes).
   */
  private stoppedHere(err: unknown, op: string): never {
    if (!isRepriseError(err, 'CLOSED')) throw err;
    throw new RepriseError('NOT_LEADER', `shard ${this.id} stopped on node '${this.ctx.nodeId}' while a ${op} waited: ${err.message}`, { shard: this.id }, { cause: err });
  }

  /**
   * Create a region in this shard: its region_create entry marks where its
   * history starts (its initial flushed entry id), then it opens empty.
   */
  async createRegion(info: RegionInfo, schema: TableSchema): Promise<EntryId> {
    const writer = this.assertWritable();
    const createdAt = await writer.append({ kind: 'region_create', region: info.id, epoch: this.epoch, body: EMPTY });
    const region = this.addRegion({ ...info, createdAt }, schema, this.epoch);
    const state = await region.opened();
    if (state !== 'replaying') {
      throw new RepriseError('INTERNAL', `region ${info.id} of table '${info.table}' failed to open: ${region.status().error}`);
    }
    region.actor.send({ type: 'REPLAYED', appliedEntryId: createdAt });
    return createdAt;
  }

  /** Stop hosting a dropped region and delete its files. */
  async dropRegion(regionId: number): Promise<void> {
    const region = this.regions.get(regionId);
    if (!region) return;
    this.regions.delete(regionId);
    await region.close();
    if (this.actor.getSnapshot().hasTag('writable')) {
      await this.writer!.append({ kind: 'region_drop', region: regionId, epoch: this.epoch, body: EMPTY });
    }
    await this.ctx.engine.destroyRegion(regionId, this.ctx.objects);
  }

  /** Bytes held in the memtables of its regions. */
  memtableBytes(): number {
    let bytes = 0;
    for (const region of this.regions.values()) bytes += region.memtableBytes();
    return bytes;
  }

  /** Flush every region now (or join a flush that started after this call); resolves when the shard serves again. */
  async flush(): Promise<void> {
    const snapshot = await runThrough(this.actor, 'serving', 'flushing', { type: 'FLUSH' });
    const error = snapshot?.context.error;
    if (error && snapshot.value === 'serving') throw new RepriseError(codeOfReason(error), `flush of shard ${this.id} failed: ${error}`);
  }

  /** Hand this shard off (cluster): stop writes, flush, close. Resolves once closed; rejects if it stayed here. */
  async handOff(to: string): Promise<void> {
    if (this.state() === 'flushing') await waitFor(this.actor, (s) => s.value !== 'flushing', { timeout: Infinity });
    if (this.state() !== 'serving') throw new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${this.state()}: it cannot be handed off`, { shard: this.id });
    this.actor.send({ type: 'MIGRATE', to });
    const snapshot = await waitFor(this.actor, (s) => s.value !== 'migrating', { timeout: Infinity });
    if (snapshot.value !== 'closed') {
      throw new RepriseError('INTERNAL', `shard ${this.id} could not be handed off to '${to}': ${snapshot.context.error ?? snapshot.value}`, { shard: this.id });
    }
  }

  /** Close; `flush: false` skips the final flush (the next open replays the WAL instead). */
  async close(options: { flush?: boolean } = {}): Promise<void> {
    this.flushOnClose = options.flush ?? true;
    if (this.actor.getSnapshot().status === 'done') {
      await Promise.all([...this.regions.values()].map((r) => r.close()));
      await this.writer?.close();
      return;
    }
    if (this.state() === 'flushing') await waitFor(this.actor, (s) => s.value !== 'flushing', { timeout: Infinity });
    this.actor.send({ type: 'CLOSE' });
    await waitFor(this.actor, (s) => s.status === 'done', { timeout: Infinity });
  }

  status(): ShardStatus {
    const snapshot = this.actor.getSnapshot();
    const regions = [...this.regions.values()].map((r) => r.status()).sort((a, b) => a.id - b.id);
    const flushed = regions.length ? Math.min(...regions.map((r) => r.flushedEntryId)) : this.shardLog.appliedEntryId;
    return {
      id: this.id,
      topic: this.topic,
      state: snapshot.value as ShardState,
      role: snapshot.context.role,
      epoch: this.epoch,
      lastEntryId: this.shardLog.appliedEntryId,
      flushedEntryId: flushed,
      regions,
      ...(snapshot.context.role === 'follower' ? { lag: this.follower.lag() } : {}),
      ...(snapshot.context.error ? { error: snapshot.context.error } : {}),
    };
  }

  /** A follower shard that caught up and tails the topic: meta made it leader. Resolves once it serves (or failed). */
  async promoteToLeader(): Promise<ShardState> {
    if (this.state() !== 'following') throw new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${this.state()}: only a following shard can be promoted`, { shard: this.id });
    this.actor.send({ type: 'PROMOTE' });
    const snapshot = await waitFor(this.actor, (s) => s.value !== 'promoting', { timeout: Infinity });
    return snapshot.value as ShardState;
  }

  get shardRole(): ShardRole {
    return this.role;
  }

  /** This leader's epoch once opened or promoted (see `epoch`). */
  get leaderEpoch(): number {
    return this.epoch;
  }

  /** The machine's: 'leader' once opened as one or promoted (from PROMOTE on). */
  private get role(): ShardRole {
    return this.actor.getSnapshot().context.role;
  }

  /** The machine's: this leader's epoch (once its open or promotion is done), or the leader's a follower last saw. */
  private get epoch(): number {
    return this.actor.getSnapshot().context.epoch;
  }
}
