import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32c } from './crc32c.js';

/**
 * A strict reader of LevelDB's write-ahead log files (`<number>.log`), used
 * by LocalLogStore before it lets LevelDB open the directory.
 *
 * Why: LevelDB (classic-level builds it without `paranoid_checks`, and
 * offers no option to set it) recovers a log by dropping whatever fails its
 * checksum, and the rest of that 32 KiB block with it, writing only to its
 * own LOG file. The records that follow are then replayed as if nothing
 * happened, and the damaged log is deleted once recovered. This reader
 * applies LevelDB's own rules (db/log_reader.cc, db/log_format.h,
 * db/write_batch.cc of LevelDB 1.20) but reports every drop instead of
 * ignoring it, so damage is seen while the evidence still exists.
 *
 * What LevelDB itself treats as a writer that died mid-append is reported
 * as a torn tail, not as damage: a truncated header or payload at the end of
 * the file, and a fragmented record whose last fragment never came. A
 * process killed during an (unacknowledged) append leaves exactly that. A
 * torn tail is also what a truncated file looks like: only a high-water
 * mark kept outside the log can tell the two apart (LocalLogStore's).
 *
 * Format: the file is a sequence of 32 KiB blocks; each holds physical
 * records `crc32c masked (u32 le) | length (u16 le) | type (u8) | payload`,
 * the checksum over type and payload. A logical record (one LevelDB write
 * batch) is one FULL record or FIRST, MIDDLE..., LAST fragments. A block's
 * last < 7 bytes are zero padding. A batch is `sequence (u64 le) | count
 * (u32 le)` then per operation a tag (1 put, 0 delete) and varint32-prefixed
 * key (and value, for a put).
 */

const BLOCK_SIZE = 32768;
const HEADER_SIZE = 7;
const ZERO_TYPE = 0;
const FULL_TYPE = 1;
const FIRST_TYPE = 2;
const MIDDLE_TYPE = 3;
const LAST_TYPE = 4;
const BATCH_HEADER = 12;
const TAG_DELETION = 0;
const TAG_VALUE = 1;
const MASK_DELTA = 0xa282ead8;

export interface BatchOp {
  /** true for a put, false for a delete. */
  readonly put: boolean;
  readonly key: Uint8Array;
  /** Empty for a delete. */
  readonly value: Uint8Array;
}

/** A logical record that passed every check: one write batch. */
export interface IntactRecord {
  readonly kind: 'record';
  /** File offset of its first physical record. */
  readonly offset: number;
  readonly ops: readonly BatchOp[];
}

/** Bytes LevelDB's recovery would drop, and why. */
export interface Damage {
  readonly kind: 'damage';
  readonly offset: number;
  readonly reason: string;
  readonly droppedBytes: number;
  /**
   * Operations read, best effort, from what is dropped: the damaged record
   * itself where its length looks sane (its bytes may be wrong), and records
   * that pass their checksum in the rest of the block (LevelDB drops those
   * too). They name the entries lost; they are not trusted for anything else.
   */
  readonly suspects: readonly BatchOp[];
}

export type LogEvent = IntactRecord | Damage;

export interface LogFileScan {
  /** File name, e.g. `000012.log`. */
  readonly file: string;
  readonly path: string;
  /** LevelDB's file number (logs are replayed in this order). */
  readonly number: number;
  readonly size: number;
  /** Intact records and damage, in file order. */
  readonly events: readonly LogEvent[];
  /** Offset where an incomplete record at the end of the file starts (a writer that died mid-append, or a truncation). */
  readonly tornTailAt: number | undefined;
  /** The file's bytes, kept so that a damaged log can be quarantined after LevelDB has replaced it. */
  readonly bytes: Uint8Array;
}

/** Every `<number>.log` in `dir`, oldest first, checked. An absent directory has none. */
export async function scanLevelDbLogs(dir: string): Promise<LogFileScan[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const logs = names
    .filter((n) => /^\d+\.log$/.test(n))
    .map((n) => ({ name: n, number: Number(n.slice(0, -4)) }))
    .sort((a, b) => a.number - b.number);
  const out: LogFileScan[] = [];
  for (const { name, number } of logs) {
    const path = join(dir, name);
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(path));
    } catch (err) {
      // Deleted by LevelDB's own cleanup between readdir and here cannot
      // happen (we hold no DB yet); a vanished file has nothing to check.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    out.push({ file: name, path, number, size: bytes.length, ...scanLogBytes(bytes), bytes });
  }
  return out;
}

