import { gunzipSync, gzipSync } from 'node:zlib';
import type { CompressionCodec, SchemaElement, SchemaTree } from 'hyparquet';
import { parquetHeader, readColumn } from 'hyparquet/src/column.js';
import { convert, DEFAULT_PARSERS } from 'hyparquet/src/convert.js';
import { readDataPageV2 } from 'hyparquet/src/datapage.js';
import { getSchemaPath } from 'hyparquet/src/schema.js';
import { ByteWriter, ParquetWriter } from 'hyparquet-writer';
import { isRepriseError, RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { ColumnType, Value } from '../schema.js';
import { crc32 } from './checksum.js';
import { compareKeys, compareValues, type TableLayout } from './keys.js';

/**
 * An SST is one immutable Parquet file holding a region's rows sorted by
 * primary key (tags, then time), one version per key, tombstones included
 * (the `__deleted` column). Row groups of ROW_GROUP_ROWS rows carry Parquet
 * statistics; tags are dictionary-encoded, time delta-encoded, pages
 * gzip-compressed (node:zlib; Node 20 has no native zstd). Any Parquet
 * reader can open the file.
 *
 * The engine plans and reads by an index of its own, written between the
 * last row group and the Parquet footer (bytes other readers pass over):
 *
 *   PAR1 | row groups | index (JSON) | index length u32 | index CRC-32 u32 | "RIDX" | Parquet footer | footer length u32 | PAR1
 *
 * The index holds the format, the region, the columns, each column's
 * compression (gzip for fields; none for key columns and __deleted, whose
 * encodings leave a few bytes a group) and, per row group,
 * its first and last primary key, per-key-column min/max, field statistics
 * and each column chunk's offset, length and CRC-32 (verified whenever a
 * chunk is read, so damage is SST_CORRUPT, never a wrong answer). Chunks
 * are decoded with hyparquet's column reader from the index alone: the
 * Parquet footer, whose thrift holds every chunk's metadata (for a file of
 * 1,000 row groups, 400 KB and 45 ms to parse), is written for other
 * readers and never parsed by the engine.
 *
 * Newest wins by file: SSTs whose key ranges and time ranges both overlap
 * are ordered by their manifest seq, which compaction preserves (see
 * TableRegion.compact), so rows need no sequence column of their own.
 */

export const SST_FORMAT = 3;
export const ROW_GROUP_ROWS = 2048;
/**
 * A row group also ends where the series (the tags) changes once it holds
 * this many rows: a series with at least this many rows in an SST then has
 * groups of its own, so aggregations grouped by tags, and first/last per
 * series, read their statistics instead of their rows, and a one-series
 * query decodes only that series' rows.
 */
export const MIN_GROUP_ROWS = 512;
/** The tombstone column. */
export const DELETED_COLUMN = '__deleted';
/** Last 4 bytes of the index trailer (before the Parquet footer). */
const INDEX_MAGIC = 0x58444952; // "RIDX" little-endian
const INDEX_TRAILER = 12;
/** Chunks of a row group this close are read in one get, the bytes between them read and dropped. */
const READ_GAP = 32 * 1024;
/** Bytes read from a file's end at open: the Parquet footer's length, the trailer, and usually the whole index. */
const TAIL_READ = 1 << 20;

export interface SstMeta {
  readonly rows: number;
  /** Encoded size in bytes. */
  readonly bytes: number;
  readonly minTime: number;
  readonly maxTime: number;
  /** Primary keys (tags, time) of the first and last rows. */
  readonly minKey: Value[];
  readonly maxKey: Value[];
  /** CRC-32 of the engine's index (what a reader plans by: see the file layout above). */
  readonly indexCrc: number;
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
  /** Per Parquet column (schema order, then __deleted): how its chunks are compressed. */
  codecs: CompressionCodec[];
  groups: [firstKey: Value[], lastKey: Value[], mins: Value[], maxs: Value[], rows: number, chunks: [number, number, number][], live: number, stats: (FieldStats | null)[]][];
}

/** Parquet physical type of a column type. */
function parquetElement(name: string, type: ColumnType, required: boolean): SchemaElement {
  const repetition_type = required ? ('REQUIRED' as const) : ('OPTIONAL' as const);
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
    this.writer = new ParquetWriter({ writer: this.out, schema: parquetSchema(layout) as never, codec: 'GZIP', compressors, createdBy: 'reprise' });
    this.buffers = layout.schema.columns.map(() => []);
  }

  /** Rows must come in key order, one version per key. */
  add(row: readonly Value[], deleted: boolean): void {
    const { buffers } = this;
    const n = this.deleted.length;
    if (n >= MIN_GROUP_ROWS && this.layout.tagIdx.some((c) => buffers[c][n - 1] !== row[c])) this.writeGroup();
    for (let c = 0; c < buffers.length; c++) buffers[c].push(row[c]);
    this.deleted.push(deleted);
    if (this.deleted.length === ROW_GROUP_ROWS) this.writeGroup();
  }

  /** The encoded file, its metadata and its index (see SstReader.ofIndex); undefined if no row was added. */
  finish(): { bytes: Uint8Array; meta: SstMeta; index: WrittenIndex } | undefined {
    if (this.deleted.length > 0) this.writeGroup();
    if (this.first === undefined || this.last === undefined) return undefined;
    const index: IndexMeta = {
      format: SST_FORMAT,
      regionId: this.regionId,
      columns: this.layout.schema.columns.map((c) => [c.name, c.type]),
      rows: this.rows,
      codecs: [...this.layout.isKey.map((key) => codecOf(key)), codecOf(true)],
      groups: this.groups,
    };
    const json = new TextEncoder().encode(JSON.stringify(index));
    const indexCrc = crc32(json);
    const indexStart = this.out.offset;
    this.out.appendBytes(json);
    this.out.appendUint32(json.length);
    this.out.appendUint32(indexCrc);
    this.out.appendUint32(INDEX_MAGIC);
    this.writer.finish();
    const bytes = new Uint8Array(this.out.getBuffer());
    const meta: SstMeta = {
      rows: this.rows,
      bytes: bytes.length,
      minTime: this.minTime,
      maxTime: this.maxTime,
      minKey: this.first,
      maxKey: this.last,
      indexCrc: indexCrc,
    };
    return { bytes, meta, index: { index, jsonBytes: json.length, indexStart } };
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
      // Floats PLAIN: measured values rarely repeat enough for a dictionary, and
      // sampling for one cost ~0.3 us of a flush's ~1.8 us per row (cpu data).
      ...(c.type === 'timestamp' || c.type === 'int64' ? { encoding: 'DELTA_BINARY_PACKED' as const } : c.type === 'float64' ? { encoding: 'PLAIN' as const } : {}),
      codec: codecOf(layout.isKey[i] as boolean),
      // Parquet statistics for the key columns, for other readers; the engine
      // plans by its own index, and field statistics cost a fifth of a flush.
      statistics: layout.isKey[i] as boolean,
      // One page per chunk: an offset index would locate nothing.
      offsetIndex: false,
    }));
    columnData.push({ name: DELETED_COLUMN, data: deleted.slice() as never, codec: codecOf(true), statistics: false, offsetIndex: false });
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

