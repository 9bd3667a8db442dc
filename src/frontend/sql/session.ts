import type { ColumnDef, ColumnType, ColumnarRows, Row, TableQuery, TableSchema, Value } from '../../engine/schema.js';
import { RepriseError } from '../../errors.js';
import type { ColumnSpec, Statement } from './ast.js';
import { coerce, evaluate, likeRegex, render, type EvalScope } from './eval.js';
import { parseSql } from './parser.js';
import { compileWhere, planSelect, selectOverRows } from './planner.js';
import type { PreparedStatement, SqlColumn, SqlDialect, SqlSession, SqlSessionFactory, SqlUser, StatementOutput, StatementResult } from './types.js';

/**
 * What a SQL session runs against: the runtime (embedded or a cluster node)
 * satisfies it. SELECT goes through `queryHeld`, the one query path every
 * protocol shares (partition pruning, pushdown, partial aggregation).
 */
export interface SqlDatabase {
  createTable(schema: TableSchema): Promise<unknown>;
  dropTable(name: string): Promise<void>;
  listTables(): readonly { readonly name: string; readonly schema: TableSchema }[];
  /** The table's schema, catching up with meta first when this node has not seen it (TABLE_NOT_FOUND otherwise). */
  lookUpTable(name: string): Promise<{ readonly schema: TableSchema }>;
  insert(table: string, rows: readonly Row[]): Promise<{ written: number }>;
  delete(table: string, keys: readonly Row[]): Promise<{ deleted: number }>;
  /** The rows, held against the node's result budget until `release` (see Reprise.queryHeld). */
  queryHeld(table: string, q: TableQuery): Promise<{ rows: ColumnarRows; release: () => void }>;
  flush(): Promise<void>;
  migrateShard(shard: number, to: string): Promise<{ shard: number; from: string; to: string; ms: number; procedure?: number }>;
  /** A procedure of meta's by id (NOT_FOUND when it is not known). */
  procedure(id: number): Promise<{ readonly id: number; readonly kind: string; readonly state: string; readonly shard: number | null; readonly from: string | null; readonly to: string | null; readonly outcome?: string; readonly reason?: string }>;
}

export interface SqlSessionsOptions {
  /** Reported by version() and @@version. */
  readonly version: string;
  readonly now?: () => number;
}

/** The one database reprise has: every table is in it, whatever a client names. */
export const DATABASE = 'public';
const DATABASES = [DATABASE, 'information_schema'];

const SQL_TYPES: Record<ColumnType, string> = { string: 'STRING', float64: 'DOUBLE', int64: 'BIGINT', bool: 'BOOLEAN', timestamp: 'TIMESTAMP(3)' };
/** information_schema.columns.data_type, as MySQL tools expect it. */
const MYSQL_DATA_TYPES: Record<ColumnType, string> = { string: 'varchar', float64: 'double', int64: 'bigint', bool: 'tinyint', timestamp: 'timestamp' };

/** Statements a read-only user may not run, and a write-only user may only run. */
const WRITES = new Set<Statement['kind']>(['insert', 'delete', 'createTable', 'dropTable', 'admin']);
const READS = new Set<Statement['kind']>(['select', 'showCreateTable', 'showColumns']);

/** Statements that only read and answer rows. */
const READ_ONLY = new Set<Statement['kind']>(['select', 'showTables', 'showDatabases', 'showCreateTable', 'showColumns', 'showVariables', 'showEmpty']);

/** A statement's SQL command, as PostgreSQL names it in command tags. */
function commandOf(s: Statement): string {
  switch (s.kind) {
    case 'createTable':
      return 'CREATE TABLE';
    case 'dropTable':
      return 'DROP TABLE';
    case 'transaction':
      return s.command;
    case 'select':
    case 'insert':
    case 'delete':
    case 'set':
    case 'use':
    case 'admin':
      return s.kind.toUpperCase();
    default:
      return 'SHOW';
  }
}

export function sqlSessions(db: SqlDatabase, options: SqlSessionsOptions): SqlSessionFactory {
  return ({ dialect, user, database }) => new Session(db, options, dialect, user, database);
}

