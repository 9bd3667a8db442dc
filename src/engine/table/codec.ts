import { RepriseError } from '../../errors.js';
import type { PreparedMutation, PreparedWrite, TableMutationCodec } from '../region-engine.js';
import type { ColumnType, Row, TableSchema, Value } from '../schema.js';
import { keyOf, layoutOf, toValues, type RowValues, type TableLayout } from './keys.js';
import { isNumberColumn, RowBatch } from './memtable.js';
import { MsgpackFormatError, MsgpackReader, MsgpackWriter, NIL_READ, NUMBER_READ, OTHER_READ, TRUE_READ } from './msgpack-rows.js';
import { partitionOf, partitionOfValue } from './partition.js';
import { hasOwn, isPlainObject, rowsError, show, showAt, TYPE_DESCRIPTIONS, type ValidateRowsOptions } from './validate.js';

/**
 * WAL entry bodies of the table engine, msgpack:
 *   { op: 'put', rows: [[v0, v1, ...], ...] }   values in schema column order
 *   { op: 'delete', keys: [[tag0, ..., time], ...] }
 * Arrays rather than objects keep bodies small and decoding cheap.
 *
 * Rows to insert are validated and encoded in one pass (preparePuts): each
 * row object is checked and its values written straight into the body, with
 * no intermediate array per row. Bodies are decoded (decodeBody) only when
 * a region indexes them (see ./queued-memtable.ts), replayed or written alike.
 */

/** A decoded body. Delete keys are expanded to tombstone rows (fields null). */
export type Mutation = { readonly op: 'put'; readonly rows: RowValues[] } | { readonly op: 'delete'; readonly keys: RowValues[] };

// Encoding and decoding are synchronous, so one instance of each is safe to share.
/** Rows as preparePuts validates them, behind the header of a body holding them all. */
const rowWriter = new MsgpackWriter();
/** Bodies built from parts of rowWriter's, and delete bodies. */
const writer = new MsgpackWriter();
const reader = new MsgpackReader();

/** The msgpack of the keys `op` and `rows`/`keys` and their values before the rows: a body's header. */
function bodyHeader(out: MsgpackWriter, op: 'put' | 'delete', count: number): MsgpackWriter {
  return out.mapHeader(2).string('op').string(op).string(op === 'put' ? 'rows' : 'keys').arrayHeader(count);
}

// Column type codes for the row loops.
const STRING = 0;
const FLOAT = 1;
const INT = 2;
const BOOL = 3;
const TIMESTAMP = 4;
const TYPE_CODES: Record<ColumnType, number> = { string: STRING, float64: FLOAT, int64: INT, bool: BOOL, timestamp: TIMESTAMP };

/** What the row loops need of a layout, computed once per layout. */
interface RowCodec {
  readonly width: number;
  /** Column names, internalized (so that comparing one with a property key compares pointers). */
  readonly names: readonly string[];
  readonly typeCodes: Uint8Array;
  readonly isKey: Uint8Array;
  /** Per column: 1 if a RowBatch holds it in `numbers`, 0 if in `values` (see isNumberColumn). */
  readonly numeric: Uint8Array;
  /** Per key column position (tags, time), its column. */
  readonly keyIdx: Int32Array;
  /** The partition column, -1 without partitioning. */
  readonly partitionColumn: number;
  readonly bounds: readonly Value[];
  /** Values of the row being validated, by column; undefined where the row has none. */
  readonly scratch: (Value | undefined)[];
  /** The common row's fast path (see compileInOrderWriter). */
  readonly writeInOrder: InOrderWriter;
}

/** Writes a row whose keys are exactly the columns in order and whose values are valid: its partition, else -1. */
type InOrderWriter = (raw: Record<string, unknown>, out: MsgpackWriter) => number;

const rowCodecs = new WeakMap<TableLayout, RowCodec>();