/** An SST's index as its writer made it: what a reader would parse from the file, without reading it. */
export interface WrittenIndex {
  readonly index: IndexMeta;
  /** Length of its JSON, and where it starts in the file. */
  readonly jsonBytes: number;
  readonly indexStart: number;
}

/** What a reader expects of an SST: the manifest's record of it. */
export interface SstExpectation {
  readonly rows: number;
  readonly minKey: readonly Value[];
  readonly maxKey: readonly Value[];
  readonly indexCrc?: number;
}

/**
 * An SST's index, verified and parsed: its row groups, and reads of
 * column chunks. Cheap to keep (no row data).
 */
export class SstReader {
  readonly file: string;
  readonly groups: readonly RowGroupInfo[];
  /** Rough memory held by this reader (the parsed index). */
  readonly indexBytes: number;
  private readonly store: ObjectStore;
  private readonly layout: TableLayout;
  private readonly regionId: number;
  /** Parquet column name -> its position among a group's chunks. */
  private readonly chunkIndex: ReadonlyMap<string, number>;
  /**
   * Per row group, per Parquet column (schema order, then __deleted): the
   * offset, length and CRC-32 of its chunk, flat (a third of the memory of
   * an array per chunk).
   */
  private readonly chunks: Float64Array;
  /** hyparquet's decoder of each Parquet column, with the compression the file records. */
  private readonly decoders: ReadonlyMap<string, ColumnDecoder>;

