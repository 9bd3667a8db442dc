import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { RepriseError } from '../errors.js';
import { readU32, readU64 } from './bytes.js';
import { checkId, walGap, walTruncated } from './log-errors.js';
import { decodeRecord } from './codec.js';
import { HIGH_WATER_FILE, HighWater, type HighWaterTopic } from './high-water.js';
import { scanLevelDbLogs } from './leveldb-log.js';
import { describeDamage, dryRunRecovery, quarantine, type LostRange } from './local-log-damage.js';
import {
  HOLE,
  HOLE_VALUE_BYTES,
  META,
  META_FORMAT,
  META_VALUE_BYTES,
  mergeRanges,
  metaKey,
  metaName,
  metaValue,
  parseRecordKey,
  recordKey,
  u64Value,
  type IdRange,
} from './local-log-keys.js';
import type { EntryId, LogRecord, LogStore, ReadOptions, TailSubscription, TopicBounds } from './log-store.js';
import { LocalTail } from './local-tail.js';

/**
 * The embedded WAL provider: every topic in one LevelDB (key layout in
 * local-log-keys.ts).
 *
 * Every append is one synced LevelDB batch, then a synced write of the
 * high-water file (high-water.ts) that records the topic's next id, and is
 * acknowledged only after both. Appends to one topic run one at a time in
 * call order: that keeps ids contiguous even when an append fails, because
 * the next one reuses its ids. Appends to different topics run concurrently
 * and share LevelDB's group commit and one high-water write.
 *
 * Integrity at open (ARCHITECTURE.md, "WAL integrity"): LevelDB's recovery
 * drops a damaged tail of its log without an error, so before LevelDB opens
 * the directory every LevelDB log is checked record by record
 * (leveldb-log.ts): damage anywhere is WAL_CORRUPT, naming topics and entry
 * ids, and nothing is changed. Once LevelDB is open, each topic's last
 * record is checked against its high-water mark: a log that ends below it
 * lost acknowledged entries (WAL_TAIL_LOST). With `skipCorrupt` the store
 * opens anyway: damaged log files are copied to `<dir>/quarantine/`, the
 * lost ids are recorded as holes that reads pass over, every id stays
 * issued once, and each skipped range is logged.
 */

/** Records fetched from LevelDB per iterator call when reading. */
const READ_BATCH = 1000;
/** How often a store whose LevelDB refuses writes tries to reopen it. */
const REOPEN_RETRY_MS = 1000;

type Db = ClassicLevel<Uint8Array, Uint8Array>;

/** Ids [from, to) of a topic that are not in the log and never will be (a --wal-skip-corrupt start recorded them). */
/** Ids [from, to) an operator skipped (--wal-skip-corrupt): reads pass over them. */
export type Hole = IdRange;

interface TopicState {
  readonly name: string;
  readonly no: number;
  earliest: EntryId;
  next: EntryId;
  /** Sorted, disjoint. Empty unless a skip-corrupt start found entries lost. */
  holes: Hole[];
  /** Settles when the last queued append has finished; appends chain on it. */
  appending: Promise<unknown>;
  readonly tails: Set<LocalTail>;
}

/** What the store reports about damage it skipped and marks it could not check. */
export interface WalLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface LocalLogStoreOptions {
  /**
   * Open a damaged log instead of failing: keep copies of damaged LevelDB
   * log files in `<dir>/quarantine/<time>/`, record the entry ids that are
   * gone as holes (reads pass over them, and they are never issued again)
   * and log every range skipped. Default false: damage fails open with
   * WAL_CORRUPT or WAL_TAIL_LOST and changes nothing.
   */
  readonly skipCorrupt?: boolean;
  /** Default: JSON lines on stderr. */
  readonly logger?: WalLogger;
}

/** How an operator gets past damage, for error messages. */
const SKIP_HINT =
  'restore the WAL directory from a copy, or start once with --wal-skip-corrupt (config wal.skipCorrupt, env REPRISE_WAL_SKIP_CORRUPT=true) ' +
  'to keep copies of the damaged files under <wal>/quarantine/ and go on without those entries (their ids are never issued again)';

