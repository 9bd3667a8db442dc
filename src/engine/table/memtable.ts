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

function rowBytes(row: readonly Value[]): number {
  let n = ENTRY_OVERHEAD;
  for (let i = 0; i < row.length; i++) n += valueBytes(row[i]);
  return n;
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
  private readonly index: SeriesIndex = new Map();
  /** Series in tag order, as of the last read. */
  private ordered: Series[] = [];
  /** Series created since `ordered` was built. */
  private added: Series[] = [];
  private count = 0;
  private byteSize = 0;
  private isFrozen = false;

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
  }

  /** Entries held, tombstones included. */
  get size(): number {
    return this.count;
  }

  /** Approximate memory of the rows held (see ENTRY_OVERHEAD), for flush triggers. */
  get bytes(): number {
    return this.byteSize;
  }

  get frozen(): boolean {
    return this.isFrozen;
  }

  /** Insert or replace the row with this primary key. */
  put(row: readonly Value[]): void {
    this.set(row, false);
  }

  /** Record a tombstone: a row whose primary key is set and fields are null. */
  delete(tombstone: readonly Value[]): void {
    this.set(tombstone, true);
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

  private set(row: readonly Value[], deleted: boolean): void {
    if (this.isFrozen) throw new RepriseError('INTERNAL', 'write to a frozen memtable');
    const series = this.seriesOf(row);
    const { times, fields } = series;
    const { fieldIdx, kinds } = this;
    const t = row[this.timeIdx] as number;
    if (t > series.last) {
      // The common case: the series' newest time.
      times.push(t);
      for (let f = 0; f < fields.length; f++) (fields[f] as Value[]).push(encode(kinds[f] as Kind, row[fieldIdx[f]]));
      series.last = t;
      this.count++;
    } else {
      const i = t === series.last ? times.length - 1 : lowerBound(times, t);
      if (i < times.length && times[i] === t) {
        this.byteSize -= rowBytes(this.rowAt(series, i));
        for (let f = 0; f < fields.length; f++) fields[f][i] = encode(kinds[f] as Kind, row[fieldIdx[f]]);
      } else {
        times.splice(i, 0, t);
        for (let f = 0; f < fields.length; f++) (fields[f] as Value[]).splice(i, 0, encode(kinds[f] as Kind, row[fieldIdx[f]]));
        this.count++;
      }
    }
    if (deleted) (series.dead ??= new Set()).add(t);
    else if (series.dead !== undefined) series.dead.delete(t);
    this.byteSize += rowBytes(row);
  }

  /** The series of the row's tag values, created if new. */
  private seriesOf(row: readonly Value[]): Series {
    const { tagIdx } = this;
    const last = tagIdx.length - 1;
    let map = this.index;
    for (let k = 0; k < last; k++) {
      const v = row[tagIdx[k]];
      let next = map.get(v) as SeriesIndex | undefined;
      if (next === undefined) {
        next = new Map();
        map.set(v, next);
      }
      map = next;
    }
    const v = row[tagIdx[last]];
    let series = map.get(v) as Series | undefined;
    if (series === undefined) {
      const key: RowValues = new Array(this.width).fill(null);
      for (let k = 0; k < tagIdx.length; k++) key[tagIdx[k]] = row[tagIdx[k]];
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

function encode(kind: Kind, v: Value): Value {
  if (kind === ANY) return v;
  if (v === null) return NaN;
  return kind === BOOL ? (v ? 1 : 0) : v;
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
