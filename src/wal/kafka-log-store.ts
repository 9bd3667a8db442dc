import {
  Kafka,
  logLevel as KafkaLogLevel,
  type Admin,
  type Assigner,
  type Cluster,
  type Consumer,
  type KafkaConfig,
  type Producer,
} from 'kafkajs';
import { RepriseError } from '../errors.js';
import { checkId, walGap, walTruncated } from './log-errors.js';
import type { EntryId, LogRecord, LogStore, ReadOptions, TailSubscription, TopicBounds } from './log-store.js';

/**
 * Topic configs reprise sets when it creates a topic: no retention by time
 * or size. reprise deletes a shard's entries itself once its regions have
 * flushed them (DeleteRecords), and never deletes meta's log; a broker's
 * default retention (7 days) would delete entries no region has flushed yet,
 * and the head of meta's log, which then cannot be folded (WAL_TRUNCATED).
 */
const WAL_TOPIC_CONFIG = [
  { name: 'retention.ms', value: '-1' },
  { name: 'retention.bytes', value: '-1' },
];

/**
 * The Kafka WAL provider (kafkajs). One WAL topic is one Kafka topic, and only
 * its partition 0 is used: an entry id is the record's offset in partition 0.
 *
 * Writes: one idempotent producer, acks=all, one produce request per append
 * (one record batch), so an append is all or nothing and its ids are the
 * batch's base offset onwards. Appends to one topic run one at a time in call
 * order.
 *
 * Reads and tails fetch partition 0 directly from its leader, without a
 * consumer group. kafkajs has no group-less `assign`, and joining a fresh
 * group costs the broker's initial rebalance delay on every read (3 s on
 * librdkafka's mock cluster, where it is fixed; 3 s by default on Kafka), far
 * too slow for replay at region open. kafkajs does hand its cluster handle to
 * custom partition assigners (a documented extension point whose `Cluster`
 * and `Broker` types, `Broker.fetch` included, are part of kafkajs's published
 * typings). A consumer that is connected but never `run` therefore gives us
 * leader lookup, metadata refresh and the Fetch request with kafkajs's own
 * record-batch decoding, and no group is ever joined. Measured on the mock
 * cluster: first record of a read ~1 ms, of a tail ~2 ms, ~5 ms from opening
 * a new store; through a consumer group ~3 s, whatever the timeouts.
 * Reads share one such connection and never long-poll; every tail has its own
 * (a long-polling Fetch holds up the requests queued behind it on a
 * connection).
 *
 * Pruning uses DeleteRecords where the cluster allows it. Where it does not
 * (the mock cluster has no DeleteRecords), the store keeps a logical low-water
 * mark per topic, in memory: `bounds().earliest`, reads and tails treat ids
 * below it exactly as deleted. Nothing persists it: after a restart a shard
 * prunes below its regions' flushed ids again once it has replayed
 * (ShardActor.pruneBelowFlushed), which restores the mark from the
 * manifests. `logicalEarliest(topic)` and the `logicalEarliest` option carry
 * a mark across opens of a store explicitly (tests, tools).
 */
export interface KafkaLogStoreOptions {
  /** Bootstrap brokers, `host:port` (GreptimeDB: `broker_endpoints`). */
  readonly brokers: readonly string[];
  readonly clientId?: string;
  /**
   * Replication factor of the topics this store creates. Defaults to 1 so a
   * single-broker development cluster works; production clusters want 3.
   */
  readonly replicationFactor?: number;
  /** TCP connect timeout per broker (kafkajs `connectionTimeout`). Default 1000. */
  readonly connectionTimeoutMs?: number;
  /** Request timeout (kafkajs `requestTimeout`). Default 30000. */
  readonly requestTimeoutMs?: number;
  /** TLS options, passed to kafkajs as is. */
  readonly ssl?: KafkaConfig['ssl'];
  /** SASL options, passed to kafkajs as is. */
  readonly sasl?: KafkaConfig['sasl'];
  /**
   * kafkajs's own log level. Default NOTHING: failures reach the caller as
   * RepriseErrors; raise it to see kafkajs's connection chatter.
   */
  readonly logLevel?: KafkaLogLevel;
  /**
   * Idempotent producer (default true): kafkajs's retries of an append can
   * then never duplicate records. kafkajs asks the cluster's controller for a
   * producer id, so this needs a cluster that reports a real controller;
   * librdkafka's mock cluster reports controller 0, which is none of its
   * brokers, and needs `false`. Without idempotence kafkajs does not retry
   * appends at all; the store itself retries only errors that prove nothing
   * was written.
   */
  readonly idempotent?: boolean;
  /**
   * How long a tail's Fetch waits at the end of the log for new records
   * (GreptimeDB: `consumer_wait_timeout`). Default 100.
   */
  readonly consumerWaitTimeoutMs?: number;
  /** Largest Fetch response asked for, in bytes. Default 4 MiB. */
  readonly fetchMaxBytes?: number;
  /** First delay before retrying a transient failure (leader moved, broker unreachable). Default 100. */
  readonly backoffInitMs?: number;
  /** Longest delay between retries. Default 2000. */
  readonly backoffMaxMs?: number;
  /** Give up retrying a transient failure after this long. Default 30000. */
  readonly backoffDeadlineMs?: number;
  /** Timeout for creating a topic and waiting for its leader. Default 30000. */
  readonly createTopicTimeoutMs?: number;
  /**
   * Keep a logical low-water mark when the cluster refuses DeleteRecords
   * (default true). With false, prune() fails on such a cluster.
   */
  readonly logicalPrune?: boolean;
  /** Logical low-water marks to start from (what `logicalEarliest` returned before). */
  readonly logicalEarliest?: Readonly<Record<string, EntryId>>;
}

