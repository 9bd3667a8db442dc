import { describe, expect, it } from 'vitest';
import type { Row } from '../../../src/engine/schema.js';
import { layoutOf, rowFromKey, toValues } from '../../../src/engine/table/keys.js';
import { Memtable } from '../../../src/engine/table/memtable.js';
import { planScan } from '../../../src/engine/table/scan.js';
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
    const mem = new Memtable(layout.compare);
    for (const row of [r('b', 'x', 2), r('a', 'y', 1), r('b', 'x', 1), r('a', 'x', 9), r('aa', 'a', 0)]) mem.put(v(row));
    expect(contents(mem)).toEqual(['a/x/9=null', 'a/y/1=null', 'aa/a/0=null', 'b/x/1=null', 'b/x/2=null']);
    expect(mem.size).toBe(5);
  });

  it('upserts: the newest row for a key replaces the old one, and bytes follow', () => {
    const mem = new Memtable(layout.compare);
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
    const mem = new Memtable(layout.compare);
    mem.put(v(r('a', 'x', 1, 1)));
    mem.delete(tomb('a', 'x', 1));
    mem.delete(tomb('b', 'x', 1));
    expect(contents(mem)).toEqual(['a/x/1 x', 'b/x/1 x']);
    mem.put(v(r('b', 'x', 1, 7)));
    expect(contents(mem)).toEqual(['a/x/1 x', 'b/x/1=7']);
  });

  it('scans a key range and time filter', () => {
    const mem = new Memtable(layout.compare);
    for (const host of ['a', 'b', 'c']) for (const idc of ['x', 'y']) for (let ts = 0; ts < 4; ts++) mem.put(v(r(host, idc, ts, ts)));
    expect(contents(mem, { where: { host: 'b', idc: 'y' }, timeRange: { from: 1, to: 3 } })).toEqual(['b/y/1=1', 'b/y/2=2']);
    expect(contents(mem, { where: { host: { gt: 'a', lt: 'c' }, ts: 3 } })).toEqual(['b/x/3=3', 'b/y/3=3']);
    expect(contents(mem, { where: { idc: 'x', ts: { gte: 3 } } })).toEqual(['a/x/3=3', 'b/x/3=3', 'c/x/3=3']);
    expect(contents(mem, { where: { host: 'd' } })).toEqual([]);
  });

  it('is immutable once frozen', () => {
    const mem = new Memtable(layout.compare);
    mem.put(v(r('a', 'x', 1)));
    mem.freeze();
    expect(mem.frozen).toBe(true);
    expect(() => mem.put(v(r('b', 'x', 1)))).toThrow(/frozen/);
    expect(() => mem.delete(tomb('a', 'x', 1))).toThrow(/frozen/);
    expect(contents(mem)).toEqual(['a/x/1=null']);
  });
});
