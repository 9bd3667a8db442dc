import type { ColumnType } from '../../engine/schema.js';
import { RepriseError } from '../../errors.js';
import type { BinaryOp, ColumnSpec, Expr, OrderItem, SelectItem, Statement } from './ast.js';
import { describeToken, syntaxError, tokenize, type Token } from './lexer.js';
import type { SqlDialect } from './types.js';

/** One statement of a SQL text: its tree, its own text (for logs) and how many parameters it takes. */
export interface ParsedStatement {
  readonly statement: Statement;
  readonly text: string;
  readonly params: number;
}

/**
 * Parse every statement of `sql` (separated by `;`). A hand-written
 * recursive-descent parser over the subset reprise runs: see
 * ARCHITECTURE.md (SQL) for why not node-sql-parser. Errors are SQL_SYNTAX
 * naming line, column and the token found, or SQL_UNSUPPORTED naming the
 * construct.
 */
export function parseSql(sql: string, dialect: SqlDialect): ParsedStatement[] {
  const p = new Parser(sql, tokenize(sql, dialect));
  const out: ParsedStatement[] = [];
  for (;;) {
    while (p.acceptOp(';'));
    if (p.peek().kind === 'eof') return out;
    const start = p.peek().pos;
    p.params = 0;
    const statement = p.statement();
    const end = p.peek().pos;
    if (!p.acceptOp(';') && p.peek().kind !== 'eof') throw p.error(`expected ';' or the end of the statement, found ${describeToken(p.peek())}`);
    out.push({ statement, text: sql.slice(start, end).trim(), params: p.params });
  }
}

const TYPES: Record<string, ColumnType> = {
  STRING: 'string',
  TEXT: 'string',
  VARCHAR: 'string',
  CHAR: 'string',
  DOUBLE: 'float64',
  FLOAT: 'float64',
  FLOAT64: 'float64',
  FLOAT8: 'float64',
  REAL: 'float64',
  BIGINT: 'int64',
  INT: 'int64',
  INTEGER: 'int64',
  INT64: 'int64',
  INT8: 'int64',
  SMALLINT: 'int64',
  TINYINT: 'int64',
  BOOLEAN: 'bool',
  BOOL: 'bool',
  TIMESTAMP: 'timestamp',
  TIMESTAMP_MS: 'timestamp',
  TIMESTAMPTZ: 'timestamp',
  DATETIME: 'timestamp',
};

/** Words that end an expression or a clause, so never read as a column or an alias. */
const RESERVED = new Set([
  'SELECT', 'FROM', 'WHERE', 'GROUP', 'ORDER', 'BY', 'LIMIT', 'OFFSET', 'HAVING', 'AND', 'OR', 'NOT', 'AS', 'ON', 'JOIN',
  'INNER', 'LEFT', 'RIGHT', 'FULL', 'CROSS', 'UNION', 'IN', 'IS', 'BETWEEN', 'LIKE', 'ASC', 'DESC', 'VALUES', 'INTO', 'SET', 'WINDOW',
]);

const UNIT_MS: Record<string, number> = {
  MILLISECOND: 1, MILLISECONDS: 1, MS: 1,
  SECOND: 1_000, SECONDS: 1_000, SEC: 1_000, SECS: 1_000, S: 1_000,
  MINUTE: 60_000, MINUTES: 60_000, MIN: 60_000, MINS: 60_000, M: 60_000,
  HOUR: 3_600_000, HOURS: 3_600_000, H: 3_600_000,
  DAY: 86_400_000, DAYS: 86_400_000, D: 86_400_000,
  WEEK: 604_800_000, WEEKS: 604_800_000, W: 604_800_000,
};

/** '10 minutes', '1h30m', '1 hour 30 minutes' -> ms; undefined when it is not an interval. */
export function intervalMs(text: string): number | undefined {
  const re = /\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const unit = UNIT_MS[m[2].toUpperCase()];
    if (unit === undefined) return undefined;
    total += Number(m[1]) * unit;
    matched = re.lastIndex;
  }
  return matched === text.length && matched > 0 ? total : undefined;
}

class Parser {
  private at = 0;
  /** Parameters of the statement being parsed: the number of `?`, or the highest `$n`. */
  params = 0;

  constructor(
    private readonly sql: string,
    private readonly tokens: readonly Token[],
  ) {}

