/**
 * Table schema types shared by the table engine, meta and the API. The
 * validation functions live in ./table/validate.ts.
 */
export type ColumnType = 'string' | 'float64' | 'int64' | 'bool' | 'timestamp';
export type ColumnRole = 'tag' | 'field' | 'time';
export const COLUMN_TYPES: readonly ColumnType[] = ['string', 'float64', 'int64', 'bool', 'timestamp'];
export const COLUMN_ROLES: readonly ColumnRole[] = ['tag', 'field', 'time'];

export interface ColumnDef {
  readonly name: string;
  readonly type: ColumnType;
  readonly role: ColumnRole;
}

/**
 * Range partitioning on one column: bounds ["f","z"] make regions
 * `< "f"`, `< "z"` and the rest (MAXVALUE). No bounds: one region.
 */
export interface PartitionRule {
  readonly column: string;
  readonly bounds: readonly (string | number)[];
}

export interface TableSchema {
  readonly name: string;
  /** Tags (the primary key, in order), fields, and exactly one time index. */
  readonly columns: readonly ColumnDef[];
  readonly partition?: PartitionRule;
}

export type Value = string | number | boolean | null;
/** A row as users see it: column name -> value; timestamps are epoch ms. */
export type Row = Record<string, Value>;

/**
 * Conditions on one tag or time column; every operator given must hold
 * (AND). Operands have the column's type.
 */
export interface RangeCondition {
  /** The column equals this value. */
  readonly eq?: Value;
  /** The column is greater than this value. */
  readonly gt?: Value;
  /** The column is greater than or equal to this value. */
  readonly gte?: Value;
  /** The column is less than this value. */
  readonly lt?: Value;
  /** The column is less than or equal to this value. */
  readonly lte?: Value;
  /**
   * The column equals one of these values (SQL `IN`): a non-empty array,
   * sorted and without duplicates once validated.
   */
  readonly in?: readonly Value[];
  /**
   * The column equals none of these values (SQL `NOT IN`; `!=` is a
   * one-value list): a non-empty array, sorted and without duplicates once
   * validated.
   */
  readonly notIn?: readonly Value[];
}

export type AggregateFn = 'count' | 'sum' | 'avg' | 'min' | 'max' | 'first' | 'last';
export const AGGREGATE_FNS: readonly AggregateFn[] = ['count', 'sum', 'avg', 'min', 'max', 'first', 'last'];

/** One aggregate of a query: `fn` over a field (count without a column counts rows), named `as` or `fn(column)`. */
export interface AggregateSpec {
  readonly fn: AggregateFn;
  readonly column?: string;
  readonly as?: string;
}

/** The output column of an aggregate: `as`, or `fn(column)` (`count(*)` without a column). */
export function aggregateName(a: AggregateSpec): string {
  return a.as ?? `${a.fn}(${a.column ?? '*'})`;
}

export interface TableQuery {
  /** Tag or time column -> value (equality) or a condition (range, `in`, `notIn`). */
  readonly where?: Record<string, Value | RangeCondition>;
  /** Time index range, `from` inclusive, `to` exclusive, epoch ms. */
  readonly timeRange?: { readonly from?: number; readonly to?: number };
  /** Columns of each row (all by default); not with aggregates. */
  readonly columns?: readonly string[];
  readonly limit?: number;
  /** Rows (or groups) in ascending (default) or descending order of primary key then time. */
  readonly order?: 'asc' | 'desc';
  /** Aggregation: one output row per combination of these tags (and time bucket). */
  readonly groupBy?: readonly string[];
  /** Aggregation: time buckets of this many ms, aligned to epoch 0. */
  readonly interval?: number;
  readonly aggregates?: readonly AggregateSpec[];
}

/**
 * Rows as columns: `data[c][r]` is column `columns[c]` of row r. How query
 * results travel from a region to the frontend; rows (objects) are made only
 * at the edge that needs them.
 */
export interface ColumnarRows {
  readonly columns: readonly string[];
  readonly data: readonly (readonly Value[])[];
}

/** Rows as objects, for the JSON API and embedders. */
export function rowsOf(result: ColumnarRows): Row[] {
  const { columns, data } = result;
  const n = data.length === 0 ? 0 : data[0].length;
  const rows: Row[] = new Array(n);
  for (let r = 0; r < n; r++) {
    const row: Row = {};
    for (let c = 0; c < columns.length; c++) row[columns[c]] = data[c][r];
    rows[r] = row;
  }
  return rows;
}
