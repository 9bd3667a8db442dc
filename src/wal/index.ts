export type { EntryId, LogRecord, LogStore, ReadOptions, TailSubscription, TopicBounds } from './log-store.js';
export { DEFAULT_MAX_BATCH_BYTES, ENTRY_KINDS, type Entry, type EntryKind, type LoggedEntry } from './entry.js';
export { crc32c } from './crc32c.js';
export {
  decodeRecord,
  encodeEntry,
  EntryAssembler,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  FRAME_VERSION,
  type DecodedRecord,
} from './codec.js';
export { LocalLogStore } from './local-log-store.js';
export { KafkaLogStore, type KafkaLogStoreOptions } from './kafka-log-store.js';
export { TopicWriter, type TopicWriterOptions, type TopicWriterStats } from './topic-writer.js';
export { readEntries, replayShard, type ReplayOptions, type ReplayProgress, type ReplayStats } from './shard-reader.js';
