import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import type { RegionDescriptor } from '../../../src/engine/region-engine.js';
import type { Row, TableQuery } from '../../../src/engine/schema.js';
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
  },
  { requiredKeys: [] },
);
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: rows.map((r) => ({ kind: 'put' as const, rows: r })) },
  { weight: 2, arbitrary: fc.array(key, { minLength: 1, maxLength: 3 }).map((k) => ({ kind: 'delete' as const, keys: k })) },
  { weight: 2, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: rows.map((r) => ({ kind: 'flushDuringPut' as const, rows: r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'compact' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 3, arbitrary: query.map((q) => ({ kind: 'query' as const, q })) },
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
  const hits = [...model.values()]
    .filter((r) => Object.entries(q.where ?? {}).every(([c, cond]) => ok(r[c], cond)))
    .filter((r) => (r.ts as number) >= from && (r.ts as number) < to)
    .sort(byKey)
    .slice(0, q.limit ?? Infinity);
  const columns = q.columns ?? metrics.columns.map((c) => c.name);
  return hits.map((r) => Object.fromEntries(columns.map((c) => [c, r[c]])));
}

describe('TableEngine against a model', () => {
  it('answers every query like a Map of the latest rows', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 40 }), fc.integer({ min: 2, max: 4 }), async (commands, compactAt) => {
        const store = new FsObjectStore(await tempDir());
        const desc: RegionDescriptor = { regionId: 3, table: metrics, partition: 0, createdAt: 100 };
        let engine = new TableEngine({ compactAt });
        let region: TableRegion = await engine.openRegion(desc, store);
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
        const check = async (q: TableQuery) => expect(await queryRows(region, q)).toEqual(expected(model, q));

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
              expect(region.stats().ssts).toBeLessThan(compactAt);
              break;
            case 'reopen': {
              const flushed = region.flushedEntryId();
              await region.close();
              engine = new TableEngine({ compactAt });
              region = await engine.openRegion(desc, store);
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