const DEFAULTS = {
  clientId: 'reprise',
  replicationFactor: 1,
  connectionTimeoutMs: 1000,
  requestTimeoutMs: 30_000,
  consumerWaitTimeoutMs: 100,
  fetchMaxBytes: 4 * 1024 * 1024,
  backoffInitMs: 100,
  backoffMaxMs: 2000,
  backoffDeadlineMs: 30_000,
  createTopicTimeoutMs: 30_000,
};

type Settings = typeof DEFAULTS & { readonly idempotent: boolean; readonly logicalPrune: boolean };

/** Kafka's legal topic names. */
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;
const PARTITION = 0;

export class KafkaLogStore implements LogStore {
  readonly provider = 'kafka';

  private readonly kafka: Kafka;
  private readonly settings: Settings;
  private readonly producer: Producer;
  private readonly admin: Admin;
  /** Shared by all reads; never long-polls. */
  private readonly reader: PartitionReader;
  private readonly description: string;
  /** Topics known to exist. Only ever grows: this store never deletes topics. */
  private readonly known = new Set<string>();
  private readonly creating = new Map<string, Promise<void>>();
  /** Per topic: settles when the last queued append has finished. */
  private readonly appending = new Map<string, Promise<unknown>>();
  private readonly logical = new Map<string, EntryId>();
  private readonly tails = new Set<KafkaTail>();
  /** Tail connections still shutting down; close() waits for them. */
  private readonly disconnecting = new Set<Promise<void>>();
  /** Whether CreateTopics can be sent (the cluster has a reachable controller); decided once. */
  private controllerUsable: Promise<boolean> | undefined;
  /** Set once the cluster has refused DeleteRecords for good. */
  private deleteRecordsRefused: string | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    kafka: Kafka,
    settings: Settings,
    description: string,
    producer: Producer,
    admin: Admin,
    reader: PartitionReader,
  ) {
    this.kafka = kafka;
    this.settings = settings;
    this.description = description;
    this.producer = producer;
    this.admin = admin;
    this.reader = reader;
  }

  /** Connect to the cluster. Rejects INVALID_ARGUMENT for bad options, INTERNAL if the cluster is unusable. */
  static async open(options: KafkaLogStoreOptions): Promise<KafkaLogStore> {
    const brokers = [...(options.brokers ?? [])];
    if (brokers.length === 0 || brokers.some((b) => typeof b !== 'string' || b.length === 0)) {
      throw new RepriseError(
        'INVALID_ARGUMENT',
        `Kafka WAL: brokers must be a non-empty list of host:port, got ${JSON.stringify(options.brokers)}`,
      );
    }
    const settings: Settings = {
      clientId: options.clientId ?? DEFAULTS.clientId,
      replicationFactor: positive(options.replicationFactor, DEFAULTS.replicationFactor, 'replicationFactor'),
      connectionTimeoutMs: positive(options.connectionTimeoutMs, DEFAULTS.connectionTimeoutMs, 'connectionTimeoutMs'),
      requestTimeoutMs: positive(options.requestTimeoutMs, DEFAULTS.requestTimeoutMs, 'requestTimeoutMs'),
      consumerWaitTimeoutMs: positive(
        options.consumerWaitTimeoutMs,
        DEFAULTS.consumerWaitTimeoutMs,
        'consumerWaitTimeoutMs',
      ),
      fetchMaxBytes: positive(options.fetchMaxBytes, DEFAULTS.fetchMaxBytes, 'fetchMaxBytes'),
      backoffInitMs: positive(options.backoffInitMs, DEFAULTS.backoffInitMs, 'backoffInitMs'),
      backoffMaxMs: positive(options.backoffMaxMs, DEFAULTS.backoffMaxMs, 'backoffMaxMs'),
      backoffDeadlineMs: positive(options.backoffDeadlineMs, DEFAULTS.backoffDeadlineMs, 'backoffDeadlineMs'),
      createTopicTimeoutMs: positive(options.createTopicTimeoutMs, DEFAULTS.createTopicTimeoutMs, 'createTopicTimeoutMs'),
      idempotent: options.idempotent ?? true,
      logicalPrune: options.logicalPrune ?? true,
    };
    const description = `Kafka WAL at ${brokers.join(',')}`;
    const kafka = new Kafka({
      brokers,
      clientId: settings.clientId,
      connectionTimeout: settings.connectionTimeoutMs,
      requestTimeout: settings.requestTimeoutMs,
      logLevel: options.logLevel ?? KafkaLogLevel.NOTHING,
      ...(options.ssl !== undefined ? { ssl: options.ssl } : {}),
      ...(options.sasl !== undefined ? { sasl: options.sasl } : {}),
    });
    const producer = kafka.producer({
      idempotent: settings.idempotent,
      // One request in flight: a retried batch can never overtake the next one.
      maxInFlightRequests: 1,
      // Appends to a topic this store has not seen created fail (NOT_FOUND)
      // before they reach the producer; never let a typo create a topic.
      allowAutoTopicCreation: false,
      // Every record goes to partition 0 (messages also name it explicitly).
      createPartitioner: () => () => PARTITION,
      // Without idempotence a retry after an ambiguous failure could write a
      // batch twice; the store retries only provably unwritten appends.
      retry: settings.idempotent
        ? { initialRetryTime: settings.backoffInitMs, maxRetryTime: settings.backoffMaxMs, retries: 10 }
        : { retries: 0 },
    });
    const admin = kafka.admin();
    const reader = new PartitionReader(kafka, settings, `${settings.clientId}-reader`, false);
    const store = new KafkaLogStore(kafka, settings, description, producer, admin, reader);
    for (const [topic, id] of Object.entries(options.logicalEarliest ?? {})) {
      checkId(id, 'logicalEarliest', topic);
      store.logical.set(topic, id);
    }
    try {
      await admin.connect();
      await reader.connect();
      try {
        await producer.connect();
      } catch (err) {
        throw await store.producerConnectError(err);
      }
    } catch (err) {
      await Promise.allSettled([producer.disconnect(), admin.disconnect(), reader.disconnect()]);
      if (err instanceof RepriseError) throw err;
      throw new RepriseError('INTERNAL', `cannot connect to the ${description}: ${describe(err)}`, { brokers }, {
        cause: err,
      });
    }
    return store;
  }

  /**
   * Create the topic with one partition, idempotently.
   *
   * CreateTopics must go to the controller. librdkafka's mock cluster has no
   * CreateTopics and reports controller id 0, which is none of its brokers,
   * so when the reported controller is not a broker the store instead asks
   * for the topic's metadata with auto-creation allowed (the mock creates
   * such topics with 4 partitions, and a real cluster with auto-creation
   * enabled uses its default count: either way only partition 0 is used).
   * The choice is made once per store from DescribeCluster, rather than by
   * waiting for CreateTopics to fail through kafkajs's retries.
   */
  async createTopic(topic: string): Promise<void> {
    checkTopicName(topic);
    this.checkOpen();
    if (this.known.has(topic)) return;
    let pending = this.creating.get(topic);
    if (!pending) {
      pending = this.create(topic).finally(() => this.creating.delete(topic));
      this.creating.set(topic, pending);
    }
    await pending;
  }

  /** The cluster's topics, sorted, without Kafka's internal `__` topics. */
  async listTopics(): Promise<string[]> {
    this.checkOpen();
    let topics: string[];
    try {
      topics = await this.admin.listTopics();
    } catch (err) {
      throw this.failure(`cannot list the topics of the ${this.description}`, err);
    }
    const listed = topics.filter((t) => !t.startsWith('__')).sort();
    for (const t of listed) this.known.add(t);
    return listed;
  }

  append(topic: string, records: readonly Uint8Array[]): Promise<EntryId[]> {
    try {
      this.checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const previous = this.appending.get(topic) ?? Promise.resolve();
    const run = previous.then(() => this.write(topic, records));
    this.appending.set(
      topic,
      run.catch(() => undefined),
    );
    return run;
  }

  read(topic: string, from: EntryId, options?: ReadOptions): AsyncIterable<LogRecord> {
    // The first fetch starts now, so `to` defaults to the high watermark at
    // call time, as the contract says; errors surface when iteration starts.
    const start = this.startRead(topic, from, options?.to);
    start.catch(() => undefined);
    return { [Symbol.asyncIterator]: () => this.readFrom(topic, start) };
  }

  async tail(
    topic: string,
    from: EntryId,
    onRecord: (record: LogRecord) => void | Promise<void>,
    onError?: (err: Error) => void,
  ): Promise<TailSubscription> {
    await this.ensureTopic(topic);
    checkId(from, 'from', topic);
    // Its own connection: a long-polling Fetch holds up whatever is queued
    // behind it on a connection, and reads must not wait for a tail.
    const reader = new PartitionReader(this.kafka, this.settings, `${this.settings.clientId}-tail`, false);
    const waitMs = this.settings.consumerWaitTimeoutMs;
    const source: TailSource = {
      topic,
      waitMs,
      connect: () => reader.connect(),
      fetch: (id, signal) => {
        this.checkLogical(topic, id);
        return this.fetch(reader, topic, id, waitMs, signal);
      },
      isOpen: () => !this.closing,
      ended: () => {
        this.tails.delete(tail);
        const disconnected = reader.disconnect().catch(() => undefined);
        this.disconnecting.add(disconnected);
        void disconnected.finally(() => this.disconnecting.delete(disconnected));
      },
    };
    const tail = new KafkaTail(source, from, onRecord, onError);
    this.tails.add(tail);
    return tail;
  }

  async bounds(topic: string): Promise<TopicBounds> {
    await this.ensureTopic(topic);
    const { low, high } = await this.offsets(topic);
    const earliest = Math.max(low, this.logical.get(topic) ?? 0);
    return { earliest: Math.min(earliest, high), next: high };
  }

  /**
   * Delete records below `below` (clamped to the next id). The logical mark
   * moves first (when enabled), so reads below it fail at once whatever the
   * broker does; then DeleteRecords frees the space where the cluster allows
   * it. A cluster that refuses DeleteRecords for good (unsupported, denied by
   * ACL or policy) is not asked again by this store.
   */
  async prune(topic: string, below: EntryId): Promise<void> {
    await this.ensureTopic(topic);
    checkId(below, 'below', topic);
    const { low, high } = await this.offsets(topic);
    const target = Math.min(below, high);
    if (this.settings.logicalPrune && target > (this.logical.get(topic) ?? 0)) this.logical.set(topic, target);
    if (target <= low) return;
    if (this.deleteRecordsRefused === undefined) {
      try {
        await this.admin.deleteTopicRecords({ topic, partitions: [{ partition: PARTITION, offset: String(target) }] });
        return;
      } catch (err) {
        const refusal = deleteRecordsRefusal(err);
        if (!refusal) throw this.failure(`pruning WAL topic "${topic}" below entry id ${target} failed`, err, { topic });
        this.deleteRecordsRefused = refusal;
      }
    }
    if (!this.settings.logicalPrune) {
      throw new RepriseError(
        'INTERNAL',
        `cannot prune WAL topic "${topic}": the ${this.description} refuses DeleteRecords ` +
          `(${this.deleteRecordsRefused}) and logicalPrune is off`,
        { topic },
      );
    }
  }

  /**
   * The logical low-water mark of a topic (0 if never pruned logically): ids
   * below it read as deleted. Persist it to carry it across a reopen.
   */
  logicalEarliest(topic: string): EntryId {
    return this.logical.get(topic) ?? 0;
  }

  /** Stop tails, finish the appends accepted before close(), disconnect. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.appending.values(), ...this.creating.values()]);
      await Promise.allSettled([...this.tails].map((t) => t.close()));
      await Promise.allSettled([...this.disconnecting]);
      await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect(), this.reader.disconnect()]);
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------
  // Internals

  /** Fail with WAL_TRUNCATED if `id` is below the topic's logical mark. */
  private checkLogical(topic: string, id: EntryId): void {
    const mark = this.logical.get(topic) ?? 0;
    if (id < mark) throw walTruncated(topic, id, mark);
  }

  /**
   * A Fetch at `id` was out of range: WAL_TRUNCATED if `id` is below the
   * earliest held id (else it is past the end).
   */
  private async outOfRange(topic: string, id: EntryId): Promise<TopicBounds> {
    const bounds = await this.bounds(topic);
    if (id < bounds.earliest) throw walTruncated(topic, id, bounds.earliest);
    return bounds;
  }

  private async create(topic: string): Promise<void> {
    if ((await this.listTopics()).includes(topic)) return;
    this.controllerUsable ??= this.hasUsableController();
    const viaController = await this.controllerUsable;
    try {
      if (viaController) {
        await this.admin.createTopics({
          waitForLeaders: true,
          timeout: this.settings.createTopicTimeoutMs,
          topics: [{ topic, numPartitions: 1, replicationFactor: this.settings.replicationFactor, configEntries: WAL_TOPIC_CONFIG }],
        });
      } else {
        await this.autoCreate(topic);
      }
    } catch (err) {
      throw this.failure(`cannot create WAL topic "${topic}" on the ${this.description}`, err, { topic });
    }
    if (!viaController && !(await this.listTopics()).includes(topic)) {
      throw new RepriseError(
        'INTERNAL',
        `cannot create WAL topic "${topic}": the ${this.description} has no usable controller for CreateTopics ` +
          `and did not auto-create the topic`,
        { topic },
      );
    }
    this.known.add(topic);
  }

  private async hasUsableController(): Promise<boolean> {
    try {
      const { brokers, controller } = await this.admin.describeCluster();
      return controller !== null && brokers.some((b) => b.nodeId === controller);
    } catch (err) {
      this.controllerUsable = undefined; // decide again next time
      throw this.failure(`cannot describe the ${this.description}`, err);
    }
  }

  /** Ask for the topic's metadata with auto-creation allowed, then wait for partition 0's leader. */
  private async autoCreate(topic: string): Promise<void> {
    const creator = new PartitionReader(this.kafka, this.settings, `${this.settings.clientId}-creator`, true);
    try {
      await creator.connect();
      await creator.waitForLeader(topic, Date.now() + this.settings.createTopicTimeoutMs);
    } finally {
      await creator.disconnect().catch(() => undefined);
    }
  }

  /**
   * NOT_FOUND unless the topic exists. Checked against the full topic list,
   * never by naming the topic in a metadata request: the mock cluster
   * auto-creates any topic named there, whatever the client asks.
   */
  private async ensureTopic(topic: string, checkOpen = true): Promise<void> {
    if (checkOpen) this.checkOpen();
    if (this.known.has(topic)) return;
    if (!(await this.listTopics()).includes(topic)) {
      throw new RepriseError('NOT_FOUND', `WAL topic "${topic}" does not exist`, { topic });
    }
  }

  private async offsets(topic: string): Promise<{ low: number; high: number }> {
    // A read: any failure is retried. A broker whose metadata lags (e.g. for
    // a topic just created) may answer without the topic, which kafkajs
    // reports as a TypeError.
    const deadline = Date.now() + this.settings.backoffDeadlineMs;
    let partitions: { partition: number; low: string; high: string }[];
    try {
      partitions = await withBackoff(this.settings, deadline, () => !this.closing, () => this.admin.fetchTopicOffsets(topic));
    } catch (err) {
      throw this.failure(`cannot read the offsets of WAL topic "${topic}"`, err, { topic });
    }
    const p = partitions.find((x) => x.partition === PARTITION);
    if (!p) throw new RepriseError('INTERNAL', `WAL topic "${topic}" has no partition ${PARTITION}`, { topic });
    return { low: Number(p.low), high: Number(p.high) };
  }

  private async write(topic: string, records: readonly Uint8Array[]): Promise<EntryId[]> {
    const n = records.length;
    // Open or not: close() lets the appends accepted before it finish.
    await this.ensureTopic(topic, false);
    if (n === 0) return [];
    const messages = records.map((r) => ({
      partition: PARTITION,
      value: Buffer.from(r.buffer, r.byteOffset, r.byteLength),
    }));
    const send = async (): Promise<EntryId[]> => {
      const result = await this.producer.send({ topic, acks: -1, messages });
      const meta = result.find((m) => m.partition === PARTITION);
      const base = Number(meta?.baseOffset);
      if (!meta || !Number.isSafeInteger(base) || base < 0 || meta.errorCode !== 0) {
        throw new Error(`unexpected produce response ${JSON.stringify(result)}`);
      }
      const ids = new Array<EntryId>(n);
      for (let i = 0; i < n; i++) ids[i] = base + i;
      return ids;
    };
    const deadline = Date.now() + this.settings.backoffDeadlineMs;
    try {
      // Retry only what certainly did not write anything; an ambiguous
      // failure (timeout, connection lost mid-request) is the caller's.
      return await withBackoff(this.settings, deadline, (err) => !this.closing && provablyNotWritten(err), send);
    } catch (err) {
      throw new RepriseError(
        'WAL_APPEND_FAILED',
        `append of ${n} records to WAL topic "${topic}" failed: ${describe(err)}`,
        { topic, records: n },
        { cause: err },
      );
    }
  }

  /** Validate, then the first Fetch; `end` is fixed here. */
  private async startRead(topic: string, from: EntryId, to: EntryId | undefined): Promise<ReadStart> {
    await this.ensureTopic(topic);
    checkId(from, 'from', topic);
    if (to !== undefined) checkId(to, 'to', topic);
    this.checkLogical(topic, from);
    if (to !== undefined && from >= to) {
      await this.outOfRange(topic, from); // still reject a truncated `from`
      return { from, end: from, first: undefined };
    }
    const first = await this.fetch(this.reader, topic, from, 0);
    if (!first) return { from, end: from, first: undefined }; // past the end
    const end = Math.min(to ?? first.highWatermark, first.highWatermark);
    return { from, end, first };
  }

  private async *readFrom(topic: string, start: Promise<ReadStart>): AsyncGenerator<LogRecord> {
    const { from, end, first } = await start;
    if (!first || from >= end) return;
    let batch: FetchResult = first;
    for (;;) {
      const pos = batch.next;
      // Ask for the next batch before handing out this one, so the network
      // works while the consumer decodes.
      const more = pos < end ? this.fetch(this.reader, topic, pos, 0) : undefined;
      more?.catch(() => undefined);
      for (const r of batch.records) {
        if (r.id >= end) return;
        yield r;
      }
      if (!more) return;
      const next = await more;
      if (!next) throw walGap(topic, pos, end);
      if (next.next === pos) throw walGap(topic, pos, next.highWatermark);
      batch = next;
    }
  }

  /**
   * Fetch from `id` through `reader`; undefined when `id` is past the end
   * of the log. WAL_TRUNCATED if `id` is no longer held.
   */
  private async fetch(
    reader: PartitionReader,
    topic: string,
    id: EntryId,
    maxWaitMs: number,
    signal?: AbortSignal,
  ): Promise<FetchResult | undefined> {
    let result: FetchResult | 'out-of-range';
    try {
      result = await reader.fetch(topic, id, maxWaitMs, signal);
    } catch (err) {
      if (this.closing && !(err instanceof RepriseError)) {
        throw new RepriseError('CLOSED', `the ${this.description} was closed while reading topic "${topic}"`, { topic }, {
          cause: err,
        });
      }
      throw this.failure(`reading WAL topic "${topic}" at entry id ${id} failed`, err, { topic, id });
    }
    if (result === 'out-of-range') {
      await this.outOfRange(topic, id);
      return undefined;
    }
    return result;
  }

  private checkOpen(): void {
    if (this.closing) throw new RepriseError('CLOSED', `the ${this.description} is closed`);
  }

  private failure(message: string, err: unknown, details?: Record<string, unknown>): RepriseError {
    if (err instanceof RepriseError) return err;
    return new RepriseError('INTERNAL', `${message}: ${describe(err)}`, details, { cause: err });
  }

  /** Explain the one producer failure that has a known cause and a known fix. */
  private async producerConnectError(err: unknown): Promise<RepriseError> {
    if (this.settings.idempotent) {
      const cluster = await this.admin.describeCluster().catch(() => undefined);
      if (cluster && !cluster.brokers.some((b) => b.nodeId === cluster.controller)) {
        return new RepriseError(
          'INTERNAL',
          `cannot start an idempotent producer on the ${this.description}: ` +
            `it reports controller id ${cluster.controller}, which is none of its brokers ` +
            `(librdkafka's mock cluster does this), and kafkajs asks the controller for a producer id; ` +
            `open the store with idempotent: false for this cluster`,
          undefined,
          { cause: err },
        );
      }
    }
    return this.failure(`cannot start the producer of the ${this.description}`, err);
  }
}