class Session implements SqlSession {
  database = DATABASE;
  /** Releases of the result budget the last results hold (see SqlSession.close). */
  private held: (() => void)[] = [];

  constructor(
    private readonly db: SqlDatabase,
    private readonly options: SqlSessionsOptions,
    readonly dialect: SqlDialect,
    private readonly user: SqlUser,
    database?: string,
  ) {
    if (database !== undefined && database !== '') this.database = checkDatabase(database);
  }

  async execute(sql: string, params: readonly Value[] = []): Promise<StatementResult[]> {
    return this.prepare(sql).execute(params);
  }

  prepare(sql: string): PreparedStatement {
    // Every statement parses before any runs: a syntax error anywhere writes nothing.
    const parsed = parseSql(sql, this.dialect);
    return {
      statements: parsed.map(({ statement }) => ({ command: commandOf(statement), reads: READ_ONLY.has(statement.kind) })),
      params: Math.max(0, ...parsed.map((p) => p.params)),
      execute: async (params, onResult) => {
        this.close();
        const results: StatementResult[] = [];
        for (const { statement } of parsed) {
          const result: StatementResult = { ...(await this.run(statement, params)), command: commandOf(statement) };
          await onResult?.(result, results.length);
          results.push(result);
        }
        return results;
      },
    };
  }

  close(): void {
    for (const release of this.held.splice(0)) release();
  }

  private scope(params: readonly Value[] = []): EvalScope {
    const now = (this.options.now ?? Date.now)();
    return {
      now,
      params,
      variable: (name) => variable(name, this.options.version),
      functions: {
        version: () => this.options.version,
        database: () => this.database,
        schema: () => this.database,
        current_database: () => this.database,
        current_schema: () => this.database,
        user: () => this.user.name,
        current_user: () => this.user.name,
        session_user: () => this.user.name,
        connection_id: () => 0,
      },
    };
  }

  private allow(statement: Statement, table?: string): void {
    const { mode, name } = this.user;
    const reads = READS.has(statement.kind) && table !== undefined;
    if (mode === 'ro' && WRITES.has(statement.kind)) throw new RepriseError('FORBIDDEN', `user '${name}' is read-only: ${statement.kind} is a write`, { user: name });
    if (mode === 'wo' && reads) throw new RepriseError('FORBIDDEN', `user '${name}' is write-only: it cannot read table "${table}"`, { user: name });
  }

  private async run(s: Statement, params: readonly Value[]): Promise<StatementOutput> {
    const scope = this.scope(params);
    this.allow(s, s.kind === 'select' ? s.from?.table : s.kind === 'showColumns' ? s.table : s.kind === 'showCreateTable' ? s.name : undefined);
    switch (s.kind) {
      case 'select':
        return this.select(s, scope);
      case 'insert':
        return this.insert(s, scope);
      case 'delete':
        return this.delete(s, scope);
      case 'createTable':
        return this.createTable(s);
      case 'dropTable':
        try {
          await this.db.dropTable(s.name);
        } catch (err) {
          if (!(s.ifExists && err instanceof RepriseError && err.code === 'TABLE_NOT_FOUND')) throw err;
        }
        return { kind: 'affected', affectedRows: 0 };
      case 'showTables': {
        const names = this.db
          .listTables()
          .map((t) => t.name)
          .filter(likeFilter(s.like))
          .sort();
        return s.full
          ? rows([col('Tables', 'string'), col('Table_type', 'string')], [names, names.map(() => 'BASE TABLE')])
          : rows([col('Tables', 'string')], [names]);
      }
      case 'showDatabases':
        return rows([col('Database', 'string')], [DATABASES.filter(likeFilter(s.like))]);
      case 'showCreateTable': {
        const { schema } = await this.db.lookUpTable(s.name);
        return rows([col('Table', 'string'), col('Create Table', 'string')], [[schema.name], [createTableSql(schema)]]);
      }
      case 'showColumns':
        return describeTable((await this.db.lookUpTable(s.table)).schema);
      case 'showVariables': {
        const names = Object.keys(VARIABLES).filter(likeFilter(s.like)).sort();
        return rows([col('Variable_name', 'string'), col('Value', 'string')], [names, names.map((n) => String(variable(n, this.options.version)))]);
      }
      case 'showEmpty':
        return rows(s.columns.map((name) => col(name, 'string')), s.columns.map(() => []));
      case 'set':
      case 'transaction':
        return { kind: 'affected', affectedRows: 0 };
      case 'use':
        this.database = checkDatabase(s.database);
        return { kind: 'affected', affectedRows: 0 };
      case 'admin':
        return this.admin(s, scope);
    }
  }

