import { Decoder } from '@msgpack/msgpack';
import { RepriseError } from '../../errors.js';
import type { PreparedMutation, TableMutationCodec } from '../region-engine.js';
import type { Row, TableSchema, Value } from '../schema.js';
import { keyOf, layoutOf, rowFromKey, toValues, type RowValues, type TableLayout } from './keys.js';
import { MsgpackWriter } from './msgpack-rows.js';
import { isValueOfType } from './validate.js';

/**
 * WAL entry bodies of the table engine, msgpack:
 *   { op: 'put', rows: [[v0, v1, ...], ...] }   values in schema column order
 *   { op: 'delete', keys: [[tag0, ..., time], ...] }
 * Arrays rather than objects keep bodies small and decoding cheap.
 */

/** A decoded body. Delete keys are expanded to tombstone rows (fields null). */
export type Mutation = { readonly op: 'put'; readonly rows: RowValues[] } | { readonly op: 'delete'; readonly keys: RowValues[] };

// Encoding and decoding are synchronous, so one instance of each is safe to share.
const writer = new MsgpackWriter();
const decoder = new Decoder();

/** `{ op, [field]: rows }` with the rows in the msgpack the put and delete bodies share. */
function encodeBody(op: 'put' | 'delete', field: 'rows' | 'keys', rows: readonly (readonly Value[])[]): Uint8Array {
  return writer.reset().mapHeader(2).string('op').string(op).string(field).rows(rows).finish();
}

export const tableMutationCodec: TableMutationCodec = {
  preparePut(schema: TableSchema, rows: readonly Row[]): PreparedMutation {
    const layout = layoutOf(schema);
    return preparePutValues(rows.map((r) => toValues(layout, r)));
  },
  prepareDelete(schema: TableSchema, keys: readonly Row[]): PreparedMutation {
    const layout = layoutOf(schema);
    const wire = keys.map((k) => keyOf(layout, toValues(layout, k)));
    const body = encodeBody('delete', 'keys', wire);
    // The applied form of a delete is its tombstone rows, as decodeMutation returns.
    return { body, decoded: { op: 'delete', keys: wire.map((k) => rowFromKey(layout, k)) } satisfies Mutation };
  },
};

/**
 * Validated rows as RowValues (see validateRowValues) -> put body. The rows
 * themselves are the decoded form, applied to the memtable as they are.
 */
export function preparePutValues(rows: RowValues[]): PreparedMutation {
  const decoded: Mutation = { op: 'put', rows };
  return { body: encodeBody('put', 'rows', rows), decoded };
}

/**
 * Decode and check a body against the schema (shape and value types), so a
 * bad or foreign body fails here with INVALID_ARGUMENT instead of
 * corrupting the memtable.
 */
export function decodeMutation(schema: TableSchema, body: Uint8Array): Mutation {
  const layout = layoutOf(schema);
  const fail = (why: string): never => {
    throw new RepriseError('INVALID_ARGUMENT', `table "${schema.name}": undecodable mutation body (${why})`, { table: schema.name });
  };
  let decoded: unknown;
  try {
    decoded = decoder.decode(body);
  } catch (err) {
    return fail((err as Error).message);
  }
  const msg = decoded as { op?: unknown; rows?: unknown; keys?: unknown } | null;
  if (typeof msg !== 'object' || msg === null) return fail('not a map');
  if (msg.op === 'put') {
    if (!Array.isArray(msg.rows)) return fail('put without rows');
    const allColumns = layout.names.map((_, c) => c);
    msg.rows.forEach((row: unknown, i) => checkRow(layout, row, allColumns, i, fail));
    return { op: 'put', rows: msg.rows as RowValues[] };
  }
  if (msg.op === 'delete') {
    if (!Array.isArray(msg.keys)) return fail('delete without keys');
    return {
      op: 'delete',
      keys: msg.keys.map((key: unknown, i) => {
        checkRow(layout, key, layout.keyIdx, i, fail);
        return rowFromKey(layout, key as RowValues);
      }),
    };
  }
  return fail(`unknown op ${JSON.stringify(msg.op)}`);
}

/**
 * Check one decoded row, whose position k holds column columns[k]: its
 * width, non-null primary key values and value types.
 */
function checkRow(layout: TableLayout, row: unknown, columns: readonly number[], i: number, fail: (why: string) => never): void {
  if (!Array.isArray(row) || row.length !== columns.length) fail(`row ${i}: expected an array of ${columns.length} values`);
  const values = row as unknown[];
  for (let k = 0; k < columns.length; k++) {
    const c = columns[k];
    const v = values[k];
    if (v === null ? layout.isKey[c] : !isValueOfType(layout.types[c], v)) {
      fail(`row ${i}: bad value ${JSON.stringify(v)} for column "${layout.names[c]}"`);
    }
  }
}