  peek(ahead = 0): Token {
    return this.tokens[Math.min(this.at + ahead, this.tokens.length - 1)];
  }

  private next(): Token {
    const t = this.peek();
    if (t.kind !== 'eof') this.at++;
    return t;
  }

  error(message: string, pos = this.peek().pos): RepriseError {
    return syntaxError(this.sql, pos, message);
  }

  private unsupported(what: string): RepriseError {
    return new RepriseError('SQL_UNSUPPORTED', `${what} is not supported`);
  }

  private isWord(word: string, ahead = 0): boolean {
    const t = this.peek(ahead);
    return t.kind === 'word' && t.upper === word;
  }

  private acceptWord(...words: string[]): boolean {
    for (let k = 0; k < words.length; k++) if (!this.isWord(words[k], k)) return false;
    this.at += words.length;
    return true;
  }

  private expectWord(...words: string[]): void {
    if (!this.acceptWord(...words)) throw this.error(`expected ${words.join(' ')}, found ${describeToken(this.peek())}`);
  }

  acceptOp(op: string): boolean {
    const t = this.peek();
    if (t.kind === 'op' && t.text === op) {
      this.at++;
      return true;
    }
    return false;
  }

  private expectOp(op: string): void {
    if (!this.acceptOp(op)) throw this.error(`expected '${op}', found ${describeToken(this.peek())}`);
  }

  /** An identifier: a word or a quoted identifier. */
  private identifier(what: string): string {
    const t = this.peek();
    if (t.kind === 'ident' || (t.kind === 'word' && !RESERVED.has(t.upper))) {
      this.at++;
      return t.text;
    }
    throw this.error(`expected ${what}, found ${describeToken(t)}`);
  }

  /** A table name, maybe qualified by a database (`public.t`, `greptime.public.t`): the last part. */
  private tableName(): { table: string; database?: string; pos: number } {
    const pos = this.peek().pos;
    const parts = [this.identifier('a table name')];
    while (this.acceptOp('.')) parts.push(this.identifier('a table name'));
    return { table: parts[parts.length - 1], ...(parts.length > 1 ? { database: parts[0] } : {}), pos };
  }

  private stringLiteral(what: string): string {
    const t = this.peek();
    if (t.kind !== 'string') throw this.error(`expected ${what} (a quoted string), found ${describeToken(t)}`);
    this.at++;
    return t.text;
  }

  private integer(what: string): number {
    const t = this.peek();
    if (t.kind !== 'number' || !/^[0-9]+$/.test(t.text)) throw this.error(`expected ${what} (a whole number), found ${describeToken(t)}`);
    this.at++;
    return Number(t.text);
  }

  private list<T>(item: () => T): T[] {
    const out = [item()];
    while (this.acceptOp(',')) out.push(item());
    return out;
  }

  statement(): Statement {
    const t = this.peek();
    if (t.kind === 'op' && t.text === '(') throw this.unsupported('a parenthesised statement');
    if (t.kind !== 'word') throw this.error(`expected a statement, found ${describeToken(t)}`);
    switch (t.upper) {
      case 'SELECT':
        return this.select();
      case 'INSERT':
        return this.insert();
      case 'DELETE':
        return this.delete();
      case 'CREATE':
        return this.create();
      case 'DROP':
        return this.drop();
      case 'SHOW':
        return this.show();
      case 'DESC':
      case 'DESCRIBE':
      case 'EXPLAIN':
        return this.describe();
      case 'SET':
        // Session settings (SET NAMES, SET time_zone, SET autocommit, ...) change nothing here.
        this.skipToStatementEnd();
        return { kind: 'set' };
      case 'USE':
        this.next();
        return { kind: 'use', database: this.identifier('a database name') };
      case 'BEGIN':
      case 'START':
      case 'COMMIT':
      case 'ROLLBACK': {
        this.skipToStatementEnd();
        const command = t.upper === 'START' ? 'BEGIN' : (t.upper as 'BEGIN' | 'COMMIT' | 'ROLLBACK');
        return { kind: 'transaction', command };
      }
      case 'ADMIN':
        return this.admin();
      case 'UPDATE':
        throw this.unsupported('UPDATE (rows are upserted by primary key and time: INSERT the new values)');
      case 'WITH':
        throw this.unsupported('WITH (common table expressions)');
      default:
        throw this.error(`expected a statement, found ${describeToken(t)}`);
    }
  }