  private async select(s: Statement & { kind: 'select' }, scope: EvalScope): Promise<StatementOutput> {
    if (s.from === undefined) {
      // SELECT 1, SELECT @@version_comment, SELECT now(): one row of constants.
      if (s.where !== undefined || s.groupBy.length > 0) throw new RepriseError('SQL_UNSUPPORTED', 'WHERE or GROUP BY without FROM is not supported');
      const values = s.items.map((item) => {
        if (item.expr.kind === 'star') throw new RepriseError('INVALID_QUERY', 'SELECT * needs a FROM table');
        return evaluate(item.expr, scope);
      });
      const empty = s.limit === 0;
      return rows(
        s.items.map((item, i) => col(item.alias ?? render(item.expr), values[i].type)),
        values.map((v) => (empty ? [] : [v.value])),
      );
    }
    if (s.from.database !== undefined && s.from.database.toLowerCase() === 'information_schema') {
      const virtual = this.informationSchema(s.from.table.toLowerCase());
      return { kind: 'rows', ...selectOverRows(s, virtual.columns, virtual.data, scope) };
    }
    const { schema } = await this.db.lookUpTable(s.from.table);
    const plan = planSelect(s, schema, scope);
    let answer: ColumnarRows = { columns: [], data: [] };
    if (plan.possible && s.limit !== 0) {
      const { rows: found, release } = await this.db.queryHeld(schema.name, plan.query);
      this.held.push(release);
      answer = found;
    }
    const { columns, data } = plan.finish(answer);
    return { kind: 'rows', columns, data };
  }

  /** information_schema's tables, schemata and columns (what SQL tools read to list tables and columns), from the catalog. */
  private informationSchema(name: string): { columns: SqlColumn[]; data: Value[][] } {
    const tables = [...this.db.listTables()].sort((a, b) => a.name.localeCompare(b.name));
    const strings = (...names: string[]): SqlColumn[] => names.map((n) => col(n, 'string'));
    switch (name) {
      case 'schemata':
        return { columns: strings('catalog_name', 'schema_name'), data: [DATABASES.map(() => 'def'), [...DATABASES]] };
      case 'tables':
        return {
          columns: strings('table_catalog', 'table_schema', 'table_name', 'table_type', 'engine'),
          data: [tables.map(() => 'def'), tables.map(() => DATABASE), tables.map((t) => t.name), tables.map(() => 'BASE TABLE'), tables.map(() => 'reprise')],
        };
      case 'columns': {
        const cs = tables.flatMap((t) => t.schema.columns.map((c, i) => ({ table: t.name, c, position: i + 1 })));
        return {
          columns: [...strings('table_catalog', 'table_schema', 'table_name', 'column_name'), col('ordinal_position', 'int64'), ...strings('data_type', 'column_type', 'is_nullable', 'column_key', 'semantic_type')],
          data: [
            cs.map(() => 'def'),
            cs.map(() => DATABASE),
            cs.map((x) => x.table),
            cs.map((x) => x.c.name),
            cs.map((x) => x.position),
            cs.map((x) => MYSQL_DATA_TYPES[x.c.type]),
            cs.map((x) => SQL_TYPES[x.c.type].toLowerCase()),
            cs.map((x) => (x.c.role === 'field' ? 'YES' : 'NO')),
            cs.map((x) => (x.c.role === 'tag' ? 'PRI' : '')),
            cs.map((x) => (x.c.role === 'tag' ? 'TAG' : x.c.role === 'time' ? 'TIMESTAMP' : 'FIELD')),
          ],
        };
      }
      default:
        throw new RepriseError('SQL_UNSUPPORTED', `information_schema.${name} is not supported (tables, columns, schemata)`);
    }
  }