export class LocalLogStore implements LogStore {
  readonly provider = 'local';

  private db: Db;
  private readonly logger: WalLogger;
  private readonly dir: string;
  private readonly topics: Map<string, TopicState>;
  private readonly highWater: HighWater;
  private nextTopicNo: number;
  /** Serialises topic creation and pruning (metadata writes). */
  private metaChain: Promise<unknown> = Promise.resolve();
  /**
   * Compactions of pruned ranges, one after another. LevelDB keeps deleted
   * records on disk until a compaction reaches their files, which under a
   * steady write load can be long after the flush that made them garbage
   * (measured: 10M rows flushed left ~200 MB of pruned WAL on disk).
   */
  private compacting: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;
  /**
   * Set when a write to LevelDB failed with an I/O error (a full disk).
   * LevelDB then refuses every later write, even once space is freed, if the
   * failure hit a background compaction or a sync; reopening it is the
   * way back. Until a reopen succeeds, operations wait for one attempt and
   * fail UNAVAILABLE; a timer retries meanwhile, so the store recovers by
   * itself once there is space.
   */
  private writeFailure: { error: string; since: number } | undefined;
  private reopening: Promise<void> | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;
  /** Operations inside LevelDB right now; a reopen waits for them. */
  private inUse = 0;
  private idle: (() => void) | undefined;

  private constructor(db: Db, dir: string, topics: Map<string, TopicState>, highWater: HighWater, nextTopicNo: number, logger: WalLogger) {
    this.db = db;
    this.logger = logger;
    this.dir = dir;
    this.topics = topics;
    this.highWater = highWater;
    this.nextTopicNo = nextTopicNo;
  }