function rowCodecOf(layout: TableLayout): RowCodec {
  let codec = rowCodecs.get(layout);
  if (codec === undefined) {
    const rule = layout.schema.partition;
    // A property key is an internalized string; so is the key of an object literal.
    const names = layout.names.map((name) => Object.keys({ [name]: 0 })[0]);
    codec = {
      width: layout.names.length,
      names,
      typeCodes: Uint8Array.from(layout.types, (t) => TYPE_CODES[t]),
      isKey: Uint8Array.from(layout.isKey, (k) => (k ? 1 : 0)),
      numeric: Uint8Array.from(layout.types, (_, c) => (isNumberColumn(layout, c) ? 1 : 0)),
      keyIdx: Int32Array.from(layout.keyIdx),
      partitionColumn: rule ? (layout.index.get(rule.column) as number) : -1,
      bounds: rule ? rule.bounds : [],
      scratch: new Array<Value | undefined>(layout.names.length).fill(undefined),
      writeInOrder: compileInOrderWriter(layout, names, rule ? rule.bounds : []),
    };
    rowCodecs.set(layout, codec);
  }
  return codec;
}

/** Per row of the last preparePuts: where its bytes end in rowWriter, and its partition. Grown as needed. */
let rowEnds = new Int32Array(1024);
let rowParts = new Int32Array(1024);

export const tableMutationCodec: TableMutationCodec = {
  preparePuts(schema: TableSchema, input: unknown, opts: ValidateRowsOptions = {}): PreparedWrite {
    const fail = rowsError(schema);
    if (!Array.isArray(input)) return fail(`rows must be an array, got ${show(input)}`);
    const layout = layoutOf(schema);
    const codec = rowCodecOf(layout);
    const requireAll = opts.requireAll === true;
    const n = input.length;
    if (rowEnds.length < n) {
      rowEnds = new Int32Array(n);
      rowParts = new Int32Array(n);
    }
    // Written as one body holding every row; split by partition below if the rows span several.
    const out = bodyHeader(rowWriter.reset(), 'put', n);
    const headerEnd = out.length;
    let first = -1;
    let mixed = false;
    for (let i = 0; i < n; i++) {
      const raw: unknown = input[i];
      if (!isPlainObject(raw)) return fail(`row ${i}: expected an object, got ${show(raw)}`, { row: i });
      const start = out.length;
      let partition = requireAll ? -1 : codec.writeInOrder(raw, out);
      if (partition < 0) {
        out.truncate(start);
        partition = writeRow(codec, layout, raw, i, requireAll, out, fail);
      }
      rowEnds[i] = out.length;
      rowParts[i] = partition;
      if (first !== partition) {
        if (first === -1) first = partition;
        else mixed = true;
      }
    }
    if (n === 0) return { count: 0, parts: [] };
    if (!mixed) return { count: n, parts: [{ partition: first, mutation: { body: out.finish() } }] };
    return { count: n, parts: splitByPartition(out.written(), headerEnd, n, codec.bounds.length + 1) };
  },

  prepareDeletes(schema: TableSchema, keys: readonly Row[]): PreparedWrite {
    const layout = layoutOf(schema);
    const byPartition = new Map<number, RowValues[]>();
    for (const key of keys) {
      const partition = partitionOf(schema, key);
      let wire = byPartition.get(partition);
      if (wire === undefined) byPartition.set(partition, (wire = []));
      wire.push(keyOf(layout, toValues(layout, key)));
    }
    const parts = [...byPartition].map(([partition, wire]) => {
      const out = bodyHeader(writer.reset(), 'delete', wire.length);
      for (const key of wire) out.array(key);
      return { partition, mutation: { body: out.finish() } satisfies PreparedMutation };
    });
    return { count: keys.length, parts };
  },
};

/**
 * The fast path for the common row: its enumerable keys are exactly the
 * columns, in schema order, and every value is valid. It is compiled per
 * table, so that each column is read by a property access of its own (which
 * V8 specialises to the rows' shape: a load from a fixed slot, numbers not
 * boxed) and checked and written by code specialised to its type, instead
 * of a loop looking columns up by name and dispatching on their types. The
 * keys are compared with the column names in one for-in pass, which also
 * catches unknown and inherited keys. Any other row gets -1 (with some of
 * it written) and goes to writeRow, which checks it fully and reports what
 * is wrong; both write the same bytes for a row they both accept.
 *
 * The generated code holds the column names as JSON string literals (names
 * are validated identifiers anyway) and nothing else from the schema. Tables
 * with a column named like a property of Object.prototype (`constructor`,
 * `__proto__`...) take writeRow for every row.
 */