  private async insert(s: Statement & { kind: 'insert' }, scope: EvalScope): Promise<StatementOutput> {
    const { schema } = await this.db.lookUpTable(s.table);
    const byName = new Map(schema.columns.map((c) => [c.name, c]));
    const names = s.columns ?? schema.columns.map((c) => c.name);
    for (const name of names) {
      if (!byName.has(name)) throw new RepriseError('INVALID_ROW', `table "${schema.name}" has no column "${name}"`, { table: schema.name, column: name });
    }
    const time = schema.columns.find((c) => c.role === 'time') as ColumnDef;
    const out: Row[] = s.rows.map((values, i) => {
      if (values.length !== names.length) {
        throw new RepriseError('INVALID_ROW', `table "${schema.name}": row ${i + 1} has ${values.length} values for ${names.length} columns`, { table: schema.name, row: i });
      }
      const row: Row = {};
      names.forEach((name, k) => {
        const c = byName.get(name) as ColumnDef;
        row[name] = coerce(evaluate(values[k], scope).value, c.type, `table "${schema.name}", row ${i + 1}, column "${name}"`);
      });
      // The time index defaults to now (DEFAULT CURRENT_TIMESTAMP).
      if (!(time.name in row)) row[time.name] = scope.now;
      return row;
    });
    const { written } = await this.db.insert(schema.name, out);
    return { kind: 'affected', affectedRows: written };
  }

  /** DELETE: the keys the WHERE matches (found by the ordinary query path), then one tombstone each. */
  private async delete(s: Statement & { kind: 'delete' }, scope: EvalScope): Promise<StatementOutput> {
    const { schema } = await this.db.lookUpTable(s.table);
    const keyColumns = schema.columns.filter((c) => c.role !== 'field').map((c) => c.name);
    const compiled = compileWhere(schema, s.where, scope);
    if (compiled.residual.length > 0) {
      throw new RepriseError('SQL_UNSUPPORTED', `DELETE ... WHERE ${compiled.residual.map(render).join(' AND ')} (delete by conditions on tags and time)`);
    }
    if (!compiled.possible) return { kind: 'affected', affectedRows: 0 };
    const q: TableQuery = {
      ...(Object.keys(compiled.where).length > 0 ? { where: compiled.where } : {}),
      ...(compiled.timeRange.from !== undefined || compiled.timeRange.to !== undefined ? { timeRange: compiled.timeRange } : {}),
      columns: keyColumns,
    };
    const { rows: found, release } = await this.db.queryHeld(schema.name, q);
    const n = found.data[0]?.length ?? 0;
    const keys: Row[] = [];
    for (let r = 0; r < n; r++) {
      const key: Row = {};
      found.columns.forEach((name, c) => (key[name] = found.data[c][r]));
      keys.push(key);
    }
    release();
    if (n === 0) return { kind: 'affected', affectedRows: 0 };
    const { deleted } = await this.db.delete(schema.name, keys);
    return { kind: 'affected', affectedRows: deleted };
  }

  private async createTable(s: Statement & { kind: 'createTable' }): Promise<StatementOutput> {
    const schema = schemaOf(s);
    try {
      await this.db.createTable(schema);
    } catch (err) {
      if (!(s.ifNotExists && err instanceof RepriseError && err.code === 'TABLE_EXISTS')) throw err;
    }
    return { kind: 'affected', affectedRows: 0 };
  }

