import type { ColumnType, Value } from '../../engine/schema.js';
import { compareValues } from '../../engine/table/keys.js';
import { RepriseError } from '../../errors.js';
import type { Expr } from './ast.js';

/**
 * Evaluating expressions: constants (with the session's now, variables and
 * functions) and, for what the engine cannot filter or compute (conditions
 * on fields, computed select items), over one result row at a time.
 */

/** What an expression may read: a column of the current row (undefined: no such column here), a variable, session facts. */
export interface EvalScope {
  readonly now: number;
  column?(e: Expr & { kind: 'column' }): { value: Value; type: ColumnType } | undefined;
  /** A call the caller resolves itself (an aggregate, a time bucket, over a result row). */
  call?(e: Expr & { kind: 'call' }): { value: Value; type: ColumnType } | undefined;
  variable(name: string): Value;
  /** The statement's parameter values, by index. */
  readonly params?: readonly Value[];
  readonly functions: Readonly<Record<string, () => Value>>;
}

export interface Typed {
  readonly value: Value;
  readonly type: ColumnType;
}

const unsupported = (what: string): RepriseError => new RepriseError('SQL_UNSUPPORTED', `${what} is not supported`);

/** How an expression reads in a column header and in messages (what MySQL shows for an unnamed select item). */
export function render(e: Expr): string {
  switch (e.kind) {
    case 'literal':
      return typeof e.value === 'string' ? `'${e.value}'` : String(e.value === null ? 'NULL' : e.value);
    case 'column':
      return e.name;
    case 'star':
      return '*';
    case 'call':
      return `${e.name}(${e.distinct ? 'DISTINCT ' : ''}${e.args.map(render).join(', ')})`;
    case 'binary':
      return `${render(e.left)} ${e.op} ${render(e.right)}`;
    case 'not':
      return `NOT ${render(e.operand)}`;
    case 'negate':
      return `-${render(e.operand)}`;
    case 'in':
      return `${render(e.operand)}${e.negated ? ' NOT' : ''} IN (${e.list.map(render).join(', ')})`;
    case 'between':
      return `${render(e.operand)}${e.negated ? ' NOT' : ''} BETWEEN ${render(e.low)} AND ${render(e.high)}`;
    case 'isNull':
      return `${render(e.operand)} IS ${e.negated ? 'NOT ' : ''}NULL`;
    case 'interval':
      return `INTERVAL '${e.ms} milliseconds'`;
    case 'param':
      return `$${e.index + 1}`;
    case 'variable':
      return `@@${e.name}`;
    case 'cast':
      return `CAST(${render(e.operand)} AS ${e.type})`;
  }
}

const TIMESTAMP_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/** A timestamp as epoch ms: a number, or a string 'YYYY-MM-DD[ HH:MM[:SS[.fff]]][Z|±hh:mm]' read as UTC when it names no zone. */
export function timestampOf(v: Value, what: string): number {
  if (typeof v === 'number' && Number.isFinite(v)) return Math.trunc(v);
  if (typeof v === 'string') {
    if (/^-?\d+$/.test(v.trim())) return Number(v.trim());
    const m = TIMESTAMP_RE.exec(v.trim());
    if (m !== null) {
      const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '0', zone] = m;
      let ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), Number(frac.padEnd(3, '0').slice(0, 3)));
      if (zone !== undefined && zone.toUpperCase() !== 'Z') {
        const sign = zone[0] === '-' ? -1 : 1;
        const digits = zone.slice(1).replace(':', '');
        ms -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || '0')) * 60_000;
      }
      if (Number.isFinite(ms)) return ms;
    }
  }
  throw new RepriseError('INVALID_QUERY', `${what}: ${typeof v === 'string' ? `'${v}'` : String(v)} is not a timestamp (epoch ms, or 'YYYY-MM-DD HH:MM:SS[.fff]' in UTC)`);
}

