import { RepriseError } from '../errors.js';
import { crc32c } from './crc32c.js';
import { DEFAULT_MAX_BATCH_BYTES, type Entry, type EntryKind, type LoggedEntry } from './entry.js';
import type { EntryId, LogRecord } from './log-store.js';
import { writeU32 } from './bytes.js';

/**
 * The entry codec: what every LogStore provider stores as record bytes.
 *
 * A record is one frame:
 *
 *   offset 0  u8   magic (FRAME_MAGIC)
 *          1  u8   format version (FRAME_VERSION)
 *          2  u32  CRC32C of bytes [6, end) (payload length and payload), big-endian
 *          6  u32  payload length, big-endian
 *         10  ...  payload
 *
 * The payload is a MessagePack array:
 *   [kind, region, epoch, body]                 a whole entry
 *   [kind, region, epoch, body, part, parts]    part `part` (0-based) of an
 *                                               entry split over `parts` records
 * with kind a small integer (KIND_CODES below), region/epoch unsigned ints and
 * body a bin. Entries are split only when one frame would exceed the record
 * size limit, so a split entry always has parts >= 2.
 *
 * The MessagePack is written and read by hand (always the smallest encoding,
 * as any msgpack encoder produces) so that encoding costs one allocation and
 * one body copy per record, and decoding returns the body as a view into the
 * record without copying it. Replay speed is measured against a raw LevelDB
 * scan, so this matters.
 */
export const FRAME_MAGIC = 0xe5;
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 10;

/** Entry kinds by wire code. Append only: stored logs depend on these positions. */
const KINDS_BY_CODE: readonly EntryKind[] = ['data', 'epoch', 'region_create', 'region_drop', 'topic_marker', 'flushed'];
const KIND_CODES: ReadonlyMap<EntryKind, number> = new Map(KINDS_BY_CODE.map((kind, code) => [kind, code]));

/** Worst-case payload bytes a split record spends on the bin header, part and parts. */
const SPLIT_FIELDS_MAX_BYTES = 5 + 5 + 5;

/** A decoded frame. `body` is a view into the record's bytes (not a copy). */
export interface DecodedRecord {
  readonly kind: EntryKind;
  readonly region: number;
  readonly epoch: number;
  readonly body: Uint8Array;
  /** 0-based part index; 0 for a whole entry. */
  readonly part: number;
  /** Number of records of the entry; 1 for a whole entry. */
  readonly parts: number;
}

/**
 * Encode an entry as one or more framed records, each at most
 * `maxRecordBytes`. Throws ENTRY_TOO_LARGE when the limit cannot fit even a
 * frame's fixed fields plus one body byte.
 */
export function encodeEntry(entry: Entry, maxRecordBytes: number = DEFAULT_MAX_BATCH_BYTES): Uint8Array[] {
  const kind = KIND_CODES.get(entry.kind);
  if (kind === undefined) {
    throw new RepriseError('INVALID_ARGUMENT', `cannot encode WAL entry of unknown kind "${String(entry.kind)}"`);
  }
  checkUint(entry.region, 'region', entry);
  checkUint(entry.epoch, 'epoch', entry);
  const body = entry.body;
  // Payload bytes before the body: array header, kind (a fixint), region, epoch.
  const fixed = 2 + uintBytes(entry.region) + uintBytes(entry.epoch);
  const whole = FRAME_HEADER_BYTES + fixed + binHeaderBytes(body.length) + body.length;
  if (whole <= maxRecordBytes) {
    return [writeFrame(whole, kind, entry.region, entry.epoch, body, -1, 0)];
  }

  const chunk = maxRecordBytes - (FRAME_HEADER_BYTES + fixed + SPLIT_FIELDS_MAX_BYTES);
  if (chunk < 1) {
    throw new RepriseError(
      'ENTRY_TOO_LARGE',
      `WAL entry (kind ${entry.kind}, region ${entry.region}, epoch ${entry.epoch}, ${body.length} body bytes) ` +
        `needs ${whole} bytes and cannot be split into records of at most ${maxRecordBytes} bytes`,
      { kind: entry.kind, region: entry.region, bodyBytes: body.length, maxRecordBytes },
    );
  }
  const parts = Math.ceil(body.length / chunk);
  const records = new Array<Uint8Array>(parts);
  for (let part = 0; part < parts; part++) {
    const slice = body.subarray(part * chunk, Math.min(body.length, (part + 1) * chunk));
    const size =
      FRAME_HEADER_BYTES + fixed + binHeaderBytes(slice.length) + slice.length + uintBytes(part) + uintBytes(parts);
    records[part] = writeFrame(size, kind, entry.region, entry.epoch, slice, part, parts);
  }
  return records;
}

