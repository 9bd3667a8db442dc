import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { isRepriseError, RepriseError } from '../errors.js';
import type { Region, RegionQueryResult } from '../engine/region-engine.js';
import type { TableQuery, TableSchema } from '../engine/schema.js';
import type { RegionInfo } from '../meta/model.js';
import type { EntryId } from '../wal/log-store.js';
import { reportTransitions, runThrough, type ActorContext } from './context.js';
import { errorReason } from '../machine-effects.js';
import { regionMachine, type RegionState } from './region-machine.js';

/** Codes of a region's files found damaged or missing. */
const FILE_DAMAGE: ReadonlySet<string> = new Set(['SST_CORRUPT', 'SST_MISSING', 'SST_FORMAT_UNSUPPORTED', 'MANIFEST_CORRUPT']);

/** Damage the region cannot serve past: an entry it cannot apply (REGION_FAILED), or its files. */
function isDamage(err: unknown): err is RepriseError {
  return isRepriseError(err) && (err.code === 'REGION_FAILED' || FILE_DAMAGE.has(err.code));
}

export interface RegionStatus {
  readonly id: number;
  readonly table: string;
  readonly partition: number;
  readonly state: RegionState;
  readonly appliedEntryId: EntryId;
  readonly flushedEntryId: EntryId;
  readonly memtableBytes: number;
  readonly error?: string;
}

/**
 * A region hosted by a shard: the region machine plus the engine's Region
 * it drives. The shard routes WAL entries here (during replay and after each
 * durable append); the machine decides what the region may do.
 */
export class RegionActor {
  private region: Region | undefined;
  private flushInFlight: Promise<unknown> = Promise.resolve();
  private readonly ctx: ActorContext;
  readonly actor: Actor<typeof regionMachine>;

  constructor(
    readonly info: RegionInfo,
    readonly schema: TableSchema,
    ctx: ActorContext,
    /**
     * The shard's view of its log: its last applied entry id (for flushes the
     * region starts itself, on hand-off) and the epoch fence at an entry id
     * (kept with every flush; see Region.flush).
     */
    private readonly shard: { appliedEntryId(): EntryId; fenceEpochAt(id: EntryId): number },
    /**
     * The shard's leadership epoch when this node leads it: the region's
     * files are its to write, under that epoch. Undefined on a follower: the
     * leader owns the files, and the region is opened without writing to
     * them (until promote).
     */
    private writerEpoch: number | undefined,
  ) {
    this.ctx = ctx;
    const machine = regionMachine.provide({
      actors: {
        openRegion: fromPromise(async () => {
          this.region = await this.openEngineRegion();
          this.reportCacheWarm(this.region, this.writerEpoch === undefined ? 'opened as a follower' : 'opened');
          return { flushedEntryId: this.region.flushedEntryId() };
        }),
        flushRegion: fromPromise(async ({ input }) => this.flushNow(input.coveredUpTo)),
        handOffRegion: fromPromise(async () => {
          await this.flushNow(this.shard.appliedEntryId());
          await this.releaseRegion();
        }),
        closeRegion: fromPromise(async () => this.releaseRegion()),
      },
    });
    this.actor = createActor(machine, { input: { regionId: info.id } });
    reportTransitions(this.actor, 'region', info.id, ctx);
  }

  get id(): number {
    return this.info.id;
  }

  start(): this {
    this.actor.start();
    return this;
  }

  state(): RegionState {
    return this.actor.getSnapshot().value as RegionState;
  }

  /** Resolves once the region is past opening (replaying, or failed/closed). */
  async opened(): Promise<RegionState> {
    const snapshot = await waitFor(this.actor, (s) => s.value !== 'opening', { timeout: Infinity });
    return snapshot.value as RegionState;
  }

  flushedEntryId(): EntryId {
    return this.region?.flushedEntryId() ?? this.actor.getSnapshot().context.flushedEntryId;
  }

  /** The epoch fence its manifest recorded at the flushed entry id (0 if none). */
  fenceEpoch(): number {
    return this.region?.fenceEpoch() ?? 0;
  }