  private skipToStatementEnd(): void {
    while (this.peek().kind !== 'eof' && !(this.peek().kind === 'op' && this.peek().text === ';')) this.next();
  }

  private select(): Statement {
    this.expectWord('SELECT');
    if (this.acceptWord('DISTINCT')) throw this.unsupported('SELECT DISTINCT');
    const items = this.list((): SelectItem => {
      const expr = this.expr();
      if (this.acceptWord('AS')) return { expr, alias: this.identifierOrString('an alias') };
      const t = this.peek();
      if (t.kind === 'ident' || t.kind === 'string' || (t.kind === 'word' && !RESERVED.has(t.upper))) return { expr, alias: this.identifierOrString('an alias') };
      return { expr };
    });
    let from: { table: string; database?: string; pos: number } | undefined;
    if (this.acceptWord('FROM')) {
      if (this.peek().kind === 'op' && this.peek().text === '(') throw this.unsupported('a subquery in FROM');
      from = this.tableName();
      if (this.acceptWord('AS') || (this.peek().kind === 'word' && !RESERVED.has((this.peek() as { upper: string }).upper))) this.identifier('a table alias');
      if (this.acceptOp(',') || ['JOIN', 'INNER', 'LEFT', 'RIGHT', 'FULL', 'CROSS'].some((w) => this.isWord(w))) throw this.unsupported('a join');
    }
    const where = this.acceptWord('WHERE') ? this.expr() : undefined;
    const groupBy = this.acceptWord('GROUP', 'BY') ? this.list(() => this.expr()) : [];
    if (this.isWord('HAVING')) throw this.unsupported('HAVING');
    const orderBy = this.acceptWord('ORDER', 'BY')
      ? this.list((): OrderItem => {
          const expr = this.expr();
          const desc = this.acceptWord('DESC');
          if (!desc) this.acceptWord('ASC');
          if (this.acceptWord('NULLS')) {
            if (!this.acceptWord('FIRST')) this.expectWord('LAST');
          }
          return { expr, desc };
        })
      : [];
    let limit: number | undefined;
    let offset: number | undefined;
    if (this.acceptWord('LIMIT')) {
      const first = this.integer('a LIMIT');
      if (this.acceptOp(',')) {
        offset = first;
        limit = this.integer('a LIMIT');
      } else limit = first;
    }
    if (this.acceptWord('OFFSET')) offset = this.integer('an OFFSET');
    if (this.isWord('UNION')) throw this.unsupported('UNION');
    return {
      kind: 'select',
      items,
      ...(from ? { from } : {}),
      ...(where ? { where } : {}),
      groupBy,
      orderBy,
      ...(limit !== undefined ? { limit } : {}),
      ...(offset !== undefined ? { offset } : {}),
    };
  }

  private identifierOrString(what: string): string {
    const t = this.peek();
    if (t.kind === 'string') {
      this.at++;
      return t.text;
    }
    return this.identifier(what);
  }

  private insert(): Statement {
    const pos = this.peek().pos;
    this.expectWord('INSERT');
    this.expectWord('INTO');
    const { table } = this.tableName();
    let columns: string[] | undefined;
    if (this.acceptOp('(')) {
      columns = this.list(() => this.identifier('a column name'));
      this.expectOp(')');
    }
    if (this.isWord('SELECT')) throw this.unsupported('INSERT ... SELECT');
    this.expectWord('VALUES');
    const rows = this.list(() => {
      this.expectOp('(');
      const values = this.list(() => this.expr());
      this.expectOp(')');
      return values;
    });
    if (this.isWord('ON')) throw this.unsupported('INSERT ... ON DUPLICATE KEY / ON CONFLICT (an INSERT replaces the row of the same primary key and time)');
    return { kind: 'insert', table, ...(columns ? { columns } : {}), rows, pos };
  }

  private delete(): Statement {
    const pos = this.peek().pos;
    this.expectWord('DELETE');
    this.expectWord('FROM');
    const { table } = this.tableName();
    const where = this.acceptWord('WHERE') ? this.expr() : undefined;
    return { kind: 'delete', table, ...(where ? { where } : {}), pos };
  }