  private constructor(store: ObjectStore, file: string, layout: TableLayout, regionId: number, groups: RowGroupInfo[], chunks: Float64Array, codecs: readonly CompressionCodec[], indexBytes: number) {
    this.store = store;
    this.file = file;
    this.layout = layout;
    this.regionId = regionId;
    this.groups = groups;
    this.chunks = chunks;
    this.indexBytes = indexBytes;
    const base = decodersOf(layout);
    this.decoders = new Map([...layout.names, DELETED_COLUMN].map((n, i) => [n, { ...(base.get(n) as ColumnDecoder), codec: codecs[i] }]));
    this.chunkIndex = new Map([...layout.names, DELETED_COLUMN].map((n, i) => [n, i]));
  }

  /**
   * Read and verify the index: SST_MISSING if the file is gone,
   * SST_FORMAT_UNSUPPORTED for an SST of an older format, SST_CORRUPT
   * (naming region and file) if it is damaged, belongs to another region or
   * table, or does not hold what the manifest says.
   */
  static async open(store: ObjectStore, file: string, layout: TableLayout, regionId: number, expect?: SstExpectation): Promise<SstReader> {
    const corrupt = (why: string, cause?: unknown): never => {
      throw new RepriseError('SST_CORRUPT', `region ${regionId}: SST ${file} is corrupt: ${why}`, { regionId, file }, { cause });
    };
    const unsupported = (format: number, what: string): never => {
      throw new RepriseError(
        'SST_FORMAT_UNSUPPORTED',
        `region ${regionId}: SST ${file} has format ${format} (${what}); this version reads format ${SST_FORMAT} only: ` +
          'read the data with the version that wrote it and write it again, nothing has been changed',
        { regionId, file, format },
      );
    };
    const size = await store.size(file).catch(missingAs(regionId, file));
    if (size < 12 + INDEX_TRAILER) corrupt(`only ${size} bytes`);
    const head = await store.getRange(file, 0, 5);
    if (head[0] === 0x52 && head[1] === 0x53 && head[2] === 0x53 && head[3] === 0x54) unsupported(head[4], 'reprise 0.1, msgpack blocks');
    // One ranged get of the file's tail: the footer's length, the trailer and (mostly) the index.
    const tailStart = Math.max(0, size - TAIL_READ);
    const tail = await store.getRange(file, tailStart, size);
    const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    const footerLength = view.getUint32(tail.length - 8, true);
    const trailerAt = size - 8 - footerLength - INDEX_TRAILER;
    if (trailerAt < 4 || trailerAt < tailStart) corrupt(`Parquet footer length ${footerLength} out of range`);
    const at = trailerAt - tailStart;
    if (view.getUint32(at + 8, true) !== INDEX_MAGIC) {
      // Format 2 kept the index in the footer's key-value metadata.
      if (new TextDecoder().decode(tail.subarray(at + INDEX_TRAILER)).includes('{"format":2,')) unsupported(2, 'a development build\'s Parquet layout, index in the footer; any Parquet reader opens it');
      corrupt('no reprise index before its Parquet footer');
    }
    const indexLength = view.getUint32(at, true);
    const indexCrc = view.getUint32(at + 4, true);
    const indexStart = trailerAt - indexLength;
    if (indexStart < 4) corrupt(`index length ${indexLength} out of range`);
    const indexBytes = indexStart >= tailStart ? tail.subarray(indexStart - tailStart, at) : await store.getRange(file, indexStart, trailerAt);
    if (crc32(indexBytes) !== indexCrc) corrupt('its index fails its checksum');
    if (expect?.indexCrc !== undefined && indexCrc !== expect.indexCrc) corrupt('its index is not the one its manifest records');
    let index: IndexMeta;
    try {
      index = JSON.parse(new TextDecoder().decode(indexBytes)) as IndexMeta;
    } catch (err) {
      return corrupt('undecodable index', err);
    }
    if (index === null || typeof index !== 'object' || !Array.isArray(index.groups)) corrupt('no row groups in its index');
    if (index.format !== SST_FORMAT) corrupt(`format ${index.format}, expected ${SST_FORMAT}`);
    if (index.regionId !== regionId) corrupt(`written for region ${index.regionId}`);
    const expected = layout.schema.columns.map((c) => `${c.name}:${c.type}`).join(',');
    const actual = Array.isArray(index.columns) ? index.columns.map((c) => `${c[0]}:${c[1]}`).join(',') : '';
    if (actual !== expected) corrupt(`columns [${actual}] do not match table "${layout.schema.name}" [${expected}]`);
    const codecs = index.codecs;
    if (!Array.isArray(codecs) || codecs.length !== layout.names.length + 1 || !codecs.every((c) => c === 'GZIP' || c === 'UNCOMPRESSED')) corrupt(`unknown chunk compression ${JSON.stringify(codecs)}`);
    if (expect !== undefined) {
      const sameKey = (a: readonly Value[], b: readonly Value[]) => compareKeys(a, b) === 0;
      const first = index.groups[0]?.[0] ?? [];
      const last = index.groups[index.groups.length - 1]?.[1] ?? [];
      if (index.rows !== expect.rows || !sameKey(first, expect.minKey) || !sameKey(last, expect.maxKey)) {
        corrupt(`holds ${index.rows} rows from [${first.join(', ')}] to [${last.join(', ')}], its manifest says ${expect.rows} from [${expect.minKey.join(', ')}] to [${expect.maxKey.join(', ')}]`);
      }
    }
    return SstReader.build(store, file, layout, regionId, index, indexBytes.length, indexStart, corrupt);
  }

