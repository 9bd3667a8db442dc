import type { ColumnType, Value } from '../../engine/schema.js';

/** The SQL dialect a session speaks: it decides how `"x"` reads (a string on MySQL, an identifier on PostgreSQL). */
export type SqlDialect = 'mysql' | 'postgres';

/** One column of a statement's result, typed as the table declares it (timestamps are epoch ms). */
export interface SqlColumn {
  readonly name: string;
  readonly type: ColumnType;
}

/**
 * What one statement answers: rows as columns (`data[c][r]` is column c of
 * row r, timestamps epoch ms), or the number of rows it changed. Protocol
 * adapters turn these into MySQL, PostgreSQL or JSON results.
 */
export type StatementOutput =
  | { readonly kind: 'rows'; readonly columns: readonly SqlColumn[]; readonly data: readonly (readonly Value[])[] }
  | { readonly kind: 'affected'; readonly affectedRows: number };

/** A statement's output and what kind of statement answered: its SQL command (SELECT, INSERT, CREATE TABLE, SHOW, SET, ...), for PostgreSQL's command tags. */
export type StatementResult = StatementOutput & { readonly command: string };

/** What a parsed statement is, before it runs. */
export interface StatementInfo {
  /** As StatementResult.command. */
  readonly command: string;
  /** Whether it only reads and answers rows (SELECT, SHOW, DESC): running it to learn its columns changes nothing. */
  readonly reads: boolean;
}

/**
 * A client's SQL session: its dialect and current database. `execute` runs
 * the statements of `sql` in order and answers one result per statement; it
 * stops at the first failing statement and rejects with a RepriseError
 * (SQL_SYNTAX naming line, column and token; SQL_UNSUPPORTED naming what is
 * not supported; TABLE_NOT_FOUND, INVALID_ROW, ... as the JSON API).
 * Statements before the failing one have taken effect.
 */
export interface SqlSession {
  readonly dialect: SqlDialect;
  readonly database: string;
  execute(sql: string, params?: readonly Value[]): Promise<StatementResult[]>;
  /**
   * Parse `sql` once (SQL_SYNTAX at once, as execute would) to run it later
   * with parameter values (`?` on MySQL, `$1` on PostgreSQL): MySQL's
   * prepared statements and PostgreSQL's extended query protocol.
   */
  prepare(sql: string): PreparedStatement;
  /**
   * The rows a session's last results hold count against the node's
   * result budget (memory.maxResultRowsInFlight) until its next statement
   * runs or it is closed: an adapter closes it when its client is gone.
   */
  close(): void;
}

export interface PreparedStatement {
  /** The statements of the text, in order (none for an empty text). */
  readonly statements: readonly StatementInfo[];
  /** Parameters the statements take (the number of `?`, or the highest `$n`). */
  readonly params: number;
  /**
   * Run it with these values (timestamps as epoch ms or 'YYYY-MM-DD
   * HH:MM:SS' text; INVALID_ARGUMENT when one is missing). Each statement's
   * result goes to `onResult` (awaited) as soon as it is done, so an adapter
   * sends the results before a failing statement and then its error, as
   * MySQL and PostgreSQL servers do; all of them are also the answer.
   */
  execute(params: readonly Value[], onResult?: (result: StatementResult, index: number) => Promise<void>): Promise<StatementResult[]>;
}

/** What a user may run: read and write (rw), read only (ro: SELECT, SHOW, ...), or write only (wo: INSERT, DELETE, DDL). */
export type UserMode = 'rw' | 'ro' | 'wo';

/** A client that authenticated (or the anonymous user when no user provider is configured: mode rw). */
export interface SqlUser {
  readonly name: string;
  readonly mode: UserMode;
}

/** Opens one session per client connection; protocol adapters are given one. */
export type SqlSessionFactory = (options: { readonly dialect: SqlDialect; readonly user: SqlUser; readonly database?: string }) => SqlSession;
