import type { KafkaLogStoreOptions } from './kafka/kafka-log-store.js';
import { LocalLogStore, type WalLogger } from './local-log-store.js';
import type { LogStore } from './log-store.js';

/** Settings every provider shares: how the runtime frames and names its topics. */
interface CommonWalOptions {
  /** Largest WAL append (and record); bigger entries are split. Default 1 MiB. */
  readonly maxBatchBytes?: number;
  /** Shard s uses topic `<topicPrefix>_<s>`. Default 'reprise_wal'. */
  readonly topicPrefix?: string;
}

export interface LocalWalOptions extends CommonWalOptions {
  readonly provider: 'local';
  /**
   * Open a damaged log instead of refusing to start: damaged LevelDB log
   * files are copied to `<wal>/quarantine/`, the entry ids lost are logged
   * and never issued again, and reads pass over them. Off by default.
   */
  readonly skipCorrupt?: boolean;
}

/** The Kafka keys follow GreptimeDB's `[wal]` section, camelCased. */
export interface KafkaWalOptions extends CommonWalOptions, Omit<KafkaLogStoreOptions, 'brokers'> {
  readonly provider: 'kafka';
  /** Bootstrap brokers, `host:port`. */
  readonly brokerEndpoints: readonly string[];
}

export type WalOptions = LocalWalOptions | KafkaWalOptions;

/** Open the configured provider; the local log lives in `localDir`. `logger` hears what the local log skips or cannot check. */
export async function openLogStore(wal: WalOptions, localDir: string, logger?: WalLogger): Promise<LogStore> {
  if (wal.provider === 'local') return LocalLogStore.open(localDir, { skipCorrupt: wal.skipCorrupt === true, ...(logger ? { logger } : {}) });
  const { provider: _provider, maxBatchBytes: _maxBatchBytes, topicPrefix: _topicPrefix, brokerEndpoints, ...kafka } = wal;
  // Loaded only when used: kafkajs adds ~65 ms to every start.
  const { KafkaLogStore } = await import('./kafka/kafka-log-store.js');
  return KafkaLogStore.open({ ...kafka, brokers: [...brokerEndpoints] });
}