  /** Open (creating if needed) the log at `dir`, check it, and recover every topic's bounds. */
  static async open(dir: string, options: LocalLogStoreOptions = {}): Promise<LocalLogStore> {
    const logger = options.logger ?? stderrLogger;
    const skip = options.skipCorrupt === true;
    if (skip) logger.warn({ dir }, `local WAL at ${dir}: opening with skipCorrupt (--wal-skip-corrupt): damaged or lost entries are skipped, not refused`);

    // 1. Before LevelDB touches the directory (its recovery would drop the
    // damage and then delete the log that shows it): the marks and the logs.
    const highWaterPath = join(dir, HIGH_WATER_FILE);
    const recorded = await HighWater.read(highWaterPath);
    const scans = await scanLevelDbLogs(dir);
    const damaged = scans.filter((s) => s.events.some((e) => e.kind === 'damage'));
    let damagedIds = new Map<string, LostRange[]>();
    if (damaged.length > 0) {
      // Exact ids from a recovery of a copy, where it can run; else what the damaged bytes and their neighbours say.
      const report = describeDamage(scans, recorded.topics, await dryRunRecovery(dir, recorded.topics));
      damagedIds = report.lost;
      const details = { dir, damages: report.damages };
      if (!skip) {
        throw new RepriseError('WAL_CORRUPT', `the local WAL at ${dir} is damaged: ${report.summary}. Nothing was changed; ${SKIP_HINT}`, details);
      }
      const quarantined = await quarantine(dir, damaged, { reason: 'damaged LevelDB log records', ...details });
      for (const d of report.damages) {
        logger.error({ dir, quarantine: quarantined, ...d }, `local WAL at ${dir}: skipping damaged log bytes: ${d.file} at offset ${d.offset}: ${d.reason} (copy in ${quarantined})`);
      }
    }
    if (recorded.state === 'damaged') {
      const message = `the local WAL at ${dir}: its high-water file ${HIGH_WATER_FILE} has no valid copy, so a lost tail of the log cannot be detected`;
      if (!skip) throw new RepriseError('WAL_CORRUPT', `${message}. Nothing was changed; ${SKIP_HINT}`, { dir, file: HIGH_WATER_FILE });
      logger.error({ dir }, `${message}; going on without it (skipCorrupt)`);
    }

    // 2. LevelDB, whose recovery now drops what the check reported.
    const db = await openLevel(dir);
    try {
      const topics = await loadTopics(db, dir).catch((err: unknown) => {
        const code = (err as { code?: string }).code;
        if (code !== 'LEVEL_CORRUPTION' && code !== 'LEVEL_IO_ERROR') throw err;
        throw new RepriseError('WAL_CORRUPT', `the local WAL at ${dir} is damaged: reading its topics failed: ${(err as Error).message}. Nothing was changed; restore the WAL directory from a copy`, { dir }, { cause: err });
      });
      const byNo = new Map([...topics.values()].map((t) => [t.no, t]));
      let maxNo = -1;
      for (const t of topics.values()) maxNo = Math.max(maxNo, t.no);
      for (const m of recorded.topics.values()) maxNo = Math.max(maxNo, m.no);

      // 3. Each topic against its high-water mark.
      const lost: { topic: string; no: number; from: EntryId; to: EntryId; missing: boolean }[] = [];
      for (const mark of recorded.topics.values()) {
        const t = byNo.get(mark.no);
        if (!t) {
          if (mark.next > 0) lost.push({ topic: mark.name, no: mark.no, from: 0, to: mark.next, missing: true });
        } else if (t.next < mark.next) {
          lost.push({ topic: t.name, no: t.no, from: t.next, to: mark.next, missing: false });
        }
      }
      if (lost.length > 0) {
        const what = lost
          .map((l) =>
            l.missing
              ? `topic "${l.topic}" is missing (it had acknowledged entries up to id ${l.to - 1})`
              : `topic "${l.topic}" ends before entry id ${l.from}, but entry ids ${span(l.from, l.to)} were acknowledged`,
          )
          .join('; ');
        const torn = scans.filter((s) => s.tornTailAt !== undefined);
        const details = { dir, lost: lost.map(({ topic, from, to, missing }) => ({ topic, from, to, missing })) };
        if (!skip) {
          // LevelDB has already replaced the logs it recovered: keep the ones
          // whose end was cut, which is where the entries went.
          const kept = torn.length > 0 ? await quarantine(dir, torn, { reason: 'log tail shorter than acknowledged', ...details }) : undefined;
          throw new RepriseError(
            'WAL_TAIL_LOST',
            `the local WAL at ${dir} lost acknowledged entries from its end: ${what} (high-water file ${HIGH_WATER_FILE})` +
              `${kept ? `; the log files that ended early are copied to ${kept}` : ''}. ${capitalise(SKIP_HINT)}`,
            details,
          );
        }
        if (torn.length > 0) {
          const kept = await quarantine(dir, torn, { reason: 'log tail shorter than acknowledged', ...details });
          logger.error({ dir, quarantine: kept }, `local WAL at ${dir}: the log files that ended early are copied to ${kept}`);
        }
        for (const l of lost) {
          // A shortened topic gets its hole (and the log line naming it) below.
          if (l.missing) {
            logger.error({ dir, topic: l.topic, next: l.to }, `local WAL at ${dir}: topic "${l.topic}" is missing (it had acknowledged entries up to id ${l.to - 1}); recreating it empty at id ${l.to}, so reads of older ids fail WAL_TRUNCATED`);
            await db.put(metaKey(l.topic), metaValue(l.no, l.to), { sync: true });
            const t: TopicState = { name: l.topic, no: l.no, earliest: l.to, next: l.to, holes: [], appending: Promise.resolve(), tails: new Set() };
            topics.set(l.topic, t);
            byNo.set(l.no, t);
          } else {
            byNo.get(l.no)!.next = l.to;
          }
        }
      }
      if (skip) {
        // Ids the damaged records held are issued already, even with no high-water mark to say so.
        for (const [name, ids] of damagedIds) {
          const t = topics.get(name);
          if (t) for (const r of ids) t.next = Math.max(t.next, r.to);
        }
        await recordHoles(db, dir, topics, logger);
      }

      // 4. The marks from here on: what the log holds, never below what was recorded.
      const marks: HighWaterTopic[] = [...topics.values()].map((t) => ({ name: t.name, no: t.no, next: t.next }));
      if (recorded.state === 'missing' && topics.size > 0) {
        logger.warn({ dir }, `local WAL at ${dir} has no high-water file (${HIGH_WATER_FILE}): written by an older version, or the file was deleted; whether the log lost its tail before now cannot be checked`);
      }
      const highWater = await HighWater.create(highWaterPath, marks, recorded.seq);
      return new LocalLogStore(db, dir, topics, highWater, maxNo + 1, logger);
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  async createTopic(topic: string): Promise<void> {
    if (typeof topic !== 'string' || topic.length === 0) {
      throw new RepriseError('INVALID_ARGUMENT', `WAL topic name must be a non-empty string, got ${JSON.stringify(topic)}`);
    }
    this.checkOpen();
    if (this.topics.has(topic)) return;
    await this.withMeta(async () => {
      this.checkOpen();
      if (this.topics.has(topic)) return;
      const no = this.nextTopicNo++;
      await this.level((db) => db.put(metaKey(topic), metaValue(no, 0), { sync: true }));
      this.topics.set(topic, { name: topic, no, earliest: 0, next: 0, holes: [], appending: Promise.resolve(), tails: new Set() });
      // Its name in the high-water file names it in reports even if LevelDB loses it.
      this.highWater.set(no, topic, 0);
      await this.highWater.persist();
    });
  }

  async listTopics(): Promise<string[]> {
    this.checkOpen();
    return [...this.topics.keys()].sort();
  }

  append(topic: string, records: readonly Uint8Array[]): Promise<EntryId[]> {
    let t: TopicState;
    try {
      t = this.topic(topic);
    } catch (err) {
      return Promise.reject(err);
    }
    const run = t.appending.then(() => this.write(t, records));
    t.appending = run.catch(() => undefined);
    return run;
  }

  read(topic: string, from: EntryId, options?: ReadOptions): AsyncIterable<LogRecord> {
    // `to` defaults to the topic's next id when read() is called; the rest is
    // checked when iteration starts.
    const to = options?.to ?? this.topics.get(topic)?.next ?? 0;
    return { [Symbol.asyncIterator]: () => this.scan(topic, from, to) };
  }

  async tail(
    topic: string,
    from: EntryId,
    onRecord: (record: LogRecord) => void | Promise<void>,
    onError?: (err: Error) => void,
  ): Promise<TailSubscription> {
    const t = this.topic(topic);
    checkId(from, 'from', topic);
    const tail = new LocalTail((pos, to) => this.scan(topic, pos, to), t, from, onRecord, onError);
    t.tails.add(tail);
    return tail;
  }

  async bounds(topic: string): Promise<TopicBounds> {
    const t = this.topic(topic);
    return { earliest: t.earliest, next: t.next };
  }

  /** Holes a skip-corrupt start recorded in the topic (ids reads pass over). */
  holes(topic: string): Hole[] {
    return [...this.topic(topic).holes];
  }

  /**
   * Delete records below `below` (clamped to the topic's next id). The new
   * earliest id is persisted (synced) before any record is deleted, so after
   * a crash in between, reads below it still fail loudly rather than see a
   * partial range; leftover records are removed by the next prune.
   */
  async prune(topic: string, below: EntryId): Promise<void> {
    this.topic(topic);
    checkId(below, 'below', topic);
    await this.withMeta(async () => {
      const t = this.topic(topic);
      const earliest = Math.min(below, t.next);
      if (earliest <= t.earliest) return;
      await this.level((db) => db.put(metaKey(topic), metaValue(t.no, earliest), { sync: true }));
      // Set synchronously after the synced write: a read checks `earliest`
      // and opens its iterator (a LevelDB snapshot) in one step, so it either
      // sees the old bound and all its records, or the new bound.
      t.earliest = earliest;
      await this.level((db) => db.clear({ gte: recordKey(t.no, 0), lt: recordKey(t.no, earliest) }));
      const gone = t.holes.filter((h) => h.to <= earliest);
      if (gone.length > 0) {
        t.holes = t.holes.filter((h) => h.to > earliest);
        await this.level((db) => db.batch(gone.map((h) => ({ type: 'del' as const, key: recordKey(t.no, h.from, HOLE) }))));
      }
      // In the background: the prune is durable already, and a compaction
      // can take a while; close() waits for it.
      const range = [recordKey(t.no, 0), recordKey(t.no, earliest)] as const;
      this.compacting = this.compacting.then(() => this.level((db) => db.compactRange(range[0], range[1])))
        .catch((err: unknown) => this.logger.warn({ dir: this.dir, topic, err: String(err) }, `local WAL at ${this.dir}: compacting topic "${topic}" after a prune failed (its pruned records keep their disk until LevelDB compacts them): ${String(err)}`));
    });
  }

  /** Stop tails, finish the appends accepted before close(), close LevelDB. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const pending: Promise<unknown>[] = [this.metaChain];
      for (const t of this.topics.values()) {
        pending.push(t.appending);
        for (const tail of t.tails) pending.push(tail.close());
      }
      await Promise.all(pending);
      await this.compacting; // after metaChain: a prune in it may have queued one
      clearTimeout(this.reopenTimer);
      await this.reopening?.catch(() => undefined);
      await this.db.close();
      await this.highWater.close();
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------
  // Internals

  /** The topic's state; throws CLOSED or NOT_FOUND. */
  private topic(topic: string): TopicState {
    this.checkOpen();
    const t = this.topics.get(topic);
    if (!t) throw new RepriseError('NOT_FOUND', `WAL topic "${topic}" does not exist`, { topic });
    return t;
  }

  /**
   * Records with from <= id < min(to, next), passing over holes. `next`
   * bounds the scan so that a record is never seen before its append has
   * been acknowledged (the batch may be in LevelDB a moment before its
   * promise resolves).
   */
  private async *scan(topic: string, from: EntryId, to: EntryId): AsyncGenerator<LogRecord> {
    const t = this.topic(topic);
    checkId(from, 'from', topic);
    if (from < t.earliest) {
      throw walTruncated(topic, from, t.earliest);
    }
    const end = Math.min(to, t.next);
    if (from >= end) return;
    const holes = t.holes;
    // Held until the scan ends: a consumer must not wait for an append of this store between records (a reopen would wait for the scan).
    const db = await this.acquire();
    let it: ReturnType<typeof db.iterator<Uint8Array, Uint8Array>>;
    try {
      it = db.iterator({ gte: recordKey(t.no, from), lt: recordKey(t.no, end) });
    } catch (err) {
      this.release();
      throw err;
    }
    let expected = pastHoles(holes, from);
    // Ask for the next batch before handing out the current one, so LevelDB
    // reads on its thread while the consumer decodes on the main one.
    let fetching = it.nextv(READ_BATCH);
    try {
      for (;;) {
        let batch: [Uint8Array, Uint8Array][];
        try {
          batch = await fetching;
        } catch (err) {
          throw this.readError(topic, expected, err);
        }
        if (batch.length === 0) break;
        fetching = it.nextv(READ_BATCH);
        for (let i = 0; i < batch.length; i++) {
          const [key, data] = batch[i]!;
          const id = readU64(key, 5);
          if (id !== expected) {
            if (id < expected) continue; // inside a hole: a part of an entry the hole took
            throw walGap(topic, expected, id);
          }
          expected = holes.length === 0 ? expected + 1 : pastHoles(holes, expected + 1);
          yield { id, data };
        }
      }
    } finally {
      // The consumer may stop early: settle the prefetch before closing.
      await fetching.catch(() => undefined);
      await it.close();
      this.release();
    }
    if (expected < end) throw walGap(topic, expected, end);
  }

  private async write(t: TopicState, records: readonly Uint8Array[]): Promise<EntryId[]> {
    const first = t.next;
    const n = records.length;
    if (n === 0) return [];
    // A chained batch hands each put to LevelDB as it goes; several times
    // faster than db.batch(array) for thousands of records.
    const db = await this.acquire();
    const batch = db.batch();
    try {
      for (let i = 0; i < n; i++) batch.put(recordKey(t.no, first + i), records[i]!);
      await batch.write({ sync: true });
    } catch (err) {
      await batch.close();
      this.failedWrite(err);
      throw new RepriseError(
        'WAL_APPEND_FAILED',
        `append of ${n} records to WAL topic "${t.name}" (ids ${first}..${first + n - 1}) failed: ${(err as Error).message}`,
        { topic: t.name, firstId: first, records: n },
        { cause: err },
      );
    } finally {
      this.release();
    }
    // Acknowledged only once the high-water mark covers it: a log that later
    // ends below these ids has lost them, and says so at open.
    this.highWater.set(t.no, t.name, first + n);
    try {
      await this.highWater.persist();
    } catch (err) {
      throw new RepriseError(
        'WAL_APPEND_FAILED',
        `append of ${n} records to WAL topic "${t.name}" (ids ${first}..${first + n - 1}): the records are in LevelDB but its high-water file ` +
          `could not be written (${(err as Error).message}); not acknowledged, and the local WAL at ${this.dir} takes no more appends`,
        { topic: t.name, firstId: first, records: n },
        { cause: err },
      );
    }
    t.next = first + n;
    const ids = new Array<EntryId>(n);
    for (let i = 0; i < n; i++) ids[i] = first + i;
    if (t.tails.size > 0) {
      const appended = new Array<LogRecord>(n);
      const appendedAt = Date.now();
      for (let i = 0; i < n; i++) appended[i] = { id: first + i, data: records[i]!, appendedAt };
      for (const tail of t.tails) tail.offer(appended);
    }
    return ids;
  }

  /** Why appends fail now (LevelDB refuses writes until it is reopened), or undefined. */
  appendFailure(): string | undefined {
    const f = this.writeFailure;
    return f && `the local WAL at ${this.dir} refuses writes since ${new Date(f.since).toISOString()}: ${f.error}; it reopens LevelDB once there is space`;
  }

  /** Run `fn` on LevelDB (after a pending reopen); an I/O error it meets marks the store for one. */
  private async level<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    const db = await this.acquire();
    try {
      return await fn(db);
    } catch (err) {
      this.failedWrite(err);
      throw err;
    } finally {
      this.release();
    }
  }

  /** LevelDB, once any reopen it needs has succeeded; every call is paired with release(). */
  private async acquire(): Promise<Db> {
    if (this.writeFailure) await this.reopen();
    this.inUse++;
    return this.db;
  }

  private release(): void {
    if (--this.inUse === 0) this.idle?.();
  }

  /** A LevelDB I/O error (disk full): reopen before the next operation, and keep trying meanwhile. */
  private failedWrite(err: unknown): void {
    const cause = (err as { code?: string; cause?: { code?: string } }) ?? {};
    if (cause.code !== 'LEVEL_IO_ERROR' && cause.cause?.code !== 'LEVEL_IO_ERROR') return;
    if (this.writeFailure === undefined) {
      this.writeFailure = { error: (err as Error).message, since: Date.now() };
      this.logger.error({ dir: this.dir, err: (err as Error).message }, `local WAL at ${this.dir}: a write failed (${(err as Error).message}); LevelDB is reopened before the next one`);
    }
    this.scheduleReopen();
  }

  private scheduleReopen(): void {
    if (this.reopenTimer !== undefined || this.closing) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      if (this.writeFailure && !this.closing) this.reopen().catch(() => this.scheduleReopen());
    }, REOPEN_RETRY_MS);
    this.reopenTimer.unref();
  }

  /**
   * Close and open LevelDB again, once the operations inside it have
   * finished (new ones wait for this). Its recovery keeps every synced
   * batch; this process's topic state (next ids, bounds) stays as it is.
   * One at a time; UNAVAILABLE while it cannot open (the disk still full).
   */
  private reopen(): Promise<void> {
    this.reopening ??= (async () => {
      try {
        while (this.inUse > 0) await new Promise<void>((resolve) => (this.idle = resolve));
        this.idle = undefined;
        const failure = this.writeFailure;
        if (!failure) return;
        await this.db.close().catch(() => undefined);
        try {
          this.db = await openLevel(this.dir);
        } catch (err) {
          throw new RepriseError('UNAVAILABLE', `${this.appendFailure()}; reopening it failed: ${(err as Error).message}`, { dir: this.dir }, { cause: err });
        }
        this.writeFailure = undefined;
        this.logger.warn({ dir: this.dir }, `local WAL at ${this.dir}: reopened LevelDB ${Date.now() - failure.since} ms after a failed write (${failure.error}); writes go on`);
      } finally {
        this.reopening = undefined;
      }
    })();
    return this.reopening;
  }

  private withMeta<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.metaChain.then(fn);
    this.metaChain = run.catch(() => undefined);
    return run;
  }

  private checkOpen(): void {
    if (this.closing) throw new RepriseError('CLOSED', `the local WAL at ${this.dir} is closed`, { dir: this.dir });
  }

  private readError(topic: string, id: EntryId, err: unknown): RepriseError {
    if (this.closing) {
      return new RepriseError('CLOSED', `the local WAL at ${this.dir} was closed while reading topic "${topic}"`, {
        dir: this.dir,
        topic,
      });
    }
    // A table file LevelDB cannot read back (damaged, cut short) is as lost as a corrupt one.
    const code = (err as { code?: string }).code;
    const corruption = code === 'LEVEL_CORRUPTION' || code === 'LEVEL_IO_ERROR';
    return new RepriseError(
      corruption ? 'WAL_CORRUPT' : 'INTERNAL',
      `reading WAL topic "${topic}" at entry id ${id} failed: ${(err as Error).message}`,
      { topic, id },
      { cause: err },
    );
  }
}