  /** Whether the machine admits writes now (its state is tagged `writable`). */
  acceptsWrites(): boolean {
    return this.actor.getSnapshot().hasTag('writable');
  }

  private openEngineRegion(): Promise<Region> {
    const { info, schema } = this;
    const { writerEpoch } = this;
    // A node whose lease lapsed deletes nothing: a newer leader may be reading it (see RegionWriter).
    const writer = writerEpoch === undefined ? undefined : { epoch: writerEpoch, mayDelete: () => this.ctx.leaseHeld?.() !== false, faults: this.ctx.testHooks?.faults };
    return this.ctx.engine.openRegion({ regionId: info.id, table: schema, partition: info.partition, createdAt: info.createdAt }, this.ctx.objects, writer ? { writer } : {});
  }

  /**
   * Follower: the leader flushed. Load the region's newest manifest; if it
   * covers more than this region's, switch to it (its memtable starts empty)
   * and return the new flushed entry id: the caller re-applies the entries
   * after it that the old memtable held. Undefined when nothing changed.
   */
  async reload(why: 'reloaded' | 'promoted' = 'reloaded'): Promise<EntryId | undefined> {
    const current = this.region;
    if (!current) return undefined;
    const fresh = await this.openEngineRegion();
    // A leader's region must be the one opened with its writer (promote).
    const owning = this.writerEpoch !== undefined;
    const same = fresh.flushedEntryId() === current.flushedEntryId();
    if (!owning && fresh.flushedEntryId() <= current.flushedEntryId()) {
      await fresh.close();
      return undefined;
    }
    // Promoted with nothing newer flushed: the open wrote this leader's manifest, and the memtables carry on.
    if (same) fresh.takeOver(current);
    this.region = fresh;
    this.reportCacheWarm(fresh, why);
    await current.close().catch(() => undefined);
    return same ? undefined : fresh.flushedEntryId();
  }

  /**
   * The follower's shard now leads, at `epoch`: the region's files are this
   * node's. As reload, except that the newest manifest is opened as its
   * owner, which writes this leader's own version of it (fencing off the
   * old leader's later writes) and deletes what the old leader left
   * behind; later opens are the owner's too.
   */
  promote(epoch: number): Promise<EntryId | undefined> {
    this.writerEpoch = epoch;
    return this.reload('promoted');
  }

  /**
   * Log what the open's warm-up of the local SST cache did (the engine runs
   * it in the background: see Region.cacheWarmed): at info for a leader's
   * open or promotion that fetched anything, at warn if SSTs could not be
   * fetched (their first queries read the store instead), at debug for a
   * follower's opens. Never fails the region.
   */
  private reportCacheWarm(region: Region, why: 'opened' | 'opened as a follower' | 'reloaded' | 'promoted'): void {
    void region.cacheWarmed?.then((w) => {
      if (w === undefined) return;
      const fields = { region: this.id, table: this.info.table, ...w };
      const message = `region ${this.id} ${why}: ${w.fetched} of ${w.ssts} SSTs fetched into the local cache in ${w.ms} ms (${w.skipped} cached already)`;
      const leading = why === 'opened' || why === 'promoted';
      if (w.failed > 0) this.ctx.logger.warn(fields, `${message}; ${w.failed} could not be fetched${w.error ? `: ${w.error}` : ''}, their first reads go to the store`);
      else if (leading && w.fetched > 0) this.ctx.logger.info(fields, message);
      else this.ctx.logger.debug(fields, message);
    });
  }

  /** Apply a durable data entry. A body the engine cannot decode fails this region only. */
  apply(entryId: EntryId, body: Uint8Array): void {
    if (!this.region) return;
    try {
      this.region.apply(entryId, body);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.actor.send({ type: 'FAIL', reason: `entry ${entryId} cannot be applied: ${reason}` });
    }
  }

  memtableBytes(): number {
    return this.region?.memtableBytes() ?? 0;
  }

  /**
   * Ask the machine to flush and wait until it is back (no-op unless
   * serving). Resolves with the reason if the flush failed (the region
   * keeps serving: nothing is lost).
   */
  async flush(coveredUpTo: EntryId): Promise<string | undefined> {
    const after = await runThrough(this.actor, 'serving', 'flushing', { type: 'FLUSH', coveredUpTo });
    return after?.context.error;
  }

