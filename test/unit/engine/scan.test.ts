import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TableQuery, TableSchema } from '../../../src/engine/schema.js';
import { layoutOf, type RowValues } from '../../../src/engine/table/keys.js';
import { blockOfEntries, mergeRuns, sourceOf } from '../../../src/engine/table/read.js';
import { planScan, type Entry } from '../../../src/engine/table/scan.js';

const schema: TableSchema = {
  name: 't',
  columns: [
    { name: 'a', type: 'int64', role: 'tag' },
    { name: 'b', type: 'int64', role: 'tag' },
    { name: 'v', type: 'int64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};
const layout = layoutOf(schema);

describe('scan plans', () => {
  it('detects contradictory conditions', () => {
    expect(planScan(layout, { where: { a: { gt: 3, lt: 2 } } }).empty).toBe(true);
    expect(planScan(layout, { where: { a: { gte: 3, lt: 3 } } }).empty).toBe(true);
    expect(planScan(layout, { where: { ts: 5 }, timeRange: { from: 6 } }).empty).toBe(true);
    expect(planScan(layout, { timeRange: { from: 5, to: 5 } }).empty).toBe(true);
    expect(planScan(layout, { where: { a: { gte: 3, lte: 3 } } }).empty).toBe(false);
  });

  it('seeks, stops and matches exactly like filtering every row (property)', () => {
    const small = fc.integer({ min: 0, max: 4 });
    const cond = fc.oneof(small, fc.record({ eq: small, gt: small, gte: small, lt: small, lte: small }, { requiredKeys: [] }));
    const where = fc.record({ a: cond, b: cond, ts: cond }, { requiredKeys: [] });
    const timeRange = fc.record({ from: small, to: small }, { requiredKeys: [] });
    const query = fc.record({ where, timeRange }, { requiredKeys: [] });
    const rows: RowValues[] = [];
    for (let a = 0; a < 5; a++) for (let b = 0; b < 5; b++) for (let ts = 0; ts < 5; ts++) rows.push([a, b, null, ts]);

    fc.assert(
      fc.property(query, (q) => {
        const where = Object.fromEntries(Object.entries(q.where ?? {}).filter(([, c]) => typeof c === 'number' || Object.keys(c).length > 0));
        const tq: TableQuery = { ...q, where };
        const plan = planScan(layout, tq);
        const expected = rows.filter((row) => matchesNaively(tq, row));
        if (plan.empty) {
          expect(expected).toEqual([]);
          return;
        }
        const scanned: RowValues[] = [];
        for (const row of rows) {
          if (plan.seek !== undefined && layout.compare(row, plan.seek) < 0) continue;
          if (plan.pastEnd(row)) break;
          if (plan.matches(row)) scanned.push(row);
        }
        expect(scanned).toEqual(expected);
      }),
      { numRuns: 500 },
    );
  });
});

function matchesNaively(q: TableQuery, row: RowValues): boolean {
  const value: Record<string, number> = { a: row[0] as number, b: row[1] as number, ts: row[3] as number };
  for (const [name, c] of Object.entries(q.where ?? {})) {
    const x = value[name];
    const r = typeof c === 'number' ? { eq: c } : (c as Record<string, number>);
    if (r.eq !== undefined && x !== r.eq) return false;
    if (r.gt !== undefined && !(x > r.gt)) return false;
    if (r.gte !== undefined && !(x >= r.gte)) return false;
    if (r.lt !== undefined && !(x < r.lt)) return false;
    if (r.lte !== undefined && !(x <= r.lte)) return false;
  }
  if (q.timeRange?.from !== undefined && value.ts < q.timeRange.from) return false;
  if (q.timeRange?.to !== undefined && value.ts >= q.timeRange.to) return false;
  return true;
}

describe('mergeRuns', () => {
  it('keeps the newest version of each key, tombstones included', async () => {
    const e = (a: number, v: number, deleted = false): Entry => [[a, 0, v, 0], deleted];
    const newest = [e(1, 10), e(3, 30, true)];
    const middle = [e(1, 11), e(2, 21), e(3, 31)];
    const oldest = [e(0, 2), e(2, 22), e(4, 42)];
    const columns = layout.names.map((_, c) => c);
    const merged: string[] = [];
    await mergeRuns(
      [newest, middle, oldest].map((entries) => sourceOf(blockOfEntries(entries, layout, columns, false))),
      layout,
      false,
      (block, from, to) => {
        for (let i = from; i < to; i++) merged.push(`${block.columns[0]![i]}:${block.columns[2]![i]}${block.deleted[i] ? 'x' : ''}`);
        return true;
      },
    );
    expect(merged).toEqual(['0:2', '1:10', '2:21', '3:30x', '4:42']);
  });
});