  /**
   * The reader of an SST just written, from the index its writer holds:
   * the same reader `open` would give, without reading and parsing the
   * file (a flush or compaction puts it in the cache, so the first queries
   * of a new SST do not parse its index).
   */
  static ofIndex(store: ObjectStore, file: string, layout: TableLayout, regionId: number, written: WrittenIndex): SstReader {
    const corrupt = (why: string): never => {
      throw new RepriseError('INTERNAL', `region ${regionId}: SST ${file} was written with a bad index: ${why}`, { regionId, file });
    };
    return SstReader.build(store, file, layout, regionId, written.index, written.jsonBytes, written.indexStart, corrupt);
  }

  private static build(
    store: ObjectStore,
    file: string,
    layout: TableLayout,
    regionId: number,
    index: IndexMeta,
    jsonBytes: number,
    indexStart: number,
    corrupt: (why: string) => never,
  ): SstReader {
    const { codecs } = index;
    let rowStart = 0;
    const width = layout.names.length + 1;
    const table = new Float64Array(index.groups.length * width * 3);
    const groups: RowGroupInfo[] = index.groups.map(([firstKey, lastKey, mins, maxs, rows, chunks, live, stats], g) => {
      if (chunks.length !== width) corrupt(`row group ${g} does not match its columns`);
      let start = Infinity;
      let end = 0;
      chunks.forEach(([offset, length, crc], c) => {
        start = Math.min(start, offset);
        end = Math.max(end, offset + length);
        table.set([offset, length, crc], (g * width + c) * 3);
      });
      if (start < 4 || end > indexStart) corrupt(`row group ${g} lies outside the file's data`);
      const info: RowGroupInfo = { rowStart, rows, firstKey, lastKey, mins, maxs, live, stats, start, end };
      rowStart += rows;
      return info;
    });
    if (rowStart !== index.rows) corrupt(`row groups hold ${rowStart} rows, its index says ${index.rows}`);
    // The parsed index takes about twice its JSON.
    return new SstReader(store, file, layout, regionId, groups, table, codecs, jsonBytes * 2);
  }

