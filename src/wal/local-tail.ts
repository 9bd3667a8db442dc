import type { EntryId, LogRecord, TailSubscription } from './log-store.js';

/**
 * A live tail buffers appended records while it delivers earlier ones; past
 * this many bytes it drops the buffer and catches up from the store instead,
 * so a slow subscriber costs disk reads, not unbounded memory.
 */
const TAIL_BUFFER_MAX_BYTES = 16 * 1024 * 1024;

/** What a tail reads of its topic's state in the store: where the log ends, and the tails it offers appends to. */
export interface TailedTopic {
  readonly next: EntryId;
  readonly tails: Set<LocalTail>;
}

/**
 * A tail: catches up by scanning the store from its position, then delivers
 * records handed over by append() (offer) without touching the disk. The
 * position `pos` (the next id to deliver) advances before each callback, so
 * an append that lands while a callback runs is accepted into the buffer
 * exactly when it continues the stream; anything else is left to the next
 * scan. Either way every id is delivered once, in order.
 */
export class LocalTail implements TailSubscription {
  /** Reads [from, to) of the topic from the store. */
  private readonly scan: (from: EntryId, to: EntryId) => AsyncGenerator<LogRecord>;
  private readonly t: TailedTopic;
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
    t: TailedTopic,
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


