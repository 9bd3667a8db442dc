import { gunzipSync, gzipSync } from 'node:zlib';
import { parquetMetadataAsync, parquetRead, type AsyncBuffer, type FileMetaData } from 'hyparquet';
import { ByteWriter, ParquetWriter } from 'hyparquet-writer';
import { isRepriseError, RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { ColumnType, Value } from '../schema.js';
import { crc32 } from './checksum.js';
import { compareKeys, compareValues, type RowValues, type TableLayout } from './keys.js';

/**
 * An SST is one immutable Parquet file holding a region's rows sorted by
 * primary key (tags, then time), one version per key, tombstones included
 * (the `__deleted` column). Row groups of ROW_GROUP_ROWS rows carry Parquet
 * statistics; tags are dictionary-encoded, time delta-encoded, pages
 * gzip-compressed (node:zlib; Node 20 has no native zstd). Any Parquet
 * reader can open the file.
 *
 * The key-value metadata `reprise` records what the engine needs to plan a
 * read without decoding anything: the format, the region, the columns and,
 * per row group, its first and last primary key, time range and a CRC-32
 * of each column chunk (verified whenever a chunk is read, so damage is
 * SST_CORRUPT, never a wrong answer).
 *
 * Newest wins by file: SSTs whose key ranges and time ranges both overlap
 * are ordered by their manifest seq, which compaction preserves (see
 * TableRegion.compact), so rows need no sequence column of their own.
 */

export const SST_FORMAT = 2;
export const ROW_GROUP_ROWS = 2048;
/**
 * A row group also ends where the first tag changes once it holds this many
 * rows: groups then mostly hold one value of it (one host), so aggregations
 * grouped by it read their statistics instead of their rows.
 */
export const MIN_GROUP_ROWS = 512;
/** The tombstone column. */
export const DELETED_COLUMN = '__deleted';
const META_KEY = 'reprise';
/** CRC-32 (hex) of the `reprise` metadata: the footer's facts the engine plans by are checked like the chunks. */
const META_CRC_KEY = 'reprise.crc32';

export interface SstMeta {
  readonly rows: number;
  /** Encoded size in bytes. */
  readonly bytes: number;
  readonly minTime: number;
  readonly maxTime: number;
  /** Primary keys (tags, time) of the first and last rows. */
  readonly minKey: Value[];
  readonly maxKey: Value[];
  /** CRC-32 of the Parquet footer (the thrift FileMetaData). */
  readonly footerCrc: number;
}

/** What the engine knows of one row group without reading it. */
export interface RowGroupInfo {
  readonly rowStart: number;
  readonly rows: number;
  /** Primary keys (tags, time) of its first and last rows. */
  readonly firstKey: readonly Value[];
  readonly lastKey: readonly Value[];
  /** Per primary key column (tags, then time): the least and greatest value in the group. */
  readonly mins: readonly Value[];
  readonly maxs: readonly Value[];
  /** Rows that are not tombstones. */
  readonly live: number;
  /** Per schema column: statistics of its live non-null values (undefined for key columns). */
  readonly stats: readonly (FieldStats | null)[];
  /** Byte range of its column chunks in the file. */
  readonly start: number;
  readonly end: number;
  /** Per Parquet column (schema order, then __deleted): [offset, length, crc32] of its chunk. */
  readonly chunks: readonly (readonly [number, number, number])[];
}

/**
 * What aggregations read instead of a row group's values when it can
 * (TableRegion.query): over its live, non-null values of one field, their
 * count, sum (numbers only), least and greatest, and the values at the
 * earliest and latest time (between rows of one time, the first in key order).
 */
export type FieldStats = [count: number, sum: number | null, min: Value, max: Value, firstTime: number | null, first: Value, lastTime: number | null, last: Value];

interface IndexMeta {
  format: number;
  regionId: number;
  columns: [string, ColumnType][];
  rows: number;
  groups: [firstKey: Value[], lastKey: Value[], mins: Value[], maxs: Value[], rows: number, chunks: [number, number, number][], live: number, stats: (FieldStats | null)[]][];
}

/** Parquet physical type of a column type. */
function parquetElement(name: string, type: ColumnType, required: boolean): Record<string, unknown> {
  const repetition_type = required ? 'REQUIRED' : 'OPTIONAL';
  switch (type) {
    case 'string':
      return { name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type };
    case 'float64':
      return { name, type: 'DOUBLE', repetition_type };
    case 'int64':
      return { name, type: 'INT64', repetition_type };
    case 'timestamp':
      return { name, type: 'INT64', converted_type: 'TIMESTAMP_MILLIS', repetition_type };
    case 'bool':
      return { name, type: 'BOOLEAN', repetition_type };
  }
}

const compressors = { GZIP: (input: Uint8Array) => new Uint8Array(gzipSync(input, { level: 1 })) };
const decompressors = { GZIP: (input: Uint8Array) => new Uint8Array(gunzipSync(input)) };
const parsers = { timestampFromMilliseconds: (ms: bigint) => Number(ms) };

/**
 * Writes one SST a row group at a time: rows are buffered column by column
 * and each full row group is encoded at once, so a flush or a compaction
 * holds one row group of values besides the encoded bytes.
 */
export class SstWriter {
  private readonly layout: TableLayout;
  private readonly regionId: number;
  private readonly out = new ByteWriter();
  private readonly writer: ParquetWriter;
  private readonly buffers: Value[][];
  private readonly deleted: boolean[] = [];
  private readonly groups: IndexMeta['groups'] = [];
  private rows = 0;
  private minTime = Infinity;
  private maxTime = -Infinity;
  private first: Value[] | undefined;
  private last: Value[] | undefined;

  constructor(layout: TableLayout, regionId: number) {
    this.layout = layout;
    this.regionId = regionId;
    const { columns } = layout.schema;
    const schema = [
      { name: 'root', num_children: columns.length + 1 },
      ...columns.map((c, i) => parquetElement(c.name, c.type, layout.isKey[i] as boolean)),
      parquetElement(DELETED_COLUMN, 'bool', true),
    ];
    this.writer = new ParquetWriter({ writer: this.out, schema: schema as never, codec: 'GZIP', compressors, createdBy: 'reprise' });
    this.buffers = columns.map(() => []);
  }

  /** Rows must come in key order, one version per key. */
  add(row: readonly Value[], deleted: boolean): void {
    const { buffers } = this;
    const lead = this.layout.tagIdx[0];
    const n = this.deleted.length;
    if (lead !== undefined && n >= MIN_GROUP_ROWS && buffers[lead][n - 1] !== row[lead]) this.writeGroup();
    for (let c = 0; c < buffers.length; c++) buffers[c].push(row[c]);
    this.deleted.push(deleted);
    if (this.deleted.length === ROW_GROUP_ROWS) this.writeGroup();
  }

  /** The encoded file and its metadata; undefined if no row was added. */
  finish(): { bytes: Uint8Array; meta: SstMeta } | undefined {
    if (this.deleted.length > 0) this.writeGroup();
    if (this.first === undefined || this.last === undefined) return undefined;
    const index: IndexMeta = {
      format: SST_FORMAT,
      regionId: this.regionId,
      columns: this.layout.schema.columns.map((c) => [c.name, c.type]),
      rows: this.rows,
      groups: this.groups,
    };
    const json = JSON.stringify(index);
    (this.writer as unknown as { kvMetadata: { key: string; value: string }[] }).kvMetadata = [
      { key: META_KEY, value: json },
      { key: META_CRC_KEY, value: crc32(new TextEncoder().encode(json)).toString(16) },
    ];
    this.writer.finish();
    const bytes = new Uint8Array(this.out.getBuffer());
    const meta: SstMeta = {
      rows: this.rows,
      bytes: bytes.length,
      minTime: this.minTime,
      maxTime: this.maxTime,
      minKey: this.first,
      maxKey: this.last,
      footerCrc: crc32(footerOf(bytes)),
    };
    return { bytes, meta };
  }

  private writeGroup(): void {
    const { layout, buffers, deleted } = this;
    const n = deleted.length;
    const { keyIdx } = layout;
    const mins: Value[] = [];
    const maxs: Value[] = [];
    for (const c of keyIdx) {
      const col = buffers[c];
      let lo = col[0];
      let hi = col[0];
      for (let i = 1; i < n; i++) {
        const v = col[i];
        if (compareValues(v, lo) < 0) lo = v;
        else if (compareValues(v, hi) > 0) hi = v;
      }
      mins.push(lo);
      maxs.push(hi);
    }
    let live = 0;
    for (let i = 0; i < n; i++) if (!deleted[i]) live++;
    const times = buffers[layout.timeIdx] as number[];
    const stats = layout.schema.columns.map((c, col) => (layout.isKey[col] ? null : fieldStats(buffers[col], times, deleted, c.type !== 'string' && c.type !== 'bool')));
    const minTime = mins[mins.length - 1] as number;
    const maxTime = maxs[maxs.length - 1] as number;
    const firstKey = keyIdx.map((c) => buffers[c][0]);
    const lastKey = keyIdx.map((c) => buffers[c][n - 1]);
    const columnData = layout.schema.columns.map((c, i) => ({
      name: c.name,
      data: parquetData(c.type, buffers[i], layout.isKey[i] as boolean),
      ...(c.type === 'timestamp' || c.type === 'int64' ? { encoding: 'DELTA_BINARY_PACKED' as const } : {}),
      // Parquet statistics for the key columns, for other readers; the engine
      // plans by its own index, and field statistics cost a fifth of a flush.
      statistics: layout.isKey[i] as boolean,
    }));
    columnData.push({ name: DELETED_COLUMN, data: deleted.slice() as never, statistics: false });
    const before = this.writer.row_groups.length;
    this.writer.write({ columnData: columnData as never, rowGroupSize: n, pageSize: 1 << 30 });
    const group = this.writer.row_groups[before];
    const buffer = new Uint8Array(this.out.buffer, 0, this.out.offset);
    const chunks: [number, number, number][] = group.columns.map((chunk) => {
      const md = chunk.meta_data!;
      const offset = Number(md.dictionary_page_offset ?? md.data_page_offset);
      const length = Number(md.total_compressed_size);
      return [offset, length, crc32(buffer.subarray(offset, offset + length))];
    });
    this.groups.push([firstKey, lastKey, mins, maxs, n, chunks, live, stats]);
    this.rows += n;
    if (minTime < this.minTime) this.minTime = minTime;
    if (maxTime > this.maxTime) this.maxTime = maxTime;
    this.first ??= firstKey;
    this.last = lastKey;
    for (const b of buffers) b.length = 0;
    deleted.length = 0;
  }
}

/** FieldStats of one field's values in a row group. */
function fieldStats(values: readonly Value[], times: readonly number[], deleted: readonly boolean[], numeric: boolean): FieldStats {
  let count = 0;
  let sum = 0;
  let min: Value = null;
  let max: Value = null;
  let firstTime: number | null = null;
  let first: Value = null;
  let lastTime: number | null = null;
  let last: Value = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || deleted[i]) continue;
    count++;
    if (numeric) sum += v as number;
    if (min === null || compareValues(v, min) < 0) min = v;
    if (max === null || compareValues(v, max) > 0) max = v;
    const t = times[i];
    if (firstTime === null || t < firstTime) {
      firstTime = t;
      first = v;
    }
    if (lastTime === null || t > lastTime) {
      lastTime = t;
      last = v;
    }
  }
  return [count, numeric ? sum : null, min, max, firstTime, first, lastTime, last];
}

