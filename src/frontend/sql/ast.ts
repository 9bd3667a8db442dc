import type { ColumnType } from '../../engine/schema.js';

/** Expressions of the SQL reprise reads; `pos` is the offset in the statement text, for errors. */
export type Expr =
  | { readonly kind: 'literal'; readonly value: string | number | boolean | null; readonly pos: number }
  | { readonly kind: 'column'; readonly name: string; readonly table?: string; readonly pos: number }
  | { readonly kind: 'star'; readonly pos: number }
  /** A function call; `name` is lower case. `count(*)` has a `star` argument. */
  | { readonly kind: 'call'; readonly name: string; readonly args: readonly Expr[]; readonly distinct: boolean; readonly pos: number }
  | { readonly kind: 'binary'; readonly op: BinaryOp; readonly left: Expr; readonly right: Expr; readonly pos: number }
  | { readonly kind: 'not'; readonly operand: Expr; readonly pos: number }
  | { readonly kind: 'negate'; readonly operand: Expr; readonly pos: number }
  | { readonly kind: 'in'; readonly operand: Expr; readonly list: readonly Expr[]; readonly negated: boolean; readonly pos: number }
  | { readonly kind: 'between'; readonly operand: Expr; readonly low: Expr; readonly high: Expr; readonly negated: boolean; readonly pos: number }
  | { readonly kind: 'isNull'; readonly operand: Expr; readonly negated: boolean; readonly pos: number }
  /** INTERVAL '10 minutes' (or INTERVAL 10 MINUTE), in ms. */
  | { readonly kind: 'interval'; readonly ms: number; readonly pos: number }
  /** A statement parameter, 0-based: the n-th `?`, or `$n` - 1. */
  | { readonly kind: 'param'; readonly index: number; readonly pos: number }
  /** @@version_comment, @@session.x, @user_var. */
  | { readonly kind: 'variable'; readonly name: string; readonly pos: number }
  | { readonly kind: 'cast'; readonly operand: Expr; readonly type: string; readonly pos: number };

export type BinaryOp = 'AND' | 'OR' | '=' | '!=' | '<' | '<=' | '>' | '>=' | '+' | '-' | '*' | '/' | '%' | 'LIKE' | '||';

export interface SelectItem {
  readonly expr: Expr;
  readonly alias?: string;
}

export interface OrderItem {
  readonly expr: Expr;
  readonly desc: boolean;
}

export interface ColumnSpec {
  readonly name: string;
  readonly type: ColumnType;
  /** `TIME INDEX` written on the column itself. */
  readonly timeIndex: boolean;
  /** `PRIMARY KEY` written on the column itself. */
  readonly primaryKey: boolean;
  readonly pos: number;
}

export type Statement =
  | {
      readonly kind: 'select';
      readonly items: readonly SelectItem[];
      readonly from?: { readonly table: string; readonly database?: string; readonly pos: number };
      readonly where?: Expr;
      readonly groupBy: readonly Expr[];
      readonly orderBy: readonly OrderItem[];
      readonly limit?: number;
      readonly offset?: number;
    }
  | { readonly kind: 'insert'; readonly table: string; readonly columns?: readonly string[]; readonly rows: readonly (readonly Expr[])[]; readonly pos: number }
  | { readonly kind: 'delete'; readonly table: string; readonly where?: Expr; readonly pos: number }
  | {
      readonly kind: 'createTable';
      readonly name: string;
      readonly ifNotExists: boolean;
      readonly columns: readonly ColumnSpec[];
      readonly timeIndex?: string;
      readonly primaryKey?: readonly string[];
      /** Range partitioning on one column, as bounds (see PartitionRule). */
      readonly partition?: { readonly column: string; readonly bounds: readonly (string | number)[] };
      readonly pos: number;
    }
  | { readonly kind: 'dropTable'; readonly name: string; readonly ifExists: boolean; readonly pos: number }
  | { readonly kind: 'showTables'; readonly like?: string; readonly full: boolean }
  | { readonly kind: 'showDatabases'; readonly like?: string }
  | { readonly kind: 'showCreateTable'; readonly name: string; readonly pos: number }
  | { readonly kind: 'showColumns'; readonly table: string; readonly pos: number }
  | { readonly kind: 'showVariables'; readonly like?: string }
  /** SHOW of something reprise has nothing to list for (STATUS, WARNINGS, ENGINES, ...): an empty result with these columns. */
  | { readonly kind: 'showEmpty'; readonly columns: readonly string[] }
  | { readonly kind: 'set' }
  | { readonly kind: 'use'; readonly database: string }
  /** BEGIN, START TRANSACTION, COMMIT, ROLLBACK: accepted, nothing to do (every statement commits on its own). */
  | { readonly kind: 'transaction'; readonly command: 'BEGIN' | 'COMMIT' | 'ROLLBACK' }
  | { readonly kind: 'admin'; readonly fn: string; readonly args: readonly Expr[]; readonly pos: number };
