import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { RepriseError } from '../errors.js';
import type { PreparedMutation } from '../engine/region-engine.js';
import type { Row, TableQuery, TableSchema } from '../engine/schema.js';
import type { RegionInfo } from '../meta/model.js';
import type { Entry, LoggedEntry } from '../wal/entry.js';
import type { EntryId } from '../wal/log-store.js';
import { replayShard } from '../wal/shard-reader.js';
import { TopicWriter } from '../wal/topic-writer.js';
import { TEST_FAULTS, TEST_OBSERVER } from '../testing/faults.js';
import { reportTransitions, runThrough, type ActorContext } from './context.js';
import { RegionActor, type RegionStatus } from './region.js';
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
  readonly error?: string;
}

const EMPTY = new Uint8Array();

/** A data entry from the write path, carrying the engine's decoded form of its body. */
interface WriteEntry extends Entry {
  readonly decoded?: unknown;
}

/**
 * A shard led by this node: the shard machine, its regions and the
 * group-committing writer of its topic. Entries are applied to regions in
 * entry id order, only after they are durable (the writer's onDurable hook
 * runs in id order before any caller is told of success).
 */
export class ShardActor {
  readonly actor: Actor<typeof shardMachine>;
  private readonly regions = new Map<number, RegionActor>();
  private writer: TopicWriter | undefined;
  private topic: string;
  private epoch = 0;
  private appliedEntryId: EntryId = -1;
  private walBytesSinceFlush = 0;
  private flushOnClose = true;

  constructor(
    readonly id: number,
    private readonly ctx: ActorContext,
  ) {
    this.topic = ctx.meta.shard(id).topic;
    const machine = shardMachine.provide({
      actors: {
        openShard: fromPromise(async () => this.open()),
        replayShard: fromPromise(async ({ input }) => this.replay(input.epoch)),
        flushShard: fromPromise(async () => this.flushRegionsAndPrune()),
        // Hand-off: writes are already refused (migrating); drain the
        // writer, flush every region and close, so the next leader has
        // nothing to replay. Only a cluster node (one with a lease) has
        // anyone to hand to.
        migrateShard: fromPromise<void, { shardId: number; to: string }>(async ({ input }) => {
          if (ctx.leaseHeld === undefined) throw new RepriseError('INVALID_ARGUMENT', `shard ${id} cannot migrate to '${input.to}': no other node in embedded mode`);
          this.flushOnClose = true;
          await this.release();
        }),
        closeShard: fromPromise(async () => this.release()),
      },
    });
    this.actor = createActor(machine, { input: { shardId: id, role: 'leader' } });
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
    const { epoch, topic } = await this.ctx.meta.grantLeadership(this.id, this.ctx.nodeId);
    this.epoch = epoch;
    this.topic = topic;
    this.writer = new TopicWriter(this.ctx.log, topic, {
      maxBatchBytes: this.ctx.maxBatchBytes,
      onDurable: (entry, id) => this.applyDurable(entry, id),
    });
    const tables = new Map(this.ctx.meta.tables().map((t) => [t.id, t.schema]));
    for (const info of this.ctx.meta.regionsOfShard(this.id)) {
      this.addRegion(info, tables.get(info.tableId)!);
    }
    await Promise.all([...this.regions.values()].map((r) => r.opened()));
    return { epoch };
  }

  /**
   * Replay by shard: one pass over the topic from the lowest flushed entry id
   * + 1 among the regions, each entry routed to its region (entries a region
   * already flushed are skipped by the region). A region whose entries the log
   * no longer holds fails loudly; the others go on.
   */
  private async replay(epoch: number): Promise<{ lastEntryId: EntryId }> {
    const log = this.ctx.log;
    const { earliest, next } = await log.bounds(this.topic);
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
    // TEST_FAULTS.replayFromWrongId: a deliberate off-by-one, for tests only.
    const skip = TEST_FAULTS.replayFromWrongId ? 2 : 1;
    const from = Math.max(earliest, Math.min(next, ...live.map((r) => r.flushedEntryId() + skip)));
    this.appliedEntryId = Math.max(this.appliedEntryId, from - 1);
    if (from < next) await this.replayRange(from, next);
    this.appliedEntryId = Math.max(this.appliedEntryId, next - 1);
    // Fence: from here on, entries of older epochs are dropped by every reader.
    const marker = await this.writer!.append({ kind: 'epoch', region: 0, epoch, body: EMPTY });
    // Entries a previous leader got in after `next` was read but before the
    // marker belong to the log (it may have acknowledged them while its
    // lease held): replay them too, so nothing before the marker is missed.
    if (marker > next) await this.replayRange(next, marker);
    this.appliedEntryId = Math.max(this.appliedEntryId, marker);
    await this.pruneBelowFlushed(this.appliedEntryId);
    for (const region of this.regions.values()) {
      if (region.state() === 'replaying') region.actor.send({ type: 'REPLAYED', appliedEntryId: this.appliedEntryId });
    }
    return { lastEntryId: this.appliedEntryId };
  }

