import type { ColumnType, Row, TableSchema, Value } from '../schema.js';

/**
 * Inside the engine a row is an array of values in schema column order
 * (compact, and what the WAL body and SSTs store). A tombstone is a row whose
 * field values are null.
 */
export type RowValues = Value[];

/** Orders rows by primary key (tags in schema order) then time. */
export type KeyComparator = (a: readonly Value[], b: readonly Value[]) => number;

/** Everything the hot paths need about a schema, computed once per schema object. */
export interface TableLayout {
  readonly schema: TableSchema;
  readonly names: readonly string[];
  readonly types: readonly ColumnType[];
  /** Column name -> index in RowValues. */
  readonly index: ReadonlyMap<string, number>;
  readonly tagIdx: readonly number[];
  readonly timeIdx: number;
  /** Tags in order, then time: the primary key as ordered. */
  readonly keyIdx: readonly number[];
  /** Per column: part of the primary key (tag or time), hence never null. */
  readonly isKey: readonly boolean[];
  readonly compare: KeyComparator;
}

/**
 * Total order on one column's values: null first, then numbers numerically,
 * strings by UTF-16 code unit, false < true. Values of one column share a
 * type, so JavaScript's `<` gives exactly that order.
 */
export function compareValues(a: Value, b: Value): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}

/** Order of two primary keys as value lists (tags, then time). */
export function compareKeys(a: readonly Value[], b: readonly Value[]): number {
  const n = Math.min(a.length, b.length);
  for (let k = 0; k < n; k++) {
    const c = compareValues(a[k], b[k]);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

const layouts = new WeakMap<TableSchema, TableLayout>();

/** The layout of a (validated) schema; cached per schema object. */
export function layoutOf(schema: TableSchema): TableLayout {
  let layout = layouts.get(schema);
  if (layout === undefined) {
    layout = buildLayout(schema);
    layouts.set(schema, layout);
  }
  return layout;
}

function buildLayout(schema: TableSchema): TableLayout {
  const names = schema.columns.map((c) => c.name);
  const tagIdx: number[] = [];
  let timeIdx = -1;
  schema.columns.forEach((c, i) => {
    if (c.role === 'tag') tagIdx.push(i);
    else if (c.role === 'time') timeIdx = i;
  });
  const keyIdx = [...tagIdx, timeIdx];
  return {
    schema,
    names,
    types: schema.columns.map((c) => c.type),
    index: new Map(names.map((n, i) => [n, i])),
    tagIdx,
    timeIdx,
    keyIdx,
    isKey: schema.columns.map((c) => c.role !== 'field'),
    compare: comparatorFor(keyIdx),
  };
}

/**
 * The comparator sits on every memtable insert and merge step, so it is a
 * closure over a typed index array with the value comparison inlined.
 */
function comparatorFor(keyIdx: readonly number[]): KeyComparator {
  const idx = Int32Array.from(keyIdx);
  const n = idx.length;
  return (a, b) => {
    for (let k = 0; k < n; k++) {
      const i = idx[k];
      const x = a[i];
      const y = b[i];
      if (x !== y) {
        if (x === null) return -1;
        if (y === null) return 1;
        return x < y ? -1 : 1;
      }
    }
    return 0;
  };
}

/** Comparator over user-facing Row objects, for merging results of several regions. */
export function rowKeyComparator(schema: TableSchema): (a: Row, b: Row) => number {
  const { names, keyIdx } = layoutOf(schema);
  const keyNames = keyIdx.map((i) => names[i]);
  return (a, b) => {
    for (const name of keyNames) {
      const c = compareValues(a[name] ?? null, b[name] ?? null);
      if (c !== 0) return c;
    }
    return 0;
  };
}

/** Row object -> RowValues in column order (absent columns become null). */
export function toValues(layout: TableLayout, row: Row): RowValues {
  const { names } = layout;
  const values: RowValues = new Array(names.length);
  for (let i = 0; i < names.length; i++) values[i] = row[names[i]] ?? null;
  return values;
}

/** The primary key of a row: tag values in order, then time. */
export function keyOf(layout: TableLayout, row: readonly Value[]): RowValues {
  return layout.keyIdx.map((i) => row[i]);
}

/** A primary key (tags, time) -> RowValues with null fields: a tombstone row. */
export function rowFromKey(layout: TableLayout, key: readonly Value[]): RowValues {
  const values: RowValues = new Array(layout.names.length).fill(null);
  const { keyIdx } = layout;
  for (let k = 0; k < keyIdx.length; k++) values[keyIdx[k]] = key[k];
  return values;
}
