import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TableQuery, TableSchema } from '../../../src/engine/schema.js';
import { tableMutationCodec } from '../../../src/engine/table/codec.js';
import { partitionCount, partitionOf, partitionOfValue, partitionsForQuery } from '../../../src/engine/table/partition.js';
import { metrics } from './helpers.js';

const byInt: TableSchema = {
  name: 'by_int',
  columns: [
    { name: 'k', type: 'int64', role: 'tag' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'k', bounds: [10, 20, 30] },
};
const unpartitioned: TableSchema = { name: 'one', columns: byInt.columns };

describe('partitioning', () => {
  it('counts bounds + 1 partitions, or one', () => {
    expect(partitionCount(metrics)).toBe(3);
    expect(partitionCount(byInt)).toBe(4);
    expect(partitionCount(unpartitioned)).toBe(1);
    expect(partitionCount({ ...unpartitioned, partition: { column: 'k', bounds: [] } })).toBe(1);
  });

  it('routes a row to the first bound its value is below, else the last partition', () => {
    const host = (h: string) => partitionOf(metrics, { host: h, idc: 'x', ts: 0 });
    expect(['', 'a', 'ezzz'].map(host)).toEqual([0, 0, 0]);
    expect(['f', 'g', 'yy'].map(host)).toEqual([1, 1, 1]);
    expect(['z', 'zz', '~'].map(host)).toEqual([2, 2, 2]);
    expect([-5, 9, 10, 19, 20, 29, 30, 1e9].map((k) => partitionOf(byInt, { k, ts: 0 }))).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
    expect(partitionOf(unpartitioned, { k: 99, ts: 0 })).toBe(0);
  });

  it('routes rows on the write path (preparePuts) like partitionOf', () => {
    for (const schema of [metrics, byInt, unpartitioned]) {
      const rows = schema === metrics ? ['', 'a', 'f', 'g', 'z', '~'].map((host) => ({ host, idc: 'x', ts: 0 })) : [-5, 9, 10, 29, 30, 1e9].map((k) => ({ k, ts: 0 }));
      for (const row of rows) expect(tableMutationCodec.preparePuts(schema, [row]).parts.map((p) => p.partition)).toEqual([partitionOf(schema, row)]);
    }
  });

  it('finds a value\'s partition by binary search as a scan of the bounds would (property)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: -50, max: 50 }), { maxLength: 12 }), fc.integer({ min: -60, max: 60 }), (raw, v) => {
        const bounds = [...raw].sort((a, b) => a - b);
        let linear = 0;
        while (linear < bounds.length && v >= bounds[linear]) linear++;
        expect(partitionOfValue(bounds, v)).toBe(linear);
      }),
    );
  });

  it('prunes partitions by equality and ranges on the partition column', () => {
    const p = (q: TableQuery) => partitionsForQuery(byInt, q);
    expect(p({})).toEqual([0, 1, 2, 3]);
    expect(p({ where: { k: 15 } })).toEqual([1]);
    expect(p({ where: { k: { eq: 30 } } })).toEqual([3]);
    expect(p({ where: { k: { gte: 20 } } })).toEqual([2, 3]);
    expect(p({ where: { k: { gt: 19 } } })).toEqual([1, 2, 3]);
    expect(p({ where: { k: { lt: 20 } } })).toEqual([0, 1]);
    expect(p({ where: { k: { lt: 21 } } })).toEqual([0, 1, 2]);
    expect(p({ where: { k: { lte: 20 } } })).toEqual([0, 1, 2]);
    expect(p({ where: { k: { gte: 12, lt: 25 } } })).toEqual([1, 2]);
    expect(p({ where: { k: { gt: 25, lt: 5 } } })).toEqual([]);
    expect(p({ where: { k: { eq: 5, gt: 15 } } })).toEqual([]);
    expect(p({ where: { ts: 5 }, timeRange: { from: 0 } })).toEqual([0, 1, 2, 3]);
    expect(partitionsForQuery(metrics, { where: { host: 'host-1' } })).toEqual([1]);
    expect(partitionsForQuery(metrics, { where: { idc: 'a' } })).toEqual([0, 1, 2]);
    expect(partitionsForQuery(unpartitioned, { where: { k: 3 } })).toEqual([0]);
  });

  it('never prunes a partition that holds a matching value (property)', () => {
    const value = fc.integer({ min: -5, max: 45 });
    const cond = fc.record({ eq: value, gt: value, gte: value, lt: value, lte: value }, { requiredKeys: [] });
    fc.assert(
      fc.property(cond, fc.array(value, { maxLength: 30 }), (c, values) => {
        if (Object.keys(c).length === 0) return;
        const kept = new Set(partitionsForQuery(byInt, { where: { k: c } }));
        for (const v of values) {
          const ok =
            (c.eq === undefined || v === c.eq) &&
            (c.gt === undefined || v > c.gt) &&
            (c.gte === undefined || v >= c.gte) &&
            (c.lt === undefined || v < c.lt) &&
            (c.lte === undefined || v <= c.lte);
          if (ok) expect(kept.has(partitionOf(byInt, { k: v, ts: 0 }))).toBe(true);
        }
      }),
    );
  });
});