/**
 * Verify and decode one record. Throws WAL_CORRUPT, naming the topic and
 * entry id, on a bad magic, version, length, checksum or payload.
 */
export function decodeRecord(record: LogRecord, topic: string): DecodedRecord {
  const out = new FrameFields();
  readFrame(record, topic, out);
  return {
    kind: out.kind,
    region: out.region,
    epoch: out.epoch,
    body: out.body,
    part: out.part,
    parts: out.parts,
  };
}

interface PendingSplit {
  readonly kind: EntryKind;
  readonly region: number;
  readonly epoch: number;
  readonly parts: number;
  readonly firstId: EntryId;
  /** Index of the part expected next. */
  next: number;
  bytes: number;
  bodyBytes: number;
  /** Bodies of the parts received so far (none kept for a torn split). */
  readonly chunks: Uint8Array[];
}

/**
 * Turns a stream of records, read in id order, back into entries.
 *
 * Split entries are reassembled. A split whose remaining parts never come,
 * because its writer crashed between appends (so it was never acknowledged),
 * is dropped when the next entry starts and counted in `tornEntries`; parts
 * of such a torn entry that still turn up later (a fenced-off writer that
 * carried on) are dropped with it. A continuation part that continues
 * nothing - such as the first record of a read that starts mid-entry - is
 * WAL_CORRUPT. An incomplete split at the end of the input yields nothing.
 */
export class EntryAssembler {
  private tornCount = 0;

  private readonly topic: string;
  private readonly frame = new FrameFields();
  private pending: PendingSplit | undefined;
  /** The last torn split, so that its late parts can be recognised. */
  private lastTorn: PendingSplit | undefined;
  private started = false;

  constructor(topic: string) {
    this.topic = topic;
  }

  /** Split entries dropped because they were never completed. */
  get tornEntries(): number {
    return this.tornCount;
  }

  /** The whole entry `record` completes, or undefined while a split entry is incomplete. */
  push(record: LogRecord): LoggedEntry | undefined {
    const f = this.frame;
    readFrame(record, this.topic, f);
    const first = !this.started;
    this.started = true;

    if (f.part === 0) {
      if (this.pending) this.dropPending();
      if (f.parts === 1) {
        const bytes = record.data.length;
        return { kind: f.kind, region: f.region, epoch: f.epoch, body: f.body, id: record.id, firstId: record.id, bytes };
      }
      this.pending = {
        kind: f.kind,
        region: f.region,
        epoch: f.epoch,
        parts: f.parts,
        firstId: record.id,
        next: 1,
        bytes: record.data.length,
        bodyBytes: f.body.length,
        chunks: [f.body],
      };
      return undefined;
    }

    const pending = this.pending;
    if (pending && continues(pending, f)) {
      pending.next++;
      pending.bytes += record.data.length;
      pending.bodyBytes += f.body.length;
      pending.chunks.push(f.body);
      if (pending.next < pending.parts) return undefined;
      this.pending = undefined;
      return {
        kind: pending.kind,
        region: pending.region,
        epoch: pending.epoch,
        body: concat(pending.chunks, pending.bodyBytes),
        id: record.id,
        firstId: pending.firstId,
        bytes: pending.bytes,
      };
    }
    if (this.lastTorn && continues(this.lastTorn, f)) {
      this.lastTorn.next++;
      return undefined;
    }
    const where = first
      ? 'the read starts in the middle of a split entry'
      : pending
        ? `expected part ${pending.next}/${pending.parts} of the split entry starting at id ${pending.firstId}`
        : 'no split entry is in progress';
    throw new RepriseError(
      'WAL_CORRUPT',
      `WAL topic "${this.topic}" entry id ${record.id}: unexpected continuation part ${f.part}/${f.parts} ` +
        `(kind ${f.kind}, region ${f.region}, epoch ${f.epoch}): ${where}`,
      { topic: this.topic, id: record.id },
    );
  }

