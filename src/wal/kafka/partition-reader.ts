import { Kafka, type Assigner, type Cluster, type Consumer } from 'kafkajs';
import { RepriseError } from '../../errors.js';
import { walGap, walTruncated } from '../log-errors.js';
import type { EntryId, LogRecord } from '../log-store.js';
import { PARTITION, type Settings } from './settings.js';
import { RetriableError, transient } from './errors.js';
import { withBackoff } from './retry.js';

/** Reads of a topic's partition 0 straight from its leader, without a consumer group (see KafkaLogStore). */

export interface ReadStart {
  readonly from: EntryId;
  /** Exclusive end of the read. */
  readonly end: EntryId;
  readonly first: FetchResult | undefined;
}

export interface FetchResult {
  /** Records from the fetched id on, contiguous. */
  readonly records: LogRecord[];
  /** Id after the last record (or control record) returned. */
  readonly next: EntryId;
  readonly highWatermark: EntryId;
}

/** The parts of kafkajs's decoded Fetch response this store reads. */
export interface FetchResponse {
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
export class PartitionReader {
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
export function decode(topic: string, id: EntryId, response: FetchResponse): FetchResult {
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