// ---------------------------------------------------------------------------

interface ReadStart {
  readonly from: EntryId;
  /** Exclusive end of the read. */
  readonly end: EntryId;
  readonly first: FetchResult | undefined;
}

interface FetchResult {
  /** Records from the fetched id on, contiguous. */
  readonly records: LogRecord[];
  /** Id after the last record (or control record) returned. */
  readonly next: EntryId;
  readonly highWatermark: EntryId;
}

/** What a tail needs from its store. */
interface TailSource {
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

/** The parts of kafkajs's decoded Fetch response this store reads. */
interface FetchResponse {
  responses?: {
    topicName: string;
    partitions: {
      partition: number;
      errorCode: number;
      highWatermark: string;
      lastStartOffset?: string;
      messages: { offset: string; timestamp?: string; value: Buffer | null; isControlRecord?: boolean }[];
    }[];
  }[];
}

/**
 * A kafkajs connection used only to fetch partitions. It is a consumer that
 * is connected but never run, so it joins no group; its cluster handle comes
 * from kafkajs through the partition-assigner factory, the one place kafkajs
 * hands it out (the assigner itself is never asked to assign).
 */
class PartitionReader {
  private readonly consumer: Consumer;
  private readonly settings: Settings;
  private cluster: Cluster | undefined;

