/**
 * The log: the one interface every WAL provider implements (local LevelDB,
 * Kafka). A topic is an append-only sequence of opaque records,
 * each with a topic-local entry id (the Kafka offset, or the local log's
 * sequence). Ids are assigned by the store, start at 0 and grow by one per
 * record. Records are bytes: framing, checksums and splitting live in the
 * codec above this interface, so every provider stores the same frames.
 */
export type EntryId = number;

export interface LogRecord {
  readonly id: EntryId;
  readonly data: Uint8Array;
  /**
   * When the record was appended (ms since the epoch), where the provider
   * knows it: Kafka's record timestamp (set by the producer), or the local
   * store's append time for records a live tail delivers. For follower lag.
   */
  readonly appendedAt?: number;
}

export interface TopicBounds {
  /** First id still held (after pruning/retention). Equals `next` when empty. */
  readonly earliest: EntryId;
  /** The id the next appended record will get (Kafka's high watermark). */
  readonly next: EntryId;
}

export interface ReadOptions {
  /** Exclusive upper bound; defaults to the topic's `next` at call time. */
  readonly to?: EntryId;
}

export interface TailSubscription {
  /** Stop delivering records; resolves once no callback is running. */
  close(): Promise<void>;
}

export interface LogStore {
  /** Provider name, for status and errors: 'local' | 'kafka'. */
  readonly provider: string;

  /** Why appends fail right now, if the store knows they will (local: LevelDB refuses writes until reopened); undefined otherwise. */
  appendFailure?(): string | undefined;

  /** Create the topic if it does not exist. Idempotent. */
  createTopic(topic: string): Promise<void>;

  /** Topics that exist, sorted. */
  listTopics(): Promise<string[]>;

  /**
   * Append records as one durable unit and return their ids, in order and
   * contiguous. Resolves only once the records are durable (local: a synced
   * write; Kafka: acks=all). Appends to one topic are applied in call order.
   * Rejects with WAL_APPEND_FAILED (nothing or all written, never a prefix
   * reported as success).
   */
  append(topic: string, records: readonly Uint8Array[]): Promise<EntryId[]>;

  /**
   * Records with from <= id < to, in id order. Rejects with WAL_TRUNCATED if
   * `from` is below the topic's earliest held id (never a silent gap). The
   * local store passes over ids an operator chose to skip as lost
   * (--wal-skip-corrupt); any other missing id is WAL_CORRUPT.
   */
  read(topic: string, from: EntryId, options?: ReadOptions): AsyncIterable<LogRecord>;

  /**
   * Deliver every record with id >= from, then each new one as it is
   * appended, in order, one callback at a time. `onError` gets a terminal
   * error (e.g. WAL_TRUNCATED) after which no more records are delivered.
   */
  tail(
    topic: string,
    from: EntryId,
    onRecord: (record: LogRecord) => void | Promise<void>,
    onError?: (err: Error) => void,
  ): Promise<TailSubscription>;

  /** Earliest held id and next id of a topic. Rejects NOT_FOUND for an unknown topic. */
  bounds(topic: string): Promise<TopicBounds>;

  /** Delete records with id < below (best effort for providers that can only mark). */
  prune(topic: string, below: EntryId): Promise<void>;

  close(): Promise<void>;
}
