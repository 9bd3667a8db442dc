import { Decoder, Encoder } from '@msgpack/msgpack';
import { isRepriseError, RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { Value } from '../schema.js';
import { crc32 } from './checksum.js';
import { keyOf, type RowValues, type TableLayout } from './keys.js';
import { MsgpackWriter } from './msgpack-rows.js';
import type { Entry, ScanPlan } from './scan.js';

/**
 * An SST is one immutable object holding a region's rows sorted by primary
 * key, one version per key, tombstones included:
 *
 *   "RSST" | format (u8) | block* | footer | footerLength (u32 LE) | crc32 (u32 LE) | "RSST"
 *
 * A block is msgpack [rows, tombstoneIndexes] with rows as column-ordered
 * arrays; the msgpack footer holds the row count, min/max time and key, the
 * column list and where each block lies. The CRC covers every byte before it.
 */

const MAGIC = new Uint8Array([0x52, 0x53, 0x53, 0x54]); // "RSST"
const FORMAT = 1;
const HEADER_BYTES = MAGIC.length + 1;
const TRAILER_BYTES = 4 + 4 + MAGIC.length;
/** Rows per block: small enough to keep each encoder buffer modest. */
const BLOCK_ROWS = 1024;

export interface SstMeta {
  readonly rows: number;
  /** Encoded size in bytes. */
  readonly bytes: number;
  readonly minTime: number;
  readonly maxTime: number;
  /** Primary keys (tags, time) of the first and last rows. */
  readonly minKey: Value[];
  readonly maxKey: Value[];
}

/**
 * A decoded SST: its rows in key order and a tombstone flag per row. The
 * SST just written by a flush decodes its rows from its bytes when first
 * read (a write-heavy region may never read it before it is evicted).
 */
export interface SstData {
  readonly meta: SstMeta;
  readonly rows: readonly RowValues[];
  readonly deleted: Uint8Array;
}

interface Footer {
  rows: number;
  minTime: number;
  maxTime: number;
  minKey: Value[];
  maxKey: Value[];
  columns: [name: string, type: string][];
  /** [offset, length, rows] per block. */
  blocks: [number, number, number][];
}

// Both synchronous, so one instance of each is safe to share.
const encoder = new Encoder();
const decoder = new Decoder();

/**
 * Encode sorted entries; undefined when there are none. The entries are
 * encoded as they come, a block at a time, and not kept: the returned data
 * decodes them from the bytes if it is read.
 */
export function encodeSst(layout: TableLayout, entries: Iterable<Entry>): { bytes: Uint8Array; data: SstData } | undefined {
  // A writer of its own: its buffer grows to the SST's size and goes with it.
  const out = new MsgpackWriter().raw(MAGIC).raw(Uint8Array.of(FORMAT));
  const blocks: Footer['blocks'] = [];
  const block: RowValues[] = [];
  const tombstones: number[] = [];
  const writeBlock = (): void => {
    const offset = out.length;
    out.arrayHeader(2).rows(block).array(tombstones);
    blocks.push([offset, out.length - offset, block.length]);
    block.length = 0;
    tombstones.length = 0;
  };
  let rows = 0;
  let minTime = Infinity;
  let maxTime = -Infinity;
  let first: RowValues | undefined;
  let last: RowValues | undefined;
  for (const [row, deleted] of entries) {
    if (deleted) tombstones.push(block.length);
    block.push(row);
    rows++;
    const t = row[layout.timeIdx] as number;
    if (t < minTime) minTime = t;
    if (t > maxTime) maxTime = t;
    first ??= row;
    last = row;
    if (block.length === BLOCK_ROWS) writeBlock();
  }
  if (first === undefined || last === undefined) return undefined;
  if (block.length > 0) writeBlock();

  const footer: Footer = {
    rows,
    minTime,
    maxTime,
    minKey: keyOf(layout, first),
    maxKey: keyOf(layout, last),
    columns: layout.schema.columns.map((c) => [c.name, c.type]),
    blocks,
  };
  const footerBytes = encoder.encode(footer);
  out.raw(footerBytes);
  const trailer = new Uint8Array(TRAILER_BYTES);
  const view = new DataView(trailer.buffer);
  view.setUint32(0, footerBytes.length, true);
  out.raw(trailer.subarray(0, 4));
  view.setUint32(4, crc32(out.written()), true);
  trailer.set(MAGIC, 8);
  const bytes = out.raw(trailer.subarray(4)).finish();

  const meta: SstMeta = { rows, bytes: bytes.length, minTime, maxTime, minKey: footer.minKey, maxKey: footer.maxKey };
  return { bytes, data: new EncodedSst(meta, bytes, blocks) };
}

/** SstData of bytes just encoded: the rows are decoded on first read. */
class EncodedSst implements SstData {
  private bytes: Uint8Array | undefined;
  private decoded: { rows: RowValues[]; deleted: Uint8Array } | undefined;

  constructor(
    readonly meta: SstMeta,
    bytes: Uint8Array,
    private readonly blocks: Footer['blocks'],
  ) {
    this.bytes = bytes;
  }

  get rows(): readonly RowValues[] {
    return this.decode().rows;
  }

  get deleted(): Uint8Array {
    return this.decode().deleted;
  }

  private decode(): { rows: RowValues[]; deleted: Uint8Array } {
    if (this.decoded === undefined) {
      const fail = (why: string): never => {
        throw new RepriseError('INTERNAL', `SST just encoded does not decode: ${why}`);
      };
      this.decoded = decodeBlocks(this.bytes as Uint8Array, this.blocks, this.meta.rows, fail);
      this.bytes = undefined;
    }
    return this.decoded;
  }
}

/** The rows and tombstone flags of an SST's blocks. */
function decodeBlocks(
  bytes: Uint8Array,
  blocks: Footer['blocks'],
  count: number,
  corrupt: (why: string, cause?: unknown) => never,
): { rows: RowValues[]; deleted: Uint8Array } {
  const rows: RowValues[] = [];
  const deleted = new Uint8Array(count);
  for (const [offset, length, n] of blocks) {
    let block: [RowValues[], number[]];
    try {
      block = decoder.decode(bytes.subarray(offset, offset + length)) as [RowValues[], number[]];
    } catch (err) {
      return corrupt(`undecodable block at ${offset}: ${(err as Error).message}`, err);
    }
    if (!Array.isArray(block) || !Array.isArray(block[0]) || block[0].length !== n || !Array.isArray(block[1])) {
      corrupt(`block at ${offset} does not hold ${n} rows`);
    }
    for (const i of block[1]) deleted[rows.length + i] = 1;
    for (const row of block[0]) rows.push(row);
  }
  if (rows.length !== count) corrupt(`holds ${rows.length} rows, footer says ${count}`);
  return { rows, deleted };
}

/** Decode and verify an SST; any damage is SST_CORRUPT naming the region and file. */
export function decodeSst(layout: TableLayout, bytes: Uint8Array, regionId: number, file: string): SstData {
  const corrupt = (why: string, cause?: unknown): never => {
    throw new RepriseError('SST_CORRUPT', `region ${regionId}: SST ${file} is corrupt: ${why}`, { regionId, file }, { cause });
  };
  if (bytes.length < HEADER_BYTES + TRAILER_BYTES) corrupt(`only ${bytes.length} bytes`);
  const end = bytes.length;
  if (!hasMagic(bytes, 0) || !hasMagic(bytes, end - MAGIC.length)) corrupt('bad magic');
  if (bytes[MAGIC.length] !== FORMAT) corrupt(`unknown format ${bytes[MAGIC.length]}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getUint32(end - 8, true);
  const computed = crc32(bytes.subarray(0, end - 8));
  if (stored !== computed) corrupt(`checksum mismatch (stored ${hex(stored)}, computed ${hex(computed)})`);

  const footerLength = view.getUint32(end - TRAILER_BYTES, true);
  const footerStart = end - TRAILER_BYTES - footerLength;
  if (footerStart < HEADER_BYTES) corrupt(`footer length ${footerLength} out of range`);
  let footer: Footer;
  try {
    footer = decoder.decode(bytes.subarray(footerStart, end - TRAILER_BYTES)) as Footer;
  } catch (err) {
    return corrupt(`undecodable footer: ${(err as Error).message}`, err);
  }
  if (typeof footer !== 'object' || footer === null || !Number.isSafeInteger(footer.rows) || !Array.isArray(footer.blocks)) {
    corrupt('malformed footer');
  }
  const expected = layout.schema.columns.map((c) => `${c.name}:${c.type}`).join(',');
  const actual = Array.isArray(footer.columns) ? footer.columns.map((c) => `${c[0]}:${c[1]}`).join(',') : '';
  if (actual !== expected) corrupt(`columns [${actual}] do not match table "${layout.schema.name}" [${expected}]`);

  const { rows, deleted } = decodeBlocks(bytes, footer.blocks, footer.rows, corrupt);
  const meta: SstMeta = {
    rows: footer.rows,
    bytes: bytes.length,
    minTime: footer.minTime,
    maxTime: footer.maxTime,
    minKey: footer.minKey,
    maxKey: footer.maxKey,
  };
  return { meta, rows, deleted };
}

/** Encode and store sorted entries under `key`; undefined (nothing written) when there are none. */
export async function writeSst(store: ObjectStore, key: string, layout: TableLayout, entries: Iterable<Entry>): Promise<SstData | undefined> {
  const encoded = encodeSst(layout, entries);
  if (encoded === undefined) return undefined;
  await store.put(key, encoded.bytes);
  return encoded.data;
}

/** Load and verify an SST: SST_MISSING if it is gone, SST_CORRUPT if damaged. */
export async function readSst(store: ObjectStore, key: string, layout: TableLayout, regionId: number): Promise<SstData> {
  let bytes: Uint8Array;
  try {
    bytes = await store.get(key);
  } catch (err) {
    if (isRepriseError(err, 'NOT_FOUND')) {
      throw new RepriseError('SST_MISSING', `region ${regionId}: SST ${key} is missing from the object store`, { regionId, file: key }, { cause: err });
    }
    throw err;
  }
  return decodeSst(layout, bytes, regionId, key);
}

/** The SST's entries in the plan's range that match it, in key order. */
export function* scanSst(data: SstData, layout: TableLayout, plan: ScanPlan): Generator<Entry> {
  const { rows, deleted } = data;
  let i = plan.seek === undefined ? 0 : lowerBound(rows, plan.seek, layout);
  for (; i < rows.length; i++) {
    const row = rows[i];
    if (plan.pastEnd(row)) return;
    if (plan.matches(row)) yield [row, deleted[i] === 1];
  }
}

/** Every entry of the SST, in key order. */
export function* sstEntries(data: SstData): Generator<Entry> {
  for (let i = 0; i < data.rows.length; i++) yield [data.rows[i], data.deleted[i] === 1];
}

/** Index of the first row not ordered before `key`. */
function lowerBound(rows: readonly RowValues[], key: RowValues, layout: TableLayout): number {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (layout.compare(rows[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function hasMagic(bytes: Uint8Array, at: number): boolean {
  return MAGIC.every((b, i) => bytes[at + i] === b);
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
