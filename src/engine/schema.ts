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

export interface RangeCondition {
  readonly eq?: Value;
  readonly gt?: Value;
  readonly gte?: Value;
  readonly lt?: Value;
  readonly lte?: Value;
}

export interface TableQuery {
  /** Tag column -> value (equality) or a range condition. */
  readonly where?: Record<string, Value | RangeCondition>;
  /** Time index range, `from` inclusive, `to` exclusive, epoch ms. */
  readonly timeRange?: { readonly from?: number; readonly to?: number };
  readonly columns?: readonly string[];
  readonly limit?: number;
}
