import { RepriseError } from '../../errors.js';
import { aggregateName, type AggregateFn, type ColumnarRows, type TableQuery, type TableSchema, type Value } from '../schema.js';
import { compareValues } from './keys.js';
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
 * a stretch of one group (and bucket) is found by comparing tag values, and
 * each aggregate folds it in one tight loop over its column.
 */
export class Aggregator {
  private readonly plan: AggregatePlan;
  private readonly maxGroups: number;
  private readonly width: number;
  private readonly timeIdx: number;
  private readonly groups = new Map<string, { key: Value[]; state: Value[] }>();
  private readonly offsets: number[];

  constructor(plan: AggregatePlan, timeIdx: number, maxGroups: number) {
    this.plan = plan;
    this.timeIdx = timeIdx;
    this.maxGroups = maxGroups;
    this.offsets = [];
    let w = 0;
    for (const a of plan.aggregates) {
      this.offsets.push(w);
      w += SLOTS[a.fn];
    }
    this.width = w;
  }

  /** Fold rows [from, to) of the input. */
  addRange(input: AggregateInput, from: number, to: number): void {
    const { groupBy, interval } = this.plan;
    const { columns } = input;
    const times = columns[this.timeIdx] as ArrayLike<number>;
    const tags = groupBy.map((c) => columns[c] as ArrayLike<Value>);
    const { deleted } = input;
    let i = from;
    while (i < to) {
      // A group holds at least one live row.
      if (deleted[i]) {
        i++;
        continue;
      }
      // The stretch [i, j) of rows in one group and bucket.
      let j = i + 1;
      const bucket = interval === undefined ? undefined : Math.floor(times[i] / interval) * interval;
      const bucketEnd = bucket === undefined ? Infinity : bucket + (interval as number);
      const bucketStart = bucket ?? -Infinity;
      for (; j < to; j++) {
        let same = true;
        for (let k = 0; k < tags.length; k++) {
          if (tags[k][j] !== tags[k][i]) {
            same = false;
            break;
          }
        }
        if (!same) break;
        if (times[j] < bucketStart || times[j] >= bucketEnd) break;
      }
      const key: Value[] = tags.map((t) => t[i]);
      if (bucket !== undefined) key.push(bucket);
      this.fold(this.stateOf(key), input, times, i, j);
      i = j;
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
    const id = JSON.stringify(key);
    let group = this.groups.get(id);
    if (group === undefined) {
      if (this.groups.size >= this.maxGroups) {
        throw new RepriseError('QUERY_TOO_LARGE', `aggregation has more than ${this.maxGroups} groups (maxResultRows); narrow the query or use a larger interval`, {
          limit: this.maxGroups,
        });
      }
      group = { key, state: initialState(this.plan, this.width) };
      this.groups.set(id, group);
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
        case 'min':
        case 'max': {
          const sign = fn === 'min' ? -1 : 1;
          let best = s[o];
          const v = values as ArrayLike<Value>;
          for (let i = from; i < to; i++) {
            const x = v[i];
            if (deleted[i] || x === null) continue;
            if (best === null || compareValues(x, best) * sign > 0) best = x;
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
    for (const { key, state } of this.groups.values()) {
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