/** A column's values as hyparquet-writer takes them (INT64 as bigint). */
function parquetData(type: ColumnType, values: Value[], required: boolean): unknown {
  if (type === 'int64' || type === 'timestamp') {
    if (required) return BigInt64Array.from(values as number[], (v) => BigInt(v));
    return values.map((v) => (v === null ? null : BigInt(v as number)));
  }
  if (type === 'float64' && required) return Float64Array.from(values as number[]);
  return values.slice();
}

/** Encode sorted entries; undefined when there are none. */
export function encodeSst(layout: TableLayout, regionId: number, entries: Iterable<readonly [RowValues, boolean]>): { bytes: Uint8Array; meta: SstMeta } | undefined {
  const writer = new SstWriter(layout, regionId);
  for (const [row, deleted] of entries) writer.add(row, deleted);
  return writer.finish();
}


/** What a reader expects of an SST: the manifest's record of it. */
export interface SstExpectation {
  readonly rows: number;
  readonly minKey: readonly Value[];
  readonly maxKey: readonly Value[];
  readonly footerCrc?: number;
}

/** The thrift footer of a Parquet file: before its length (u32 LE) and "PAR1". */
function footerOf(bytes: Uint8Array): Uint8Array {
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(bytes.length - 8, true);
  return bytes.subarray(Math.max(0, bytes.length - 8 - length), bytes.length - 8);
}

