import type { EntryId, LogRecord, TailSubscription } from '../log-store.js';
import type { FetchResult } from './partition-reader.js';
import { sleep, abortable } from './retry.js';

/** What a tail needs from its store. */
export interface TailSource {
  readonly topic: string;
  /** How long a Fetch waits at the end of the log. */
  readonly waitMs: number;
  connect(): Promise<void>;
  /** Records from `id` on; undefined past the end of the log; WAL_TRUNCATED below its start. */
  fetch(id: EntryId, signal: AbortSignal): Promise<FetchResult | undefined>;
  /** False once the store is closing (tails then end without an error). */
  isOpen(): boolean;
  /** The tail has stopped: release its connection. */
  ended(): void;
}

/**
 * A tail: its own connection, Fetch long-polls from the next id to deliver,
 * one callback at a time. close() stops it between callbacks (or abandons a
 * waiting Fetch) and resolves once no callback runs; the connection then
 * closes in the background and the store's close() waits for that.
 */
export class KafkaTail implements TailSubscription {
  private readonly source: TailSource;
  private readonly onRecord: (record: LogRecord) => void | Promise<void>;
  private readonly onError: ((err: Error) => void) | undefined;
  private readonly abort = new AbortController();
  private pos: EntryId;
  private closed = false;
  private readonly done: Promise<void>;

  constructor(
    source: TailSource,
    from: EntryId,
    onRecord: (record: LogRecord) => void | Promise<void>,
    onError: ((err: Error) => void) | undefined,
  ) {
    this.source = source;
    this.pos = from;
    this.onRecord = onRecord;
    this.onError = onError;
    this.done = this.run();
  }

  /**
   * Stop delivery; resolves once no callback is running. Do not await it
   * from inside onRecord: that callback is what it waits for.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    await this.done;
  }

  private async run(): Promise<void> {
    try {
      await this.source.connect();
      while (!this.closed && this.source.isOpen()) {
        const batch = await abortable(this.source.fetch(this.pos, this.abort.signal), this.abort.signal);
        if (this.closed) break;
        if (!batch) {
          // Past the end of the log: wait for it to grow to `pos`.
          await sleep(this.source.waitMs, this.abort.signal);
          continue;
        }
        for (const r of batch.records) {
          if (this.closed) break;
          this.pos = r.id + 1;
          await this.onRecord(r);
        }
        if (!this.closed) this.pos = Math.max(this.pos, batch.next);
      }
    } catch (err) {
      if (!this.closed && this.source.isOpen()) {
        this.closed = true;
        this.onError?.(err as Error);
      }
    } finally {
      this.closed = true;
      this.source.ended();
    }
  }
}