/** Check one log file's bytes (exported for tests). */
export function scanLogBytes(bytes: Uint8Array): { events: LogEvent[]; tornTailAt: number | undefined } {
  const events: LogEvent[] = [];
  let tornTailAt: number | undefined;
  const size = bytes.length;
  let pos = 0;

  type Physical =
    | { t: 'eof' }
    | { t: 'bad' }
    | { t: 'rec'; type: number; offset: number; payload: Uint8Array };

  const damage = (offset: number, reason: string, droppedBytes: number, suspects: BatchOp[] = []): void => {
    events.push({ kind: 'damage', offset, reason, droppedBytes, suspects });
  };

  /** The next physical record, LevelDB's ReadPhysicalRecord with every drop reported. */
  const physical = (fragmentStart: Uint8Array | undefined): Physical => {
    for (;;) {
      const blockStart = Math.floor(pos / BLOCK_SIZE) * BLOCK_SIZE;
      const blockEnd = Math.min(size, blockStart + BLOCK_SIZE);
      // LevelDB's eof_: the read of this block came back short.
      const shortBlock = size - blockStart < BLOCK_SIZE;
      const available = blockEnd - pos;
      if (available < HEADER_SIZE) {
        if (blockEnd >= size) {
          // A truncated header at the end of the file (LevelDB: EOF), or the
          // zero trailer of a full last block.
          if (available > 0 && !allZero(bytes, pos, blockEnd)) tornTailAt ??= pos;
          pos = size;
          return { t: 'eof' };
        }
        pos = blockEnd; // the block's trailer
        continue;
      }
      const offset = pos;
      const length = bytes[pos + 4]! | (bytes[pos + 5]! << 8);
      const type = bytes[pos + 6]!;
      if (HEADER_SIZE + length > available) {
        if (shortBlock) {
          // The payload runs past the end of the file: a writer that died mid-record (LevelDB: EOF, not reported).
          tornTailAt ??= offset;
          pos = size;
          return { t: 'eof' };
        }
        damage(offset, 'bad record length', available);
        pos = blockEnd;
        return { t: 'bad' };
      }
      if (type === ZERO_TYPE && length === 0) {
        // LevelDB skips the rest of the block without a report (preallocated
        // space of its mmap writer). At the end of the file that is harmless;
        // followed by data, something wiped part of the log.
        if (allZero(bytes, pos, size)) {
          pos = size;
          return { t: 'eof' };
        }
        damage(offset, 'zeroed bytes followed by data', available);
        pos = blockEnd;
        return { t: 'bad' };
      }
      const expected = unmask(readU32le(bytes, pos));
      const actual = crc32c(bytes.subarray(pos + 6, pos + HEADER_SIZE + length));
      if (actual !== expected) {
        const suspects = suspectOps(fragmentStart, type, bytes.subarray(pos + HEADER_SIZE, pos + HEADER_SIZE + length));
        suspects.push(...intactOpsAfter(bytes, pos + HEADER_SIZE + length, blockEnd));
        damage(offset, 'checksum mismatch', available, suspects);
        pos = blockEnd;
        return { t: 'bad' };
      }
      pos += HEADER_SIZE + length;
      return { t: 'rec', type, offset, payload: bytes.subarray(offset + HEADER_SIZE, offset + HEADER_SIZE + length) };
    }
  };

  let scratch: Uint8Array[] = [];
  let scratchBytes = 0;
  let inFragment = false;
  let recordOffset = 0;
  const fragmentSoFar = (): Uint8Array | undefined => (inFragment ? concat(scratch, scratchBytes) : undefined);
  const resetFragment = () => {
    scratch = [];
    scratchBytes = 0;
    inFragment = false;
  };
  const logical = (offset: number, record: Uint8Array): void => {
    if (record.length < BATCH_HEADER) {
      damage(offset, 'log record too small', record.length);
      return;
    }
    const parsed = parseBatch(record);
    if (!parsed.ok) {
      damage(offset, `bad write batch: ${parsed.reason}`, record.length, [...parsed.ops]);
      return;
    }
    events.push({ kind: 'record', offset, ops: parsed.ops });
  };

  for (;;) {
    const rec = physical(fragmentSoFar());
    if (rec.t === 'eof') {
      // A fragmented record whose end never came: a writer that died between fragments.
      if (inFragment) tornTailAt ??= recordOffset;
      break;
    }
    if (rec.t === 'bad') {
      if (inFragment) resetFragment(); // the whole logical record goes with it (reported above)
      continue;
    }
    switch (rec.type) {
      case FULL_TYPE:
        if (inFragment && scratchBytes > 0) damage(recordOffset, 'partial record without end', scratchBytes, suspectOps(fragmentSoFar(), MIDDLE_TYPE, new Uint8Array()));
        resetFragment();
        logical(rec.offset, rec.payload);
        break;
      case FIRST_TYPE:
        if (inFragment && scratchBytes > 0) damage(recordOffset, 'partial record without end', scratchBytes, suspectOps(fragmentSoFar(), MIDDLE_TYPE, new Uint8Array()));
        resetFragment();
        inFragment = true;
        recordOffset = rec.offset;
        scratch.push(rec.payload);
        scratchBytes += rec.payload.length;
        break;
      case MIDDLE_TYPE:
        if (!inFragment) damage(rec.offset, 'missing start of fragmented record', rec.payload.length);
        else {
          scratch.push(rec.payload);
          scratchBytes += rec.payload.length;
        }
        break;
      case LAST_TYPE:
        if (!inFragment) damage(rec.offset, 'missing start of fragmented record', rec.payload.length);
        else {
          scratch.push(rec.payload);
          scratchBytes += rec.payload.length;
          const whole = concat(scratch, scratchBytes);
          const at = recordOffset;
          resetFragment();
          logical(at, whole);
        }
        break;
      default:
        damage(rec.offset, `unknown record type ${rec.type}`, rec.payload.length + (inFragment ? scratchBytes : 0));
        resetFragment();
        break;
    }
  }
  return { events, tornTailAt };
}