function compileInOrderWriter(layout: TableLayout, names: readonly string[], bounds: readonly Value[]): InOrderWriter {
  if (names.some((name) => name in Object.prototype)) return () => -1;
  const rule = layout.schema.partition;
  const partitionColumn = rule ? (layout.index.get(rule.column) as number) : -1;
  const width = names.length;
  const loads: string[] = [];
  const checks: string[] = [];
  const writes: string[] = [];
  for (let c = 0; c < width; c++) {
    const v = `v${c}`;
    loads.push(`const ${v} = raw[${JSON.stringify(names[c])}];`);
    let valid: string;
    let write: string;
    switch (layout.types[c]) {
      case 'string':
        valid = `typeof ${v} === 'string'`;
        write = `out.string(${v});`;
        break;
      case 'float64':
        valid = `typeof ${v} === 'number' && ${v} - ${v} === 0`; // finite
        write = `out.number(${v});`;
        break;
      case 'int64':
        valid = `Number.isSafeInteger(${v})`;
        write = `out.number(${v});`;
        break;
      case 'bool':
        valid = `typeof ${v} === 'boolean'`;
        write = `out.boolean(${v});`;
        break;
      case 'timestamp':
        valid = `Number.isSafeInteger(${v}) && ${v} >= 0`;
        write = `out.number(${v});`;
        break;
    }
    if (layout.isKey[c]) {
      checks.push(`if (!(${valid})) return -1;`);
      writes.push(write);
    } else {
      checks.push(`if (${v} !== null && ${v} !== undefined && !(${valid})) return -1;`);
      writes.push(`if (${v} === null || ${v} === undefined) out.nil(); else ${write}`);
    }
  }
  const source = [
    `'use strict';`,
    `return function writeRowInOrder(raw, out) {`,
    `  let c = 0;`,
    `  for (const key in raw) if (key !== names[c++]) return -1;`,
    `  if (c !== ${width}) return -1;`,
    ...loads.map((l) => `  ${l}`),
    ...checks.map((l) => `  ${l}`),
    `  out.arrayHeader(${width});`,
    ...writes.map((l) => `  ${l}`),
    `  return ${partitionColumn >= 0 ? `partitionOfValue(bounds, v${partitionColumn})` : '0'};`,
    `};`,
  ].join('\n');
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return new Function('names', 'bounds', 'partitionOfValue', source)(names, bounds, partitionOfValue) as InOrderWriter;
}

/**
 * Check a row and write its values in schema column order: its partition.
 * Throws INVALID_ROW naming the row and column: an unknown column (the
 * first, in Object.keys order) before a missing key column or a bad value
 * (the first in column order).
 */
function writeRow(
  codec: RowCodec,
  layout: TableLayout,
  raw: Record<string, unknown>,
  i: number,
  requireAll: boolean,
  out: MsgpackWriter,
  fail: ReturnType<typeof rowsError>,
): number {
  const { width, names, typeCodes, isKey, partitionColumn, scratch } = codec;
  const { index } = layout;
  for (let c = 0; c < width; c++) scratch[c] = undefined;
  // One pass over the row's keys (for-in allocates no key array and reads
  // each value by its slot): unknown keys fail first, in Object.keys order;
  // for-in also visits inherited enumerable keys, which own-ness tells
  // apart. Columns not seen are read by name below.
  for (const key in raw) {
    const c = index.get(key);
    if (c !== undefined) scratch[c] = raw[key] as Value;
    else if (hasOwn(raw, key)) fail(`row ${i}: unknown column "${key}"`, { row: i, column: key });
  }
  out.arrayHeader(width);
  let partition = 0;
  for (let c = 0; c < width; c++) {
    const seen = scratch[c];
    const v = seen !== undefined ? seen : raw[names[c]];
    if (v === null || v === undefined) {
      if (isKey[c] === 1) fail(`row ${i}: ${layout.schema.columns[c].role} column "${names[c]}" is required`, { row: i, column: names[c] });
      if (requireAll && !hasOwn(raw, names[c])) fail(`row ${i}: column "${names[c]}" is missing`, { row: i, column: names[c] });
      out.nil();
    } else if (!writeValue(out, typeCodes[c], v)) {
      fail(`row ${i}: column "${names[c]}" must be ${TYPE_DESCRIPTIONS[layout.types[c]]}, got ${showAt(raw, names[c], v)}`, { row: i, column: names[c] });
    } else if (c === partitionColumn) {
      partition = partitionOfValue(codec.bounds, v as Value);
    }
  }
  return partition;
}