  private create(): Statement {
    const pos = this.peek().pos;
    this.expectWord('CREATE');
    if (this.isWord('DATABASE') || this.isWord('SCHEMA')) throw this.unsupported('CREATE DATABASE (reprise has one database, public)');
    if (!this.isWord('TABLE')) throw this.unsupported(`CREATE ${describeToken(this.peek())}`);
    this.expectWord('TABLE');
    const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
    const { table: name } = this.tableName();
    this.expectOp('(');
    const columns: ColumnSpec[] = [];
    let timeIndex: string | undefined;
    let primaryKey: string[] | undefined;
    const columnList = (): string[] => {
      this.expectOp('(');
      const names = this.list(() => this.identifier('a column name'));
      this.expectOp(')');
      return names;
    };
    do {
      if (this.acceptWord('TIME', 'INDEX')) {
        const names = columnList();
        if (names.length !== 1) throw this.error('TIME INDEX names exactly one column');
        timeIndex = names[0];
      } else if (this.acceptWord('PRIMARY', 'KEY')) {
        primaryKey = columnList();
      } else if (this.isWord('CONSTRAINT') || this.isWord('UNIQUE') || this.isWord('FOREIGN') || this.isWord('INDEX') || this.isWord('KEY')) {
        throw this.unsupported(`a ${describeToken(this.peek())} table constraint`);
      } else {
        columns.push(this.columnSpec());
      }
    } while (this.acceptOp(','));
    this.expectOp(')');
    let partition: { column: string; bounds: (string | number)[] } | undefined;
    for (;;) {
      if (this.isWord('PARTITION')) partition = this.partition();
      else if (this.acceptWord('ENGINE')) {
        this.acceptOp('=');
        this.identifier('an engine name');
      } else if (this.acceptWord('WITH')) {
        // Table options (GreptimeDB's ttl, append_mode, ...): accepted, none changes anything here.
        this.expectOp('(');
        if (!this.acceptOp(')')) {
          this.list(() => {
            this.identifierOrString('an option name');
            while (this.acceptOp('.')) this.identifierOrString('an option name');
            this.expectOp('=');
            this.expr();
          });
          this.expectOp(')');
        }
      } else break;
    }
    return {
      kind: 'createTable',
      name,
      ifNotExists,
      columns,
      ...(timeIndex !== undefined ? { timeIndex } : {}),
      ...(primaryKey ? { primaryKey } : {}),
      ...(partition ? { partition } : {}),
      pos,
    };
  }

  private columnSpec(): ColumnSpec {
    const pos = this.peek().pos;
    const name = this.identifier('a column name');
    const typeToken = this.peek();
    if (typeToken.kind !== 'word') throw this.error(`expected the type of column "${name}", found ${describeToken(typeToken)}`);
    this.next();
    let typeName = typeToken.upper;
    if (typeName === 'DOUBLE') this.acceptWord('PRECISION');
    if (typeName === 'TIMESTAMP' && (this.acceptWord('WITH', 'TIME', 'ZONE') || this.acceptWord('WITHOUT', 'TIME', 'ZONE'))) typeName = 'TIMESTAMP';
    const type = TYPES[typeName];
    if (type === undefined) {
      throw new RepriseError('SQL_UNSUPPORTED', `column "${name}": type ${typeToken.text} is not supported (use STRING, DOUBLE, BIGINT, INT, BOOLEAN or TIMESTAMP)`);
    }
    if (this.acceptOp('(')) {
      // VARCHAR(255), TIMESTAMP(3): the length or precision changes nothing (timestamps are ms).
      this.integer('a type length');
      this.expectOp(')');
    }
    let timeIndex = false;
    let primaryKey = false;
    for (;;) {
      if (this.acceptWord('TIME', 'INDEX')) timeIndex = true;
      else if (this.acceptWord('PRIMARY', 'KEY')) primaryKey = true;
      else if (this.acceptWord('NOT', 'NULL') || this.acceptWord('NULL')) continue;
      else if (this.acceptWord('COMMENT')) this.stringLiteral('a comment');
      else if (this.acceptWord('DEFAULT')) {
        const at = this.peek().pos;
        const value = this.expr();
        if (!(value.kind === 'call' && (value.name === 'current_timestamp' || value.name === 'now'))) {
          throw new RepriseError('SQL_UNSUPPORTED', `column "${name}": DEFAULT other than CURRENT_TIMESTAMP is not supported`, { position: at });
        }
      } else if (this.isWord('INVERTED') || this.isWord('SKIPPING') || this.isWord('FULLTEXT')) {
        // GreptimeDB's secondary indexes: reprise prunes by primary key and time only.
        this.next();
        this.expectWord('INDEX');
      } else break;
    }
    return { name, type, timeIndex, primaryKey, pos };
  }

