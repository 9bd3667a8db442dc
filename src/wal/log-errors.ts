import { RepriseError } from '../errors.js';
import type { EntryId } from './log-store.js';

/** The errors every WAL provider reports alike. */

/** INVALID_ARGUMENT unless `id` is an entry id (a safe integer >= 0). */
export function checkId(id: EntryId, what: string, topic: string): void {
  if (!Number.isSafeInteger(id) || id < 0) {
    throw new RepriseError('INVALID_ARGUMENT', `WAL topic "${topic}": ${what} must be an entry id (>= 0), got ${id}`, { topic });
  }
}

/** A read below what the topic still holds (pruned, or lost to retention). */
export function walTruncated(topic: string, needed: EntryId, earliest: EntryId): RepriseError {
  return new RepriseError('WAL_TRUNCATED', `WAL topic "${topic}" no longer holds entry id ${needed}: earliest available id is ${earliest}`, { topic, needed, earliest });
}

/** An id missing in the middle of what the topic holds. */
export function walGap(topic: string, expected: EntryId, found: EntryId): RepriseError {
  return new RepriseError('WAL_CORRUPT', `WAL topic "${topic}" is missing entry id ${expected} (next record found: ${found})`, { topic, expected, found });
}