/** Write a non-null value if it is valid for its column's type; false (nothing written) if not. */
function writeValue(out: MsgpackWriter, type: number, v: unknown): boolean {
  switch (type) {
    case STRING:
      if (typeof v !== 'string') return false;
      out.string(v);
      return true;
    case FLOAT:
      if (typeof v !== 'number' || !Number.isFinite(v)) return false;
      out.number(v);
      return true;
    case INT:
      if (!Number.isSafeInteger(v)) return false;
      out.number(v as number);
      return true;
    case BOOL:
      if (typeof v !== 'boolean') return false;
      out.boolean(v);
      return true;
    default:
      if (!Number.isSafeInteger(v) || (v as number) < 0) return false;
      out.number(v as number);
      return true;
  }
}

/**
 * The rows preparePuts wrote (after `headerEnd` in `all`, row i ending at
 * rowEnds[i], in partition rowParts[i]) as one body per partition, each
 * holding its rows in their order. Partitions come in the order of their
 * first row.
 */
function splitByPartition(all: Uint8Array, headerEnd: number, n: number, partitions: number): { partition: number; mutation: PreparedMutation }[] {
  const counts = new Int32Array(partitions);
  const order: number[] = [];
  for (let i = 0; i < n; i++) if (counts[rowParts[i]]++ === 0) order.push(rowParts[i]);
  return order.map((partition) => {
    const out = bodyHeader(writer.reset(), 'put', counts[partition]);
    // Copy runs of consecutive rows of this partition at once.
    let start = -1;
    for (let i = 0; i <= n; i++) {
      const mine = i < n && rowParts[i] === partition;
      if (mine && start < 0) start = i === 0 ? headerEnd : rowEnds[i - 1];
      else if (!mine && start >= 0) {
        out.raw(all.subarray(start, rowEnds[i - 1]));
        start = -1;
      }
    }
    return { partition, mutation: { body: out.finish() } };
  });
}

/** The op of a decoded body and how many rows it holds. */
export interface BodyShape {
  readonly op: 'put' | 'delete';
  readonly rows: number;
}

/**
 * Decode and check a body (bytes[start, end)) against the schema (shape,
 * widths, non-null primary keys and value types), writing its rows into
 * `out` as the memtable takes them (see RowBatch; a delete's keys as
 * tombstone rows, fields null). A bad or foreign body fails with
 * INVALID_ARGUMENT before the caller uses any of `out`.
 */
export function decodeBody(layout: TableLayout, bytes: Uint8Array, out: RowBatch, start = 0, end = bytes.length): BodyShape {
  const { schema } = layout;
  const fail = (why: string): never => {
    throw new RepriseError('INVALID_ARGUMENT', `table "${schema.name}": undecodable mutation body (${why})`, { table: schema.name });
  };
  try {
    reader.reset(bytes, start, end);
    const entries = reader.mapHeader();
    let op: Value = null;
    let rowsAt = -1;
    let keysAt = -1;
    // The bodies this codec writes hold the op before the rows: those rows
    // are read in place. A map in another order (or with other keys, which
    // are ignored) is read back once the op is known.
    let readAt = -1;
    let count = 0;
    for (let e = 0; e < entries; e++) {
      const key = reader.value();
      if (key === 'op') {
        op = reader.value();
      } else if (key === 'rows' || key === 'keys') {
        const at = reader.offset;
        if (key === 'rows') rowsAt = at;
        else keysAt = at;
        if (readAt < 0 && op === (key === 'rows' ? 'put' : 'delete')) {
          readAt = at;
          count = readRows(layout, out, fail, key === 'keys');
        } else {
          reader.skip();
        }
      } else {
        reader.skip();
      }
    }
    if (!reader.done) fail(`unexpected bytes after the body`);
    if (op !== 'put' && op !== 'delete') return fail(`unknown op ${JSON.stringify(op)}`);
    const at = op === 'put' ? rowsAt : keysAt;
    if (at < 0) return fail(`${op} without ${op === 'put' ? 'rows' : 'keys'}`);
    if (at !== readAt) {
      reader.seek(at);
      count = readRows(layout, out, fail, op === 'delete');
    }
    return { op, rows: count };
  } catch (err) {
    if (err instanceof MsgpackFormatError) return fail(err.message);
    throw err;
  }
}

