import type { Row, TableQuery, TableSchema, Value } from '../schema.js';
import { compareValues } from './keys.js';

/**
 * Range partitioning: with bounds [b0, b1, ...] partition i holds the values
 * v with b(i-1) <= v < b(i); the last partition holds everything from the
 * last bound up (MAXVALUE).
 */

export function partitionCount(schema: TableSchema): number {
  return schema.partition ? schema.partition.bounds.length + 1 : 1;
}

/** The partition of a value: index of the first bound above it, else the last partition. */
export function partitionOfValue(bounds: readonly Value[], v: Value): number {
  let lo = 0;
  let hi = bounds.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareValues(v, bounds[mid]) >= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The partition (region index within the table) a validated row belongs to. */
export function partitionOf(schema: TableSchema, row: Row): number {
  const rule = schema.partition;
  if (!rule) return 0;
  return partitionOfValue(rule.bounds, row[rule.column] ?? null);
}

/**
 * The partitions a (validated) query can find rows in, in increasing order:
 * pruned by equality and range conditions on the partition column (a
 * contiguous run) and by `in` (only the partitions of the listed values the
 * other conditions allow); otherwise all of them. `notIn` prunes nothing.
 */
export function partitionsForQuery(schema: TableSchema, q: TableQuery): number[] {
  const count = partitionCount(schema);
  const rule = schema.partition;
  const cond = rule ? q.where?.[rule.column] : undefined;
  let lo = 0;
  let hi = count - 1;
  let listed: Set<number> | undefined;
  if (rule && cond !== undefined && cond !== null) {
    const { bounds } = rule;
    // Values < v end in the first partition whose bound is >= v.
    const lastBelow = (v: Value): number => {
      let i = 0;
      while (i < bounds.length && compareValues(bounds[i], v) < 0) i++;
      return i;
    };
    const range = typeof cond === 'object' ? cond : { eq: cond };
    if (range.eq !== undefined) {
      const p = partitionOfValue(bounds, range.eq);
      lo = Math.max(lo, p);
      hi = Math.min(hi, p);
    }
    // Values >= v (or > v) start in the partition that holds v.
    if (range.gte !== undefined) lo = Math.max(lo, partitionOfValue(bounds, range.gte));
    if (range.gt !== undefined) lo = Math.max(lo, partitionOfValue(bounds, range.gt));
    // Values <= v end in the partition that holds v.
    if (range.lte !== undefined) hi = Math.min(hi, partitionOfValue(bounds, range.lte));
    if (range.lt !== undefined) hi = Math.min(hi, lastBelow(range.lt));
    if (range.in !== undefined) {
      // The partitions of the listed values that every other operator allows.
      const excluded = range.notIn === undefined ? undefined : new Set(range.notIn);
      const allowed = (v: Value): boolean =>
        (range.eq === undefined || compareValues(v, range.eq) === 0) &&
        (range.gt === undefined || compareValues(v, range.gt) > 0) &&
        (range.gte === undefined || compareValues(v, range.gte) >= 0) &&
        (range.lt === undefined || compareValues(v, range.lt) < 0) &&
        (range.lte === undefined || compareValues(v, range.lte) <= 0) &&
        excluded?.has(v) !== true;
      listed = new Set();
      for (const v of range.in) if (allowed(v)) listed.add(partitionOfValue(bounds, v));
    }
  }
  const out: number[] = [];
  for (let p = lo; p <= hi; p++) if (listed === undefined || listed.has(p)) out.push(p);
  return out;
}