  private dropPending(): void {
    const p = this.pending!;
    this.tornCount++;
    this.lastTorn = { ...p, chunks: [] };
    this.pending = undefined;
  }
}

function continues(split: PendingSplit, f: FrameFields): boolean {
  return (
    f.part === split.next &&
    f.parts === split.parts &&
    f.kind === split.kind &&
    f.region === split.region &&
    f.epoch === split.epoch
  );
}

function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Frame writing

function checkUint(value: number, field: string, entry: Entry): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RepriseError(
      'INVALID_ARGUMENT',
      `cannot encode WAL entry of kind ${entry.kind}: ${field} must be a non-negative safe integer, got ${value}`,
    );
  }
}

function uintBytes(v: number): number {
  return v < 0x80 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffff ? 5 : 9;
}

function binHeaderBytes(length: number): number {
  return length <= 0xff ? 2 : length <= 0xffff ? 3 : 5;
}

/** Write a frame of exactly `size` bytes. `part` < 0 writes a whole entry. */
function writeFrame(
  size: number,
  kind: number,
  region: number,
  epoch: number,
  body: Uint8Array,
  part: number,
  parts: number,
): Uint8Array {
  const buf = new Uint8Array(size);
  buf[0] = FRAME_MAGIC;
  buf[1] = FRAME_VERSION;
  writeU32(buf, 6, size - FRAME_HEADER_BYTES);
  let p = FRAME_HEADER_BYTES;
  buf[p++] = part < 0 ? 0x94 : 0x96; // fixarray of 4 or 6
  buf[p++] = kind; // positive fixint
  p = writeUint(buf, p, region);
  p = writeUint(buf, p, epoch);
  const n = body.length;
  if (n <= 0xff) {
    buf[p++] = 0xc4;
    buf[p++] = n;
  } else if (n <= 0xffff) {
    buf[p++] = 0xc5;
    buf[p++] = n >>> 8;
    buf[p++] = n & 0xff;
  } else {
    buf[p++] = 0xc6;
    writeU32(buf, p, n);
    p += 4;
  }
  buf.set(body, p);
  p += n;
  if (part >= 0) {
    p = writeUint(buf, p, part);
    writeUint(buf, p, parts);
  }
  writeU32(buf, 2, crc32c(buf.subarray(6)));
  return buf;
}

/** MessagePack unsigned int in its smallest form (v is a safe non-negative integer). */
function writeUint(buf: Uint8Array, p: number, v: number): number {
  if (v < 0x80) {
    buf[p] = v;
    return p + 1;
  }
  if (v <= 0xff) {
    buf[p] = 0xcc;
    buf[p + 1] = v;
    return p + 2;
  }
  if (v <= 0xffff) {
    buf[p] = 0xcd;
    buf[p + 1] = v >>> 8;
    buf[p + 2] = v & 0xff;
    return p + 3;
  }
  if (v <= 0xffffffff) {
    buf[p] = 0xce;
    writeU32(buf, p + 1, v);
    return p + 5;
  }
  buf[p] = 0xcf;
  writeU32(buf, p + 1, Math.floor(v / 0x1_0000_0000));
  writeU32(buf, p + 5, v >>> 0);
  return p + 9;
}

// ---------------------------------------------------------------------------
// Frame reading

/** Mutable decode target, reused by EntryAssembler to avoid an object per record. */
class FrameFields {
  kind: EntryKind = 'data';
  region = 0;
  epoch = 0;
  body: Uint8Array = new Uint8Array(0);
  part = 0;
  parts = 1;
}

/** Thrown inside the payload parser; readFrame turns it into WAL_CORRUPT with topic and id. */
class PayloadError extends Error {}

function corrupt(topic: string, id: EntryId, reason: string): RepriseError {
  return new RepriseError('WAL_CORRUPT', `WAL topic "${topic}" entry id ${id}: ${reason}`, { topic, id });
}