  private async admin(s: Statement & { kind: 'admin' }, scope: EvalScope): Promise<StatementOutput> {
    const args = s.args.map((a) => evaluate(a, scope).value);
    const name = `${s.fn}(${args.map((a) => JSON.stringify(a)).join(', ')})`;
    switch (s.fn) {
      case 'flush_table': {
        if (typeof args[0] !== 'string' || args.length !== 1) throw new RepriseError('INVALID_ARGUMENT', "flush_table takes a table name: ADMIN flush_table('t')");
        await this.db.lookUpTable(args[0]);
        await this.db.flush();
        return rows([col(name, 'int64')], [[0]]);
      }
      case 'migrate_shard': {
        const [shard, to] = args;
        if (typeof shard !== 'number' || typeof to !== 'string' || args.length !== 2) {
          throw new RepriseError('INVALID_ARGUMENT', "migrate_shard takes a shard id and a node: ADMIN migrate_shard(1, 'n2')");
        }
        // It runs to the end (the shard served by `to`) and answers the id of the procedure that moved it, for procedure_state.
        const moved = await this.db.migrateShard(shard, to);
        return rows([col(name, 'int64')], [[moved.procedure ?? null]]);
      }
      case 'procedure_state': {
        const [id] = args;
        if (typeof id !== 'number' || !Number.isSafeInteger(id) || args.length !== 1) throw new RepriseError('INVALID_ARGUMENT', 'procedure_state takes a procedure id: ADMIN procedure_state(7)');
        const p = await this.db.procedure(id);
        const status = p.outcome === undefined ? 'Running' : p.outcome[0].toUpperCase() + p.outcome.slice(1);
        const state = { status, id: p.id, kind: p.kind, step: p.state, shard: p.shard, from: p.from, to: p.to, ...(p.reason !== undefined ? { reason: p.reason } : {}) };
        return rows([col(name, 'string')], [[JSON.stringify(state)]]);
      }
      default:
        throw new RepriseError('SQL_UNSUPPORTED', `ADMIN ${s.fn}() is not supported (flush_table, migrate_shard, procedure_state)`);
    }
  }
}

function col(name: string, type: ColumnType): SqlColumn {
  return { name, type };
}

function rows(columns: SqlColumn[], data: Value[][]): StatementOutput {
  return { kind: 'rows', columns, data };
}

function checkDatabase(name: string): string {
  const found = DATABASES.find((d) => d === name.toLowerCase());
  if (found === undefined) throw new RepriseError('INVALID_ARGUMENT', `unknown database '${name}' (reprise has one database, ${DATABASE})`, { database: name });
  return found;
}

function likeFilter(pattern: string | undefined): (name: string) => boolean {
  if (pattern === undefined) return () => true;
  const regex = likeRegex(pattern, 'i');
  return (name) => regex.test(name);
}

/** The session variables clients read on connect (SELECT @@x, SHOW VARIABLES). Others read as NULL. */
const VARIABLES: Record<string, Value> = {
  version_comment: 'reprise',
  autocommit: 1,
  auto_increment_increment: 1,
  character_set_client: 'utf8mb4',
  character_set_connection: 'utf8mb4',
  character_set_results: 'utf8mb4',
  character_set_server: 'utf8mb4',
  collation_connection: 'utf8mb4_general_ci',
  collation_server: 'utf8mb4_general_ci',
  init_connect: '',
  interactive_timeout: 28800,
  lower_case_table_names: 0,
  max_allowed_packet: 67108864,
  net_buffer_length: 16384,
  net_write_timeout: 60,
  sql_mode: '',
  system_time_zone: 'UTC',
  time_zone: 'UTC',
  transaction_isolation: 'REPEATABLE-READ',
  tx_isolation: 'REPEATABLE-READ',
  wait_timeout: 28800,
};

function variable(name: string, version: string): Value {
  const key = name.toLowerCase();
  if (key === 'version') return version;
  return key in VARIABLES ? VARIABLES[key] : null;
}