/**
 * Read an array of rows (or delete keys) at the reader's position into
 * `batch`, checking each value against its column: the number of rows.
 */
function readRows(layout: TableLayout, batch: RowBatch, fail: (why: string) => never, keys: boolean): number {
  const { width, typeCodes, keyIdx, isKey, numeric } = rowCodecOf(layout);
  const count = reader.arrayHeader();
  const expected = keys ? keyIdx.length : width;
  batch.reserve(count, width);
  const { numbers, values } = batch;
  const bad = (r: number, c: number, v: unknown): never => fail(`row ${r}: bad value ${JSON.stringify(v)} for column "${layout.names[c]}"`);
  for (let r = 0, base = 0; r < count; r++, base += width) {
    if (reader.arrayHeader() !== expected) fail(`row ${r}: expected an array of ${expected} values`);
    if (keys) {
      for (let c = 0; c < width; c++) {
        if (numeric[c] === 1) numbers[base + c] = NaN;
        else values[base + c] = null;
      }
    }
    for (let k = 0; k < expected; k++) {
      const c = keys ? keyIdx[k] : k;
      const at = base + c;
      if (numeric[c] === 0) {
        const v = reader.value();
        if (v === null ? isKey[c] === 1 : !fits(typeCodes[c], v)) bad(r, c, v);
        values[at] = v;
        continue;
      }
      const read = reader.numberInto(numbers, at);
      if (read === NUMBER_READ) {
        const x = numbers[at];
        const type = typeCodes[c];
        if (type === FLOAT ? x - x !== 0 : !Number.isSafeInteger(x) || (type === TIMESTAMP && x < 0) || type === BOOL) bad(r, c, x);
      } else if (read === NIL_READ) {
        if (isKey[c] === 1) bad(r, c, null);
        numbers[at] = NaN;
      } else if (read === OTHER_READ || typeCodes[c] !== BOOL) {
        bad(r, c, read === OTHER_READ ? reader.value() : read === TRUE_READ);
      } else {
        numbers[at] = read === TRUE_READ ? 1 : 0;
      }
    }
  }
  return count;
}

/** Whether a decoded non-null value has the representation of a column type (see isValueOfType). */
function fits(type: number, v: Value): boolean {
  switch (type) {
    case STRING:
      return typeof v === 'string';
    case FLOAT:
      return typeof v === 'number' && Number.isFinite(v);
    case INT:
      return Number.isSafeInteger(v);
    case BOOL:
      return typeof v === 'boolean';
    default:
      return Number.isSafeInteger(v) && (v as number) >= 0;
  }
}

/** decodeBody into fresh RowValues, one array per row: for tests and tools, not the hot paths. */
export function decodeMutation(schema: TableSchema, body: Uint8Array): Mutation {
  const layout = layoutOf(schema);
  const { width, typeCodes, numeric } = rowCodecOf(layout);
  const batch = new RowBatch();
  const { op, rows } = decodeBody(layout, body, batch);
  const values: RowValues[] = [];
  for (let r = 0; r < rows; r++) {
    const row: RowValues = new Array(width);
    for (let c = 0; c < width; c++) {
      const at = r * width + c;
      if (numeric[c] === 0) row[c] = batch.values[at];
      else {
        const x = batch.numbers[at];
        row[c] = x !== x ? null : typeCodes[c] === BOOL ? x === 1 : x;
      }
    }
    values.push(row);
  }
  return op === 'put' ? { op, rows: values } : { op, keys: values };
}