  /**
   * Both GreptimeDB partition syntaxes, as range bounds on one column:
   * `PARTITION BY RANGE COLUMNS (c) (PARTITION p VALUES LESS THAN (v | MAXVALUE), ...)`
   * and `PARTITION ON COLUMNS (c) (c < v, c >= v AND c < w, c >= w)`.
   */
  private partition(): { column: string; bounds: (string | number)[] } {
    const pos = this.peek().pos;
    this.expectWord('PARTITION');
    if (this.acceptWord('BY')) {
      this.expectWord('RANGE');
      this.expectWord('COLUMNS');
      this.expectOp('(');
      const columns = this.list(() => this.identifier('a partition column'));
      this.expectOp(')');
      if (columns.length !== 1) throw new RepriseError('SQL_UNSUPPORTED', `partitioning on ${columns.length} columns is not supported (one column)`);
      this.expectOp('(');
      const bounds: (string | number)[] = [];
      let sawMax = false;
      this.list(() => {
        this.expectWord('PARTITION');
        this.identifier('a partition name');
        this.expectWord('VALUES', 'LESS', 'THAN');
        this.expectOp('(');
        if (sawMax) throw this.error('no partition can follow VALUES LESS THAN (MAXVALUE)');
        if (this.acceptWord('MAXVALUE')) sawMax = true;
        else bounds.push(this.boundValue());
        this.expectOp(')');
      });
      this.expectOp(')');
      return { column: columns[0], bounds };
    }
    this.expectWord('ON', 'COLUMNS');
    this.expectOp('(');
    const columns = this.list(() => this.identifier('a partition column'));
    this.expectOp(')');
    if (columns.length !== 1) throw new RepriseError('SQL_UNSUPPORTED', `partitioning on ${columns.length} columns is not supported (one column)`);
    const column = columns[0];
    this.expectOp('(');
    const rules = this.list(() => this.expr());
    this.expectOp(')');
    return { column, bounds: boundsOfRanges(column, rules, (m) => this.error(m, pos)) };
  }

  private boundValue(): string | number {
    const e = this.expr();
    const v = constantOf(e);
    if (typeof v !== 'string' && typeof v !== 'number') throw this.error('a partition bound must be a string or a number', e.pos);
    return v;
  }

  private drop(): Statement {
    const pos = this.peek().pos;
    this.expectWord('DROP');
    if (!this.acceptWord('TABLE')) throw this.unsupported(`DROP ${describeToken(this.peek())}`);
    const ifExists = this.acceptWord('IF', 'EXISTS');
    const { table: name } = this.tableName();
    if (this.acceptOp(',')) throw this.unsupported('DROP TABLE of several tables');
    return { kind: 'dropTable', name, ifExists, pos };
  }

