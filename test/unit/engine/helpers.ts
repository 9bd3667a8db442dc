import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import { isRepriseError, type ErrorCode } from '../../../src/errors.js';
import type { RegionQueryResult } from '../../../src/engine/region-engine.js';
import { rowsOf, type Row, type TableQuery, type TableSchema } from '../../../src/engine/schema.js';
import { tableMutationCodec } from '../../../src/engine/table/codec.js';

/** system_metrics(host, idc, cpu, mem, up, ts), partitioned on host at "f" and "z". */
export const metrics: TableSchema = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'idc', type: 'string', role: 'tag' },
    { name: 'cpu', type: 'float64', role: 'field' },
    { name: 'mem', type: 'int64', role: 'field' },
    { name: 'up', type: 'bool', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'z'] },
};

const dirs: string[] = [];

/** A fresh directory under the OS temp dir, removed after the test. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'reprise-engine-'));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Assert that `fn` throws (or rejects with) a RepriseError of `code` whose message matches every pattern. */
export async function expectError(fn: () => unknown, code: ErrorCode, ...patterns: (string | RegExp)[]): Promise<void> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${code}`).toBeDefined();
  if (!isRepriseError(caught, code)) throw new Error(`expected RepriseError ${code}, got ${String(caught)}`);
  for (const p of patterns) expect(caught.message).toMatch(p);
}

const unpartitioned = new WeakMap<TableSchema, TableSchema>();

/** The schema without its partition rule (the same columns): to encode rows of any partition into one body. */
function onePartition(schema: TableSchema): TableSchema {
  let plain = unpartitioned.get(schema);
  if (plain === undefined) {
    plain = { name: schema.name, columns: schema.columns };
    unpartitioned.set(schema, plain);
  }
  return plain;
}

/** One put body holding every row, whatever their partitions (rows are validated as the runtime does). */
export function putBody(schema: TableSchema, rows: readonly Record<string, unknown>[]): Uint8Array {
  const { parts } = tableMutationCodec.preparePuts(onePartition(schema), rows);
  if (parts.length !== 1) throw new Error('putBody needs at least one row');
  return parts[0]!.mutation.body;
}

/** One delete body holding every key, whatever their partitions. */
export function deleteBody(schema: TableSchema, keys: readonly Row[]): Uint8Array {
  return tableMutationCodec.prepareDeletes(onePartition(schema), keys).parts[0]!.mutation.body;
}

/** A region's row answer as row objects with the requested columns (the region appends the key columns it was not asked for). */
export async function queryRows(region: { query(q: TableQuery): Promise<RegionQueryResult> }, q: TableQuery = {}): Promise<Row[]> {
  const result = await region.query(q);
  if (result.kind !== 'rows') throw new Error('expected rows, got aggregates');
  const n = q.columns?.length ?? result.rows.columns.length;
  return rowsOf({ columns: result.rows.columns.slice(0, n), data: result.rows.data.slice(0, n) });
}