  constructor(kafka: Kafka, settings: Settings, groupId: string, allowAutoTopicCreation: boolean) {
    this.settings = settings;
    const capture = ({ cluster }: { cluster: Cluster }): Assigner => {
      this.cluster = cluster;
      return {
        name: 'reprise-no-group',
        version: 0,
        assign: () => Promise.reject(new Error('reprise reads partitions directly and never joins a group')),
        protocol: () => ({ name: 'reprise-no-group', metadata: Buffer.alloc(0) }),
      };
    };
    this.consumer = kafka.consumer({
      groupId: `${groupId}-${process.pid}-${Math.random().toString(36).slice(2)}`,
      partitionAssigners: [capture],
      allowAutoTopicCreation,
    });
    if (!this.cluster) {
      throw new RepriseError(
        'INTERNAL',
        'kafkajs did not hand its cluster to the partition assigner (a kafkajs version other than 2.2.x?)',
      );
    }
  }

  connect(): Promise<void> {
    return this.consumer.connect();
  }

  disconnect(): Promise<void> {
    return this.consumer.disconnect();
  }

  /** Load the topic's metadata (auto-creating it if this reader allows that) until partition 0 has a leader. */
  async waitForLeader(topic: string, deadline: number): Promise<void> {
    await this.retrying(deadline, undefined, async () => {
      await this.cluster!.addTargetTopic(topic);
      await this.cluster!.refreshMetadata();
      await this.leader(topic);
    });
  }