  private show(): Statement {
    this.expectWord('SHOW');
    const like = (): string | undefined => {
      if (this.acceptWord('LIKE')) return this.stringLiteral('a LIKE pattern');
      if (this.acceptWord('WHERE')) throw this.unsupported('SHOW ... WHERE');
      return undefined;
    };
    const full = this.acceptWord('FULL');
    if (this.acceptWord('TABLES')) {
      if (this.acceptWord('FROM') || this.acceptWord('IN')) this.identifier('a database name');
      const pattern = like();
      return { kind: 'showTables', full, ...(pattern !== undefined ? { like: pattern } : {}) };
    }
    if (this.acceptWord('DATABASES') || this.acceptWord('SCHEMAS')) {
      const pattern = like();
      return { kind: 'showDatabases', ...(pattern !== undefined ? { like: pattern } : {}) };
    }
    if (this.acceptWord('CREATE', 'TABLE')) {
      const { table, pos } = this.tableName();
      return { kind: 'showCreateTable', name: table, pos };
    }
    if (this.acceptWord('COLUMNS') || this.acceptWord('FIELDS')) {
      if (!this.acceptWord('FROM')) this.expectWord('IN');
      const { table, pos } = this.tableName();
      return { kind: 'showColumns', table, pos };
    }
    this.acceptWord('GLOBAL') || this.acceptWord('SESSION');
    if (this.acceptWord('VARIABLES')) {
      const pattern = like();
      return { kind: 'showVariables', ...(pattern !== undefined ? { like: pattern } : {}) };
    }
    if (this.acceptWord('STATUS')) return this.showEmpty(['Variable_name', 'Value']);
    if (this.acceptWord('WARNINGS') || this.acceptWord('ERRORS')) return this.showEmpty(['Level', 'Code', 'Message']);
    if (this.acceptWord('ENGINES')) return this.showEmpty(['Engine', 'Support', 'Comment']);
    if (this.acceptWord('PROCESSLIST')) return this.showEmpty(['Id', 'User', 'Host', 'db', 'Command', 'Time', 'State', 'Info']);
    throw this.unsupported(`SHOW ${describeToken(this.peek())}`);
  }

  private showEmpty(columns: string[]): Statement {
    this.skipToStatementEnd();
    return { kind: 'showEmpty', columns };
  }

  private describe(): Statement {
    const word = this.next() as { upper: string };
    if (word.upper === 'EXPLAIN') throw this.unsupported('EXPLAIN');
    this.acceptWord('TABLE');
    const { table, pos } = this.tableName();
    return { kind: 'showColumns', table, pos };
  }

  private admin(): Statement {
    const pos = this.peek().pos;
    this.expectWord('ADMIN');
    const fn = this.identifier('an admin function').toLowerCase();
    this.expectOp('(');
    const args = this.acceptOp(')') ? [] : this.list(() => this.expr());
    if (args.length > 0) this.expectOp(')');
    return { kind: 'admin', fn, args, pos };
  }

  // ------------------------------------------------------------ expressions

  expr(): Expr {
    return this.or();
  }

  private or(): Expr {
    let left = this.and();
    while (this.isWord('OR')) {
      const pos = this.next().pos;
      left = { kind: 'binary', op: 'OR', left, right: this.and(), pos };
    }
    return left;
  }

  private and(): Expr {
    let left = this.not();
    while (this.isWord('AND')) {
      const pos = this.next().pos;
      left = { kind: 'binary', op: 'AND', left, right: this.not(), pos };
    }
    return left;
  }

  private not(): Expr {
    if (this.isWord('NOT')) {
      const pos = this.next().pos;
      return { kind: 'not', operand: this.not(), pos };
    }
    return this.comparison();
  }

  private comparison(): Expr {
    const left = this.additive();
    const t = this.peek();
    if (t.kind === 'op' && ['=', '!=', '<>', '<', '<=', '>', '>='].includes(t.text)) {
      this.next();
      const op = (t.text === '<>' ? '!=' : t.text) as BinaryOp;
      return { kind: 'binary', op, left, right: this.additive(), pos: t.pos };
    }
    if (t.kind === 'op' && t.text === '<=>') throw this.unsupported("'<=>'");
    const negated = this.isWord('NOT') && (this.isWord('IN', 1) || this.isWord('BETWEEN', 1) || this.isWord('LIKE', 1));
    if (negated) this.next();
    if (this.acceptWord('IN')) {
      this.expectOp('(');
      if (this.isWord('SELECT')) throw this.unsupported('a subquery in IN');
      const list = this.list(() => this.additive());
      this.expectOp(')');
      return { kind: 'in', operand: left, list, negated, pos: t.pos };
    }
    if (this.acceptWord('BETWEEN')) {
      const low = this.additive();
      this.expectWord('AND');
      const high = this.additive();
      return { kind: 'between', operand: left, low, high, negated, pos: t.pos };
    }
    if (this.acceptWord('LIKE')) {
      const right = this.additive();
      const like: Expr = { kind: 'binary', op: 'LIKE', left, right, pos: t.pos };
      return negated ? { kind: 'not', operand: like, pos: t.pos } : like;
    }
    if (this.acceptWord('IS')) {
      const not = this.acceptWord('NOT');
      this.expectWord('NULL');
      return { kind: 'isNull', operand: left, negated: not, pos: t.pos };
    }
    return left;
  }

