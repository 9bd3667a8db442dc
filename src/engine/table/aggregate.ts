import { RepriseError } from '../../errors.js';
import { aggregateName, type AggregateFn, type ColumnarRows, type TableQuery, type TableSchema, type Value } from '../schema.js';
import { compareValues, type TableLayout } from './keys.js';
import type { FieldStats } from './sst.js';

/**
 * Aggregation in two steps: each region folds its rows into partial states
 * per group (group-by tags, time bucket), the frontend merges the partial
 * states of every region and finishes them. A region sends one entry per
 * group, never its rows.
 *
 * States per function: count [n]; sum and avg [sum, n]; min and max [v];
 * first and last [time, v] (v of the earliest / latest time).
 */

export interface AggregateColumn {
  readonly fn: AggregateFn;
  /** Index in the schema's columns; -1 for count of rows. */
  readonly column: number;
  readonly name: string;
}

export interface AggregatePlan {
  /** Schema column indexes of the group-by tags. */
  readonly groupBy: readonly number[];
  readonly interval: number | undefined;
  readonly aggregates: readonly AggregateColumn[];
  /** Output column names: group-by tags, the time column (when bucketed), then the aggregates. */
  readonly names: readonly string[];
}

/** One region's partial aggregates: group keys and states, column-major. */
export interface PartialAggregates {
  /** Per group-by column, then the bucket (when bucketed): one value per group. */
  readonly keys: readonly (readonly Value[])[];
  /** Per state slot (in aggregate order, see slotsOf): one value per group. */
  readonly states: readonly (readonly Value[])[];
}

const SLOTS: Record<AggregateFn, number> = { count: 1, sum: 2, avg: 2, min: 1, max: 1, first: 2, last: 2 };

/** The aggregation of a validated query (undefined for a plain row query). */
export function aggregatePlanOf(schema: TableSchema, q: TableQuery): AggregatePlan | undefined {
  if (q.aggregates === undefined) return undefined;
  const index = new Map(schema.columns.map((c, i) => [c.name, i]));
  const groupBy = (q.groupBy ?? []).map((n) => index.get(n) as number);
  const aggregates = q.aggregates.map((a) => ({
    fn: a.fn,
    column: a.column === undefined ? -1 : (index.get(a.column) as number),
    name: aggregateName(a),
  }));
  const time = schema.columns.find((c) => c.role === 'time')?.name as string;
  const names = [...(q.groupBy ?? []), ...(q.interval !== undefined ? [time] : []), ...aggregates.map((a) => a.name)];
  return { groupBy, interval: q.interval, aggregates, names };
}

/** Columns of a stretch of rows, as the read path hands them over (see read.ts Block). */
export interface AggregateInput {
  readonly columns: readonly (ArrayLike<Value> | undefined)[];
  /** Truthy where the row is a tombstone (skipped). */
  readonly deleted: ArrayLike<unknown>;
}

/**
 * Folds rows into partial states per group, as a region reads them. Rows
 * come sorted by primary key, so consecutive rows mostly share their group:
 * a stretch of one group (and bucket) is found by a search (see addRange),
 * and each aggregate folds it in one tight loop over its column.
 */
export class Aggregator {
  private readonly plan: AggregatePlan;
  private readonly maxGroups: number;
  private readonly width: number;
  private readonly timeIdx: number;
  /** Schema column indexes of every tag: a run of rows with equal tags is one series. */
  private readonly tagIdx: readonly number[];
  /**
   * Groups by key, a Map per key column (the last level holds the groups):
   * values as they are, no string made per lookup. Map's SameValueZero
   * tells 1 from "1" as JSON did. `list` keeps them in order of creation.
   */
  private readonly groups = new Map<Value, unknown>();
  private readonly list: { key: Value[]; state: Value[] }[] = [];
  private readonly offsets: number[];

  constructor(plan: AggregatePlan, layout: Pick<TableLayout, 'timeIdx' | 'tagIdx'>, maxGroups: number) {
    this.plan = plan;
    this.timeIdx = layout.timeIdx;
    this.tagIdx = layout.tagIdx;
    this.maxGroups = maxGroups;
    this.offsets = [];
    let w = 0;
    for (const a of plan.aggregates) {
      this.offsets.push(w);
      w += SLOTS[a.fn];
    }
    this.width = w;
  }

