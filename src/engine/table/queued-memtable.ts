import { RepriseError } from '../../errors.js';
import { decodeBody } from './codec.js';
import type { TableLayout } from './keys.js';
import { Memtable, RowBatch } from './memtable.js';
import type { Entry, ScanPlan } from './scan.js';

/**
 * How many bytes of memtable (Memtable.bytes, see its rowBytes) one byte of
 * a queued body stands for until it is indexed, so that flush-by-size
 * triggers at about the same point whether rows are indexed or queued.
 * Measured on the benchmark's rows (bench/lib/fixtures.ts metricsRows: two
 * string tags of 5 and ~15 characters, three float64 fields, a timestamp):
 * 59 body bytes per row, 153 memtable bytes, 2.6 to one. Rows of short
 * strings and nulls expand more (up to ~10x), long strings less (~2x); the
 * estimate is replaced by the real size as soon as a body is indexed.
 */
export const QUEUED_BODY_EXPANSION = 2.6;

/** A queued body whose decoding failed: the entry it came from and why. */
export class UnindexableEntry extends Error {
  constructor(
    readonly entryId: number,
    readonly reason: unknown,
  ) {
    super(`entry ${entryId}: ${reason instanceof Error ? reason.message : String(reason)}`);
  }
}

/**
 * Bodies shorter than this are copied into shared chunks; longer ones are
 * kept as they come. Sizes of those chunks: small for a quiet region,
 * doubling up to the largest.
 */
const COPY_BELOW = 1024;
const FIRST_CHUNK_BYTES = 4 * 1024;
const MAX_CHUNK_BYTES = 1024 * 1024;

const EMPTY = new Uint8Array(0);

/** Rows of the body being indexed (bodies are indexed one at a time, synchronously). */
const decoded = new RowBatch();

/**
 * A memtable that indexes on demand: WAL entry bodies are queued as they are
 * applied, in entry id order, and decoded into the time-series Memtable only
 * when something needs it indexed (a query, a flush, close, or idle time;
 * see TableRegion). Applying is then an append, whatever the body holds:
 * replaying or tailing a log costs no decoding, and a written entry none
 * on the acknowledgement path. (As in RocksDB's vector memtable: append now,
 * sort when read or flushed.)
 *
 * Small bodies (a row or a few) are copied into shared chunks rather than
 * kept as they come, each a view of its own WAL record buffer: a queue of
 * many small entries then holds a few big buffers and arrays of numbers,
 * not a buffer per entry for the garbage collector to move and track.
 * Larger bodies are kept as they are (copying them costs more than it saves).
 *
 * Order: bodies are indexed strictly from the head of the queue, one whole
 * body at a time, and every body queued after another is indexed after it,
 * so the memtable ends up exactly as if each had been applied on arrival.
 * A body is decoded and checked whole before any of its rows is inserted,
 * so an undecodable one is never partly applied: it stays at the head
 * (nothing after it is indexed) and each attempt throws UnindexableEntry.
 */
export class QueuedMemtable {
  private readonly layout: TableLayout;
  private readonly mem: Memtable;
  /** The chunk small bodies are copied into, and the bytes of it in use. */
  private chunk: Uint8Array | undefined;
  private used = 0;
  /** Per queued body, in order: its entry id, the bytes holding it (released once indexed), where in them and its length. */
  private ids: number[] = [];
  private holders: Uint8Array[] = [];
  private offsets: number[] = [];
  private lengths: number[] = [];
  /** Index of the next body to index. */
  private head = 0;
  private queuedBodyBytes = 0;
  private isFrozen = false;

  constructor(layout: TableLayout) {
    this.layout = layout;
    this.mem = new Memtable(layout);
  }

  /** Bodies queued, not yet indexed. */
  get queued(): number {
    return this.ids.length - this.head;
  }

  /** Indexed entries (rows and tombstones). */
  get size(): number {
    return this.mem.size;
  }

  /** Nothing indexed and nothing queued. */
  get empty(): boolean {
    return this.mem.size === 0 && this.ids.length === this.head;
  }

  /** Memory of the indexed rows (Memtable.bytes) plus the queued bodies at QUEUED_BODY_EXPANSION. */
  get bytes(): number {
    return this.mem.bytes + Math.round(this.queuedBodyBytes * QUEUED_BODY_EXPANSION);
  }

  /** Queue a body: entries come in id order. The body must not change afterwards (WAL bodies do not). */
  enqueue(entryId: number, body: Uint8Array): void {
    if (this.isFrozen) throw new RepriseError('INTERNAL', 'write to a frozen memtable');
    const n = body.length;
    this.ids.push(entryId);
    this.lengths.push(n);
    this.queuedBodyBytes += n;
    if (n >= COPY_BELOW) {
      this.holders.push(body);
      this.offsets.push(0);
      return;
    }
    let chunk = this.chunk;
    if (chunk === undefined || this.used + n > chunk.length) {
      chunk = this.chunk = new Uint8Array(chunk === undefined ? FIRST_CHUNK_BYTES : Math.min(MAX_CHUNK_BYTES, 2 * chunk.length));
      this.used = 0;
    }
    chunk.set(body, this.used);
    this.holders.push(chunk);
    this.offsets.push(this.used);
    this.used += n;
  }

  /** No more bodies: what is queued still gets indexed (then the memtable is immutable). */
  freeze(): void {
    this.isFrozen = true;
    this.chunk = undefined;
    if (this.queued === 0) this.mem.freeze();
  }

  /**
   * Index queued bodies in order until none is left, or until `deadline`
   * (a performance.now() time) has passed, at least one body per call.
   * Whether the queue is now empty. Throws UnindexableEntry on a body that
   * does not decode, which stays queued.
   */
  index(deadline = Infinity): boolean {
    const { ids, holders, offsets, lengths, layout, mem } = this;
    while (this.head < ids.length) {
      const k = this.head;
      let shape;
      try {
        shape = decodeBody(layout, holders[k], decoded, offsets[k], offsets[k] + lengths[k]);
      } catch (err) {
        throw new UnindexableEntry(ids[k], err);
      }
      mem.setRows(decoded, shape.rows, shape.op === 'delete');
      holders[k] = EMPTY;
      this.head = k + 1;
      this.queuedBodyBytes -= lengths[k];
      if (deadline !== Infinity && performance.now() >= deadline) break;
    }
    if (this.head === ids.length) {
      this.ids = [];
      this.holders = [];
      this.offsets = [];
      this.lengths = [];
      this.head = 0;
      if (this.isFrozen) mem.freeze();
      return true;
    }
    if (this.head >= 4096 && 2 * this.head >= ids.length) {
      // Drop the indexed part of a queue that grows while it is indexed.
      this.ids = ids.slice(this.head);
      this.holders = holders.slice(this.head);
      this.offsets = offsets.slice(this.head);
      this.lengths = lengths.slice(this.head);
      this.head = 0;
    }
    return false;
  }

  /** Memtable.scan of the indexed rows; the queue must have been indexed. */
  scan(plan?: ScanPlan): Generator<Entry> {
    if (this.queued > 0) throw new RepriseError('INTERNAL', 'scan of a memtable with mutations not indexed');
    return this.mem.scan(plan);
  }
}