  /**
   * Decode columns (Parquet names: table columns, or `__deleted`) of row
   * group `g`. Only the chunks asked for are decoded (those close
   * together read in one get), each checked against its CRC first. What
   * the index already says is not decoded: a tag whose value is the same
   * in every row of the group, and the tombstones of a group without any.
   */
  async readGroup(g: number, columns: readonly string[]): Promise<Map<string, ArrayLike<unknown>>> {
    const group = this.groups[g];
    const { layout } = this;
    const corrupt = (why: string, cause?: unknown): never => {
      throw new RepriseError('SST_CORRUPT', `region ${this.regionId}: SST ${this.file} is corrupt: ${why}`, { regionId: this.regionId, file: this.file }, { cause });
    };
    const out = new Map<string, ArrayLike<unknown>>();
    const toRead: { name: string; offset: number; length: number; crc: number }[] = [];
    for (const name of columns) {
      if (name === DELETED_COLUMN && group.live === group.rows) {
        out.set(name, new Uint8Array(group.rows));
        continue;
      }
      const key = name === DELETED_COLUMN ? -1 : layout.keyIdx.indexOf(layout.index.get(name) as number);
      if (key >= 0 && key < layout.tagIdx.length && group.mins[key] === group.maxs[key]) {
        out.set(name, new Array(group.rows).fill(group.mins[key]));
        continue;
      }
      const at = (g * (layout.names.length + 1) + (this.chunkIndex.get(name) as number)) * 3;
      toRead.push({ name, offset: this.chunks[at], length: this.chunks[at + 1], crc: this.chunks[at + 2] });
    }
    toRead.sort((x, y) => x.offset - y.offset);
    for (let i = 0; i < toRead.length; ) {
      // Chunks at most READ_GAP bytes apart: one get (a get costs more than reading past a few chunks not asked for).
      let j = i + 1;
      while (j < toRead.length && toRead[j].offset <= toRead[j - 1].offset + toRead[j - 1].length + READ_GAP) j++;
      const from = toRead[i].offset;
      const to = toRead[j - 1].offset + toRead[j - 1].length;
      const bytes = await this.store.getRange(this.file, from, to).catch(missingAs(this.regionId, this.file));
      if (bytes.length !== to - from) corrupt(`row group ${g} is cut short`);
      for (; i < j; i++) {
        const { name, offset, length, crc } = toRead[i];
        const chunk = bytes.subarray(offset - from, offset - from + length);
        if (crc32(chunk) !== crc) corrupt(`column ${name} of row group ${g} fails its checksum`);
        let data: ArrayLike<unknown>;
        try {
          data = decodeChunk(chunk, group.rows, this.decoders.get(name)!);
        } catch (err) {
          return corrupt(`column ${name} of row group ${g} does not decode: ${(err as Error).message}`, err);
        }
        if (data.length !== group.rows) corrupt(`column ${name} of row group ${g} holds ${data.length} values, expected ${group.rows}`);
        out.set(name, toValues(name === DELETED_COLUMN ? 'bool' : layout.types[layout.index.get(name) as number], data));
      }
    }
    return out;
  }
}