  private additive(): Expr {
    let left = this.multiplicative();
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'op' || (t.text !== '+' && t.text !== '-' && t.text !== '||')) return left;
      this.next();
      left = { kind: 'binary', op: t.text as BinaryOp, left, right: this.multiplicative(), pos: t.pos };
    }
  }

  private multiplicative(): Expr {
    let left = this.unary();
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'op' || (t.text !== '*' && t.text !== '/' && t.text !== '%')) return left;
      this.next();
      left = { kind: 'binary', op: t.text as BinaryOp, left, right: this.unary(), pos: t.pos };
    }
  }

  private unary(): Expr {
    const t = this.peek();
    if (t.kind === 'op' && (t.text === '-' || t.text === '+')) {
      this.next();
      const operand = this.unary();
      if (t.text === '+') return operand;
      if (operand.kind === 'literal' && typeof operand.value === 'number') return { kind: 'literal', value: -operand.value, pos: t.pos };
      return { kind: 'negate', operand, pos: t.pos };
    }
    let e = this.primary();
    while (this.acceptOp('::')) e = { kind: 'cast', operand: e, type: this.identifier('a type').toUpperCase(), pos: e.pos };
    return e;
  }

  private primary(): Expr {
    const t = this.peek();
    switch (t.kind) {
      case 'number':
        this.next();
        return { kind: 'literal', value: Number(t.text), pos: t.pos };
      case 'string':
        this.next();
        return { kind: 'literal', value: t.text, pos: t.pos };
      case 'param': {
        this.next();
        const index = t.text === '?' ? this.params : Number(t.text.slice(1)) - 1;
        if (index < 0) throw this.error('parameters are numbered from $1');
        this.params = Math.max(this.params, index + 1);
        return { kind: 'param', index, pos: t.pos };
      }
      case 'variable':
        this.next();
        return { kind: 'variable', name: t.text.replace(/^@@?(?:(?:global|session|local)\.)?/i, '').toLowerCase(), pos: t.pos };
      case 'op':
        if (t.text === '(') {
          this.next();
          if (this.isWord('SELECT')) throw this.unsupported('a subquery');
          const e = this.expr();
          this.expectOp(')');
          return e;
        }
        if (t.text === '*') {
          this.next();
          return { kind: 'star', pos: t.pos };
        }
        throw this.error(`expected a value or a column, found ${describeToken(t)}`);
      case 'ident':
        return this.columnOrCall();
      case 'word':
        break;
      default:
        throw this.error(`expected a value or a column, found ${describeToken(t)}`);
    }
    switch (t.upper) {
      case 'NULL':
        this.next();
        return { kind: 'literal', value: null, pos: t.pos };
      case 'TRUE':
      case 'FALSE':
        this.next();
        return { kind: 'literal', value: t.upper === 'TRUE', pos: t.pos };
      case 'INTERVAL':
        return this.interval();
      case 'CAST': {
        this.next();
        this.expectOp('(');
        const operand = this.expr();
        this.expectWord('AS');
        const type = this.identifier('a type').toUpperCase();
        if (this.acceptOp('(')) {
          this.integer('a type length');
          this.expectOp(')');
        }
        this.expectOp(')');
        return { kind: 'cast', operand, type, pos: t.pos };
      }
      case 'CURRENT_TIMESTAMP':
      case 'CURRENT_DATE':
      case 'LOCALTIMESTAMP':
        if (!(this.peek(1).kind === 'op' && this.peek(1).text === '(')) {
          this.next();
          return { kind: 'call', name: t.text.toLowerCase(), args: [], distinct: false, pos: t.pos };
        }
        break;
      case 'CASE':
        throw this.unsupported('CASE');
      case 'EXISTS':
        throw this.unsupported('EXISTS');
    }
    if (RESERVED.has(t.upper)) throw this.error(`expected a value or a column, found ${describeToken(t)}`);
    return this.columnOrCall();
  }

  private columnOrCall(): Expr {
    const t = this.next() as Token & { text: string };
    if (this.acceptOp('(')) {
      const name = t.text.toLowerCase();
      const distinct = this.acceptWord('DISTINCT');
      const args = this.acceptOp(')') ? [] : this.list(() => this.expr());
      if (args.length > 0) this.expectOp(')');
      if (this.isWord('OVER')) throw this.unsupported('window functions (OVER)');
      return { kind: 'call', name, args, distinct, pos: t.pos };
    }
    if (this.acceptOp('.')) {
      if (this.acceptOp('*')) return { kind: 'star', pos: t.pos };
      const name = this.identifier('a column name');
      return { kind: 'column', name, table: t.text, pos: t.pos };
    }
    return { kind: 'column', name: t.text, pos: t.pos };
  }

  private interval(): Expr {
    const pos = this.next().pos;
    const t = this.peek();
    if (t.kind === 'string') {
      this.next();
      const unit = this.peek();
      // INTERVAL '10' MINUTE, or INTERVAL '10 minutes'.
      if (unit.kind === 'word' && UNIT_MS[unit.upper] !== undefined && /^\s*[0-9.]+\s*$/.test(t.text)) {
        this.next();
        return { kind: 'interval', ms: Number(t.text) * UNIT_MS[unit.upper], pos };
      }
      const ms = intervalMs(t.text);
      if (ms === undefined) throw this.error(`'${t.text}' is not an interval (e.g. '10 minutes', '1 hour', '30s')`, t.pos);
      return { kind: 'interval', ms, pos };
    }
    if (t.kind === 'number') {
      this.next();
      const unit = this.peek();
      if (unit.kind !== 'word' || UNIT_MS[unit.upper] === undefined) throw this.error(`expected an interval unit (SECOND, MINUTE, HOUR, DAY, ...), found ${describeToken(unit)}`);
      this.next();
      return { kind: 'interval', ms: Number(t.text) * UNIT_MS[unit.upper], pos };
    }
    throw this.error(`expected an interval such as '10 minutes', found ${describeToken(t)}`);
  }
}

