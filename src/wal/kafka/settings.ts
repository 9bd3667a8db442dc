import { logLevel as KafkaLogLevel, type KafkaConfig } from 'kafkajs';
import type { EntryId } from '../log-store.js';

/**
 * Topic configs reprise sets when it creates a topic: no retention by time
 * or size. reprise deletes a shard's entries itself once its regions have
 * flushed them (DeleteRecords), and never deletes meta's log; a broker's
 * default retention (7 days) would delete entries no region has flushed yet,
 * and the head of meta's log, which then cannot be folded (WAL_TRUNCATED).
 */
export const WAL_TOPIC_CONFIG = [
  { name: 'retention.ms', value: '-1' },
  { name: 'retention.bytes', value: '-1' },
];

/** How a KafkaLogStore is opened (the provider itself: kafka-log-store.ts). */
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

export const DEFAULTS = {
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

export type Settings = typeof DEFAULTS & { readonly idempotent: boolean; readonly logicalPrune: boolean };

/** Kafka's legal topic names. */
export const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;
export const PARTITION = 0;
