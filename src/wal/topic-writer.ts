import { deadlineExceeded, deadlinePassed, type Deadline } from '../deadline.js';
import { asRepriseError, RepriseError } from '../errors.js';
import { encodeEntry } from './codec.js';
import { DEFAULT_MAX_BATCH_BYTES, type Entry } from './entry.js';
import type { EntryId, LogStore } from './log-store.js';

export interface TopicWriterOptions {
  /**
   * Upper bound on the bytes of one store append, and so on each record (an
   * entry larger than this is split into records that go out in consecutive
   * appends). Default DEFAULT_MAX_BATCH_BYTES.
   */
  readonly maxBatchBytes?: number;
  /**
   * Called synchronously for each entry once it is durable, in id order,
   * before its append() promise resolves: the place to apply it to in-memory
   * state without racing later entries. If it throws, that entry's promise
   * rejects with the error (the entry stays in the log).
   */
  readonly onDurable?: (entry: Entry, id: EntryId) => void;
}

export interface TopicWriterStats {
  /** Successful store appends. */
  readonly appends: number;
  /** Records and bytes written by them. */
  readonly records: number;
  readonly bytes: number;
  /** Entries made durable. */
  readonly entries: number;
  /** Store appends that failed (their entries were rejected). */
  readonly failedAppends: number;
  /** Entries dropped unwritten because their caller's deadline passed while they queued. */
  readonly expired: number;
}

interface Pending {
  readonly entry: Entry;
  readonly records: Uint8Array[];
  readonly deadline: Deadline | undefined;
  /** How many of `records` have been handed to a store append. */
  sent: number;
  readonly resolve: (id: EntryId) => void;
  readonly reject: (err: Error) => void;
}

/** The part of one entry that goes into one store append. */
interface Segment {
  readonly pending: Pending;
  /** Index in the append of the segment's last record. */
  readonly lastIndex: number;
  /** Whether the segment ends with the entry's last record. */
  readonly completes: boolean;
}

/**
 * Group commit for one topic. One store append is in flight at a time; the
 * entries that arrive meanwhile queue and go out together in the next one, up
 * to maxBatchBytes. The queue is a stream of records taken in order, so an
 * entry split over several appends is never interleaved with other entries.
 * Each append() resolves with the entry's id (that of its last record) only
 * once all its records are durable; a failed store append rejects every
 * entry with a record in it (and the unsent rest of a split entry, which
 * would otherwise be an orphan continuation), and the writer carries on.
 */
export class TopicWriter {
  readonly topic: string;
  private readonly store: LogStore;
  private readonly maxBatchBytes: number;
  private readonly onDurable: ((entry: Entry, id: EntryId) => void) | undefined;
  private queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private closed = false;
  private counters = { appends: 0, records: 0, bytes: 0, entries: 0, failedAppends: 0, expired: 0 };

  constructor(store: LogStore, topic: string, opts: TopicWriterOptions = {}) {
    const maxBatchBytes = opts.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    if (!Number.isSafeInteger(maxBatchBytes) || maxBatchBytes <= 0) {
      throw new RepriseError(
        'INVALID_ARGUMENT',
        `TopicWriter for WAL topic "${topic}": maxBatchBytes must be a positive integer, got ${maxBatchBytes}`,
      );
    }
    this.store = store;
    this.topic = topic;
    this.maxBatchBytes = maxBatchBytes;
    this.onDurable = opts.onDurable;
  }

  get stats(): TopicWriterStats {
    return { ...this.counters };
  }

