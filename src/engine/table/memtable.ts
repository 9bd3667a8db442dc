import { RepriseError } from '../../errors.js';
import type { Value } from '../schema.js';
import type { RowValues, TableLayout } from './keys.js';
import type { Entry, ScanPlan } from './scan.js';

/**
 * Rough per-entry cost of a row held as a row array with boxed values. The
 * memtable holds less than that, but this is the size of the rows a flush
 * builds from it (and that a cached SST holds), and it keeps flushes as
 * frequent as they were.
 */
const ENTRY_OVERHEAD = 48;

function valueBytes(v: Value): number {
  if (typeof v === 'string') return 16 + 2 * v.length;
  return 8;
}

/** Bytes of the row of `width` values at `off` in `values`: what Memtable.bytes counts for it. */
export function rowBytes(values: readonly Value[], off: number, width: number): number {
  let n = ENTRY_OVERHEAD;
  for (let i = off; i < off + width; i++) n += valueBytes(values[i]);
  return n;
}

/**
 * Rows as the memtable takes them in bulk, the way a decoded body holds
 * them: row r's column c at r * width + c, in `numbers` for the columns the
 * memtable keeps as numbers (float64, int64, timestamp; bool fields as 1/0;
 * null as NaN: validated numbers are never NaN) and in `values` for the
 * others (strings, bool tags: as they are, null as null). Doubles stay
 * unboxed from the body to the memtable's columns, and no array is built
 * per row. Grown as needed; reused.
 */
export class RowBatch {
  numbers = new Float64Array(1024);
  values: Value[] = [];

  /** Room for `rows` rows of `width` columns. */
  reserve(rows: number, width: number): this {
    const n = rows * width;
    if (this.numbers.length < n) this.numbers = new Float64Array(Math.max(n, 2 * this.numbers.length));
    return this;
  }
}

/** Whether the memtable keeps a column of this layout in RowBatch.numbers (else in values). */
export function isNumberColumn(layout: Pick<TableLayout, 'types' | 'isKey'>, c: number): boolean {
  const type = layout.types[c];
  return type === 'float64' || type === 'int64' || type === 'timestamp' || (type === 'bool' && !layout.isKey[c]);
}

/**
 * How a field column is held: numbers (float64, int64, timestamp) in a
 * number array with NaN for null (validated numbers are never NaN), so V8
 * stores them unboxed; booleans likewise as 1/0/NaN; strings as they are.
 */
type Kind = 0 | 1 | 2;
const NUMBER = 0;
const BOOL = 1;
const ANY = 2;

type Column = number[] | Value[];

// Number columns and others come from array literals of their own: V8 tracks
// element kinds per literal, and a column of strings must not lead it to
// start number columns as arrays of boxed values.
const numberColumn = (): number[] => [];
const valueColumn = (): Value[] => [];

/** One series: one combination of tag values, its rows sorted by time, one per time. */
interface Series {
  /** The tag values at their column positions (other columns null). */
  readonly key: RowValues;
  readonly times: number[];
  /** Per field column (in `fieldIdx` order), its values in time order. */
  readonly fields: Column[];
  /** Times of the rows that are tombstones; created on the first one. */
  dead: Set<number> | undefined;
  /** The newest time, for the append fast path. */
  last: number;
}

/** Tag value -> the next tag's map, or the series at the last tag. */
type SeriesIndex = Map<Value, SeriesIndex | Series>;

/**
 * The in-memory write buffer of a region, organised as time series (as in
 * GreptimeDB's time-series memtable): rows are grouped by their tag values,
 * and each series holds its rows sorted by time, one version per primary
 * key, column by column (times and numeric fields unboxed). Writes mostly
 * arrive in time order per series, so a write is a lookup of its series (a
 * map per tag) and an append; an older time is placed by binary search. A
 * put or delete of an existing key replaces it (upsert); a delete leaves a
 * tombstone so that it hides older versions in SSTs.
 *
 * Nothing of a written row is kept but its values: the memtable holds few
 * objects (which keeps garbage collection cheap) and rows are rebuilt when
 * scanned, in primary-key order: series in tag order (sorted when read, and
 * only when new series appeared since), then time. Once frozen it is
 * immutable and waits to be flushed.
 */
export class Memtable {
  private readonly width: number;
  private readonly tagIdx: Int32Array;
  private readonly timeIdx: number;
  private readonly fieldIdx: Int32Array;
  private readonly kinds: Uint8Array;
  /** Per column: 1 if held in RowBatch.numbers, 0 if in RowBatch.values. */
  private readonly numeric: Uint8Array;
  /** The columns held in RowBatch.values, and the bytes rowBytes counts for the others. */
  private readonly valueIdx: Int32Array;
  private readonly numberBytes: number;
  private readonly index: SeriesIndex = new Map();
  /** Series in tag order, as of the last read. */
  private ordered: Series[] = [];
  /** Series created since `ordered` was built. */
  private added: Series[] = [];
  private count = 0;
  private byteSize = 0;
  private isFrozen = false;
  /** For put and delete of a single row. */
  private single: RowBatch | undefined;

