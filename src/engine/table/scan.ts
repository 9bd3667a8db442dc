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
 * An `in` (`member`) or `notIn` (not `member`) condition on one primary key
 * column, beyond what its interval says: `values` sorted, without
 * duplicates, all inside the interval.
 */
interface ValueSet {
  readonly column: number;
  readonly member: boolean;
  readonly values: readonly Value[];
  readonly set: ReadonlySet<Value>;
}

/** Index of the first of the sorted values that is >= v (values.length if none). */
function lowerBound(values: readonly Value[], v: Value): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareValues(values[mid], v) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A query's where/timeRange compiled against the key order. An `in` list
 * narrows its column's interval to [least, greatest] of its values that the
 * other conditions allow (one value: a point, exactly as `eq`), so seeks,
 * ends and pruning work on it as on a range; membership is checked per row
 * (`matches`) and per set of rows (`coverage`). Every condition
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

  const inLists = new Map<number, readonly Value[]>();
  const notInLists = new Map<number, readonly Value[]>();
  for (const [name, cond] of Object.entries(q.where ?? {})) {
    const column = layout.index.get(name) as number;
    const iv = interval(column);
    const range = cond !== null && typeof cond === 'object' ? cond : { eq: cond };
    if (range.eq !== undefined) {
      raiseLo(iv, range.eq, true);
      lowerHi(iv, range.eq, true);
    }
    if (range.gt !== undefined) raiseLo(iv, range.gt, false);
    if (range.gte !== undefined) raiseLo(iv, range.gte, true);
    if (range.lt !== undefined) lowerHi(iv, range.lt, false);
    if (range.lte !== undefined) lowerHi(iv, range.lte, true);
    if (range.in !== undefined) inLists.set(column, range.in);
    if (range.notIn !== undefined) notInLists.set(column, range.notIn);
  }
  if (q.timeRange?.from !== undefined) raiseLo(interval(layout.timeIdx), q.timeRange.from, true);
  if (q.timeRange?.to !== undefined) lowerHi(interval(layout.timeIdx), q.timeRange.to, false);

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

  // Lists, against the intervals of the other conditions: `in` keeps the
  // values they allow (less those excluded) and becomes the interval
  // [least, greatest] of them; `notIn` keeps the values inside the interval,
  // and an excluded inclusive end becomes exclusive.
  const sets: ValueSet[] = [];
  let noneIn = false;
  for (const [column, iv] of intervals) {
    const list = inLists.get(column);
    const excluded = notInLists.get(column);
    const excludedSet = excluded === undefined ? undefined : new Set(excluded);
    if (list !== undefined) {
      const values = sortedDistinct(list).filter((v) => inside(v, iv) && excludedSet?.has(v) !== true);
      if (values.length === 0) {
        noneIn = true;
        continue;
      }
      iv.lo = values[0];
      iv.loInc = true;
      iv.hi = values[values.length - 1];
      iv.hiInc = true;
      if (values.length > 1) sets.push({ column, member: true, values, set: new Set(values) });
    } else if (excluded !== undefined && excludedSet !== undefined) {
      if (iv.lo !== undefined && iv.loInc && excludedSet.has(iv.lo)) iv.loInc = false;
      if (iv.hi !== undefined && iv.hiInc && excludedSet.has(iv.hi)) iv.hiInc = false;
      const values = sortedDistinct(excluded).filter((v) => inside(v, iv));
      if (values.length > 0) sets.push({ column, member: false, values, set: new Set(values) });
    }
  }

  const checks = [...intervals.values()];
  const empty =
    noneIn ||
    checks.some((iv) => {
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
      for (const vs of sets) {
        const k = keyPos.get(vs.column) as number;
        const lo = mins[k];
        const hi = maxs[k];
        const single = compareValues(lo, hi) === 0;
        // The first listed value at or above lo: whether one lies in [lo, hi].
        const at = lowerBound(vs.values, lo);
        const listedInside = at < vs.values.length && compareValues(vs.values[at], hi) <= 0;
        if (vs.member) {
          if (!listedInside) return 'none';
          // Several values in [lo, hi]: some rows may hold a value not listed.
          if (!single) all = false;
        } else if (listedInside) {
          if (single) return 'none';
          all = false;
        }
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
      for (let i = 0; i < sets.length; i++) {
        const vs = sets[i];
        if (vs.set.has(row[vs.column]) !== vs.member) return false;
      }
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

/** The values sorted by compareValues, without duplicates (a validated list already is: then it is returned as is). */
function sortedDistinct(values: readonly Value[]): readonly Value[] {
  let canonical = true;
  for (let i = 1; i < values.length && canonical; i++) canonical = compareValues(values[i - 1], values[i]) < 0;
  if (canonical) return values;
  const sorted = [...values].sort(compareValues);
  return sorted.filter((v, i) => i === 0 || compareValues(sorted[i - 1], v) !== 0);
}
