import type { RegionQueryResult } from '../engine/region-engine.js';
import type { ColumnarRows, TableQuery, TableSchema, Value } from '../engine/schema.js';
import { aggregatePlanOf, finishAggregates, type PartialAggregates } from '../engine/table/aggregate.js';
import { compareValues, layoutOf } from '../engine/table/keys.js';
import { partitionsForQuery } from '../engine/table/partition.js';
import { validateQuery } from '../engine/table/validate.js';
import { RepriseError } from '../errors.js';

/**
 * The query path every protocol shares: validate once, prune to the
 * partitions the query can touch, ask each region (in parallel), and merge
 * their answers: rows by primary key (each region's are sorted and at most
 * `limit`), partial aggregates by group. Results stay columnar; rows as
 * objects are made at the edge that needs them.
 */
export async function queryTable(
  schema: TableSchema,
  input: unknown,
  askRegion: (partition: number, q: TableQuery) => Promise<RegionQueryResult>,
): Promise<ColumnarRows> {
  const q = validateQuery(schema, input ?? {});
  const agg = aggregatePlanOf(schema, q);
  const partitions = partitionsForQuery(schema, q);
  if (agg !== undefined) {
    // Regions fold all their groups; order and limit apply to the merged groups.
    const { limit, order, ...regionQuery } = q;
    const parts = await Promise.all(partitions.map((p) => askRegion(p, regionQuery)));
    return finishAggregates(agg, parts.map((r) => partialOf(r, schema)), order, limit);
  }
  const parts = (await Promise.all(partitions.map((p) => askRegion(p, q)))).map((r) => rowsOf(r, schema));
  const columns = q.columns ?? schema.columns.map((c) => c.name);
  return projectColumns(mergeByKey(schema, parts, q.order === 'desc', q.limit ?? Infinity), columns);
}

function partialOf(result: RegionQueryResult, schema: TableSchema): PartialAggregates {
  if (result.kind !== 'aggregates') throw new RepriseError('INTERNAL', `table "${schema.name}": a region answered an aggregation with rows`);
  return result.partial;
}

function rowsOf(result: RegionQueryResult, schema: TableSchema): ColumnarRows {
  if (result.kind !== 'rows') throw new RepriseError('INTERNAL', `table "${schema.name}": a region answered a row query with aggregates`);
  return result.rows;
}

/** Regions' sorted rows (all with the key columns) merged into one sorted result of at most `limit` rows. */
function mergeByKey(schema: TableSchema, parts: readonly ColumnarRows[], desc: boolean, limit: number): ColumnarRows {
  const nonEmpty = parts.filter((p) => (p.data[0]?.length ?? 0) > 0);
  if (nonEmpty.length <= 1) {
    const only = nonEmpty[0] ?? parts[0];
    if (only === undefined) return { columns: [], data: [] };
    const n = only.data[0]?.length ?? 0;
    return n <= limit ? only : { columns: only.columns, data: only.data.map((col) => col.slice(0, limit)) };
  }
  const { names, keyIdx } = layoutOf(schema);
  const columns = nonEmpty[0].columns;
  // Partitioned on the first key column, regions hold consecutive key ranges
  // in partition order (parts come in that order): the merge is a concatenation.
  if (schema.partition?.column === names[keyIdx[0]]) {
    const ordered = desc ? [...nonEmpty].reverse() : nonEmpty;
    const data: Value[][] = columns.map(() => []);
    for (const part of ordered) {
      const at = part.columns.map((name) => columns.indexOf(name));
      const n = Math.min(part.data[0].length, limit - data[0].length);
      for (let c = 0; c < part.columns.length; c++) {
        const into = data[at[c]];
        const from = part.data[c];
        for (let r = 0; r < n; r++) into.push(from[r]);
      }
      if (data[0].length >= limit) break;
    }
    return { columns, data };
  }
  const keyCols = nonEmpty.map((p) => keyIdx.map((c) => p.data[p.columns.indexOf(names[c])]));
  const at = nonEmpty.map((p) => p.columns.map((name) => columns.indexOf(name)));
  const pos = nonEmpty.map(() => 0);
  const data: Value[][] = columns.map(() => []);
  const sign = desc ? -1 : 1;
  /** Whether part i's head comes before part j's (ties: the lower partition). */
  const before = (i: number, j: number): boolean => {
    for (let k = 0; k < keyIdx.length; k++) {
      const c = compareValues(keyCols[i][k][pos[i]], keyCols[j][k][pos[j]]) * sign;
      if (c !== 0) return c < 0;
    }
    return i < j;
  };
  // A binary heap of the parts by their head row: O(log parts) per row.
  const heap = nonEmpty.map((_, i) => i);
  const down = (from: number): void => {
    for (let i = from; ; ) {
      const l = 2 * i + 1;
      if (l >= heap.length) return;
      const r = l + 1;
      const m = r < heap.length && before(heap[r], heap[l]) ? r : l;
      if (!before(heap[m], heap[i])) return;
      [heap[m], heap[i]] = [heap[i], heap[m]];
      i = m;
    }
  };
  for (let i = (heap.length >> 1) - 1; i >= 0; i--) down(i);
  while (heap.length > 0 && data[0].length < limit) {
    const w = heap[0];
    const part = nonEmpty[w];
    for (let c = 0; c < part.columns.length; c++) data[at[w][c]].push(part.data[c][pos[w]]);
    if (++pos[w] >= keyCols[w][0].length) {
      heap[0] = heap[heap.length - 1];
      heap.pop();
    }
    down(0);
  }
  return { columns, data };
}

function projectColumns(rows: ColumnarRows, columns: readonly string[]): ColumnarRows {
  return { columns, data: columns.map((name) => rows.data[rows.columns.indexOf(name)] ?? []) };
}