/** A value as a column of `type` takes it (what a literal means next to that column): timestamps from strings, booleans from 1/0. */
export function coerce(v: Value, type: ColumnType, what: string): Value {
  if (v === null) return null;
  switch (type) {
    case 'timestamp':
      return timestampOf(v, what);
    case 'bool':
      if (v === 1 || v === 0) return v === 1;
      if (typeof v === 'string' && /^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
      return v;
    case 'float64':
    case 'int64':
      if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
      return v;
    case 'string':
      return v;
  }
}

function typeOfLiteral(v: Value): ColumnType {
  if (typeof v === 'number') return Number.isInteger(v) ? 'int64' : 'float64';
  if (typeof v === 'boolean') return 'bool';
  return 'string';
}

const CAST_TYPES: Record<string, ColumnType> = {
  STRING: 'string', TEXT: 'string', VARCHAR: 'string', CHAR: 'string',
  DOUBLE: 'float64', FLOAT: 'float64', FLOAT8: 'float64', REAL: 'float64', DECIMAL: 'float64', NUMERIC: 'float64',
  BIGINT: 'int64', INT: 'int64', INTEGER: 'int64', INT8: 'int64', SIGNED: 'int64', UNSIGNED: 'int64',
  BOOLEAN: 'bool', BOOL: 'bool',
  TIMESTAMP: 'timestamp', DATETIME: 'timestamp', TIMESTAMPTZ: 'timestamp', DATE: 'timestamp',
};

function truthy(v: Value): boolean {
  return v !== null && v !== false && v !== 0 && v !== '';
}

/** A SQL LIKE pattern (% any run, _ one character) as a regular expression; `flags` e.g. 'i' for SHOW ... LIKE. */
export function likeRegex(pattern: string, flags = ''): RegExp {
  let re = '^';
  for (const ch of pattern) re += ch === '%' ? '.*' : ch === '_' ? '.' : ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`${re}$`, `s${flags}`);
}

/** Evaluate `e` in `scope`. Columns or calls the scope does not know are errors naming them. */
export function evaluate(e: Expr, scope: EvalScope): Typed {
  switch (e.kind) {
    case 'literal':
      return { value: e.value, type: typeOfLiteral(e.value) };
    case 'interval':
      return { value: e.ms, type: 'int64' };
    case 'param': {
      const params = scope.params ?? [];
      if (e.index >= params.length) throw new RepriseError('INVALID_ARGUMENT', `parameter ${e.index + 1} has no value (${params.length} given)`);
      const value = params[e.index];
      return { value, type: typeOfLiteral(value) };
    }
    case 'variable': {
      const value = scope.variable(e.name);
      return { value, type: typeOfLiteral(value) };
    }
    case 'column': {
      const found = scope.column?.(e);
      if (found === undefined) throw new RepriseError('INVALID_QUERY', `unknown column "${e.name}"${scope.column ? '' : ' (no table named in FROM)'}`, { column: e.name });
      return found;
    }
    case 'star':
      throw new RepriseError('SQL_SYNTAX', "'*' is only a select item or count(*)");
    case 'negate': {
      const v = evaluate(e.operand, scope);
      if (v.value === null) return v;
      if (typeof v.value !== 'number') throw new RepriseError('INVALID_QUERY', `cannot negate ${render(e.operand)}`);
      return { value: -v.value, type: v.type };
    }
    case 'not': {
      const v = evaluate(e.operand, scope).value;
      return { value: v === null ? null : !truthy(v), type: 'bool' };
    }
    case 'isNull': {
      const v = evaluate(e.operand, scope).value;
      return { value: (v === null) !== e.negated, type: 'bool' };
    }
    case 'in': {
      const v = evaluate(e.operand, scope);
      if (v.value === null) return { value: null, type: 'bool' };
      const found = e.list.some((item) => compareValues(v.value, coerce(evaluate(item, scope).value, v.type, render(e))) === 0);
      return { value: found !== e.negated, type: 'bool' };
    }
    case 'between': {
      const v = evaluate(e.operand, scope);
      if (v.value === null) return { value: null, type: 'bool' };
      const lo = coerce(evaluate(e.low, scope).value, v.type, render(e));
      const hi = coerce(evaluate(e.high, scope).value, v.type, render(e));
      const inside = compareValues(v.value, lo) >= 0 && compareValues(v.value, hi) <= 0;
      return { value: inside !== e.negated, type: 'bool' };
    }
    case 'cast': {
      const type = CAST_TYPES[e.type];
      if (type === undefined) throw unsupported(`CAST to ${e.type}`);
      const v = evaluate(e.operand, scope);
      if (v.value === null) return { value: null, type };
      if (type === 'string') return { value: v.type === 'timestamp' ? formatTimestamp(v.value as number) : String(v.value), type };
      if (type === 'timestamp') return { value: timestampOf(v.value, render(e)), type };
      if (type === 'bool') return { value: truthy(v.value), type };
      const n = typeof v.value === 'boolean' ? Number(v.value) : Number(v.value);
      if (!Number.isFinite(n)) throw new RepriseError('INVALID_QUERY', `${render(e)}: ${String(v.value)} is not a number`);
      return { value: type === 'int64' ? Math.trunc(n) : n, type };
    }
    case 'call': {
      const resolved = scope.call?.(e);
      if (resolved !== undefined) return resolved;
      const fn = scope.functions[e.name];
      if (fn !== undefined && e.args.length === 0) {
        const value = fn();
        return { value, type: typeOfLiteral(value) };
      }
      if (e.name === 'now' || e.name === 'current_timestamp' || e.name === 'localtimestamp') return { value: scope.now, type: 'timestamp' };
      if (e.name === 'to_timestamp' || e.name === 'to_timestamp_millis') {
        if (e.args.length !== 1) throw new RepriseError('INVALID_QUERY', `${e.name} takes one argument`);
        const v = evaluate(e.args[0], scope).value;
        return { value: v === null ? null : e.name === 'to_timestamp' && typeof v === 'number' ? v * 1000 : timestampOf(v, render(e)), type: 'timestamp' };
      }
      throw unsupported(`the function ${e.name}() here`);
    }
    case 'binary':
      return binary(e, scope);
  }
}