  /**
   * One Fetch of partition 0 from `id`, retried through leader moves and
   * unreachable brokers until the backoff deadline. 'out-of-range' when the
   * broker does not hold `id` (below the log start, or past the end).
   */
  fetch(topic: string, id: EntryId, maxWaitMs: number, signal?: AbortSignal): Promise<FetchResult | 'out-of-range'> {
    const deadline = Date.now() + this.settings.backoffDeadlineMs;
    return this.retrying(deadline, signal, async () => {
      const cluster = this.cluster!;
      await cluster.addTargetTopic(topic);
      await cluster.refreshMetadataIfNecessary();
      const broker = await this.leader(topic);
      const maxBytes = this.settings.fetchMaxBytes;
      let response: FetchResponse;
      try {
        response = (await broker.fetch({
          maxWaitTime: maxWaitMs,
          minBytes: 1,
          maxBytes,
          topics: [{ topic, partitions: [{ partition: PARTITION, fetchOffset: String(id), maxBytes }] }],
        })) as FetchResponse;
      } catch (err) {
        if ((err as { type?: string }).type === 'OFFSET_OUT_OF_RANGE') return 'out-of-range' as const;
        throw err;
      }
      return decode(topic, id, response);
    });
  }

  private async leader(topic: string) {
    const cluster = this.cluster!;
    const leaders = Object.keys(cluster.findLeaderForPartitions(topic, [PARTITION]));
    const leader = leaders[0];
    if (leader === undefined || Number(leader) < 0) {
      throw new RetriableError(`WAL topic "${topic}" has no leader for partition ${PARTITION}`);
    }
    return cluster.findBroker({ nodeId: leader });
  }