function readFrame(record: LogRecord, topic: string, out: FrameFields): void {
  const data = record.data;
  if (data.length < FRAME_HEADER_BYTES) {
    throw corrupt(topic, record.id, `record of ${data.length} bytes is shorter than a frame header`);
  }
  if (data[0] !== FRAME_MAGIC) throw corrupt(topic, record.id, `bad frame magic 0x${data[0]!.toString(16)}`);
  if (data[1] !== FRAME_VERSION) throw corrupt(topic, record.id, `unsupported frame version ${data[1]}`);
  const length = readU32(data, 6);
  if (length !== data.length - FRAME_HEADER_BYTES) {
    throw corrupt(
      topic,
      record.id,
      `frame declares ${length} payload bytes but holds ${data.length - FRAME_HEADER_BYTES}`,
    );
  }
  const stored = readU32(data, 2);
  const computed = crc32c(data.subarray(6));
  if (stored !== computed) {
    throw corrupt(
      topic,
      record.id,
      `checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`,
    );
  }
  try {
    readPayload(data, out);
  } catch (err) {
    if (err instanceof PayloadError) throw corrupt(topic, record.id, `bad payload: ${err.message}`);
    throw err;
  }
}

/**
 * Read position of the payload parser. Module state rather than an argument
 * object so that parsing allocates nothing; parsing is synchronous and never
 * re-entered.
 */
let pos = 0;

function readPayload(data: Uint8Array, out: FrameFields): void {
  pos = FRAME_HEADER_BYTES;
  const head = data[pos++]!;
  if (head !== 0x94 && head !== 0x96) {
    throw new PayloadError(`expected an array of 4 or 6, got byte 0x${head.toString(16)}`);
  }
  const kind = KINDS_BY_CODE[readUint(data)];
  if (kind === undefined) throw new PayloadError('unknown entry kind');
  out.kind = kind;
  out.region = readUint(data);
  out.epoch = readUint(data);
  out.body = readBin(data);
  if (head === 0x96) {
    out.part = readUint(data);
    out.parts = readUint(data);
    if (out.part >= out.parts) throw new PayloadError(`part ${out.part} of ${out.parts}`);
  } else {
    out.part = 0;
    out.parts = 1;
  }
  if (pos !== data.length) throw new PayloadError(`${data.length - pos} trailing bytes`);
}

function readU32(data: Uint8Array, p: number): number {
  return ((data[p]! << 24) | (data[p + 1]! << 16) | (data[p + 2]! << 8) | data[p + 3]!) >>> 0;
}

function need(data: Uint8Array, n: number): void {
  if (pos + n > data.length) throw new PayloadError('truncated');
}

/** A non-negative integer in any MessagePack integer format. */
function readUint(data: Uint8Array): number {
  need(data, 1);
  const b = data[pos++]!;
  if (b < 0x80) return b;
  let v: number;
  switch (b) {
    case 0xcc: // uint 8
      need(data, 1);
      v = data[pos]!;
      pos += 1;
      break;
    case 0xd0: // int 8
      need(data, 1);
      v = (data[pos]! << 24) >> 24;
      pos += 1;
      break;
    case 0xcd: // uint 16
    case 0xd1: // int 16
      need(data, 2);
      v = (data[pos]! << 8) | data[pos + 1]!;
      if (b === 0xd1) v = (v << 16) >> 16;
      pos += 2;
      break;
    case 0xce: // uint 32
    case 0xd2: // int 32
      need(data, 4);
      v = b === 0xce ? readU32(data, pos) : readU32(data, pos) | 0;
      pos += 4;
      break;
    case 0xcf: // uint 64
    case 0xd3: {
      // int 64
      need(data, 8);
      const hi = readU32(data, pos);
      // Above 2^53 (or negative, for int 64) is nothing this codec writes.
      if (hi > 0x1fffff) throw new PayloadError('integer out of safe range');
      v = hi * 0x1_0000_0000 + readU32(data, pos + 4);
      pos += 8;
      break;
    }
    default:
      throw new PayloadError(`expected an unsigned integer, got byte 0x${b.toString(16)}`);
  }
  if (v < 0) throw new PayloadError(`negative integer ${v}`);
  return v;
}

function readBin(data: Uint8Array): Uint8Array {
  need(data, 1);
  const b = data[pos++]!;
  let n: number;
  if (b === 0xc4) {
    need(data, 1);
    n = data[pos]!;
    pos += 1;
  } else if (b === 0xc5) {
    need(data, 2);
    n = (data[pos]! << 8) | data[pos + 1]!;
    pos += 2;
  } else if (b === 0xc6) {
    need(data, 4);
    n = readU32(data, pos);
    pos += 4;
  } else {
    throw new PayloadError(`expected a bin, got byte 0x${b.toString(16)}`);
  }
  need(data, n);
  const body = data.subarray(pos, pos + n);
  pos += n;
  return body;
}