/** CREATE TABLE as a schema: tags in PRIMARY KEY order (in the places tags are declared), fields, the time index. */
function schemaOf(s: Statement & { kind: 'createTable' }): TableSchema {
  const invalid = (message: string): RepriseError => new RepriseError('INVALID_SCHEMA', `CREATE TABLE ${s.name}: ${message}`, { table: s.name });
  const byName = new Map<string, ColumnSpec>();
  for (const c of s.columns) {
    if (byName.has(c.name)) throw invalid(`column "${c.name}" is defined more than once`);
    byName.set(c.name, c);
  }
  const inlineTime = s.columns.filter((c) => c.timeIndex).map((c) => c.name);
  const times = [...new Set([...(s.timeIndex !== undefined ? [s.timeIndex] : []), ...inlineTime])];
  if (times.length !== 1) throw invalid(times.length === 0 ? 'a TIME INDEX is required (e.g. ts TIMESTAMP TIME INDEX)' : `one TIME INDEX, found ${times.join(', ')}`);
  const time = byName.get(times[0]);
  if (time === undefined) throw invalid(`TIME INDEX names "${times[0]}", which is not a column`);
  if (time.type !== 'timestamp') throw invalid(`the TIME INDEX "${time.name}" must be a TIMESTAMP, not ${SQL_TYPES[time.type]}`);
  const inlineKeys = s.columns.filter((c) => c.primaryKey).map((c) => c.name);
  if (s.primaryKey !== undefined && inlineKeys.length > 0) throw invalid('PRIMARY KEY is given both on columns and as a table constraint');
  const keys = s.primaryKey ?? inlineKeys;
  for (const k of keys) {
    if (!byName.has(k)) throw invalid(`PRIMARY KEY names "${k}", which is not a column`);
    if (k === time.name) throw invalid(`the TIME INDEX "${k}" is part of every key already: leave it out of PRIMARY KEY`);
  }
  if (new Set(keys).size !== keys.length) throw invalid('PRIMARY KEY names a column twice');
  const tagQueue = [...keys];
  const columns: ColumnDef[] = s.columns.map((c) => {
    if (c.name === time.name) return { name: c.name, type: 'timestamp', role: 'time' };
    if (keys.includes(c.name)) {
      const tag = byName.get(tagQueue.shift() as string) as ColumnSpec;
      return { name: tag.name, type: tag.type, role: 'tag' };
    }
    return { name: c.name, type: c.type, role: 'field' };
  });
  return { name: s.name, columns, ...(s.partition ? { partition: s.partition } : {}) };
}

export function createTableSql(schema: TableSchema): string {
  const quote = (name: string): string => `\`${name}\``;
  const time = schema.columns.find((c) => c.role === 'time') as ColumnDef;
  const tags = schema.columns.filter((c) => c.role === 'tag');
  const lines = schema.columns.map((c) => `  ${quote(c.name)} ${SQL_TYPES[c.type]}${c.role === 'field' ? ' NULL' : ' NOT NULL'}`);
  lines.push(`  TIME INDEX (${quote(time.name)})`);
  if (tags.length > 0) lines.push(`  PRIMARY KEY (${tags.map((c) => quote(c.name)).join(', ')})`);
  let sql = `CREATE TABLE IF NOT EXISTS ${quote(schema.name)} (\n${lines.join(',\n')}\n)`;
  const rule = schema.partition;
  if (rule !== undefined && rule.bounds.length > 0) {
    const c = quote(rule.column);
    const lit = (v: string | number): string => (typeof v === 'string' ? `'${v.replace(/'/g, "''")}'` : String(v));
    const ranges = rule.bounds.map((b, i) => (i === 0 ? `  ${c} < ${lit(b)}` : `  ${c} >= ${lit(rule.bounds[i - 1])} AND ${c} < ${lit(b)}`));
    ranges.push(`  ${c} >= ${lit(rule.bounds[rule.bounds.length - 1])}`);
    sql += `\nPARTITION ON COLUMNS (${c}) (\n${ranges.join(',\n')}\n)`;
  }
  return sql;
}

/** DESC t: one row per column, as GreptimeDB shows it. */
function describeTable(schema: TableSchema): StatementOutput {
  const cs = schema.columns;
  return rows(
    [col('Column', 'string'), col('Type', 'string'), col('Key', 'string'), col('Null', 'string'), col('Default', 'string'), col('Semantic Type', 'string')],
    [
      cs.map((c) => c.name),
      cs.map((c) => SQL_TYPES[c.type]),
      cs.map((c) => (c.role === 'tag' ? 'PRI' : c.role === 'time' ? 'TIME INDEX' : '')),
      cs.map((c) => (c.role === 'field' ? 'YES' : 'NO')),
      cs.map(() => ''),
      cs.map((c) => (c.role === 'tag' ? 'TAG' : c.role === 'time' ? 'TIMESTAMP' : 'FIELD')),
    ],
  );
}

