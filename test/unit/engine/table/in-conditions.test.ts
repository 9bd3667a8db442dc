import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LEADER } from '../../../harness/region-writer.js';
import { FsObjectStore } from '../../../../src/engine/fs-object-store.js';
import type { RegionDescriptor } from '../../../../src/engine/region-engine.js';
import { aggregateName, rowsOf, type RangeCondition, type Row, type TableQuery, type TableSchema, type Value } from '../../../../src/engine/schema.js';
import { layoutOf, rowKeyComparator, type RowValues } from '../../../../src/engine/table/keys.js';
import { partitionOf, partitionsForQuery } from '../../../../src/engine/table/partition.js';
import { planScan } from '../../../../src/engine/table/scan.js';
import { TableEngine, type TableRegion } from '../../../../src/engine/table/table-engine.js';
import { MAX_IN_VALUES, validateQuery } from '../../../../src/engine/table/validate.js';
import { queryTable } from '../../../../src/frontend/query.js';
import { deleteBody, expectError, metrics, putBody, tempDir } from '../helpers.js';

/**
 * `in` and `notIn` conditions: validation, scan plans (seek, end, per-row
 * and per-row-group checks), partition pruning, and whole queries over
 * memtables and SSTs of several row groups against a brute-force filter.
 */

// ---------------------------------------------------------------- brute force

/** Whether a value satisfies a where condition (a bare value is equality). */
function holds(v: Value, c: Value | RangeCondition): boolean {
  if (c === null || typeof c !== 'object') return v === c;
  const x = v as string | number;
  return (
    (c.eq === undefined || x === c.eq) &&
    (c.gt === undefined || x > (c.gt as string | number)) &&
    (c.gte === undefined || x >= (c.gte as string | number)) &&
    (c.lt === undefined || x < (c.lt as string | number)) &&
    (c.lte === undefined || x <= (c.lte as string | number)) &&
    (c.in === undefined || c.in.includes(v)) &&
    (c.notIn === undefined || !c.notIn.includes(v))
  );
}

function matchesNaively(q: TableQuery, row: Row): boolean {
  for (const [name, c] of Object.entries(q.where ?? {})) if (!holds(row[name] ?? null, c)) return false;
  const t = row.ts as number;
  if (q.timeRange?.from !== undefined && t < q.timeRange.from) return false;
  if (q.timeRange?.to !== undefined && t >= q.timeRange.to) return false;
  return true;
}

/** What the query returns, computed from the latest rows by filtering, sorting and limiting. */
function expected(schema: TableSchema, rows: Iterable<Row>, q: TableQuery): Row[] {
  const matching = [...rows].filter((r) => matchesNaively(q, r)).sort(rowKeyComparator(schema));
  if (q.aggregates !== undefined) return expectedAggregates(matching, q);
  if (q.order === 'desc') matching.reverse();
  const columns = q.columns ?? schema.columns.map((c) => c.name);
  return matching.slice(0, q.limit ?? Infinity).map((r) => Object.fromEntries(columns.map((c) => [c, r[c] ?? null])));
}

/** count, sum, min and max per group (tags, then time bucket), ordered and limited; rows come in key order. */
function expectedAggregates(rows: Row[], q: TableQuery): Row[] {
  const groupBy = q.groupBy ?? [];
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const key = [...groupBy.map((c) => r[c]), ...(q.interval !== undefined ? [Math.floor((r.ts as number) / q.interval) * q.interval] : [])];
    const id = JSON.stringify(key);
    let members = groups.get(id);
    if (members === undefined) groups.set(id, (members = []));
    members.push(r);
  }
  const out: Row[] = [];
  for (const [id, members] of groups) {
    const key = JSON.parse(id) as (string | number)[];
    const row: Row = {};
    groupBy.forEach((c, i) => (row[c] = key[i]));
    if (q.interval !== undefined) row.ts = key[groupBy.length];
    for (const a of q.aggregates ?? []) {
      const withValue = a.column === undefined ? members : members.filter((m) => m[a.column as string] !== null);
      const values = withValue.map((m) => m[a.column ?? 'ts'] as number);
      const name = aggregateName(a);
      if (a.fn === 'count') row[name] = withValue.length;
      else if (values.length === 0) row[name] = null;
      else if (a.fn === 'sum') row[name] = values.reduce((x, y) => x + y, 0);
      else if (a.fn === 'min') row[name] = Math.min(...values);
      else if (a.fn === 'max') row[name] = Math.max(...values);
      else throw new Error(`not modelled: ${a.fn}`);
    }
    out.push(row);
  }
  const keyNames = [...groupBy, ...(q.interval !== undefined ? ['ts'] : [])];
  const sign = q.order === 'desc' ? -1 : 1;
  out.sort((x, y) => {
    for (const k of keyNames) if (x[k] !== y[k]) return ((x[k] as number) < (y[k] as number) ? -1 : 1) * sign;
    return 0;
  });
  return out.slice(0, q.limit ?? Infinity);
}