  constructor(layout: Pick<TableLayout, 'types' | 'tagIdx' | 'timeIdx' | 'isKey'>) {
    this.width = layout.types.length;
    this.tagIdx = Int32Array.from(layout.tagIdx);
    this.timeIdx = layout.timeIdx;
    const fields = layout.types.map((_, c) => c).filter((c) => !layout.isKey[c]);
    this.fieldIdx = Int32Array.from(fields);
    this.kinds = Uint8Array.from(fields, (c): Kind => {
      const type = layout.types[c];
      return type === 'bool' ? BOOL : type === 'string' ? ANY : NUMBER;
    });
    this.numeric = Uint8Array.from(layout.types, (_, c) => (isNumberColumn(layout, c) ? 1 : 0));
    this.valueIdx = Int32Array.from(layout.types.map((_, c) => c).filter((c) => this.numeric[c] === 0));
    this.numberBytes = 8 * (this.width - this.valueIdx.length);
  }

  /** Entries held, tombstones included. */
  get size(): number {
    return this.count;
  }

  /** Approximate memory of the rows held (see ENTRY_OVERHEAD and rowBytes), for flush triggers. */
  get bytes(): number {
    return this.byteSize;
  }

  get frozen(): boolean {
    return this.isFrozen;
  }

  /** Insert or replace the row with this primary key. */
  put(row: readonly Value[]): void {
    this.setRows(this.batchOf(row), 1, false);
  }

  /** Record a tombstone: a row whose primary key is set and fields are null. */
  delete(tombstone: readonly Value[]): void {
    this.setRows(this.batchOf(tombstone), 1, true);
  }

  /** put (or, `deleted`, delete) the first `count` rows of a batch, in order. */
  setRows(batch: RowBatch, count: number, deleted: boolean): void {
    if (this.isFrozen) throw new RepriseError('INTERNAL', 'write to a frozen memtable');
    const { width } = this;
    for (let r = 0, off = 0; r < count; r++, off += width) this.set(batch, off, deleted);
  }

  /** A row array as a one-row batch. */
  private batchOf(row: readonly Value[]): RowBatch {
    const batch = (this.single ??= new RowBatch().reserve(1, this.width));
    for (let c = 0; c < this.width; c++) {
      const v = row[c];
      if (this.numeric[c] === 0) batch.values[c] = v;
      else batch.numbers[c] = v === null ? NaN : typeof v === 'boolean' ? (v ? 1 : 0) : (v as number);
    }
    return batch;
  }

  freeze(): void {
    this.isFrozen = true;
  }