/**
 * An SST's footer, verified and parsed: its row groups, and reads of
 * column chunks. Cheap to keep (no row data).
 */
export class SstReader {
  readonly file: string;
  readonly groups: readonly RowGroupInfo[];
  /** Rough memory held by this reader (the parsed footer). */
  readonly footerBytes: number;
  private readonly store: ObjectStore;
  private readonly layout: TableLayout;
  private readonly regionId: number;
  private readonly metadata: FileMetaData;
  private readonly size: number;
  /** Parquet column name -> index in a group's chunks. */
  private readonly chunkIndex: ReadonlyMap<string, number>;

  private constructor(
    store: ObjectStore,
    file: string,
    layout: TableLayout,
    regionId: number,
    metadata: FileMetaData,
    size: number,
    groups: RowGroupInfo[],
    footerBytes: number,
  ) {
    this.store = store;
    this.file = file;
    this.layout = layout;
    this.regionId = regionId;
    this.metadata = metadata;
    this.size = size;
    this.groups = groups;
    this.footerBytes = footerBytes;
    this.chunkIndex = new Map([...layout.names, DELETED_COLUMN].map((n, i) => [n, i]));
  }

  /**
   * Read and verify the footer: SST_MISSING if the file is gone,
   * SST_FORMAT_UNSUPPORTED for an SST of an older format, SST_CORRUPT
   * (naming region and file) if it is damaged, belongs to another region or
   * table, or does not hold what the manifest says.
   */
  static async open(store: ObjectStore, file: string, layout: TableLayout, regionId: number, expect?: SstExpectation): Promise<SstReader> {
    const corrupt = (why: string, cause?: unknown): never => {
      throw new RepriseError('SST_CORRUPT', `region ${regionId}: SST ${file} is corrupt: ${why}`, { regionId, file }, { cause });
    };
    const size = await store.size(file).catch(missingAs(regionId, file));
    if (size < 12) corrupt(`only ${size} bytes`);
    const head = await store.getRange(file, 0, 5);
    if (head[0] === 0x52 && head[1] === 0x53 && head[2] === 0x53 && head[3] === 0x54) {
      throw new RepriseError(
        'SST_FORMAT_UNSUPPORTED',
        `region ${regionId}: SST ${file} has format ${head[4]} (reprise 0.1, msgpack blocks); this version reads format ${SST_FORMAT} (Parquet) only: ` +
          'read the data with reprise 0.1 and write it again, nothing has been changed',
        { regionId, file, format: head[4] },
      );
    }
    // The footer is read whole (one ranged get of the file's tail) and checked before it is parsed.
    const tail = await store.getRange(file, Math.max(0, size - (1 << 16)), size);
    const footerLength = new DataView(tail.buffer, tail.byteOffset, tail.byteLength).getUint32(tail.length - 8, true);
    if (footerLength + 12 > size) corrupt(`footer length ${footerLength} out of range`);
    const footerBytes = footerLength + 8 <= tail.length ? tail : await store.getRange(file, size - footerLength - 8, size);
    if (expect?.footerCrc !== undefined && crc32(footerOf(footerBytes)) !== expect.footerCrc) corrupt('its footer fails its checksum');
    let metadata: FileMetaData;
    try {
      const exact = footerBytes.slice(footerBytes.length - footerLength - 8);
      metadata = await parquetMetadataAsync({ byteLength: size, slice: (s: number, e?: number) => exact.slice(s - (size - exact.length), (e ?? size) - (size - exact.length)).buffer }, { parsers, initialFetchSize: exact.length });
    } catch (err) {
      return corrupt(`unreadable Parquet footer: ${(err as Error).message}`, err);
    }
    const raw = metadata.key_value_metadata?.find((kv) => kv.key === META_KEY)?.value;
    const crc = metadata.key_value_metadata?.find((kv) => kv.key === META_CRC_KEY)?.value;
    if (raw === undefined || crc !== crc32(new TextEncoder().encode(raw)).toString(16)) corrupt('its reprise metadata is missing or fails its checksum');
    let index: IndexMeta;
    try {
      index = JSON.parse(raw ?? 'null') as IndexMeta;
    } catch (err) {
      return corrupt('undecodable reprise metadata', err);
    }
    if (index === null || typeof index !== 'object' || !Array.isArray(index.groups)) corrupt('no reprise metadata');
    if (index.format !== SST_FORMAT) corrupt(`format ${index.format}, expected ${SST_FORMAT}`);
    if (index.regionId !== regionId) corrupt(`written for region ${index.regionId}`);
    const expected = layout.schema.columns.map((c) => `${c.name}:${c.type}`).join(',');
    const actual = Array.isArray(index.columns) ? index.columns.map((c) => `${c[0]}:${c[1]}`).join(',') : '';
    if (actual !== expected) corrupt(`columns [${actual}] do not match table "${layout.schema.name}" [${expected}]`);
    if (metadata.row_groups.length !== index.groups.length || Number(metadata.num_rows) !== index.rows) corrupt('row groups do not match its metadata');
    if (expect !== undefined) {
      const sameKey = (a: readonly Value[], b: readonly Value[]) => compareKeys(a, b) === 0;
      const first = index.groups[0]?.[0] ?? [];
      const last = index.groups[index.groups.length - 1]?.[1] ?? [];
      if (index.rows !== expect.rows || !sameKey(first, expect.minKey) || !sameKey(last, expect.maxKey)) {
        corrupt(`holds ${index.rows} rows from [${first.join(', ')}] to [${last.join(', ')}], its manifest says ${expect.rows} from [${expect.minKey.join(', ')}] to [${expect.maxKey.join(', ')}]`);
      }
    }
    let rowStart = 0;
    const groups: RowGroupInfo[] = index.groups.map(([firstKey, lastKey, mins, maxs, rows, chunks, live, stats], g) => {
      if (Number(metadata.row_groups[g].num_rows) !== rows || chunks.length !== layout.names.length + 1) corrupt(`row group ${g} does not match its metadata`);
      let start = Infinity;
      let end = 0;
      for (const [offset, length] of chunks) {
        start = Math.min(start, offset);
        end = Math.max(end, offset + length);
      }
      if (end > size) corrupt(`row group ${g} lies past the end of the file`);
      const info: RowGroupInfo = { rowStart, rows, firstKey, lastKey, mins, maxs, live, stats, start, end, chunks };
      rowStart += rows;
      return info;
    });
    return new SstReader(store, file, layout, regionId, metadata, size, groups, (raw?.length ?? 0) * 4 + groups.length * 600);
  }

