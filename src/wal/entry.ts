import type { EntryId } from './log-store.js';

/**
 * A WAL entry, the unit the runtime reasons about. One entry may occupy
 * several log records when it is larger than maxBatchBytes (split by the
 * codec and reassembled on read); its id is the id of its last record, so a
 * region's flushed entry id always points at a whole entry.
 */
export type EntryKind =
  /** A region mutation; `body` is opaque to the runtime (the RegionEngine's encoding). */
  | 'data'
  /** Written by a new leader before it serves; fences entries of lower epochs. */
  | 'epoch'
  /** A region starts or stops living in this shard's topic. */
  | 'region_create'
  | 'region_drop'
  /** First record of every topic, so real entries never sit at id 0 by accident. */
  | 'topic_marker'
  /**
   * The leader flushed its regions and wrote their manifests: followers
   * reload the manifests and drop what the SSTs now hold from memory.
   */
  | 'flushed';

export const ENTRY_KINDS: readonly EntryKind[] = ['data', 'epoch', 'region_create', 'region_drop', 'topic_marker', 'flushed'];

export interface Entry {
  readonly kind: EntryKind;
  /** Region the entry belongs to; 0 for shard-level entries (epoch, topic_marker). */
  readonly region: number;
  /** Leadership generation of the writer. */
  readonly epoch: number;
  readonly body: Uint8Array;
}

export interface LoggedEntry extends Entry {
  /** Id of the entry's last record. */
  readonly id: EntryId;
  /** Id of the entry's first record (== id unless split). */
  readonly firstId: EntryId;
  /** Encoded size in the log, all records included. */
  readonly bytes: number;
}

export const DEFAULT_MAX_BATCH_BYTES = 1024 * 1024;