// ---------------------------------------------------------------- validation

describe('validateQuery: in and notIn', () => {
  it('accepts lists of the column type, sorted and without duplicates (so validating again changes nothing)', () => {
    const q = validateQuery(metrics, { where: { host: { in: ['c', 'a', 'c', 'b'] }, idc: { notIn: ['y'], gte: 'a' }, ts: { in: [100, 9, 10, 9] } } });
    expect(q.where).toEqual({ host: { in: ['a', 'b', 'c'] }, idc: { notIn: ['y'], gte: 'a' }, ts: { in: [9, 10, 100] } });
    expect(validateQuery(metrics, q)).toEqual(q);
    expect(validateQuery(metrics, { where: { host: { in: ['a'] } } }).where).toEqual({ host: { in: ['a'] } });
    const many = Array.from({ length: MAX_IN_VALUES }, (_, i) => `h${i}`);
    expect((validateQuery(metrics, { where: { host: { notIn: many } } }).where?.host as RangeCondition).notIn).toHaveLength(MAX_IN_VALUES);
  });

  const cases: [string, unknown, (string | RegExp)[]][] = [
    ['an empty in', { where: { host: { in: [] } } }, ['column "host"', 'in', /empty/]],
    ['an empty notIn', { where: { idc: { notIn: [] } } }, ['column "idc"', 'notIn', /empty/]],
    ['an in that is not an array', { where: { host: { in: 'a' } } }, ['column "host"', 'in', /non-empty array/]],
    ['a mistyped in value', { where: { host: { in: ['a', 1] } } }, ['column "host"', 'in[1]', /string/, 'got 1']],
    ['a null in value', { where: { host: { in: [null] } } }, ['column "host"', 'in[0]', /string/]],
    ['a mistyped notIn time', { where: { ts: { notIn: [5, -1] } } }, ['column "ts"', 'notIn[1]', /non-negative integer/]],
    ['an in past the limit', { where: { host: { in: Array.from({ length: MAX_IN_VALUES + 1 }, (_, i) => `h${i}`) } } }, ['column "host"', `${MAX_IN_VALUES + 1} values`, `${MAX_IN_VALUES}`]],
    ['an unknown operator (ne)', { where: { host: { ne: 'a' } } }, ['column "host"', '"ne"', /eq, gt, gte, lt, lte, in, notIn/]],
    ['a bare array as equality', { where: { host: ['a', 'b'] } }, ['column "host"', /must be a string, got an array/]],
    ['in on a field', { where: { cpu: { in: [1] } } }, ['column "cpu"', /field/]],
  ];
  for (const [what, input, patterns] of cases) {
    it(`rejects ${what} with INVALID_QUERY`, async () => {
      await expectError(() => validateQuery(metrics, input), 'INVALID_QUERY', 'table "system_metrics"', ...patterns);
    });
  }
});

// ---------------------------------------------------------------- scan plans