  /**
   * Fold rows [from, to) of the input (which holds every tag column). Rows
   * come in key order, so one series' rows are contiguous, its group-by key
   * is one, and its times only rise (or, latest first, only fall): the end
   * of each series and of each bucket in it is found by a galloping search,
   * not a look at every row.
   */
  addRange(input: AggregateInput, from: number, to: number): void {
    const { groupBy, interval } = this.plan;
    const { columns } = input;
    const times = columns[this.timeIdx] as ArrayLike<number>;
    const tags = groupBy.map((c) => columns[c] as ArrayLike<Value>);
    const series = this.tagIdx.map((c) => columns[c] as ArrayLike<Value>);
    const sameSeries = (a: number, b: number): boolean => {
      for (let k = 0; k < series.length; k++) if (series[k][a] !== series[k][b]) return false;
      return true;
    };
    let i = from;
    while (i < to) {
      const runEnd = gallop(i, to, (j) => sameSeries(i, j));
      const rising = times[runEnd - 1] >= times[i];
      while (i < runEnd) {
        const bucket = interval === undefined ? undefined : Math.floor(times[i] / interval) * interval;
        const end = bucket === undefined ? Infinity : bucket + (interval as number);
        const j = bucket === undefined ? runEnd : gallop(i, runEnd, rising ? (r) => times[r] < end : (r) => times[r] >= bucket);
        // A group holds at least one live row.
        if (hasLive(input.deleted, i, j)) {
          const key: Value[] = tags.map((t) => t[i]);
          if (bucket !== undefined) key.push(bucket);
          this.fold(this.stateOf(key), input, times, i, j);
        }
        i = j;
      }
    }
  }

  /**
   * Fold a row group from its statistics instead of its rows: every live
   * row of it belongs to the group `key` (see TableRegion.query for when).
   */
  addSummary(key: Value[], live: number, stats: readonly (FieldStats | null)[]): void {
    if (live === 0) return;
    // The group's statistics as a partial state, merged like another region's.
    const from: Value[] = [];
    for (const { fn, column } of this.plan.aggregates) {
      if (column < 0) {
        from.push(live);
        continue;
      }
      const [count, sum, min, max, firstTime, first, lastTime, last] = stats[column] as FieldStats;
      if (fn === 'count') from.push(count);
      else if (fn === 'sum' || fn === 'avg') from.push(sum ?? 0, count);
      else if (fn === 'min') from.push(min);
      else if (fn === 'max') from.push(max);
      else if (fn === 'first') from.push(firstTime, first);
      else from.push(lastTime, last);
    }
    combine(this.plan, this.stateOf(key), from);
  }

  private stateOf(key: Value[]): Value[] {
    let level = this.groups;
    for (let k = 0; k < key.length - 1; k++) {
      let next = level.get(key[k]) as Map<Value, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        level.set(key[k], next);
      }
      level = next;
    }
    // A key of no columns (no group-by, no interval): the one group, under null.
    const last = key.length === 0 ? null : key[key.length - 1];
    let group = level.get(last) as { key: Value[]; state: Value[] } | undefined;
    if (group === undefined) {
      if (this.list.length >= this.maxGroups) {
        throw new RepriseError('QUERY_TOO_LARGE', `aggregation has more than ${this.maxGroups} groups (maxResultRows); narrow the query or use a larger interval`, {
          limit: this.maxGroups,
        });
      }
      group = { key, state: initialState(this.plan, this.width) };
      level.set(last, group);
      this.list.push(group);
    }
    return group.state;
  }

  /** Fold rows [from, to) (one group) into state `s`. */
  private fold(s: Value[], input: AggregateInput, times: ArrayLike<number>, from: number, to: number): void {
    const { deleted, columns } = input;
    const { aggregates } = this.plan;
    for (let a = 0; a < aggregates.length; a++) {
      const { fn, column } = aggregates[a];
      const o = this.offsets[a];
      const values = column < 0 ? undefined : (columns[column] as ArrayLike<Value>);
      switch (fn) {
        case 'count': {
          let n = 0;
          for (let i = from; i < to; i++) if (!deleted[i] && (values === undefined || values[i] !== null)) n++;
          s[o] = (s[o] as number) + n;
          break;
        }
        case 'sum':
        case 'avg': {
          let sum = 0;
          let n = 0;
          const v = values as ArrayLike<number | null>;
          for (let i = from; i < to; i++) {
            const x = v[i];
            if (deleted[i] || x === null) continue;
            sum += x;
            n++;
          }
          s[o] = (s[o] as number) + sum;
          s[o + 1] = (s[o + 1] as number) + n;
          break;
        }
        // Values of one column share a type and are never NaN (validate.ts): < and > order them as compareValues does.
        case 'min': {
          let best = s[o];
          const v = values as ArrayLike<Value>;
          for (let i = from; i < to; i++) {
            const x = v[i];
            if (deleted[i] || x === null) continue;
            if (best === null || x < best) best = x;
          }
          s[o] = best;
          break;
        }
        case 'max': {
          let best = s[o];
          const v = values as ArrayLike<Value>;
          for (let i = from; i < to; i++) {
            const x = v[i];
            if (deleted[i] || x === null) continue;
            if (best === null || x > best) best = x;
          }
          s[o] = best;
          break;
        }
        case 'first':
        case 'last': {
          const v = values as ArrayLike<Value>;
          for (let i = from; i < to; i++) {
            const x = v[i];
            if (deleted[i] || x === null) continue;
            const t = times[i];
            if (s[o] === null || (fn === 'first' ? t < (s[o] as number) : t > (s[o] as number))) {
              s[o] = t;
              s[o + 1] = x;
            }
          }
          break;
        }
      }
    }
  }

  result(): PartialAggregates {
    const keyWidth = this.plan.groupBy.length + (this.plan.interval === undefined ? 0 : 1);
    const keys: Value[][] = Array.from({ length: keyWidth }, () => []);
    const states: Value[][] = Array.from({ length: this.width }, () => []);
    for (const { key, state } of this.list) {
      for (let k = 0; k < keyWidth; k++) keys[k].push(key[k]);
      for (let s = 0; s < this.width; s++) states[s].push(state[s]);
    }
    return { keys, states };
  }
}