function binary(e: Expr & { kind: 'binary' }, scope: EvalScope): Typed {
  if (e.op === 'AND' || e.op === 'OR') {
    const l = evaluate(e.left, scope).value;
    if (e.op === 'AND' && l !== null && !truthy(l)) return { value: false, type: 'bool' };
    if (e.op === 'OR' && l !== null && truthy(l)) return { value: true, type: 'bool' };
    const r = evaluate(e.right, scope).value;
    if (l === null || r === null) return { value: e.op === 'AND' ? (r !== null && !truthy(r) ? false : null) : r !== null && truthy(r) ? true : null, type: 'bool' };
    return { value: truthy(r), type: 'bool' };
  }
  const l = evaluate(e.left, scope);
  const r = evaluate(e.right, scope);
  if (l.value === null || r.value === null) return { value: null, type: ['=', '!=', '<', '<=', '>', '>=', 'LIKE'].includes(e.op) ? 'bool' : l.type };
  switch (e.op) {
    case '=':
    case '!=':
    case '<':
    case '<=':
    case '>':
    case '>=': {
      // A literal next to a column takes the column's type ('2024-01-01' next to a timestamp is a time).
      const target = l.type === 'timestamp' || r.type === 'timestamp' ? 'timestamp' : l.type === 'bool' || r.type === 'bool' ? 'bool' : undefined;
      const c = target === undefined ? compareValues(l.value, r.value) : compareValues(coerce(l.value, target, render(e)), coerce(r.value, target, render(e)));
      const value = e.op === '=' ? c === 0 : e.op === '!=' ? c !== 0 : e.op === '<' ? c < 0 : e.op === '<=' ? c <= 0 : e.op === '>' ? c > 0 : c >= 0;
      return { value, type: 'bool' };
    }
    case 'LIKE':
      return { value: likeRegex(String(r.value)).test(String(l.value)), type: 'bool' };
    case '||':
      return { value: String(l.value) + String(r.value), type: 'string' };
    default: {
      if (typeof l.value !== 'number' || typeof r.value !== 'number') throw new RepriseError('INVALID_QUERY', `${render(e)}: '${e.op}' needs numbers`);
      const a = l.value;
      const b = r.value;
      const value = e.op === '+' ? a + b : e.op === '-' ? a - b : e.op === '*' ? a * b : e.op === '/' ? (b === 0 ? null : a / b) : b === 0 ? null : a % b;
      // A time plus or minus an interval (ms) is a time; a time minus a time is ms.
      const type: ColumnType =
        (l.type === 'timestamp') !== (r.type === 'timestamp') && (e.op === '+' || e.op === '-')
          ? 'timestamp'
          : e.op === '/' || l.type === 'float64' || r.type === 'float64'
            ? 'float64'
            : 'int64';
      return { value, type };
    }
  }
}

/** A filter's outcome: only true keeps a row (null, SQL's unknown, does not). */
export function holds(e: Expr, scope: EvalScope): boolean {
  return evaluate(e, scope).value === true;
}

/** Epoch ms as 'YYYY-MM-DD HH:MM:SS.mmm' in UTC (how SQL clients show a timestamp); a value no Date holds as its number. */
export function formatTimestamp(ms: number): string {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return String(ms);
  const iso = date.toISOString(); // 2024-01-02T03:04:05.678Z, or ±YYYYYY-... outside years 0..9999
  return `${iso.slice(0, -14)} ${iso.slice(-13, -1)}`;
}