/** Parse a write batch; on failure, the operations read before it. */
export function parseBatch(record: Uint8Array): { ok: true; ops: BatchOp[] } | { ok: false; reason: string; ops: BatchOp[] } {
  const ops: BatchOp[] = [];
  if (record.length < BATCH_HEADER) return { ok: false, reason: 'shorter than its header', ops };
  const count = readU32le(record, 8);
  let p = BATCH_HEADER;
  while (p < record.length) {
    const tag = record[p++]!;
    if (tag !== TAG_VALUE && tag !== TAG_DELETION) return { ok: false, reason: `unknown operation tag ${tag}`, ops };
    const key = readSlice(record, p);
    if (!key) return { ok: false, reason: 'bad key', ops };
    p = key.end;
    if (tag === TAG_VALUE) {
      const value = readSlice(record, p);
      if (!value) {
        // The key still names what the batch held (a record cut short, or damaged further on).
        ops.push({ put: true, key: key.bytes, value: new Uint8Array() });
        return { ok: false, reason: 'bad value', ops };
      }
      p = value.end;
      ops.push({ put: true, key: key.bytes, value: value.bytes });
    } else {
      ops.push({ put: false, key: key.bytes, value: new Uint8Array() });
    }
  }
  if (ops.length !== count) return { ok: false, reason: `${ops.length} operations, header says ${count}`, ops };
  return { ok: true, ops };
}

/** What a damaged record appears to hold: its batch parsed as far as it goes, if it starts one. */
function suspectOps(fragmentStart: Uint8Array | undefined, type: number, payload: Uint8Array): BatchOp[] {
  let bytes: Uint8Array;
  if (type === FULL_TYPE || type === FIRST_TYPE) bytes = payload;
  else if (fragmentStart) bytes = concat([fragmentStart, payload], fragmentStart.length + payload.length);
  else return [];
  return parseBatch(bytes).ops;
}

/**
 * Records after a bad one in the same block, read as if the bad record's
 * length were right, while they pass their checksum: LevelDB drops them with
 * the bad one. Only whole (FULL) records name operations.
 */
function intactOpsAfter(bytes: Uint8Array, from: number, blockEnd: number): BatchOp[] {
  const ops: BatchOp[] = [];
  let p = from;
  while (p + HEADER_SIZE <= blockEnd) {
    const length = bytes[p + 4]! | (bytes[p + 5]! << 8);
    const type = bytes[p + 6]!;
    if (p + HEADER_SIZE + length > blockEnd || (type === ZERO_TYPE && length === 0)) break;
    if (crc32c(bytes.subarray(p + 6, p + HEADER_SIZE + length)) !== unmask(readU32le(bytes, p))) break;
    if (type === FULL_TYPE || type === FIRST_TYPE) ops.push(...parseBatch(bytes.subarray(p + HEADER_SIZE, p + HEADER_SIZE + length)).ops);
    p += HEADER_SIZE + length;
  }
  return ops;
}

function readSlice(buf: Uint8Array, p: number): { bytes: Uint8Array; end: number } | undefined {
  let len = 0;
  let shift = 0;
  for (;;) {
    if (p >= buf.length || shift > 28) return undefined;
    const b = buf[p++]!;
    len |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) break;
    shift += 7;
  }
  len >>>= 0;
  if (p + len > buf.length) return undefined;
  return { bytes: buf.subarray(p, p + len), end: p + len };
}

function allZero(buf: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let p = 0;
  for (const part of parts) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

function readU32le(buf: Uint8Array, p: number): number {
  return (buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24)) >>> 0;
}

function unmask(masked: number): number {
  const rot = (masked - MASK_DELTA) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}
