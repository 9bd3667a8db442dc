import { Level } from 'level';
import { RepriseError } from '../errors.js';
import type { EntryId, LogRecord, LogStore, ReadOptions, TailSubscription, TopicBounds } from './log-store.js';

/**
 * The embedded WAL provider: every topic in one LevelDB.
 *
 * Layout (binary keys, so a topic's records sort by id):
 *   META | utf8(topic)                  -> FORMAT | u32 topic number | u64 earliest id
 *   RECORD | u32 topic number | u64 id  -> record bytes
 * Topics get a small number when created so that record keys are fixed-width
 * whatever the topic's name. A topic's next id is kept in memory and
 * recovered on open from its last record key (or its earliest id once pruned
 * empty).
 *
 * Every append is one synced LevelDB batch, so it is durable when it
 * resolves. Appends to one topic run one at a time in call order: that keeps
 * ids contiguous even when an append fails, because the next one reuses its
 * ids. Appends to different topics run concurrently and share LevelDB's own
 * group commit.
 */
const META = 0x01;
const RECORD = 0x02;
const META_FORMAT = 1;
const META_VALUE_BYTES = 13;
const RECORD_KEY_BYTES = 13;
const TWO_32 = 0x1_0000_0000;

/** Records fetched from LevelDB per iterator call when reading. */
const READ_BATCH = 1000;
/**
 * A live tail buffers appended records while it delivers earlier ones; past
 * this many bytes it drops the buffer and catches up from the store instead,
 * so a slow subscriber costs disk reads, not unbounded memory.
 */
const TAIL_BUFFER_MAX_BYTES = 16 * 1024 * 1024;

type Db = Level<Uint8Array, Uint8Array>;

interface TopicState {
  readonly name: string;
  readonly no: number;
  earliest: EntryId;
  next: EntryId;
  /** Settles when the last queued append has finished; appends chain on it. */
  appending: Promise<unknown>;
  readonly tails: Set<LocalTail>;
}

export class LocalLogStore implements LogStore {
  readonly provider = 'local';

  private readonly db: Db;
  private readonly dir: string;
  private readonly topics: Map<string, TopicState>;
  private nextTopicNo: number;
  /** Serialises topic creation and pruning (metadata writes). */
  private metaChain: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;

  private constructor(db: Db, dir: string, topics: Map<string, TopicState>) {
    this.db = db;
    this.dir = dir;
    this.topics = topics;
    let maxNo = -1;
    for (const t of topics.values()) maxNo = Math.max(maxNo, t.no);
    this.nextTopicNo = maxNo + 1;
  }