function initialState(plan: AggregatePlan, width: number): Value[] {
  const state: Value[] = new Array(width).fill(null);
  let o = 0;
  for (const a of plan.aggregates) {
    if (a.fn === 'count' || a.fn === 'sum' || a.fn === 'avg') {
      state[o] = 0;
      if (a.fn !== 'count') state[o + 1] = 0;
    }
    o += SLOTS[a.fn];
  }
  return state;
}

/**
 * Merge regions' partial aggregates and finish them: rows ordered by group
 * key (ascending, or descending with order "desc"), at most `limit`.
 */
export function finishAggregates(plan: AggregatePlan, parts: readonly PartialAggregates[], order: 'asc' | 'desc' = 'asc', limit = Infinity): ColumnarRows {
  const merged = new Map<string, { key: Value[]; state: Value[] }>();
  for (const part of parts) {
    const n = part.keys[0]?.length ?? part.states[0]?.length ?? 0;
    for (let g = 0; g < n; g++) {
      const key = part.keys.map((col) => col[g]);
      const state = part.states.map((col) => col[g]);
      const id = JSON.stringify(key);
      const into = merged.get(id);
      if (into === undefined) merged.set(id, { key, state });
      else combine(plan, into.state, state);
    }
  }
  const groups = [...merged.values()];
  const sign = order === 'desc' ? -1 : 1;
  groups.sort((a, b) => {
    for (let k = 0; k < a.key.length; k++) {
      const c = compareValues(a.key[k], b.key[k]);
      if (c !== 0) return sign * c;
    }
    return 0;
  });
  if (groups.length > limit) groups.length = limit;
  const data: Value[][] = plan.names.map(() => []);
  const keyWidth = plan.names.length - plan.aggregates.length;
  for (const { key, state } of groups) {
    for (let k = 0; k < keyWidth; k++) data[k].push(key[k]);
    let o = 0;
    plan.aggregates.forEach((a, i) => {
      data[keyWidth + i].push(finish(a.fn, state, o));
      o += SLOTS[a.fn];
    });
  }
  return { columns: plan.names, data };
}

function combine(plan: AggregatePlan, into: Value[], from: readonly Value[]): void {
  let o = 0;
  for (const { fn } of plan.aggregates) {
    switch (fn) {
      case 'count':
        into[o] = (into[o] as number) + (from[o] as number);
        break;
      case 'sum':
      case 'avg':
        into[o] = (into[o] as number) + (from[o] as number);
        into[o + 1] = (into[o + 1] as number) + (from[o + 1] as number);
        break;
      case 'min':
        if (from[o] !== null && (into[o] === null || compareValues(from[o], into[o]) < 0)) into[o] = from[o];
        break;
      case 'max':
        if (from[o] !== null && (into[o] === null || compareValues(from[o], into[o]) > 0)) into[o] = from[o];
        break;
      case 'first':
        if (from[o] !== null && (into[o] === null || (from[o] as number) < (into[o] as number))) {
          into[o] = from[o];
          into[o + 1] = from[o + 1];
        }
        break;
      case 'last':
        if (from[o] !== null && (into[o] === null || (from[o] as number) > (into[o] as number))) {
          into[o] = from[o];
          into[o + 1] = from[o + 1];
        }
        break;
    }
    o += SLOTS[fn];
  }
}

function finish(fn: AggregateFn, state: readonly Value[], o: number): Value {
  switch (fn) {
    case 'count':
      return state[o];
    case 'sum':
      return (state[o + 1] as number) > 0 ? state[o] : null;
    case 'avg':
      return (state[o + 1] as number) > 0 ? (state[o] as number) / (state[o + 1] as number) : null;
    case 'min':
    case 'max':
      return state[o];
    case 'first':
    case 'last':
      return state[o + 1];
  }
}

/**
 * The end of the stretch [from, end) of rows r >= from for which `holds(r)`
 * (true at `from`, and once false, false for every later row before `to`):
 * doubling steps, then a binary search; O(log n) for a stretch of n rows.
 */
function gallop(from: number, to: number, holds: (r: number) => boolean): number {
  // holds(good); bad is `to` or a row where it does not hold.
  let good = from;
  let bad = to;
  for (let step = 1; good + step < to; step *= 2) {
    if (!holds(good + step)) {
      bad = good + step;
      break;
    }
    good += step;
  }
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1;
    if (holds(mid)) good = mid;
    else bad = mid;
  }
  return bad;
}

function hasLive(deleted: ArrayLike<unknown>, from: number, to: number): boolean {
  for (let r = from; r < to; r++) if (!deleted[r]) return true;
  return false;
}
