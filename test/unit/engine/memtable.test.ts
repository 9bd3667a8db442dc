import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Row, TableQuery, TableSchema } from '../../../src/engine/schema.js';
import { layoutOf, rowFromKey, toValues, type RowValues, type TableLayout } from '../../../src/engine/table/keys.js';
import { Memtable } from '../../../src/engine/table/memtable.js';
import { planScan, type Entry } from '../../../src/engine/table/scan.js';
import { metrics } from './helpers.js';

const layout = layoutOf(metrics);
const r = (host: string, idc: string, ts: number, cpu: number | null = null): Row => ({ host, idc, cpu, mem: null, up: null, ts });
const v = (row: Row) => toValues(layout, row);
const tomb = (host: string, idc: string, ts: number) => rowFromKey(layout, [host, idc, ts]);

function contents(mem: Memtable, q = {}) {
  return [...mem.scan(planScan(layout, q))].map(([row, deleted]) => `${row[0]}/${row[1]}/${row[5]}${deleted ? ' x' : `=${row[2]}`}`);
}

describe('Memtable', () => {
  it('iterates in primary key then time order, whatever the insertion order', () => {
    const mem = new Memtable(layout);
    for (const row of [r('b', 'x', 2), r('a', 'y', 1), r('b', 'x', 1), r('a', 'x', 9), r('aa', 'a', 0)]) mem.put(v(row));
    expect(contents(mem)).toEqual(['a/x/9=null', 'a/y/1=null', 'aa/a/0=null', 'b/x/1=null', 'b/x/2=null']);
    expect(mem.size).toBe(5);
  });

  it('upserts: the newest row for a key replaces the old one, and bytes follow', () => {
    const mem = new Memtable(layout);
    mem.put(v(r('a', 'x', 1, 1)));
    const one = mem.bytes;
    expect(one).toBeGreaterThan(0);
    mem.put(v(r('a', 'x', 1, 2)));
    expect(mem.size).toBe(1);
    expect(mem.bytes).toBe(one);
    expect(contents(mem)).toEqual(['a/x/1=2']);
    mem.put(v(r('a', 'x', 2, 3)));
    expect(mem.bytes).toBe(2 * one);
  });

  it('keeps tombstones, which a later put replaces', () => {
    const mem = new Memtable(layout);
    mem.put(v(r('a', 'x', 1, 1)));
    mem.delete(tomb('a', 'x', 1));
    mem.delete(tomb('b', 'x', 1));
    expect(contents(mem)).toEqual(['a/x/1 x', 'b/x/1 x']);
    mem.put(v(r('b', 'x', 1, 7)));
    expect(contents(mem)).toEqual(['a/x/1 x', 'b/x/1=7']);
  });

  it('scans a key range and time filter', () => {
    const mem = new Memtable(layout);
    for (const host of ['a', 'b', 'c']) for (const idc of ['x', 'y']) for (let ts = 0; ts < 4; ts++) mem.put(v(r(host, idc, ts, ts)));
    expect(contents(mem, { where: { host: 'b', idc: 'y' }, timeRange: { from: 1, to: 3 } })).toEqual(['b/y/1=1', 'b/y/2=2']);
    expect(contents(mem, { where: { host: { gt: 'a', lt: 'c' }, ts: 3 } })).toEqual(['b/x/3=3', 'b/y/3=3']);
    expect(contents(mem, { where: { idc: 'x', ts: { gte: 3 } } })).toEqual(['a/x/3=3', 'b/x/3=3', 'c/x/3=3']);
    expect(contents(mem, { where: { host: 'd' } })).toEqual([]);
  });

  it('is immutable once frozen', () => {
    const mem = new Memtable(layout);
    mem.put(v(r('a', 'x', 1)));
    mem.freeze();
    expect(mem.frozen).toBe(true);
    expect(() => mem.put(v(r('b', 'x', 1)))).toThrow(/frozen/);
    expect(() => mem.delete(tomb('a', 'x', 1))).toThrow(/frozen/);
    expect(contents(mem)).toEqual(['a/x/1=null']);
  });

  it('places out-of-order times by binary search within their series', () => {
    const mem = new Memtable(layout);
    for (const ts of [5, 1, 9, 3, 7, 2, 8, 0, 6, 4]) mem.put(v(r('a', 'x', ts, ts * 10)));
    mem.put(v(r('b', 'x', 3, 1)));
    mem.put(v(r('a', 'y', 2, 1)));
    expect(contents(mem)).toEqual([
      ...Array.from({ length: 10 }, (_, ts) => `a/x/${ts}=${ts * 10}`),
      'a/y/2=1',
      'b/x/3=1',
    ]);
    expect(mem.size).toBe(12);
  });

  it('upserts at an equal time wherever the row sits: last, first or middle', () => {
    const mem = new Memtable(layout);
    for (const ts of [1, 2, 3]) mem.put(v(r('a', 'x', ts, ts)));
    const bytes = mem.bytes;
    mem.put(v(r('a', 'x', 3, 30)));
    mem.put(v(r('a', 'x', 1, 10)));
    mem.put(v(r('a', 'x', 2, 20)));
    expect(contents(mem)).toEqual(['a/x/1=10', 'a/x/2=20', 'a/x/3=30']);
    expect(mem.size).toBe(3);
    expect(mem.bytes).toBe(bytes);
    // A longer string value makes the replaced row bigger.
    const strings = new Memtable(withNote);
    strings.put(['a', 1, 'x']);
    const small = strings.bytes;
    strings.put(['a', 1, 'xxxx']);
    expect(strings.bytes).toBe(small + 6);
    expect(strings.size).toBe(1);
  });

  it('keeps tombstones anywhere in a series; a put replaces one and a delete replaces a put', () => {
    const mem = new Memtable(layout);
    for (const ts of [1, 2, 3, 4]) mem.put(v(r('a', 'x', ts, ts)));
    mem.delete(tomb('a', 'x', 2)); // over a put, in the middle
    mem.delete(tomb('a', 'x', 0)); // new, before the first
    mem.delete(tomb('a', 'x', 9)); // new, after the last
    mem.delete(tomb('a', 'x', 9)); // again
    expect(contents(mem)).toEqual(['a/x/0 x', 'a/x/1=1', 'a/x/2 x', 'a/x/3=3', 'a/x/4=4', 'a/x/9 x']);
    mem.put(v(r('a', 'x', 2, 22)));
    mem.put(v(r('a', 'x', 9, 99)));
    expect(contents(mem)).toEqual(['a/x/0 x', 'a/x/1=1', 'a/x/2=22', 'a/x/3=3', 'a/x/4=4', 'a/x/9=99']);
    expect(mem.size).toBe(6);
    // A tombstone's fields are null.
    const [[row, deleted]] = [...mem.scan()];
    expect(deleted).toBe(true);
    expect(row).toEqual(tomb('a', 'x', 0));
  });

  it('hands out rows of its own: they keep every field type, and changing one changes nothing held', () => {
    const mem = new Memtable(layout);
    const rows: RowValues[] = [
      ['a', 'x', 0.5, -3, true, 1],
      ['a', 'x', -0, 2 ** 52, false, 2],
      ['a', 'x', null, null, null, 3],
      ['a', 'x', 1e300, -(2 ** 53) + 1, true, Number.MAX_SAFE_INTEGER],
    ];
    for (const row of rows) mem.put([...row]);
    const scanned = [...mem.scan()].map(([row]) => row);
    expect(scanned).toEqual(rows);
    expect(Object.is(scanned[1][2], -0)).toBe(true);
    scanned[0][2] = 99;
    expect([...mem.scan()][0][0]).toEqual(rows[0]);
    const strings = new Memtable(withNote);
    strings.put(['b', 2, null]);
    strings.put(['a', 1, 'note']);
    expect([...strings.scan()].map(([row]) => row)).toEqual([
      ['a', 1, 'note'],
      ['b', 2, null],
    ]);
  });

  it('orders series that appear after a scan among those it has seen', () => {
    const mem = new Memtable(layout);
    mem.put(v(r('m', 'x', 1)));
    mem.put(v(r('c', 'x', 1)));
    expect(contents(mem)).toEqual(['c/x/1=null', 'm/x/1=null']);
    mem.put(v(r('z', 'x', 1)));
    mem.put(v(r('a', 'x', 1)));
    mem.put(v(r('m', 'a', 1)));
    mem.put(v(r('c', 'x', 0)));
    expect(contents(mem)).toEqual(['a/x/1=null', 'c/x/0=null', 'c/x/1=null', 'm/a/1=null', 'm/x/1=null', 'z/x/1=null']);
    // A scan in progress keeps its order when series are added under it.
    const scan = mem.scan();
    expect(scan.next().value?.[0][0]).toBe('a');
    mem.put(v(r('b', 'x', 1)));
    expect([...scan].map(([row]) => row[0])).toEqual(['c', 'c', 'm', 'm', 'z']);
    expect(contents(mem)[1]).toBe('b/x/1=null');
  });

  it('seeks and stops across series, and skips series outside the time range', () => {
    const mem = new Memtable(layout);
    for (const host of ['a', 'b', 'c', 'd']) for (const idc of ['x', 'y']) for (const ts of [10, 20, 30]) mem.put(v(r(host, idc, ts, ts)));
    expect(contents(mem, { where: { host: { gte: 'b', lt: 'd' }, idc: 'y' } })).toEqual([
      'b/y/10=10',
      'b/y/20=20',
      'b/y/30=30',
      'c/y/10=10',
      'c/y/20=20',
      'c/y/30=30',
    ]);
    expect(contents(mem, { where: { host: 'c', idc: 'x', ts: { gt: 10 } } })).toEqual(['c/x/20=20', 'c/x/30=30']);
    expect(contents(mem, { where: { host: 'c', idc: 'x', ts: { gt: 30 } } })).toEqual([]);
    expect(contents(mem, { where: { host: 'b', idc: { gt: 'x' } }, timeRange: { from: 15, to: 30 } })).toEqual(['b/y/20=20']);
    expect(contents(mem, { where: { host: { gt: 'b' } }, timeRange: { from: 25 } })).toEqual(['c/x/30=30', 'c/y/30=30', 'd/x/30=30', 'd/y/30=30']);
    expect(contents(mem, { timeRange: { from: 31 } })).toEqual([]);
    expect(contents(mem, { where: { host: 'bb' } })).toEqual([]);
    expect(contents(mem, { where: { host: { gt: 'd' } } })).toEqual([]);
  });

  it('scans like sorting and filtering a map of the latest rows, across many series (property)', () => {
    const op = fc.record({
      a: fc.integer({ min: -3, max: 3 }),
      b: fc.constantFrom('p', 'q', 'r', ''),
      ts: fc.integer({ min: 0, max: 20 }),
      v: fc.option(fc.double({ noNaN: true, noDefaultInfinity: true }), { nil: null }),
      s: fc.option(fc.string({ maxLength: 3 }), { nil: null }),
      del: fc.boolean(),
    });
    const cond = <T>(x: fc.Arbitrary<T>) => fc.oneof(x, fc.record({ eq: x, gt: x, gte: x, lt: x, lte: x }, { requiredKeys: [] }));
    const query = fc.record(
      {
        where: fc.record({ a: cond(fc.integer({ min: -4, max: 4 })), b: cond(fc.constantFrom('', 'p', 'pp', 'q', 'z')), ts: cond(fc.integer({ min: 0, max: 21 })) }, { requiredKeys: [] }),
        timeRange: fc.record({ from: fc.integer({ min: 0, max: 21 }), to: fc.integer({ min: 0, max: 21 }) }, { requiredKeys: [] }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), fc.array(query, { maxLength: 8 }), (ops, queries) => {
        const mem = new Memtable(intTags);
        const model = new Map<string, Entry>();
        for (const o of ops) {
          const row: RowValues = o.del ? rowFromKey(intTags, [o.a, o.b, o.ts]) : [o.a, o.b, o.v, o.s, o.ts];
          if (o.del) mem.delete(row);
          else mem.put(row);
          model.set(JSON.stringify([o.a, o.b, o.ts]), [[...row], o.del]);
        }
        const sorted = [...model.values()].sort((x, y) => intTags.compare(x[0], y[0]));
        expect(mem.size).toBe(model.size);
        expect([...mem.scan()]).toEqual(sorted);
        for (const q of queries) {
          const where = Object.fromEntries(Object.entries(q.where ?? {}).filter(([, c]) => typeof c !== 'object' || Object.keys(c).length > 0));
          const plan = planScan(intTags, { ...q, where } as TableQuery);
          expect([...mem.scan(plan)]).toEqual(sorted.filter(([row]) => plan.matches(row)));
        }
      }),
      { numRuns: 200 },
    );
  });
});

/** Tags a (int64) and b (string), fields v (float64) and s (string), time ts. */
const intTags: TableLayout = layoutOf({
  name: 'ints',
  columns: [
    { name: 'a', type: 'int64', role: 'tag' },
    { name: 'b', type: 'string', role: 'tag' },
    { name: 'v', type: 'float64', role: 'field' },
    { name: 's', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
} satisfies TableSchema);

/** One tag, the time, one string field. */
const withNote: TableLayout = layoutOf({
  name: 'notes',
  columns: [
    { name: 'k', type: 'string', role: 'tag' },
    { name: 'ts', type: 'timestamp', role: 'time' },
    { name: 'note', type: 'string', role: 'field' },
  ],
} satisfies TableSchema);