/** A literal's value (numbers negated at parse time); undefined when the expression is not a literal. */
export function constantOf(e: Expr): string | number | boolean | null | undefined {
  return e.kind === 'literal' ? e.value : undefined;
}

/**
 * `c < v`, `c >= v AND c < w`, `c >= w` as bounds [v, w]: the ranges must
 * be contiguous, start unbounded and end unbounded.
 */
function boundsOfRanges(column: string, rules: readonly Expr[], fail: (message: string) => RepriseError): (string | number)[] {
  const ranges = rules.map((rule) => {
    let lo: string | number | undefined;
    let hi: string | number | undefined;
    const parts: Expr[] = [];
    const flatten = (e: Expr): void => {
      if (e.kind === 'binary' && e.op === 'AND') {
        flatten(e.left);
        flatten(e.right);
      } else parts.push(e);
    };
    flatten(rule);
    for (const part of parts) {
      if (part.kind !== 'binary' || part.left.kind !== 'column' || part.left.name !== column) {
        throw fail(`each partition rule must compare column "${column}" with < and >= (e.g. ${column} >= 5 AND ${column} < 9)`);
      }
      const v = constantOf(part.right);
      if (typeof v !== 'string' && typeof v !== 'number') throw fail(`partition rules compare "${column}" with strings or numbers`);
      if (part.op === '<' && hi === undefined) hi = v;
      else if (part.op === '>=' && lo === undefined) lo = v;
      else throw fail(`partition rules use ${column} < v and ${column} >= v (found '${part.op}')`);
    }
    return { lo, hi };
  });
  const first = ranges.filter((r) => r.lo === undefined);
  const last = ranges.filter((r) => r.hi === undefined);
  if (first.length !== 1 || last.length !== 1) throw fail('the partition rules must cover every value: exactly one open below and one open above');
  const bounds: (string | number)[] = [];
  let at = first[0];
  const remaining = new Set(ranges.filter((r) => r !== at));
  while (at.hi !== undefined) {
    const hi = at.hi;
    bounds.push(hi);
    const nextRange = [...remaining].find((r) => r.lo === hi);
    if (nextRange === undefined) throw fail(`no partition rule starts at ${JSON.stringify(hi)} (${column} >= ${JSON.stringify(hi)}): the ranges must be contiguous`);
    remaining.delete(nextRange);
    at = nextRange;
  }
  if (remaining.size > 0) throw fail('the partition rules overlap');
  return bounds;
}
