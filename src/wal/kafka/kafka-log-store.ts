import { Kafka, logLevel as KafkaLogLevel, type Admin, type Producer } from 'kafkajs';
import { RepriseError } from '../../errors.js';
import { checkId, walGap, walTruncated } from '../log-errors.js';
import type { EntryId, LogRecord, LogStore, ReadOptions, TailSubscription, TopicBounds } from '../log-store.js';
import { DEFAULTS, PARTITION, WAL_TOPIC_CONFIG, type KafkaLogStoreOptions, type Settings } from './settings.js';
import { PartitionReader, type FetchResult, type ReadStart } from './partition-reader.js';
import { KafkaTail, type TailSource } from './kafka-tail.js';
import { checkTopicName, positive, describe, provablyNotWritten, deleteRecordsRefusal } from './errors.js';
import { withBackoff } from './retry.js';

export type { KafkaLogStoreOptions } from './settings.js';

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