  /**
   * Decode columns (Parquet names: table columns, or `__deleted`) of row
   * group `g`. The group's bytes are read at once and each chunk decoded is
   * checked against its CRC first.
   */
  async readGroup(g: number, columns: readonly string[]): Promise<Map<string, ArrayLike<unknown>>> {
    const group = this.groups[g];
    const corrupt = (why: string, cause?: unknown): never => {
      throw new RepriseError('SST_CORRUPT', `region ${this.regionId}: SST ${this.file} is corrupt: ${why}`, { regionId: this.regionId, file: this.file }, { cause });
    };
    const bytes = await this.store.getRange(this.file, group.start, group.end).catch(missingAs(this.regionId, this.file));
    if (bytes.length !== group.end - group.start) corrupt(`row group ${g} is cut short`);
    for (const name of columns) {
      const [offset, length, crc] = group.chunks[this.chunkIndex.get(name) as number];
      const at = offset - group.start;
      if (crc32(bytes.subarray(at, at + length)) !== crc) corrupt(`column ${name} of row group ${g} fails its checksum`);
    }
    const file: AsyncBuffer = {
      byteLength: this.size,
      slice: (s: number, e?: number) => {
        const end = e ?? this.size;
        if (s < group.start || end > group.end) throw new Error(`read of bytes ${s}-${end} outside row group ${g}`);
        return bytes.slice(s - group.start, end - group.start).buffer;
      },
    };
    const out = new Map<string, ArrayLike<unknown>>();
    try {
      await parquetRead({
        file,
        metadata: this.metadata,
        columns: [...columns],
        rowStart: group.rowStart,
        rowEnd: group.rowStart + group.rows,
        compressors: decompressors,
        parsers,
        onChunk: (chunk) => {
          const prev = out.get(chunk.columnName);
          out.set(chunk.columnName, prev === undefined ? chunk.columnData : [...Array.from(prev), ...Array.from(chunk.columnData as ArrayLike<unknown>)]);
        },
      });
    } catch (err) {
      return corrupt(`row group ${g} does not decode: ${(err as Error).message}`, err);
    }
    for (const name of columns) {
      const data = out.get(name);
      if (data === undefined || data.length !== group.rows) corrupt(`column ${name} of row group ${g} holds ${data?.length ?? 0} values, expected ${group.rows}`);
      out.set(name, toValues(name === DELETED_COLUMN ? 'bool' : this.layout.types[this.layout.index.get(name) as number], data as ArrayLike<unknown>));
    }
    return out;
  }
}

/** A store's NOT_FOUND for an SST as SST_MISSING naming region and file (other errors as they are). */
function missingAs(regionId: number, file: string): (err: unknown) => never {
  return (err) => {
    if (isRepriseError(err, 'NOT_FOUND')) {
      throw new RepriseError('SST_MISSING', `region ${regionId}: SST ${file} is missing from the object store`, { regionId, file }, { cause: err });
    }
    throw err;
  };
}

/** Decoded Parquet values -> engine values (bigint -> number, undefined -> null). */
function toValues(type: ColumnType, data: ArrayLike<unknown>): ArrayLike<unknown> {
  if (type === 'float64' && data instanceof Float64Array) return data;
  const n = data.length;
  const out: Value[] = new Array(n);
  if (type === 'int64' || type === 'timestamp') {
    for (let i = 0; i < n; i++) {
      const v = data[i];
      out[i] = v === null || v === undefined ? null : Number(v as bigint | number);
    }
    return out;
  }
  for (let i = 0; i < n; i++) {
    const v = data[i];
    out[i] = v === undefined ? null : (v as Value);
  }
  return out;
}