async function openLevel(dir: string): Promise<Db> {
  const db: Db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  try {
    await db.open();
  } catch (err) {
    // abstract-level wraps the LevelDB error ("lock ... already held") as the cause.
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const reason = cause?.message ?? (err as Error).message;
    if (cause?.code === 'LEVEL_LOCKED') throw new RepriseError('INTERNAL', `cannot open the local WAL at ${dir}: it is in use by another process (${reason})`, { dir }, { cause: err });
    // Its own files damaged (a table, MANIFEST, CURRENT naming a manifest that is not there): no skipping past that.
    if (cause?.code === 'LEVEL_CORRUPTION' || (cause?.code === 'LEVEL_IO_ERROR' && /No such file/.test(reason))) {
      throw new RepriseError('WAL_CORRUPT', `the local WAL at ${dir} is damaged: LevelDB cannot open it: ${reason}. Nothing was changed; restore the WAL directory from a copy`, { dir }, { cause: err });
    }
    throw new RepriseError('INTERNAL', `cannot open the local WAL at ${dir}: ${reason}`, { dir }, { cause: err });
  }
  return db;
}

/** Every topic's metadata and holes; its next id from its last record (or its earliest id once pruned empty, or past a hole at the end). */
async function loadTopics(db: Db, dir: string): Promise<Map<string, TopicState>> {
  const topics = new Map<string, TopicState>();
  for await (const [key, value] of db.iterator({ gt: Uint8Array.of(META), lt: Uint8Array.of(META + 1) })) {
    const name = metaName(key);
    if (value.length !== META_VALUE_BYTES || value[0] !== META_FORMAT) {
      throw new RepriseError('WAL_CORRUPT', `local WAL at ${dir}: bad metadata for topic "${name}"`, { dir, topic: name });
    }
    const no = readU32(value, 1);
    const earliest = readU64(value, 5);
    const last = await db.keys({ gte: recordKey(no, 0), lte: recordKey(no, Number.MAX_SAFE_INTEGER), reverse: true, limit: 1 }).all();
    const next = last.length > 0 ? Math.max(earliest, readU64(last[0]!, 5) + 1) : earliest;
    topics.set(name, { name, no, earliest, next, holes: [], appending: Promise.resolve(), tails: new Set() });
  }
  const byNo = new Map([...topics.values()].map((t) => [t.no, t]));
  for await (const [key, value] of db.iterator({ gte: recordKey(0, 0, HOLE), lt: Uint8Array.of(HOLE + 1) })) {
    const k = parseRecordKey(key, HOLE);
    const t = k && byNo.get(k.no);
    if (!k || !t || value.length !== HOLE_VALUE_BYTES) continue;
    const to = readU64(value, 0);
    t.holes.push({ from: k.id, to });
    t.next = Math.max(t.next, to);
  }
  for (const t of topics.values()) t.holes.sort((a, b) => a.from - b.from);
  return topics;
}