  /** Run `fn`, retrying transient failures (refreshing metadata first) until `deadline`. */
  private retrying<T>(deadline: number, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return withBackoff(this.settings, deadline, (err) => !(err instanceof RepriseError) && transient(err), fn, {
      signal,
      beforeRetry: () => this.cluster!.refreshMetadata().catch(() => undefined),
    });
  }
}

/** Records of partition 0 from `id` on, checked to be contiguous. */
function decode(topic: string, id: EntryId, response: FetchResponse): FetchResult {
  const partition = response.responses
    ?.find((r) => r.topicName === topic)
    ?.partitions.find((p) => p.partition === PARTITION);
  if (!partition || !Array.isArray(partition.messages)) {
    throw new RepriseError('INTERNAL', `WAL topic "${topic}": unexpected Fetch response (kafkajs changed?)`, { topic });
  }
  const highWatermark = Number(partition.highWatermark);
  const logStart = Number(partition.lastStartOffset ?? -1);
  const records: LogRecord[] = [];
  let expected = id;
  for (const m of partition.messages) {
    const offset = Number(m.offset);
    // A record batch is returned whole, so it may start before `id`.
    if (offset < expected) continue;
    if (offset !== expected) {
      if (logStart > expected) throw walTruncated(topic, expected, logStart);
      throw walGap(topic, expected, offset);
    }
    expected++;
    // Transaction markers take an offset but carry no record; this store never writes them.
    if (m.isControlRecord) continue;
    const appendedAt = Number(m.timestamp);
    records.push({ id: offset, data: m.value ?? new Uint8Array(0), ...(appendedAt > 0 ? { appendedAt } : {}) });
  }
  return { records, next: expected, highWatermark };
}

/**
 * A tail: its own connection, Fetch long-polls from the next id to deliver,
 * one callback at a time. close() stops it between callbacks (or abandons a
 * waiting Fetch) and resolves once no callback runs; the connection then
 * closes in the background and the store's close() waits for that.
 */
class KafkaTail implements TailSubscription {
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

// ---------------------------------------------------------------------------
// Errors and small helpers

class RetriableError extends Error {
  readonly retriable = true;
}

function checkTopicName(topic: string): void {
  if (typeof topic !== 'string' || !TOPIC_NAME.test(topic)) {
    throw new RepriseError(
      'INVALID_ARGUMENT',
      `WAL topic name must be 1-249 characters of a-z A-Z 0-9 . _ - (Kafka's rule), got ${JSON.stringify(topic)}`,
    );
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RepriseError('INVALID_ARGUMENT', `Kafka WAL: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** The error and its causes, outermost first (kafkajs wraps errors in retry errors). */
function chain(err: unknown): { name?: string; type?: string; code?: string; retriable?: boolean; message?: string }[] {
  const out: { name?: string; type?: string; code?: string; retriable?: boolean; message?: string }[] = [];
  let e = err as { cause?: unknown } | undefined;
  while (e && typeof e === 'object' && out.length < 8) {
    out.push(e as (typeof out)[number]);
    e = e.cause as typeof e;
  }
  return out;
}

function describe(err: unknown): string {
  const parts = chain(err)
    .map((e) => e.message)
    .filter((m): m is string => typeof m === 'string' && m.length > 0);
  const unique = parts.filter((m, i) => parts.indexOf(m) === i);
  return unique.length > 0 ? unique.join(': ') : String(err);
}

/** Worth retrying a read: the leader moved, a broker is unreachable, metadata is stale. */
function transient(err: unknown): boolean {
  return chain(err).some((e) => e.retriable === true && e.type !== 'OFFSET_OUT_OF_RANGE');
}

/**
 * Produce errors that prove the broker appended nothing: it answered and
 * refused (not the leader, not enough replicas in sync), or the request never
 * left (no metadata, no leader, connection refused). Timeouts and dropped
 * connections are ambiguous and are not retried.
 */
const REFUSED_PRODUCE = new Set([
  'NOT_LEADER_FOR_PARTITION',
  'LEADER_NOT_AVAILABLE',
  'UNKNOWN_TOPIC_OR_PARTITION',
  'NOT_ENOUGH_REPLICAS',
  'FENCED_LEADER_EPOCH',
  'UNKNOWN_LEADER_EPOCH',
]);

function provablyNotWritten(err: unknown): boolean {
  const causes = chain(err);
  const innermost = causes[causes.length - 1];
  if (!innermost) return false;
  if (innermost.type !== undefined) return REFUSED_PRODUCE.has(innermost.type);
  if (innermost.name === 'KafkaJSMetadataNotLoaded' || innermost.name === 'KafkaJSBrokerNotFound') return true;
  return innermost.name === 'KafkaJSConnectionError' && innermost.code === 'ECONNREFUSED';
}

/** DeleteRecords answers that will not change by asking again. */
const DELETE_RECORDS_REFUSED = new Set([
  'TOPIC_AUTHORIZATION_FAILED',
  'POLICY_VIOLATION',
  'UNSUPPORTED_VERSION',
  'INVALID_REQUEST',
]);

/**
 * Why the cluster will never accept DeleteRecords from this client, or
 * undefined for a failure worth retrying later.
 */
function deleteRecordsRefusal(err: unknown): string | undefined {
  for (const e of chain(err)) {
    if (e.name === 'KafkaJSServerDoesNotSupportApiKey') return 'the DeleteRecords API is not supported';
    const partitions = (e as { partitions?: { error?: { type?: string } }[] }).partitions;
    for (const p of partitions ?? []) {
      const type = p.error?.type;
      if (type !== undefined && DELETE_RECORDS_REFUSED.has(type)) return type;
    }
  }
  return undefined;
}

/**
 * Run `fn`; while it throws an error that `retry` accepts, before
 * `deadline` and until `signal` aborts, run `beforeRetry`, wait (backoff)
 * and run `fn` again. Otherwise its last error is thrown. The one retry loop
 * of this file: appends retry only what provably wrote nothing, reads
 * anything, fetches transient failures.
 */
async function withBackoff<T>(
  settings: Settings,
  deadline: number,
  retry: (err: unknown) => boolean,
  fn: () => Promise<T>,
  options: { readonly signal?: AbortSignal; readonly beforeRetry?: () => Promise<unknown> } = {},
): Promise<T> {
  const { signal, beforeRetry } = options;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (signal?.aborted || !retry(err) || Date.now() >= deadline) throw err;
      await beforeRetry?.();
      await sleep(backoff(settings, attempt), signal);
      if (signal?.aborted) throw err;
    }
  }
}

function backoff(settings: Settings, attempt: number): number {
  return Math.min(settings.backoffMaxMs, settings.backoffInitMs * 2 ** Math.min(attempt, 20));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** `promise`, or undefined as soon as `signal` aborts (the promise is left to settle on its own). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  promise.catch(() => undefined);
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