  /**
   * Append one entry; resolves with its id once durable. An entry whose
   * deadline passes before its append starts is dropped (DEADLINE_EXCEEDED).
   */
  append(entry: Entry, deadline?: Deadline): Promise<EntryId> {
    try {
      this.checkOpen();
      return this.enqueue(entry, encodeEntry(entry, this.maxBatchBytes), deadline);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Append entries in order; resolves with their ids. Nothing is queued if
   * any of them cannot be encoded.
   */
  appendMany(entries: readonly Entry[]): Promise<EntryId[]> {
    try {
      this.checkOpen();
      const encoded = entries.map((e) => encodeEntry(e, this.maxBatchBytes));
      return Promise.all(entries.map((e, i) => this.enqueue(e, encoded[i]!)));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Wait for the append in flight; entries still queued reject with CLOSED. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const p of this.queue.splice(0)) p.reject(this.closedError());
    }
    await this.running;
  }

  private enqueue(entry: Entry, records: Uint8Array[], deadline?: Deadline): Promise<EntryId> {
    return new Promise<EntryId>((resolve, reject) => {
      this.queue.push({ entry, records, deadline, sent: 0, resolve, reject });
      this.running ??= this.pump();
    });
  }

  private async pump(): Promise<void> {
    // Yield once so that entries appended in the same tick as the first one
    // share its append instead of waiting for the next.
    await Promise.resolve();
    while (this.dropExpired() > 0) await this.send(this.takeBatch());
    this.running = undefined;
  }

  /** Reject the queued entries whose caller stopped waiting (none of their records sent); returns how many remain. */
  private dropExpired(): number {
    const now = Date.now();
    if (this.queue.some((p) => p.sent === 0 && deadlinePassed(p.deadline, now))) {
      this.queue = this.queue.filter((p) => {
        if (p.sent > 0 || !deadlinePassed(p.deadline, now)) return true;
        this.counters.expired++;
        p.reject(deadlineExceeded(`an entry for WAL topic "${this.topic}"`, p.deadline, now));
        return false;
      });
    }
    return this.queue.length;
  }

  /** Take the longest run of queued records that fits maxBatchBytes (at least one record). */
  private takeBatch(): { records: Uint8Array[]; bytes: number; segments: Segment[] } {
    const records: Uint8Array[] = [];
    const segments: Segment[] = [];
    let bytes = 0;
    let taken = 0;
    for (const pending of this.queue) {
      const start = pending.sent;
      while (pending.sent < pending.records.length) {
        const record = pending.records[pending.sent]!;
        if (records.length > 0 && bytes + record.length > this.maxBatchBytes) break;
        records.push(record);
        bytes += record.length;
        pending.sent++;
      }
      if (pending.sent === start) break;
      const completes = pending.sent === pending.records.length;
      segments.push({ pending, lastIndex: records.length - 1, completes });
      if (!completes) break;
      taken++;
    }
    this.queue.splice(0, taken);
    return { records, bytes, segments };
  }

  private async send(batch: { records: Uint8Array[]; bytes: number; segments: Segment[] }): Promise<void> {
    let ids: EntryId[];
    try {
      ids = await this.store.append(this.topic, batch.records);
    } catch (err) {
      this.counters.failedAppends++;
      const error =
        err instanceof RepriseError
          ? err
          : new RepriseError(
              'WAL_APPEND_FAILED',
              `append of ${batch.records.length} records to WAL topic "${this.topic}" failed: ${(err as Error).message}`,
              { topic: this.topic },
              { cause: err },
            );
      for (const { pending } of batch.segments) pending.reject(error);
      // A split entry cut short by the failure must not send its remaining parts.
      const last = batch.segments[batch.segments.length - 1]!;
      if (!last.completes && this.queue[0] === last.pending) this.queue.shift();
      return;
    }
    this.counters.appends++;
    this.counters.records += batch.records.length;
    this.counters.bytes += batch.bytes;
    for (const { pending, lastIndex, completes } of batch.segments) {
      if (!completes) continue;
      const id = ids[lastIndex]!;
      this.counters.entries++;
      try {
        this.onDurable?.(pending.entry, id);
      } catch (err) {
        pending.reject(asRepriseError(err));
        continue;
      }
      pending.resolve(id);
    }
  }

  private checkOpen(): void {
    if (this.closed) throw this.closedError();
  }

  private closedError(): RepriseError {
    return new RepriseError('CLOSED', `the writer of WAL topic "${this.topic}" is closed`, { topic: this.topic });
  }
}