  /**
   * Flush while the shard replays (the region is in `replaying`, so this is
   * part of the shard's replay effect, not a FLUSH transition): bounds the
   * memory a long log can take.
   */
  async flushWhileReplaying(coveredUpTo: EntryId): Promise<void> {
    if (this.state() === 'replaying') await this.flushNow(coveredUpTo);
  }

  async compact(): Promise<void> {
    if (this.region && this.acceptsWrites()) await this.failOnDamage(this.region.compact());
  }

  async query(q: TableQuery): Promise<RegionQueryResult> {
    const state = this.state();
    if (state === 'failed') {
      throw new RepriseError('REGION_FAILED', `region ${this.id} of table '${this.info.table}' failed: ${this.actor.getSnapshot().context.error}`, {
        region: this.id,
        table: this.info.table,
      });
    }
    if (!this.region || !this.actor.getSnapshot().hasTag('readable')) {
      throw new RepriseError('REGION_NOT_SERVING', `region ${this.id} of table '${this.info.table}' is ${state}`, {
        region: this.id,
        table: this.info.table,
        state,
      });
    }
    return this.failOnDamage(this.region.query(q));
  }

  /**
   * Damage the region cannot serve past fails it, engine and machine alike,
   * so that status and /health say so and writes stop piling onto it:
   * - an entry the engine cannot decode when a query or flush reads it
   *   (only a bug or a foreign writer gets one past the WAL's checksums; the
   *   engine then refuses everything with REGION_FAILED);
   * - an SST or manifest found damaged or missing when the leader reads it
   *   (queries would fail or be wrong until it is restored; the rows not
   *   yet flushed stay in the WAL).
   * A follower or a migrating region does not own the files and is left be.
   */
  private async failOnDamage<T>(work: Promise<T>): Promise<T> {
    try {
      return await work;
    } catch (err) {
      // A follower or a migrating region does not own the files: damage to them is the leader's to report.
      const damaged = isDamage(err) && (err.code === 'REGION_FAILED' || this.acceptsWrites());
      if (damaged && this.actor.getSnapshot().status === 'active') this.actor.send({ type: 'FAIL', reason: errorReason(err) });
      throw err;
    }
  }

  async close(): Promise<void> {
    const state = this.state();
    if (state === 'closed' || state === 'failed') {
      await this.releaseRegion();
      return;
    }
    this.actor.send({ type: 'CLOSE' });
    await waitFor(this.actor, (s) => s.status === 'done', { timeout: Infinity });
  }

  status(): RegionStatus {
    const snapshot = this.actor.getSnapshot();
    return {
      id: this.id,
      table: this.info.table,
      partition: this.info.partition,
      state: snapshot.value as RegionState,
      appliedEntryId: this.region?.appliedEntryId() ?? -1,
      flushedEntryId: this.flushedEntryId(),
      memtableBytes: this.memtableBytes(),
      ...(snapshot.context.error ? { error: snapshot.context.error } : {}),
    };
  }

  private async flushNow(coveredUpTo: EntryId): Promise<{ flushedEntryId: EntryId }> {
    const region = this.region;
    if (!region) throw new RepriseError('REGION_NOT_SERVING', `region ${this.id} is not open`);
    const result = this.failOnDamage(region.flush(coveredUpTo, this.shard.fenceEpochAt(coveredUpTo))).catch((err: unknown) => {
      if (isDamage(err)) throw err;
      // Anything else (the object store full, unwritable): say what it cost.
      throw new RepriseError('FLUSH_FAILED', `region ${this.id} of table '${this.info.table}': flush failed: ${errorReason(err)}; nothing is lost, its rows stay in memory and in the WAL`, { region: this.id }, { cause: err });
    });
    this.flushInFlight = result.catch(() => undefined);
    return { flushedEntryId: (await result).flushedEntryId };
  }

  /** Wait for a running flush (its result matters to the next owner), then close the engine region. */
  private async releaseRegion(): Promise<void> {
    await this.flushInFlight;
    const region = this.region;
    this.region = undefined;
    await region?.close();
  }
}