  /** Open (creating if needed) the log at `dir` and recover every topic's bounds. */
  static async open(dir: string): Promise<LocalLogStore> {
    const db: Db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
    try {
      await db.open();
    } catch (err) {
      // abstract-level wraps the LevelDB error ("lock ... already held") as the cause.
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const reason =
        cause?.code === 'LEVEL_LOCKED'
          ? `it is in use by another process (${cause.message})`
          : (cause?.message ?? (err as Error).message);
      throw new RepriseError('INTERNAL', `cannot open the local WAL at ${dir}: ${reason}`, { dir }, { cause: err });
    }
    try {
      const topics = new Map<string, TopicState>();
      const decoder = new TextDecoder();
      for await (const [key, value] of db.iterator({ gt: Uint8Array.of(META), lt: Uint8Array.of(META + 1) })) {
        const name = decoder.decode(key.subarray(1));
        if (value.length !== META_VALUE_BYTES || value[0] !== META_FORMAT) {
          throw new RepriseError('WAL_CORRUPT', `local WAL at ${dir}: bad metadata for topic "${name}"`, {
            dir,
            topic: name,
          });
        }
        const no = readU32(value, 1);
        const earliest = readU64(value, 5);
        const last = await db
          .keys({ gte: recordKey(no, 0), lte: recordKey(no, Number.MAX_SAFE_INTEGER), reverse: true, limit: 1 })
          .all();
        const next = last.length > 0 ? Math.max(earliest, readU64(last[0]!, 5) + 1) : earliest;
        topics.set(name, { name, no, earliest, next, appending: Promise.resolve(), tails: new Set() });
      }
      return new LocalLogStore(db, dir, topics);
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
      await this.db.put(metaKey(topic), metaValue(no, 0), { sync: true });
      this.topics.set(topic, { name: topic, no, earliest: 0, next: 0, appending: Promise.resolve(), tails: new Set() });
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
      await this.db.put(metaKey(topic), metaValue(t.no, earliest), { sync: true });
      // Set synchronously after the synced write: a read checks `earliest`
      // and opens its iterator (a LevelDB snapshot) in one step, so it either
      // sees the old bound and all its records, or the new bound.
      t.earliest = earliest;
      await this.db.clear({ gte: recordKey(t.no, 0), lt: recordKey(t.no, earliest) });
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
      await this.db.close();
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
   * Records with from <= id < min(to, next). `next` bounds the scan so that
   * a record is never seen before its append has been acknowledged (the
   * batch may be in LevelDB a moment before its promise resolves).
   */
  private async *scan(topic: string, from: EntryId, to: EntryId): AsyncGenerator<LogRecord> {
    const t = this.topic(topic);
    checkId(from, 'from', topic);
    if (from < t.earliest) {
      throw new RepriseError(
        'WAL_TRUNCATED',
        `WAL topic "${topic}" no longer holds entry id ${from}: earliest available id is ${t.earliest}`,
        { topic, needed: from, earliest: t.earliest },
      );
    }
    const end = Math.min(to, t.next);
    if (from >= end) return;
    const it = this.db.iterator({ gte: recordKey(t.no, from), lt: recordKey(t.no, end) });
    let expected = from;
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
          if (id !== expected) throw gap(topic, expected, id);
          expected++;
          yield { id, data };
        }
      }
    } finally {
      // The consumer may stop early: settle the prefetch before closing.
      await fetching.catch(() => undefined);
      await it.close();
    }
    if (expected !== end) throw gap(topic, expected, end);
  }

  private async write(t: TopicState, records: readonly Uint8Array[]): Promise<EntryId[]> {
    const first = t.next;
    const n = records.length;
    if (n === 0) return [];
    // A chained batch hands each put to LevelDB as it goes; several times
    // faster than db.batch(array) for thousands of records.
    const batch = this.db.batch();
    try {
      for (let i = 0; i < n; i++) batch.put(recordKey(t.no, first + i), records[i]!);
      await batch.write({ sync: true });
    } catch (err) {
      await batch.close();
      throw new RepriseError(
        'WAL_APPEND_FAILED',
        `append of ${n} records to WAL topic "${t.name}" (ids ${first}..${first + n - 1}) failed: ${(err as Error).message}`,
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
    const corruption = (err as { code?: string }).code === 'LEVEL_CORRUPTION';
    return new RepriseError(
      corruption ? 'WAL_CORRUPT' : 'INTERNAL',
      `reading WAL topic "${topic}" at entry id ${id} failed: ${(err as Error).message}`,
      { topic, id },
      { cause: err },
    );
  }
}

/**
 * A tail: catches up by scanning the store from its position, then delivers
 * records handed over by append() (offer) without touching the disk. The
 * position `pos` (the next id to deliver) advances before each callback, so
 * an append that lands while a callback runs is accepted into the buffer
 * exactly when it continues the stream; anything else is left to the next
 * scan. Either way every id is delivered once, in order.
 */
class LocalTail implements TailSubscription {
  /** Reads [from, to) of the topic from the store. */
  private readonly scan: (from: EntryId, to: EntryId) => AsyncGenerator<LogRecord>;
  private readonly t: TopicState;
  private readonly onRecord: (record: LogRecord) => void | Promise<void>;
  private readonly onError: ((err: Error) => void) | undefined;
  private pos: EntryId;
  /** Records offered but not yet delivered: buffer[head..], contiguous ids from pos. */
  private buffer: (LogRecord | undefined)[] = [];
  private head = 0;
  private bufferedBytes = 0;
  private closed = false;
  private wake: (() => void) | undefined;
  private readonly done: Promise<void>;

  constructor(
    scan: (from: EntryId, to: EntryId) => AsyncGenerator<LogRecord>,
    t: TopicState,
    from: EntryId,
    onRecord: (record: LogRecord) => void | Promise<void>,
    onError: ((err: Error) => void) | undefined,
  ) {
    this.scan = scan;
    this.t = t;
    this.pos = from;
    this.onRecord = onRecord;
    this.onError = onError;
    this.done = this.run();
  }

  /** Called by append() with freshly durable records, in id order. */
  offer(records: readonly LogRecord[]): void {
    if (this.closed) return;
    const buffered = this.head < this.buffer.length;
    const expected = buffered ? this.buffer[this.buffer.length - 1]!.id + 1 : this.pos;
    if (records[0]!.id === expected) {
      let bytes = 0;
      for (const r of records) bytes += r.data.length;
      if (this.bufferedBytes + bytes <= TAIL_BUFFER_MAX_BYTES) {
        for (const r of records) this.buffer.push(r);
        this.bufferedBytes += bytes;
      } else {
        // Too far behind: forget the buffer and catch up from the store.
        this.clearBuffer();
      }
    }
    this.signal();
  }

  /**
   * Stop delivery; resolves once no callback is running. Do not await it
   * from inside onRecord: that callback is what it waits for.
   */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.clearBuffer();
      this.signal();
    }
    await this.done;
    this.t.tails.delete(this);
  }

  private async run(): Promise<void> {
    try {
      while (!this.closed) {
        if (this.head < this.buffer.length) {
          const r = this.buffer[this.head]!;
          if (r.id !== this.pos) {
            this.clearBuffer();
            continue;
          }
          this.buffer[this.head++] = undefined; // release it for GC while the rest waits
          this.bufferedBytes -= r.data.length;
          if (this.head === this.buffer.length) this.clearBuffer();
          await this.deliver(r);
        } else if (this.pos < this.t.next) {
          for await (const r of this.scan(this.pos, this.t.next)) {
            if (this.closed) break;
            await this.deliver(r);
          }
        } else {
          await new Promise<void>((resolve) => (this.wake = resolve));
        }
      }
    } catch (err) {
      if (!this.closed) {
        this.closed = true;
        this.clearBuffer();
        this.t.tails.delete(this);
        this.onError?.(err as Error);
      }
    }
  }

  private async deliver(r: LogRecord): Promise<void> {
    this.pos = r.id + 1;
    await this.onRecord(r);
  }

  private clearBuffer(): void {
    this.buffer = [];
    this.head = 0;
    this.bufferedBytes = 0;
  }

  private signal(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

function gap(topic: string, expected: EntryId, found: EntryId): RepriseError {
  return new RepriseError(
    'WAL_CORRUPT',
    `WAL topic "${topic}" is missing entry id ${expected} (next record found: ${found})`,
    { topic, expected, found },
  );
}

function checkId(id: EntryId, what: string, topic: string): void {
  if (!Number.isSafeInteger(id) || id < 0) {
    throw new RepriseError('INVALID_ARGUMENT', `WAL topic "${topic}": ${what} must be an entry id (>= 0), got ${id}`, {
      topic,
    });
  }
}

const encoder = new TextEncoder();

function metaKey(topic: string): Uint8Array {
  const name = encoder.encode(topic);
  const key = new Uint8Array(1 + name.length);
  key[0] = META;
  key.set(name, 1);
  return key;
}

function metaValue(no: number, earliest: EntryId): Uint8Array {
  const v = new Uint8Array(META_VALUE_BYTES);
  v[0] = META_FORMAT;
  writeU32(v, 1, no);
  writeU64(v, 5, earliest);
  return v;
}

function recordKey(no: number, id: EntryId): Uint8Array {
  const key = new Uint8Array(RECORD_KEY_BYTES);
  key[0] = RECORD;
  writeU32(key, 1, no);
  writeU64(key, 5, id);
  return key;
}

function writeU32(buf: Uint8Array, p: number, v: number): void {
  buf[p] = v >>> 24;
  buf[p + 1] = (v >>> 16) & 0xff;
  buf[p + 2] = (v >>> 8) & 0xff;
  buf[p + 3] = v & 0xff;
}

function writeU64(buf: Uint8Array, p: number, v: number): void {
  writeU32(buf, p, Math.floor(v / TWO_32));
  writeU32(buf, p + 4, v >>> 0);
}

function readU32(buf: Uint8Array, p: number): number {
  return ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
}

function readU64(buf: Uint8Array, p: number): number {
  return readU32(buf, p) * TWO_32 + readU32(buf, p + 4);
}