  /** Replay entries [from, to) of the topic into the regions (the replaying effect's one pass). */
  private async replayRange(from: EntryId, to: EntryId): Promise<void> {
    const log = this.ctx.log;
    const stats = await replayShard(log, this.topic, {
      from,
      to,
      onEntry: (entry: LoggedEntry) => {
        this.appliedEntryId = entry.id;
        if (entry.kind !== 'data') return;
        const region = this.regions.get(entry.region);
        if (!region) return;
        region.apply(entry.id, entry.body);
        this.walBytesSinceFlush += entry.body.byteLength;
        // A long log must not replay into unbounded memtables: flush as the
        // write path would. Every entry up to this one has been applied.
        if (this.overFlushPolicy(region)) return this.flushDuringReplay(entry.id);
      },
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
  }

  /** Called by the writer, in entry id order, once an entry is durable. */
  private applyDurable(entry: Entry, id: EntryId): void {
    this.appliedEntryId = id;
    if (entry.kind !== 'data') return;
    this.walBytesSinceFlush += entry.body.byteLength;
    const region = this.regions.get(entry.region);
    if (!region) return;
    region.apply(id, entry.body, (entry as WriteEntry).decoded);
    if (this.overFlushPolicy(region) && this.state() === 'serving') this.actor.send({ type: 'FLUSH' });
  }

  private overFlushPolicy(region: RegionActor): boolean {
    const policy = this.ctx.flushPolicy;
    return region.memtableBytes() >= policy.memtableBytes || this.walBytesSinceFlush >= policy.walBytes;
  }

  /** Part of the replaying effect: flush the regions being replayed, up to the entry reached. */
  private async flushDuringReplay(coveredUpTo: EntryId): Promise<void> {
    this.walBytesSinceFlush = 0;
    const replaying = [...this.regions.values()].filter((r) => r.state() === 'replaying');
    await Promise.all(replaying.map((r) => r.flushWhileReplaying(coveredUpTo)));
    this.ctx.logger.info({ shard: this.id, coveredUpTo }, `shard ${this.id} flushed its regions during replay at entry ${coveredUpTo}`);
  }

  private async flushRegionsAndPrune(): Promise<void> {
    const coveredUpTo = this.appliedEntryId;
    this.walBytesSinceFlush = 0;
    const regions = [...this.regions.values()];
    await Promise.all(regions.map((r) => r.flush(coveredUpTo)));
    for (const region of regions) await region.compact();
    await this.pruneBelowFlushed(coveredUpTo);
  }

  /**
   * Prune the topic below the lowest flushed entry id + 1 of the regions.
   * The flushed ids live in the regions' manifests, so this is also how the
   * low-water mark of a provider that prunes only logically (Kafka without
   * DeleteRecords) is restored after a restart: no separate record to keep
   * in step with them.
   */
  private async pruneBelowFlushed(coveredUpTo: EntryId): Promise<void> {
    const regions = [...this.regions.values()];
    // A region that failed before its manifest was read pins the whole log.
    if (regions.some((r) => r.state() === 'failed' && r.flushedEntryId() < 0)) return;
    const minFlushed = Math.min(coveredUpTo, ...regions.map((r) => r.flushedEntryId()));
    await this.ctx.log.prune(this.topic, minFlushed + 1);
  }

  private async release(): Promise<void> {
    // Let writes already handed to the writer finish; new ones are refused by state.
    await this.writer?.close();
    // A clean close flushes, so the next open has nothing to replay.
    if (this.flushOnClose && this.appliedEntryId >= 0) await this.flushRegionsAndPrune();
    await Promise.all([...this.regions.values()].map((r) => r.close()));
  }

  // ---- operations ----

  private addRegion(info: RegionInfo, schema: TableSchema): RegionActor {
    const region = new RegionActor(info, schema, this.ctx, () => this.appliedEntryId).start();
    this.regions.set(info.id, region);
    return region;
  }

  private assertWritable(): TopicWriter {
    const state = this.state();
    if (state === 'serving' || state === 'flushing') return this.writer!;
    if (state === 'migrating' || state === 'closing' || state === 'closed') {
      throw new RepriseError('NOT_LEADER', `shard ${this.id} is ${state} on node '${this.ctx.nodeId}'`, { shard: this.id, state });
    }
    throw new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${state}${state === 'failed' ? `: ${this.actor.getSnapshot().context.error}` : ''}`, {
      shard: this.id,
      state,
    });
  }

  /**
   * Append a data entry for a region; resolves with its id once durable and
   * applied. `mutation` is the engine's prepared form of the body.
   */
  async write(regionId: number, mutation: PreparedMutation): Promise<EntryId> {
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
    const entry: WriteEntry = { kind: 'data', region: regionId, epoch: this.epoch, body: mutation.body, decoded: mutation.decoded };
    this.assertLease('refused');
    if (TEST_FAULTS.ackBeforeDurable) {
      // Deliberate bug, for tests only: acknowledge before the append is durable.
      writer.append(entry).catch(() => undefined);
      TEST_OBSERVER.onAck?.({ node: this.ctx.nodeId, shard: this.id, epoch: this.epoch, region: regionId, entryId: -1 });
      return -1;
    }
    const id = await writer.append(entry);
    // Acknowledge only under a valid lease: meta gives the shard to another
    // node only after this lease has run out, and that node replays every
    // entry before its epoch marker, so what is acknowledged is never lost.
    this.assertLease(`not acknowledged (entry ${id} is in the log and may become visible)`);
    TEST_OBSERVER.onAck?.({ node: this.ctx.nodeId, shard: this.id, epoch: this.epoch, region: regionId, entryId: id });
    return id;
  }

  /** A region this shard does not hold: not yet (still opening: retry) or not at all. */
  private regionNotHosted(regionId: number): RepriseError {
    const state = this.state();
    if (state === 'opening' || state === 'replaying') {
      return new RepriseError('SHARD_NOT_SERVING', `shard ${this.id} is ${state}; region ${regionId} is not open yet`, { region: regionId, shard: this.id, state });
    }
    return new RepriseError('NOT_FOUND', `region ${regionId} is not hosted by shard ${this.id}`, { region: regionId, shard: this.id });
  }

  private assertLease(what: string): void {
    if (this.ctx.leaseHeld?.() === false && !TEST_FAULTS.skipLeaseFencing) {
      throw new RepriseError('NOT_LEADER', `shard ${this.id}: node '${this.ctx.nodeId}' lost its lease from meta; write ${what}`, { shard: this.id });
    }
  }

  async query(regionId: number, q: TableQuery): Promise<Row[]> {
    const region = this.regions.get(regionId);
    if (!region) throw this.regionNotHosted(regionId);
    return region.query(q);
  }

  /**
   * Create a region in this shard: its region_create entry marks where its
   * history starts (its initial flushed entry id), then it opens empty.
   */
  async createRegion(info: RegionInfo, schema: TableSchema): Promise<EntryId> {
    const writer = this.assertWritable();
    const createdAt = await writer.append({ kind: 'region_create', region: info.id, epoch: this.epoch, body: EMPTY });
    const region = this.addRegion({ ...info, createdAt }, schema);
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
    const state = this.state();
    if (state === 'serving' || state === 'flushing') {
      await this.writer!.append({ kind: 'region_drop', region: regionId, epoch: this.epoch, body: EMPTY });
    }
    await this.ctx.engine.destroyRegion(regionId, this.ctx.objects);
  }

  /** Flush every region now (or join a flush that started after this call); resolves when the shard serves again. */
  async flush(): Promise<void> {
    const snapshot = await runThrough(this.actor, 'serving', 'flushing', { type: 'FLUSH' });
    const error = snapshot?.context.error;
    if (error && snapshot.value === 'serving') throw new RepriseError('INTERNAL', `flush of shard ${this.id} failed: ${error}`);
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
    const flushed = regions.length ? Math.min(...regions.map((r) => r.flushedEntryId)) : this.appliedEntryId;
    return {
      id: this.id,
      topic: this.topic,
      state: snapshot.value as ShardState,
      role: snapshot.context.role,
      epoch: snapshot.context.epoch,
      lastEntryId: this.appliedEntryId,
      flushedEntryId: flushed,
      regions,
      ...(snapshot.context.error ? { error: snapshot.context.error } : {}),
    };
  }
}