const small: TableSchema = {
  name: 't',
  columns: [
    { name: 'a', type: 'int64', role: 'tag' },
    { name: 'b', type: 'int64', role: 'tag' },
    { name: 'v', type: 'int64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};
const smallLayout = layoutOf(small);
const smallRows: RowValues[] = [];
for (let a = 0; a < 5; a++) for (let b = 0; b < 5; b++) for (let ts = 0; ts < 5; ts++) smallRows.push([a, b, null, ts]);
const asRow = (r: RowValues): Row => ({ a: r[0], b: r[1], ts: r[3] });

describe('scan plans with in and notIn', () => {
  it('plans a one-value in exactly as eq (a point: the seek prefix goes on)', () => {
    const pairs: [TableQuery, TableQuery][] = [
      [{ where: { a: { in: [2] } } }, { where: { a: 2 } }],
      [{ where: { a: { in: [2] }, b: { in: [3] } } }, { where: { a: 2, b: 3 } }],
      [{ where: { a: { in: [2] }, b: { gte: 1 }, ts: { in: [4] } } }, { where: { a: { eq: 2 }, b: { gte: 1 }, ts: 4 } }],
      // Only one listed value survives the other conditions.
      [{ where: { a: { in: [0, 2, 9], gte: 1, lt: 5 } } }, { where: { a: 2 } }],
      [{ where: { a: { in: [1, 2], notIn: [1] }, b: 1 } }, { where: { a: 2, b: 1 } }],
      [{ where: { a: 1, ts: { in: [3, 7] } }, timeRange: { to: 5 } }, { where: { a: 1, ts: 3 }, timeRange: { to: 5 } }],
    ];
    for (const [withIn, withEq] of pairs) {
      const p = planScan(smallLayout, validateQuery(small, withIn));
      const e = planScan(smallLayout, validateQuery(small, withEq));
      expect(p.empty).toBe(e.empty);
      expect(p.seek).toEqual(e.seek);
      expect(p.upper).toEqual(e.upper);
      for (const row of smallRows) {
        expect(p.pastEnd(row)).toBe(e.pastEnd(row));
        expect(p.matches(row)).toBe(e.matches(row));
      }
    }
  });

  it('plans several values as the range [least, greatest] for seek and end, and checks membership per row', () => {
    const p = planScan(smallLayout, validateQuery(small, { where: { a: { in: [3, 1] }, b: 2 } }));
    expect(p.empty).toBe(false);
    expect(p.seek).toEqual([1, null, null, null]);
    expect(p.upper).toEqual([3]);
    expect(p.pastEnd([3, 4, null, 4])).toBe(false);
    expect(p.pastEnd([4, 0, null, 0])).toBe(true);
    expect(p.matches([1, 2, null, 0])).toBe(true);
    expect(p.matches([2, 2, null, 0])).toBe(false);
    expect(p.matches([3, 1, null, 0])).toBe(false);
    // On time, under a point prefix: the seek and the end are times.
    const t = planScan(smallLayout, validateQuery(small, { where: { a: 1, b: 2, ts: { in: [4, 2] } } }));
    expect(t.seek).toEqual([1, 2, null, 2]);
    expect(t.upper).toEqual([1, 2, 4]);
    expect(t.overlapsTime(0, 1)).toBe(false);
    expect(t.overlapsTime(3, 3)).toBe(true); // within [2, 4]: a range, not the set
    expect(t.matches([1, 2, null, 3])).toBe(false);
  });

  it('is empty when no listed value is left by the other conditions', () => {
    const empty = (where: TableQuery['where'], timeRange?: TableQuery['timeRange']) => planScan(smallLayout, validateQuery(small, { where, timeRange })).empty;
    expect(empty({ a: { in: [1, 2], gt: 2 } })).toBe(true);
    expect(empty({ a: { in: [1, 2], notIn: [2, 1] } })).toBe(true);
    expect(empty({ a: { in: [1, 2], eq: 3 } })).toBe(true);
    expect(empty({ ts: { in: [1, 9] } }, { from: 2, to: 9 })).toBe(true);
    expect(empty({ a: { eq: 2, notIn: [2] } })).toBe(true);
    // Excluded ends make the interval open: (2, 3) is not empty in general, but no integer row matches.
    const open = planScan(smallLayout, validateQuery(small, { where: { a: { gte: 2, lte: 3, notIn: [2, 3] } } }));
    expect(smallRows.filter((r) => !open.pastEnd(r) && open.matches(r))).toEqual([]);
    expect(empty({ a: { in: [1, 2], gt: 1 } })).toBe(false);
    expect(empty({ a: { gte: 2, lte: 4, notIn: [2, 4] } })).toBe(false);
    expect(empty({ ts: { in: [1, 9] } }, { from: 2, to: 10 })).toBe(false);
  });

  it('gives row groups coverage all only when certain, none when no row can match', () => {
    const cov = (where: TableQuery['where'], mins: Value[], maxs: Value[]) => planScan(smallLayout, validateQuery(small, { where })).coverage(mins, maxs);
    const inA = { a: { in: [1, 3] } };
    expect(cov(inA, [1, 0, 0], [1, 9, 9])).toBe('all');
    expect(cov(inA, [3, 0, 0], [3, 9, 9])).toBe('all');
    expect(cov(inA, [2, 0, 0], [2, 9, 9])).toBe('none');
    expect(cov(inA, [1, 0, 0], [3, 9, 9])).toBe('some');
    expect(cov(inA, [1, 0, 0], [2, 9, 9])).toBe('some');
    expect(cov(inA, [4, 0, 0], [5, 9, 9])).toBe('none');
    expect(cov(inA, [0, 0, 0], [0, 9, 9])).toBe('none');
    const notInA = { a: { notIn: [2, 5] } };
    expect(cov(notInA, [2, 0, 0], [2, 9, 9])).toBe('none');
    expect(cov(notInA, [1, 0, 0], [3, 9, 9])).toBe('some');
    expect(cov(notInA, [3, 0, 0], [4, 9, 9])).toBe('all');
    expect(cov(notInA, [0, 0, 0], [1, 9, 9])).toBe('all');
    expect(cov(notInA, [6, 0, 0], [8, 9, 9])).toBe('all');
    expect(cov({ ts: { notIn: [5] } }, [1, 1, 0], [1, 1, 4])).toBe('all');
    expect(cov({ ts: { notIn: [5] } }, [1, 1, 0], [1, 1, 7])).toBe('some');
    expect(cov({ ts: { in: [5, 6] } }, [1, 1, 0], [1, 1, 4])).toBe('none');
  });

  const value = fc.integer({ min: 0, max: 4 });
  const list = fc.array(fc.integer({ min: -1, max: 5 }), { minLength: 1, maxLength: 4 });
  const cond = fc.oneof(
    value,
    fc.record({ eq: value, gt: value, gte: value, lt: value, lte: value, in: list, notIn: list }, { requiredKeys: [] }).filter((r) => Object.keys(r).length > 0),
  );
  const query = fc.record(
    { where: fc.record({ a: cond, b: cond, ts: cond }, { requiredKeys: [] }), timeRange: fc.record({ from: value, to: value }, { requiredKeys: [] }) },
    { requiredKeys: [] },
  );
  // Mostly one operator per column, on one or two columns: conditions that whole sets of rows often satisfy.
  const simpleCond = fc.oneof(
    value,
    fc.record({ in: list }),
    fc.record({ notIn: list }),
    fc.record({ in: list, gte: value }),
    fc.record({ notIn: list, lt: value }),
    fc.record({ gt: value }),
  );
  const simpleQuery = fc.oneof(
    fc.record({ where: fc.record({ a: simpleCond }) }),
    fc.record({ where: fc.record({ b: simpleCond }) }),
    fc.record({ where: fc.record({ ts: simpleCond }) }),
    fc.record({ where: fc.record({ a: simpleCond, ts: simpleCond }) }),
  );
  const anyQuery = fc.oneof(query, simpleQuery);
  // Negative list values are not timestamps: keep those off the time column.
  const valid = (q: TableQuery): TableQuery => {
    const ts = q.where?.ts;
    if (ts === undefined || typeof ts !== 'object' || ts === null) return validateQuery(small, q);
    const clean = Object.fromEntries(Object.entries(ts).map(([op, v]) => [op, Array.isArray(v) ? v.map((x: number) => Math.max(0, x)) : v]));
    return validateQuery(small, { ...q, where: { ...q.where, ts: clean } });
  };

  it('seeks, stops and matches exactly like filtering every row (property)', () => {
    fc.assert(
      fc.property(anyQuery, (raw) => {
        const q = valid(raw);
        const plan = planScan(smallLayout, q);
        const wanted = smallRows.filter((row) => matchesNaively(q, asRow(row)));
        if (plan.empty) {
          expect(wanted).toEqual([]);
          return;
        }
        const scanned: RowValues[] = [];
        for (const row of smallRows) {
          if (plan.seek !== undefined && smallLayout.compare(row, plan.seek) < 0) continue;
          if (plan.pastEnd(row)) break;
          if (plan.matches(row)) scanned.push(row);
        }
        expect(scanned).toEqual(wanted);
        // Scanning backwards from the end (order: desc) finds the same rows.
        const backwards: RowValues[] = [];
        for (let i = smallRows.length - 1; i >= 0; i--) {
          const row = smallRows[i];
          if (plan.seek !== undefined && smallLayout.compare(row, plan.seek) < 0) break;
          if (!plan.pastEnd(row) && plan.matches(row)) backwards.push(row);
        }
        expect(backwards.reverse()).toEqual(wanted);
      }),
      { numRuns: 1000 },
    );
  });

  it('never calls a set of rows none when one matches, nor all when one does not (property)', () => {
    // Rows alike but in one column (as a row group of one series is, but in time), or any rows.
    const alike = fc
      .tuple(fc.tuple(value, value, value), fc.integer({ min: 0, max: 2 }), fc.array(value, { minLength: 1, maxLength: 4 }))
      .map(([base, k, vs]) => vs.map((v) => base.map((x, i) => (i === k ? v : x)) as [number, number, number]));
    const group = fc.oneof(alike, fc.array(fc.tuple(value, value, value), { minLength: 1, maxLength: 6 }));
    let certain = 0;
    fc.assert(
      fc.property(anyQuery, group, (raw, keys) => {
        const q = valid(raw);
        const plan = planScan(smallLayout, q);
        if (plan.empty) return;
        const mins = [0, 1, 2].map((k) => Math.min(...keys.map((key) => key[k])));
        const maxs = [0, 1, 2].map((k) => Math.max(...keys.map((key) => key[k])));
        const hits = keys.filter(([a, b, ts]) => matchesNaively(q, { a, b, ts })).length;
        const coverage = plan.coverage(mins, maxs);
        if (coverage === 'none') expect(hits).toBe(0);
        if (coverage === 'all') expect(hits).toBe(keys.length);
        if (coverage !== 'some') certain++;
        // Agrees with the per-row check.
        for (const [a, b, ts] of keys) expect(plan.matches([a, b, null, ts])).toBe(matchesNaively(q, { a, b, ts }));
      }),
      { numRuns: 2000 },
    );
    // The property is worth little unless the plan is often sure.
    expect(certain).toBeGreaterThan(500);
  });
});

// ---------------------------------------------------------------- partitions

describe('partitionsForQuery with in and notIn', () => {
  const byInt: TableSchema = {
    name: 'by_int',
    columns: [
      { name: 'k', type: 'int64', role: 'tag' },
      { name: 'ts', type: 'timestamp', role: 'time' },
    ],
    partition: { column: 'k', bounds: [10, 20, 30] },
  };
  const p = (where: TableQuery['where']) => partitionsForQuery(byInt, validateQuery(byInt, { where }));

  it('asks only the partitions holding a listed value the other conditions allow, in order', () => {
    expect(p({ k: { in: [35, 5] } })).toEqual([0, 3]);
    expect(p({ k: { in: [5, 6, 9] } })).toEqual([0]);
    expect(p({ k: { in: [15, 25, 40] } })).toEqual([1, 2, 3]);
    expect(p({ k: { in: [5, 15, 35], gte: 10 } })).toEqual([1, 3]);
    expect(p({ k: { in: [5, 15, 35], lt: 10 } })).toEqual([0]);
    expect(p({ k: { in: [5, 15, 35], notIn: [15] } })).toEqual([0, 3]);
    expect(p({ k: { in: [5, 35], gt: 5, lt: 35 } })).toEqual([]);
    expect(p({ k: { in: [5], eq: 6 } })).toEqual([]);
    expect(p({ k: { notIn: [5, 15, 25, 35] } })).toEqual([0, 1, 2, 3]);
    expect(p({ k: { notIn: [15], gte: 20 } })).toEqual([2, 3]);
    expect(p({ ts: { in: [1, 2] } })).toEqual([0, 1, 2, 3]);
    expect(partitionsForQuery(metrics, validateQuery(metrics, { where: { host: { in: ['zz', 'a'] } } }))).toEqual([0, 2]);
    expect(partitionsForQuery(metrics, validateQuery(metrics, { where: { host: { in: ['g'] } } }))).toEqual([1]);
    expect(partitionsForQuery(metrics, validateQuery(metrics, { where: { idc: { in: ['a'] } } }))).toEqual([0, 1, 2]);
  });

  it('never prunes a partition that holds a matching value (property)', () => {
    const v = fc.integer({ min: -5, max: 45 });
    const values = fc.array(v, { minLength: 1, maxLength: 5 });
    const cond = fc.record({ eq: v, gt: v, gte: v, lt: v, lte: v, in: values, notIn: values }, { requiredKeys: [] }).filter((r) => Object.keys(r).length > 0);
    fc.assert(
      fc.property(cond, fc.array(v, { maxLength: 30 }), (c, candidates) => {
        const q = validateQuery(byInt, { where: { k: c } });
        const kept = partitionsForQuery(byInt, q);
        expect([...kept].sort((x, y) => x - y)).toEqual(kept);
        expect(new Set(kept).size).toBe(kept.length);
        for (const k of [...candidates, ...(c.in ?? [])]) {
          if (holds(k, q.where!.k)) expect(kept).toContain(partitionOf(byInt, { k, ts: 0 }));
        }
        // With a list, every partition asked holds a listed value.
        const listed = (q.where?.k as RangeCondition).in;
        if (listed !== undefined) for (const part of kept) expect(listed.some((k) => partitionOf(byInt, { k, ts: 0 }) === part)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------- whole queries

/** The metrics table without partitions: one region holds every row. */
const flat: TableSchema = { name: 'flat', columns: metrics.columns };
const keyId = (r: Row) => `${r.host}\u0000${r.idc}\u0000${r.ts}`;

/** Rows of a series at times 0, 10, 20, ...: integer cpu (null every 23rd), mem every other. */
function series(host: string, idc: string, n: number, salt = 0, start = 0): Row[] {
  return Array.from({ length: n }, (_, i) => ({
    host,
    idc,
    cpu: (i + salt) % 23 === 0 ? null : ((i * 7 + host.charCodeAt(host.length - 1) + salt) % 100),
    mem: i % 2 === 0 ? i + salt : null,
    up: null,
    ts: start + i * 10,
  }));
}

/** A region and a Map of the rows it should hold (the latest version of each key). */
class Modelled {
  readonly model = new Map<string, Row>();
  private next = 1;
  constructor(
    readonly schema: TableSchema,
    readonly region: TableRegion,
  ) {}

  put(rows: Row[]): void {
    this.region.apply(this.next++, putBody(this.schema, rows));
    for (const r of rows) this.model.set(keyId(r), r);
  }

  delete(keys: Row[]): void {
    this.region.apply(this.next++, deleteBody(this.schema, keys));
    for (const k of keys) this.model.delete(keyId(k));
  }

  async flush(): Promise<void> {
    await this.region.flush(this.region.appliedEntryId());
  }

  answer(q: TableQuery): Promise<Row[]> {
    return queryTable(this.schema, q, (_, rq) => this.region.query(rq)).then(rowsOf);
  }

  async check(q: TableQuery): Promise<void> {
    expect(await this.answer(q), JSON.stringify(q)).toEqual(expected(this.schema, this.model.values(), q));
  }
}

async function openFlat(store: FsObjectStore, regionId = 7): Promise<TableRegion> {
  const desc: RegionDescriptor = { regionId, table: flat, partition: 0, createdAt: 0 };
  return new TableEngine().openRegion(desc, store, LEADER);
}

/** Two big series (row groups of their own), ten small ones (row groups of several series). */
const BIG = [
  ['h0', 'x', 3000],
  ['h1', 'y', 2500],
] as const;
const SMALL = ['s0', 's1', 's2', 's3', 's4'].flatMap((h) => [
  [h, 'x', 150],
  [h, 'y', 150],
]) as [string, string, number][];

const fixedQueries: TableQuery[] = [
  { where: { host: { in: ['h0', 's2', 'zz'] } } },
  { where: { host: { in: ['s1', 's3'] }, idc: 'y' } },
  { where: { host: { in: ['s1', 's3'] }, idc: { notIn: ['x'] } }, order: 'desc', limit: 50 },
  { where: { host: { notIn: ['h0', 's1'] } }, limit: 1000 },
  { where: { host: { notIn: ['s0', 's4'] }, idc: { in: ['x'] } }, order: 'desc', limit: 300, columns: ['ts', 'cpu'] },
  { where: { host: { in: ['h1'] }, ts: { in: [0, 500, 12340, 24990, 99990] } } },
  { where: { host: 'h0', ts: { notIn: [0, 10, 29990] } }, order: 'desc', limit: 5 },
  { where: { ts: { in: [10, 1490, 20000] } } },
  { where: { ts: { notIn: [10, 20], lt: 50 } } },
  { where: { host: { in: ['h0', 'h1', 's0'], gte: 'h1' }, ts: { gte: 100, notIn: [100, 200] } }, timeRange: { to: 1000 }, order: 'desc', limit: 40 },
  { where: { host: { in: ['s2', 's3', 's4'], notIn: ['s3'] }, ts: { in: [30, 40, 1470] } }, order: 'desc' },
  { where: { host: { in: ['a', 'zz'] } } },
  { where: { host: { notIn: ['h0'] } }, aggregates: [{ fn: 'count' }, { fn: 'sum', column: 'cpu' }] },
  { where: { host: { notIn: ['s1', 's3'] } }, groupBy: ['idc'], aggregates: [{ fn: 'count' }, { fn: 'sum', column: 'cpu' }, { fn: 'max', column: 'mem' }] },
  { where: { host: { in: ['h0', 'h1', 's2'] } }, groupBy: ['host'], aggregates: [{ fn: 'count' }, { fn: 'sum', column: 'cpu' }, { fn: 'min', column: 'cpu' }] },
  { where: { ts: { notIn: [0, 10, 20000] } }, groupBy: ['host', 'idc'], aggregates: [{ fn: 'count' }, { fn: 'sum', column: 'mem' }] },
  { where: { idc: { notIn: ['y'] }, ts: { in: [0, 100, 1000, 10000] } }, interval: 1000, aggregates: [{ fn: 'count' }], order: 'desc', limit: 3 },
  { where: { host: { in: ['s0', 's1'] }, idc: { notIn: ['x'] } }, groupBy: ['host'], interval: 500, aggregates: [{ fn: 'count' }, { fn: 'sum', column: 'cpu' }] },
];

const hostValue = fc.constantFrom('h0', 'h1', 'h2', 's0', 's1', 's2', 's3', 's4', 'a', 'zz');
const idcValue = fc.constantFrom('x', 'y', 'z');
const timeValue = fc.oneof(fc.integer({ min: 0, max: 3100 }).map((i) => i * 10), fc.integer({ min: 0, max: 31_000 }));
const condOf = <T extends Value>(v: fc.Arbitrary<T>) =>
  fc.oneof(
    { weight: 1, arbitrary: v },
    {
      weight: 4,
      arbitrary: fc
        .record({ gte: v, lt: v, in: fc.array(v, { minLength: 1, maxLength: 6 }), notIn: fc.array(v, { minLength: 1, maxLength: 6 }) }, { requiredKeys: [] })
        .filter((r) => Object.keys(r).length > 0 && (r.in !== undefined || r.notIn !== undefined)),
    },
  );
const where = fc.record({ host: condOf(hostValue), idc: condOf(idcValue), ts: condOf(timeValue) }, { requiredKeys: [] });
const randomRows: fc.Arbitrary<TableQuery> = fc.record(
  {
    where,
    timeRange: fc.record({ from: timeValue, to: timeValue }, { requiredKeys: [] }),
    limit: fc.integer({ min: 1, max: 400 }),
    order: fc.constantFrom('asc' as const, 'desc' as const),
  },
  { requiredKeys: ['where'] },
);
const randomAggregation: fc.Arbitrary<TableQuery> = fc.record(
  {
    where,
    groupBy: fc.shuffledSubarray(['host', 'idc']),
    interval: fc.constantFrom(100, 5000, 50_000),
    aggregates: fc.constant([{ fn: 'count' as const }, { fn: 'sum' as const, column: 'cpu' }, { fn: 'max' as const, column: 'mem' }]),
    order: fc.constantFrom('asc' as const, 'desc' as const),
    limit: fc.integer({ min: 1, max: 50 }),
  },
  { requiredKeys: ['where', 'aggregates'] },
);

async function checkAll(t: Modelled): Promise<void> {
  for (const q of fixedQueries) await t.check(q);
  await fc.assert(
    fc.asyncProperty(fc.oneof(randomRows, randomAggregation), (q) => t.check(q)),
    { numRuns: 60 },
  );
}

describe('queries with in and notIn, against a brute-force filter', () => {
  it('answer alike over memtables, SSTs of several row groups, overwrites and deletes', async () => {
    const t = new Modelled(flat, await openFlat(new FsObjectStore(await tempDir())));
    t.put([...BIG, ...SMALL].flatMap(([host, idc, n]) => series(host, idc, n)));
    // All in the memtable.
    await checkAll(t);
    await t.flush();
    expect(t.region.stats()).toMatchObject({ ssts: 1, memtableRows: 0, queuedMutations: 0 });
    await checkAll(t);
    // A second SST over the same keys: overwrites, deletes, new times.
    t.put(series('h0', 'x', 3000, 1000).filter((_, i) => i % 17 === 0));
    t.delete(series('s3', 'x', 150).filter((_, i) => i % 29 === 0));
    t.put(series('h0', 'x', 50, 0, 30_000));
    await t.flush();
    expect(t.region.stats().ssts).toBe(2);
    await checkAll(t);
    // And a memtable on top: a series the SSTs lack, overwrites, deletes.
    t.put(series('s1', 'y', 150, 500).filter((_, i) => i % 11 === 0));
    t.delete(series('h1', 'y', 2500).filter((_, i) => i % 7 === 0));
    t.put(series('h2', 'x', 600));
    const { memtableRows, queuedMutations } = t.region.stats();
    expect(memtableRows + queuedMutations).toBeGreaterThan(0);
    await checkAll(t);
    await t.region.close();
  });

  it('folds row groups from statistics only when every row matches: notIn and in rows are never counted wrongly', async () => {
    const dir = await tempDir();
    let ranged = 0;
    /** Counts ranged gets (row groups and SST indexes are read by them). */
    class CountingStore extends FsObjectStore {
      override getRange(key: string, start: number, end: number): Promise<Uint8Array> {
        ranged++;
        return super.getRange(key, start, end);
      }
    }
    const store = new CountingStore(dir);
    const t = new Modelled(flat, await openFlat(store));
    // Three big series: row groups of one series each (whole groups fold by host).
    t.put([...series('h0', 'x', 3000), ...series('h1', 'x', 3000), ...series('h2', 'x', 3000)]);
    // Small series packed together in row groups spanning several hosts.
    t.put(['m0', 'm1', 'm2', 'm3', 'm4', 'm5'].flatMap((h) => series(h, 'x', 200)));
    await t.flush();
    const count = [{ fn: 'count' as const }, { fn: 'sum' as const, column: 'mem' }];
    await t.check({ aggregates: count, groupBy: ['host'] }); // loads the SST's index

    // Whole groups of h0 and h2 fold from their statistics: no row group is read.
    ranged = 0;
    await t.check({ where: { host: { in: ['h0', 'h2'] } }, groupBy: ['host'], aggregates: count });
    await t.check({ where: { host: { notIn: ['h1'], lt: 'm' } }, groupBy: ['host'], aggregates: count });
    expect(ranged).toBe(0);
    // A time excluded inside a group: the group is read and the row left out.
    await t.check({ where: { host: { in: ['h0', 'h2'] }, ts: { notIn: [50, 25_000] } }, groupBy: ['host'], aggregates: count });
    expect(ranged).toBeGreaterThan(0);
    // Groups of several hosts, some excluded or not listed: read, never folded whole.
    const mixed: TableQuery[] = [
      { where: { host: { notIn: ['m2'] } }, aggregates: count },
      { where: { host: { notIn: ['m2', 'h1'] } }, groupBy: ['idc'], aggregates: count },
      { where: { host: { in: ['m1', 'm3', 'm5'] } }, aggregates: count },
      { where: { host: { in: ['h0', 'm4'] }, ts: { in: [0, 10, 1990, 2000, 29990] } }, interval: 1000, aggregates: count },
      { where: { ts: { notIn: [0] } }, aggregates: count },
      { where: { ts: { in: [0, 20_000] } }, aggregates: count },
    ];
    for (const q of mixed) await t.check(q);
    const [all] = await t.answer({ aggregates: [{ fn: 'count' }] });
    const [without] = await t.answer({ where: { host: { notIn: ['m2'] } }, aggregates: [{ fn: 'count' }] });
    expect(all['count(*)']).toBe(9000 + 1200);
    expect(without['count(*)']).toBe(9000 + 1000);
    await t.region.close();
  });

  it('prunes a partitioned table to the partitions of the listed values, and answers as one region would', async () => {
    const store = new FsObjectStore(await tempDir());
    const regions = await Promise.all(
      [0, 1, 2].map((partition) => new TableEngine().openRegion({ regionId: 10 + partition, table: metrics, partition, createdAt: 0 }, store, LEADER)),
    );
    const model = new Map<string, Row>();
    let entry = 1;
    const put = (rows: Row[]) => {
      for (const [p, region] of regions.entries()) {
        const mine = rows.filter((r) => partitionOf(metrics, r) === p);
        if (mine.length > 0) region.apply(entry++, putBody(metrics, mine));
      }
      for (const r of rows) model.set(keyId(r), r);
    };
    // Partitions: host < "f", "f" <= host < "z", host >= "z"; each with more than a row group.
    const hosts = ['a0', 'a1', 'b0', 'g0', 'h0', 'z0', 'zz'];
    put(hosts.flatMap((h) => [...series(h, 'dc1', 1200), ...series(h, 'dc2', 300)]));
    await regions[0].flush(regions[0].appliedEntryId());
    await regions[2].flush(regions[2].appliedEntryId());
    put(series('a1', 'dc1', 100, 7)); // memtable over SSTs in partition 0

    const asked: number[][] = [];
    const run = async (input: TableQuery) => {
      const seen: number[] = [];
      const rows = rowsOf(await queryTable(metrics, input, (p, q) => (seen.push(p), regions[p].query(q))));
      asked.push(seen.sort((x, y) => x - y));
      expect(rows, JSON.stringify(input)).toEqual(expected(metrics, model.values(), validateQuery(metrics, input)));
    };
    const cases: [TableQuery, number[]][] = [
      [{ where: { host: { in: ['zz', 'a1'] } } }, [0, 2]],
      [{ where: { host: { in: ['zz', 'a1'] } }, order: 'desc', limit: 1300 }, [0, 2]],
      [{ where: { host: { in: ['a0', 'b0'] }, idc: 'dc2' }, limit: 400 }, [0]],
      [{ where: { host: { in: ['g0'] }, ts: { in: [0, 10, 11990] } } }, [1]],
      [{ where: { host: { in: ['a0', 'q', 'zz'], lt: 'z' } } }, [0, 1]],
      [{ where: { host: { in: ['a0', 'zz'], notIn: ['zz'] } }, order: 'desc', limit: 10 }, [0]],
      [{ where: { host: { notIn: ['g0', 'h0'] } }, limit: 2000 }, [0, 1, 2]],
      [{ where: { host: { in: ['a1', 'h0', 'z0'] }, idc: { notIn: ['dc1'] } }, groupBy: ['host'], aggregates: [{ fn: 'count' }, { fn: 'sum', column: 'cpu' }] }, [0, 1, 2]],
      [{ where: { host: { in: ['b0', 'zz'] } }, groupBy: ['idc'], interval: 5000, aggregates: [{ fn: 'count' }, { fn: 'max', column: 'mem' }], order: 'desc', limit: 4 }, [0, 2]],
      [{ where: { host: { in: ['c', 'y'] } } }, [0, 1]],
    ];
    for (const [q] of cases) await run(q);
    expect(asked).toEqual(cases.map(([, parts]) => parts));
    await Promise.all(regions.map((r) => r.close()));
  });
});