  /**
   * Entries in key order, from `plan.seek` until `plan.pastEnd`, keeping
   * those that `plan.matches`; all entries without a plan. Each entry's row
   * is built afresh (the caller may keep it).
   */
  *scan(plan?: ScanPlan): Generator<Entry> {
    const series = this.sortedSeries();
    const seek = plan?.seek;
    const { timeIdx } = this;
    let s = 0;
    let from = 0;
    if (seek !== undefined) {
      // The first series whose tags are >= the seek row's; within a series
      // of exactly those tags, the first row at or after the seek time.
      let lo = 0;
      let hi = series.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.compareTags(series[mid].key, seek) < 0) lo = mid + 1;
        else hi = mid;
      }
      s = lo;
      if (s < series.length && this.compareTags(series[s].key, seek) === 0) from = lowerBound(series[s].times, seek[timeIdx]);
    }
    // The plan looks at key columns only: it is asked about a scratch row
    // holding the series' tags and the row's time, and only a row it keeps
    // is built.
    const probe: RowValues = new Array(this.width).fill(null);
    for (; s < series.length; s++) {
      const { key, times, dead } = series[s];
      const start = from;
      from = 0;
      if (start >= times.length) continue;
      if (plan !== undefined) {
        // A series none of whose times can match is skipped whole (a later
        // series past the end still ends the scan at its first row).
        if (!plan.overlapsTime(times[start], times[times.length - 1])) continue;
        for (let k = 0; k < this.tagIdx.length; k++) probe[this.tagIdx[k]] = key[this.tagIdx[k]];
      }
      for (let r = start; r < times.length; r++) {
        const t = times[r];
        if (plan !== undefined) {
          probe[timeIdx] = t;
          if (plan.pastEnd(probe)) return;
          if (!plan.matches(probe)) continue;
        }
        yield [this.rowAt(series[s], r), dead !== undefined && dead.has(t)];
      }
    }
  }

  /** The row at `off` in the batch. */
  private set(batch: RowBatch, off: number, deleted: boolean): void {
    const { numbers, values } = batch;
    const series = this.seriesOf(batch, off);
    const { times, fields } = series;
    const { fieldIdx, kinds } = this;
    const t = numbers[off + this.timeIdx];
    if (t > series.last) {
      // The common case: the series' newest time.
      times.push(t);
      for (let f = 0; f < fields.length; f++) {
        const at = off + fieldIdx[f];
        if (kinds[f] === ANY) (fields[f] as Value[]).push(values[at]);
        else (fields[f] as number[]).push(numbers[at]);
      }
      series.last = t;
      this.count++;
    } else {
      const i = t === series.last ? times.length - 1 : lowerBound(times, t);
      if (i < times.length && times[i] === t) {
        this.byteSize -= this.bytesAt(series, i);
        for (let f = 0; f < fields.length; f++) {
          const at = off + fieldIdx[f];
          fields[f][i] = kinds[f] === ANY ? values[at] : numbers[at];
        }
      } else {
        times.splice(i, 0, t);
        for (let f = 0; f < fields.length; f++) {
          const at = off + fieldIdx[f];
          (fields[f] as Value[]).splice(i, 0, kinds[f] === ANY ? values[at] : numbers[at]);
        }
        this.count++;
      }
    }
    if (deleted) (series.dead ??= new Set()).add(t);
    else if (series.dead !== undefined) series.dead.delete(t);
    let bytes = ENTRY_OVERHEAD + this.numberBytes;
    const { valueIdx } = this;
    for (let k = 0; k < valueIdx.length; k++) bytes += valueBytes(values[off + valueIdx[k]]);
    this.byteSize += bytes;
  }

  /** rowBytes of the row at position i of a series, without building it. */
  private bytesAt(series: Series, i: number): number {
    let bytes = ENTRY_OVERHEAD + this.numberBytes;
    const { tagIdx, fieldIdx, numeric } = this;
    for (let k = 0; k < tagIdx.length; k++) if (numeric[tagIdx[k]] === 0) bytes += valueBytes(series.key[tagIdx[k]]);
    for (let f = 0; f < fieldIdx.length; f++) if (numeric[fieldIdx[f]] === 0) bytes += valueBytes(series.fields[f][i] as Value);
    return bytes;
  }

  /** A tag value of the row at `off` in the batch. */
  private tagOf(batch: RowBatch, off: number, c: number): Value {
    return this.numeric[c] === 1 ? batch.numbers[off + c] : batch.values[off + c];
  }

  /** The series of the tag values of the row at `off`, created if new. */
  private seriesOf(batch: RowBatch, off: number): Series {
    const { tagIdx } = this;
    const last = tagIdx.length - 1;
    let map = this.index;
    for (let k = 0; k < last; k++) {
      const v = this.tagOf(batch, off, tagIdx[k]);
      let next = map.get(v) as SeriesIndex | undefined;
      if (next === undefined) {
        next = new Map();
        map.set(v, next);
      }
      map = next;
    }
    // A table without tags has one series, under null.
    const v = last < 0 ? null : this.tagOf(batch, off, tagIdx[last]);
    let series = map.get(v) as Series | undefined;
    if (series === undefined) {
      const key: RowValues = new Array(this.width).fill(null);
      for (let k = 0; k < tagIdx.length; k++) key[tagIdx[k]] = this.tagOf(batch, off, tagIdx[k]);
      series = { key, times: numberColumn(), fields: Array.from(this.kinds, (kind) => (kind === ANY ? valueColumn() : numberColumn())), dead: undefined, last: -Infinity };
      map.set(v, series);
      this.added.push(series);
    }
    return series;
  }

  /** The row at position i of a series, as a new array. */
  private rowAt(series: Series, i: number): RowValues {
    const row: RowValues = series.key.slice();
    row[this.timeIdx] = series.times[i];
    const { fields } = series;
    for (let f = 0; f < fields.length; f++) row[this.fieldIdx[f]] = decode(this.kinds[f] as Kind, fields[f][i]);
    return row;
  }

  /** The key order on tag values (null first, as in the key comparator). */
  private compareTags(a: readonly Value[], b: readonly Value[]): number {
    const { tagIdx } = this;
    for (let k = 0; k < tagIdx.length; k++) {
      const x = a[tagIdx[k]];
      const y = b[tagIdx[k]];
      if (x !== y) {
        if (x === null) return -1;
        if (y === null) return 1;
        return x < y ? -1 : 1;
      }
    }
    return 0;
  }

  /**
   * Every series in tag order. Series that appeared since the last call are
   * sorted and merged in, into a new array (a scan in progress keeps the old one).
   */
  private sortedSeries(): readonly Series[] {
    if (this.added.length === 0) return this.ordered;
    const cmp = (a: Series, b: Series) => this.compareTags(a.key, b.key);
    const added = this.added.sort(cmp);
    const old = this.ordered;
    const merged: Series[] = new Array(old.length + added.length);
    let i = 0;
    let j = 0;
    let k = 0;
    while (i < old.length && j < added.length) merged[k++] = cmp(old[i], added[j]) <= 0 ? old[i++] : added[j++];
    while (i < old.length) merged[k++] = old[i++];
    while (j < added.length) merged[k++] = added[j++];
    this.ordered = merged;
    this.added = [];
    return merged;
  }
}

function decode(kind: Kind, v: Value): Value {
  if (kind === ANY) return v;
  if (v !== v) return null; // NaN
  return kind === BOOL ? v === 1 : v;
}

/** Index of the first time >= t (null: 0). */
function lowerBound(times: readonly number[], t: Value): number {
  if (t === null) return 0;
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (times[mid] < (t as number)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