/**
 * Skip-corrupt: every id between a topic's earliest and next id that holds
 * no record (and no hole yet) becomes a hole, persisted before the store
 * serves, so reads pass over it and it is never issued again. A hole that
 * took the first parts of a split entry also takes its remaining parts:
 * they cannot be read without the rest.
 */
async function recordHoles(db: Db, dir: string, topics: Map<string, TopicState>, logger: WalLogger): Promise<void> {
  for (const t of topics.values()) {
    const found: Hole[] = [];
    let expected = pastHoles(t.holes, t.earliest);
    const it = db.iterator({ gte: recordKey(t.no, t.earliest), lt: recordKey(t.no, t.next) });
    try {
      for (;;) {
        const batch = await it.nextv(READ_BATCH);
        if (batch.length === 0) break;
        for (const [key, data] of batch) {
          const id = readU64(key, 5);
          if (id < expected) continue; // in a hole
          if (id > expected) {
            // The record after the gap: a continuation part lost its entry's start, and goes with it.
            let to = id;
            const frame = continuation(id, data, t.name);
            if (frame) to = Math.min(t.next, id + (frame.parts - frame.part));
            found.push({ from: expected, to });
            expected = pastHoles(t.holes, to);
            if (to > id) continue;
          }
          expected = pastHoles(t.holes, id + 1);
        }
      }
    } finally {
      await it.close();
    }
    if (expected < t.next) found.push({ from: expected, to: t.next });
    const merged = mergeRanges(found);
    if (merged.length === 0) continue;
    await db.batch(
      merged.map((h) => ({ type: 'put' as const, key: recordKey(t.no, h.from, HOLE), value: u64Value(h.to) })),
      { sync: true },
    );
    for (const h of merged) {
      logger.error({ dir, topic: t.name, from: h.from, to: h.to }, `local WAL at ${dir}: topic "${t.name}" entry ids ${span(h.from, h.to)} are lost; reads skip them from now on and they are never issued again`);
    }
    t.holes = mergeRanges([...t.holes, ...merged]);
  }
}

/** The part index and count of a record that continues a split entry; undefined otherwise (or if it does not decode: the reader reports that). */
function continuation(id: EntryId, data: Uint8Array, topic: string): { part: number; parts: number } | undefined {
  try {
    const frame = decodeRecord({ id, data }, topic);
    return frame.part > 0 ? frame : undefined;
  } catch {
    return undefined;
  }
}

/** The first id at or after `id` that is not in a hole. */
function pastHoles(holes: readonly Hole[], id: EntryId): EntryId {
  for (const h of holes) {
    if (h.from > id) break;
    if (id < h.to) id = h.to;
  }
  return id;
}

/** Ids [from, to) for messages: "7", or "7..9". */
function span(from: EntryId, to: EntryId): string {
  return to - from === 1 ? String(from) : `${from}..${to - 1}`;
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

const stderrLogger: WalLogger = {
  info: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'info', ...obj, msg })}\n`),
  warn: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'warn', ...obj, msg })}\n`),
  error: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'error', ...obj, msg })}\n`),
};
