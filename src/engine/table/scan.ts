import type { TableQuery, Value } from '../schema.js';
import { compareValues, type RowValues, type TableLayout } from './keys.js';

/** One version of a row in a sorted source: the row and whether it is a tombstone. */
export type Entry = readonly [row: RowValues, deleted: boolean];

/** Bounds on one primary key column; `lo`/`hi` undefined means unbounded. */
interface Interval {
  readonly column: number;
  lo: Value | undefined;
  loInc: boolean;
  hi: Value | undefined;
  hiInc: boolean;
}

/**
 * A query's where/timeRange compiled against the key order. Every condition
 * is on a primary key column, so it holds for all versions of a key alike:
 * sources can be filtered before they are merged.
 */
export interface ScanPlan {
  /** The conditions contradict each other: nothing matches. */
  readonly empty: boolean;
  /** No row ordered before this one can match (undefined: start at the beginning). */
  readonly seek: RowValues | undefined;
  /**
   * In key order, this row and every later one lie past the queried range.
   * Like `matches`, it reads only the row's primary key columns.
   */
  pastEnd(row: readonly Value[]): boolean;
  /** Whether the row satisfies every condition. */
  matches(row: readonly Value[]): boolean;
  /** No matching row's primary key starts with more than these values (a prefix of the key columns). */
  readonly upper: readonly Value[];
  /** Whether any time in [minTime, maxTime] can satisfy the time conditions. */
  overlapsTime(minTime: number, maxTime: number): boolean;
  /**
   * Given the least and greatest value of each primary key column (tags,
   * then time) of a set of rows: whether none of them can match, all of
   * them do, or some may.
   */
  coverage(mins: readonly Value[], maxs: readonly Value[]): 'none' | 'some' | 'all';
}

export function planScan(layout: TableLayout, q: TableQuery): ScanPlan {
  const intervals = new Map<number, Interval>();
  const interval = (column: number): Interval => {
    let iv = intervals.get(column);
    if (iv === undefined) {
      iv = { column, lo: undefined, loInc: true, hi: undefined, hiInc: true };
      intervals.set(column, iv);
    }
    return iv;
  };
  const raiseLo = (iv: Interval, v: Value, inc: boolean): void => {
    const c = iv.lo === undefined ? 1 : compareValues(v, iv.lo);
    if (c > 0 || (c === 0 && !inc)) {
      iv.lo = v;
      iv.loInc = inc;
    }
  };
  const lowerHi = (iv: Interval, v: Value, inc: boolean): void => {
    const c = iv.hi === undefined ? -1 : compareValues(v, iv.hi);
    if (c < 0 || (c === 0 && !inc)) {
      iv.hi = v;
      iv.hiInc = inc;
    }
  };

  for (const [name, cond] of Object.entries(q.where ?? {})) {
    const iv = interval(layout.index.get(name) as number);
    const range = cond !== null && typeof cond === 'object' ? cond : { eq: cond };
    if (range.eq !== undefined) {
      raiseLo(iv, range.eq, true);
      lowerHi(iv, range.eq, true);
    }
    if (range.gt !== undefined) raiseLo(iv, range.gt, false);
    if (range.gte !== undefined) raiseLo(iv, range.gte, true);
    if (range.lt !== undefined) lowerHi(iv, range.lt, false);
    if (range.lte !== undefined) lowerHi(iv, range.lte, true);
  }
  if (q.timeRange?.from !== undefined) raiseLo(interval(layout.timeIdx), q.timeRange.from, true);
  if (q.timeRange?.to !== undefined) lowerHi(interval(layout.timeIdx), q.timeRange.to, false);

  const checks = [...intervals.values()];
  const empty = checks.some((iv) => {
    if (iv.lo === undefined || iv.hi === undefined) return false;
    const c = compareValues(iv.lo, iv.hi);
    return c > 0 || (c === 0 && !(iv.loInc && iv.hiInc));
  });

  // Walk the key columns in order: a run of point conditions fixes a key
  // prefix; the first range condition after it bounds the next column.
  const seekRow: RowValues = new Array(layout.names.length).fill(null);
  const upper: Value[] = [];
  let upperStrict = false;
  let seeking = false;
  for (const column of layout.keyIdx) {
    const iv = intervals.get(column);
    if (iv === undefined) break;
    if (iv.lo !== undefined) {
      seekRow[column] = iv.lo;
      seeking = true;
    }
    const point = iv.lo !== undefined && iv.hi !== undefined && compareValues(iv.lo, iv.hi) === 0;
    if (iv.hi !== undefined) {
      upper.push(iv.hi);
      upperStrict = !iv.hiInc;
    }
    if (!point) break;
  }
  const upperIdx = layout.keyIdx.slice(0, upper.length);
  const time = intervals.get(layout.timeIdx);

  const keyPos = new Map(layout.keyIdx.map((c, k) => [c, k]));
  const inside = (v: Value, iv: Interval): boolean => {
    if (iv.lo !== undefined) {
      const c = compareValues(v, iv.lo);
      if (c < 0 || (c === 0 && !iv.loInc)) return false;
    }
    if (iv.hi !== undefined) {
      const c = compareValues(v, iv.hi);
      if (c > 0 || (c === 0 && !iv.hiInc)) return false;
    }
    return true;
  };

  return {
    empty,
    seek: seeking ? seekRow : undefined,
    upper,
    coverage(mins, maxs) {
      let all = true;
      for (const iv of checks) {
        const k = keyPos.get(iv.column) as number;
        const lo = mins[k];
        const hi = maxs[k];
        // [lo, hi] misses the interval entirely?
        if (iv.lo !== undefined) {
          const c = compareValues(hi, iv.lo);
          if (c < 0 || (c === 0 && !iv.loInc)) return 'none';
        }
        if (iv.hi !== undefined) {
          const c = compareValues(lo, iv.hi);
          if (c > 0 || (c === 0 && !iv.hiInc)) return 'none';
        }
        if (all && !(inside(lo, iv) && inside(hi, iv))) all = false;
      }
      return all ? 'all' : 'some';
    },
    pastEnd(row) {
      for (let k = 0; k < upperIdx.length; k++) {
        const c = compareValues(row[upperIdx[k]], upper[k]);
        if (c !== 0) return c > 0;
      }
      return upperStrict;
    },
    matches(row) {
      for (const iv of checks) if (!inside(row[iv.column], iv)) return false;
      return true;
    },
    overlapsTime(minTime, maxTime) {
      if (time === undefined) return true;
      if (time.lo !== undefined && (maxTime < (time.lo as number) || (maxTime === time.lo && !time.loInc))) return false;
      if (time.hi !== undefined && (minTime > (time.hi as number) || (minTime === time.hi && !time.hiInc))) return false;
      return true;
    },
  };
}