/**
 * A column chunk's values. The chunk SstWriter writes for a column without
 * a null in the group, one V2 data page and no dictionary, is decoded from
 * that page alone: hyparquet's page reader gives its values as they are
 * (a Float64Array for doubles), where its column reader would assemble
 * every optional column value by value into an Array of boxed numbers
 * (measured: a third of a query's decoding and most of its garbage). Any
 * other chunk goes through the column reader.
 */
function decodeChunk(chunk: Uint8Array, rows: number, decoder: ColumnDecoder): ArrayLike<unknown> {
  const reader = { view: new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength), offset: 0 };
  const header = parquetHeader(reader);
  const v2 = header.data_page_header_v2;
  if (header.type === 'DATA_PAGE_V2' && v2 !== undefined && v2.num_nulls === 0 && v2.num_rows === rows && v2.num_values === rows && !v2.encoding.endsWith('_DICTIONARY') && reader.offset + header.compressed_page_size === chunk.length) {
    const { dataPage } = readDataPageV2(chunk.subarray(reader.offset), header, decoder);
    const values = convert(dataPage, decoder);
    // A view into a larger buffer (a pooled one, for small pages) would keep all of it alive in the chunk cache.
    return ArrayBuffer.isView(values) && values.byteLength !== values.buffer.byteLength ? values.slice() : values;
  }
  reader.offset = 0;
  const pages = readColumn(reader, { groupStart: 0, selectStart: 0, selectEnd: rows, groupRows: rows }, decoder).data;
  return pages.length === 1 ? pages[0] : pages.flatMap((p) => Array.from(p as ArrayLike<unknown>));
}

/**
 * The compression of a column's chunks: gzip for fields; none for the key
 * columns and __deleted, which dictionary, delta and RLE encodings bring to
 * a few bytes a group (under 100 for 720 rows), where gzip would add its
 * header and a zlib call per read for nothing.
 */
function codecOf(keyOrDeleted: boolean): CompressionCodec {
  return keyOrDeleted ? 'UNCOMPRESSED' : 'GZIP';
}

/** The Parquet schema of a layout's SSTs: the root, the table's columns, __deleted. */
function parquetSchema(layout: TableLayout): SchemaElement[] {
  const { columns } = layout.schema;
  return [
    { name: 'root', num_children: columns.length + 1 },
    ...columns.map((c, i) => parquetElement(c.name, c.type, layout.isKey[i] as boolean)),
    parquetElement(DELETED_COLUMN, 'bool', true),
  ];
}

type ColumnDecoder = Parameters<typeof readColumn>[2];
const decoderCache = new WeakMap<TableLayout, Map<string, ColumnDecoder>>();

/** hyparquet's column decoders for a layout's Parquet columns, compression aside (built once per layout). */
function decodersOf(layout: TableLayout): Map<string, ColumnDecoder> {
  let decoders = decoderCache.get(layout);
  if (decoders !== undefined) return decoders;
  const schema = parquetSchema(layout);
  decoders = new Map();
  for (const written of schema.slice(1)) {
    // Timestamps are decoded as the INT64 they are stored as: toValues
    // turns the whole BigInt64Array into numbers without a BigInt per value.
    const element = written.type === 'INT64' ? { ...written, converted_type: undefined } : written;
    const schemaPath: SchemaTree[] = getSchemaPath(schema, [element.name]);
    decoders.set(element.name, {
      pathInSchema: [element.name],
      type: element.type!,
      element,
      schemaPath,
      codec: 'UNCOMPRESSED',
      parsers: DEFAULT_PARSERS,
      compressors: decompressors,
      utf8: true,
    });
  }
  decoderCache.set(layout, decoders);
  return decoders;
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
  if (data instanceof BigInt64Array) {
    // Each value from its two 32-bit halves (little-endian): exact below 2^53, as every engine value is.
    const halves = new Int32Array(data.buffer, data.byteOffset, 2 * n);
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = halves[2 * i + 1] * 4294967296 + (halves[2 * i] >>> 0);
    return out;
  }
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
