import type { EntryId } from './log-store.js';
import { readU32, readU64, writeU32, writeU64 } from './bytes.js';

/**
 * Key layout of the local WAL's LevelDB (binary keys, so a topic's records
 * sort by id):
 *
 *   META | utf8(topic)               -> FORMAT | u32 topic number | u64 earliest id
 *   RECORD | u32 topic number | u64 id  -> record bytes
 *   HOLE | u32 topic number | u64 from  -> u64 to: ids [from, to) that a
 *                                        --wal-skip-corrupt start found lost;
 *                                        reads pass over them, and they are
 *                                        never issued again
 *
 * Topics get a small number when created so that record keys are
 * fixed-width whatever the topic's name.
 */
export const META = 0x01;
export const RECORD = 0x02;
export const HOLE = 0x03;
export const META_FORMAT = 1;
export const META_VALUE_BYTES = 13;
export const RECORD_KEY_BYTES = 13;
export const HOLE_VALUE_BYTES = 8;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function metaKey(topic: string): Uint8Array {
  const name = encoder.encode(topic);
  const key = new Uint8Array(1 + name.length);
  key[0] = META;
  key.set(name, 1);
  return key;
}

export function metaName(key: Uint8Array): string {
  return decoder.decode(key.subarray(1));
}

export function metaValue(no: number, earliest: EntryId): Uint8Array {
  const v = new Uint8Array(META_VALUE_BYTES);
  v[0] = META_FORMAT;
  writeU32(v, 1, no);
  writeU64(v, 5, earliest);
  return v;
}

/** The key of record `id` of topic `no` (HOLE keys have the same shape). */
export function recordKey(no: number, id: EntryId, prefix: number = RECORD): Uint8Array {
  const key = new Uint8Array(RECORD_KEY_BYTES);
  key[0] = prefix;
  writeU32(key, 1, no);
  writeU64(key, 5, id);
  return key;
}

/** Topic number and id of a RECORD (or HOLE) key, or undefined for any other key. */
export function parseRecordKey(key: Uint8Array, prefix: number = RECORD): { no: number; id: EntryId } | undefined {
  if (key.length !== RECORD_KEY_BYTES || key[0] !== prefix) return undefined;
  return { no: readU32(key, 1), id: readU64(key, 5) };
}

export function u64Value(v: EntryId): Uint8Array {
  const out = new Uint8Array(HOLE_VALUE_BYTES);
  writeU64(out, 0, v);
  return out;
}

/** `[3, 4, 5, 9]` -> `3..5, 9`. */
export function idRanges(ids: Iterable<EntryId>): string {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}..${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** Entry ids [from, to) of a topic. */
export interface IdRange {
  readonly from: EntryId;
  readonly to: EntryId;
}

/** Ranges sorted, empty ones dropped, overlapping or touching ones joined. */
export function mergeRanges(ranges: readonly IdRange[]): IdRange[] {
  const sorted = ranges.filter((r) => r.to > r.from).sort((a, b) => a.from - b.from);
  const out: IdRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to) out[out.length - 1] = { from: last.from, to: Math.max(last.to, r.to) };
    else out.push(r);
  }
  return out;
}
