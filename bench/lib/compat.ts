import type { Row, TableSchema } from '../../src/engine/schema.js';
import { tableMutationCodec } from '../../src/engine/table/codec.js';
import type { RowValues, TableLayout } from '../../src/engine/table/keys.js';
import { Memtable } from '../../src/engine/table/memtable.js';

/**
 * The table engine's put body, built by the runtime's own codec so the bytes
 * match what `insert` writes. Works with either shape of the codec:
 * `encodePut(schema, rows) -> body` or `preparePut(schema, rows) -> { body, decoded }`
 * (the write path handing the region its already-decoded rows).
 */
type AnyCodec = {
  encodePut?: (schema: TableSchema, rows: readonly Row[]) => Uint8Array;
  preparePut?: (schema: TableSchema, rows: readonly Row[]) => { body: Uint8Array };
};
const codec = tableMutationCodec as unknown as AnyCodec;

/** Whether the write path applies prepared rows (no decode of its own body on apply). */
export const writePathDecodes = codec.preparePut === undefined;

export function encodePutBody(schema: TableSchema, rows: readonly Row[]): Uint8Array {
  if (codec.preparePut) return codec.preparePut(schema, rows).body;
  if (codec.encodePut) return codec.encodePut(schema, rows);
  throw new Error('tableMutationCodec has neither preparePut nor encodePut');
}

/**
 * A memtable of the table engine, whichever constructor it has: a key
 * comparator (the B+tree memtable) or the layout's tag and time columns
 * (the time-series memtable). The argument is both: the comparator
 * function, carrying tagIdx and timeIdx.
 */
export function newMemtable(layout: TableLayout): { put(row: RowValues): void } {
  const arg = Object.assign((a: RowValues, b: RowValues) => layout.compare(a, b), {
    tagIdx: layout.tagIdx,
    timeIdx: layout.timeIdx,
    compare: layout.compare,
  });
  const Ctor = Memtable as unknown as new (arg: unknown) => { put(row: RowValues): void };
  return new Ctor(arg);
}
