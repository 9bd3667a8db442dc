import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LEADER } from '../../harness/region-writer.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import type { RegionDescriptor } from '../../../src/engine/region-engine.js';
import { aggregateName, rowsOf, type Row, type TableQuery } from '../../../src/engine/schema.js';
import { queryTable } from '../../../src/frontend/query.js';
import { rowKeyComparator } from '../../../src/engine/table/keys.js';
import { TableEngine, type TableRegion } from '../../../src/engine/table/table-engine.js';
import { deleteBody, metrics, putBody, tempDir, queryRows } from './helpers.js';

/**
 * Random puts, deletes, flushes (awaited or overlapping with writes),
 * compactions and reopen-with-replay against a Map model: every query must
 * return what filtering, sorting and limiting the model returns.
 */

type Command =
  | { kind: 'put'; rows: Row[] }
  | { kind: 'delete'; keys: Row[] }
  | { kind: 'flush' }
  | { kind: 'flushDuringPut'; rows: Row[] }
  | { kind: 'compact' }
  | { kind: 'reopen' }
  | { kind: 'query'; q: TableQuery };

const host = fc.constantFrom('a', 'b', 'c', 'd');
const idc = fc.constantFrom('x', 'y');
const ts = fc.integer({ min: 0, max: 5 });
const key = fc.record({ host, idc, ts });
const row = fc.record({ host, idc, ts, cpu: fc.option(fc.integer({ min: 0, max: 99 }), { nil: null }) }).map((r) => ({ ...r, mem: null, up: null }));
const rows = fc.array(row, { minLength: 1, maxLength: 6 });
const range = <T>(v: fc.Arbitrary<T>) => fc.record({ gt: v, gte: v, lt: v, lte: v, eq: v }, { requiredKeys: [] }).filter((r) => Object.keys(r).length > 0);
const query: fc.Arbitrary<TableQuery> = fc.record(
  {
    where: fc.record({ host: fc.oneof(host, range(host)), idc, ts: fc.oneof(ts, range(ts)) }, { requiredKeys: [] }),
    timeRange: fc.record({ from: ts, to: ts }, { requiredKeys: [] }),
    columns: fc.shuffledSubarray(['host', 'idc', 'cpu', 'ts'], { minLength: 1 }),
    limit: fc.integer({ min: 1, max: 10 }),
    order: fc.constantFrom('asc' as const, 'desc' as const),
  },
  { requiredKeys: [] },
);
const aggregate = fc.oneof(
  fc.record({ fn: fc.constantFrom('count' as const, 'sum' as const, 'avg' as const, 'min' as const, 'max' as const, 'first' as const, 'last' as const), column: fc.constant('cpu') }),
  fc.constant({ fn: 'count' as const }),
);
const aggregation: fc.Arbitrary<TableQuery> = fc
  .record(
    {
      where: fc.record({ host: fc.oneof(host, range(host)), idc }, { requiredKeys: [] }),
      timeRange: fc.record({ from: ts, to: ts }, { requiredKeys: [] }),
      groupBy: fc.shuffledSubarray(['host', 'idc']),
      interval: fc.integer({ min: 1, max: 4 }),
      aggregates: fc.uniqueArray(aggregate, { minLength: 1, maxLength: 4, selector: (a) => `${a.fn}(${'column' in a ? a.column : '*'})` }),
      limit: fc.integer({ min: 1, max: 10 }),
      order: fc.constantFrom('asc' as const, 'desc' as const),
    },
    { requiredKeys: ['aggregates'] },
  )
  .map((q) => q as TableQuery);
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: rows.map((r) => ({ kind: 'put' as const, rows: r })) },
  { weight: 2, arbitrary: fc.array(key, { minLength: 1, maxLength: 3 }).map((k) => ({ kind: 'delete' as const, keys: k })) },
  { weight: 2, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: rows.map((r) => ({ kind: 'flushDuringPut' as const, rows: r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'compact' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 3, arbitrary: query.map((q) => ({ kind: 'query' as const, q })) },
  { weight: 2, arbitrary: aggregation.map((q) => ({ kind: 'query' as const, q })) },
);

const keyOf = (r: Row) => `${r.host}\u0000${r.idc}\u0000${r.ts}`;
const byKey = rowKeyComparator(metrics);

function expected(model: Map<string, Row>, q: TableQuery): Row[] {
  const ok = (v: unknown, c: unknown): boolean => {
    if (c === null || typeof c !== 'object') return v === c;
    const r = c as Record<string, string | number>;
    const x = v as string | number;
    return (
      (r.eq === undefined || x === r.eq) &&
      (r.gt === undefined || x > r.gt) &&
      (r.gte === undefined || x >= r.gte) &&
      (r.lt === undefined || x < r.lt) &&
      (r.lte === undefined || x <= r.lte)
    );
  };
  const from = q.timeRange?.from ?? -Infinity;
  const to = q.timeRange?.to ?? Infinity;
  const matching = [...model.values()]
    .filter((r) => Object.entries(q.where ?? {}).every(([c, cond]) => ok(r[c], cond)))
    .filter((r) => (r.ts as number) >= from && (r.ts as number) < to)
    .sort(byKey);
  if (q.order === 'desc') matching.reverse();
  if (q.aggregates !== undefined) return expectedAggregates(matching.sort(byKey), q);
  const hits = matching.slice(0, q.limit ?? Infinity);
  const columns = q.columns ?? metrics.columns.map((c) => c.name);
  return hits.map((r) => Object.fromEntries(columns.map((c) => [c, r[c]])));
}

/** Straightforward evaluation of an aggregation over the matching rows (in key order). */
function expectedAggregates(rows: Row[], q: TableQuery): Row[] {
  const groupBy = q.groupBy ?? [];
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const key = [...groupBy.map((c) => r[c]), ...(q.interval !== undefined ? [Math.floor((r.ts as number) / q.interval) * q.interval] : [])];
    const id = JSON.stringify(key);
    groups.set(id, [...(groups.get(id) ?? []), r]);
  }
  const out: Row[] = [];
  for (const [id, members] of groups) {
    const key = JSON.parse(id) as (string | number)[];
    const row: Row = {};
    groupBy.forEach((c, i) => (row[c] = key[i]));
    if (q.interval !== undefined) row.ts = key[groupBy.length];
    for (const a of q.aggregates!) {
      const name = aggregateName(a);
      const withValue = a.column === undefined ? members : members.filter((m) => m[a.column!] !== null);
      const values = withValue.map((m) => m[a.column ?? 'ts'] as number);
      switch (a.fn) {
        case 'count':
          row[name] = withValue.length;
          break;
        case 'sum':
          row[name] = values.length ? values.reduce((x, y) => x + y, 0) : null;
          break;
        case 'avg':
          row[name] = values.length ? values.reduce((x, y) => x + y, 0) / values.length : null;
          break;
        case 'min':
          row[name] = values.length ? Math.min(...values) : null;
          break;
        case 'max':
          row[name] = values.length ? Math.max(...values) : null;
          break;
        case 'first':
        case 'last': {
          // Earliest (latest) time; between series at that time, the first in key order.
          const times = withValue.map((m) => m.ts as number);
          const t = a.fn === 'first' ? Math.min(...times) : Math.max(...times);
          row[name] = withValue.length ? (withValue.find((m) => m.ts === t)![a.column!] as number) : null;
          break;
        }
      }
    }
    out.push(row);
  }
  const keyNames = [...groupBy, ...(q.interval !== undefined ? ['ts'] : [])];
  out.sort((x, y) => {
    for (const k of keyNames) {
      if (x[k] !== y[k]) return ((x[k] as number) < (y[k] as number) ? -1 : 1) * (q.order === 'desc' ? -1 : 1);
    }
    return 0;
  });
  return out.slice(0, q.limit ?? Infinity);
}

/** The frontend's answer for one region (the whole table's rows live in it here). */
async function answer(region: TableRegion, q: TableQuery): Promise<Row[]> {
  if (q.aggregates === undefined) return queryRows(region, q);
  return rowsOf(await queryTable({ ...metrics, partition: undefined }, q, (_, rq) => region.query(rq)));
}

describe('TableEngine against a model', () => {
  it('answers every query like a Map of the latest rows', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 40 }), fc.integer({ min: 2, max: 4 }), async (commands, compactAt) => {
        const store = new FsObjectStore(await tempDir());
        const desc: RegionDescriptor = { regionId: 3, table: metrics, partition: 0, createdAt: 100 };
        // Windows of 2 ms: times 0..5 span three, so compaction splits its output.
        let engine = new TableEngine({ compactAt, compactionWindowMs: 2 });
        let region: TableRegion = await engine.openRegion(desc, store, LEADER);
        const model = new Map<string, Row>();
        // The WAL: every entry ever applied, replayed after a reopen.
        const log: { id: number; body: Uint8Array }[] = [];
        const append = (body: Uint8Array) => {
          const id = 101 + log.length;
          log.push({ id, body });
          region.apply(id, body);
        };
        const putRows = (rs: Row[]) => {
          append(putBody(metrics, rs));
          for (const r of rs) model.set(keyOf(r), r);
        };
        const check = async (q: TableQuery) => expect(await answer(region, q)).toEqual(expected(model, q));

        for (const c of commands) {
          switch (c.kind) {
            case 'put':
              putRows(c.rows);
              break;
            case 'delete':
              append(deleteBody(metrics, c.keys));
              for (const k of c.keys) model.delete(keyOf(k));
              break;
            case 'flush':
              expect((await region.flush(region.appliedEntryId())).flushedEntryId).toBe(region.appliedEntryId());
              break;
            case 'flushDuringPut': {
              const flushing = region.flush(region.appliedEntryId());
              putRows(c.rows);
              await check({});
              await flushing;
              break;
            }
            case 'compact':
              await region.compact();
              // Flushed SSTs are merged into at most one per window (three here).
              expect(region.stats().ssts).toBeLessThan(compactAt + 3);
              break;
            case 'reopen': {
              const flushed = region.flushedEntryId();
              await region.close();
              engine = new TableEngine({ compactAt, compactionWindowMs: 2 });
              region = await engine.openRegion(desc, store, LEADER);
              expect(region.flushedEntryId()).toBe(flushed);
              for (const e of log) region.apply(e.id, e.body);
              break;
            }
            case 'query':
              await check(c.q);
              break;
          }
        }
        await check({});
        await region.close();
      }),
      { numRuns: 150 },
    );
  });
});
