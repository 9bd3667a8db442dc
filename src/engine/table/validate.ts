import { RepriseError } from '../../errors.js';
import {
  aggregateName,
  AGGREGATE_FNS,
  COLUMN_ROLES,
  type AggregateFn,
  COLUMN_TYPES,
  type ColumnDef,
  type ColumnType,
  type PartitionRule,
  type RangeCondition,
  type Row,
  type TableQuery,
  type TableSchema,
  type Value,
} from '../schema.js';
import { writtenNumber } from '../written-numbers.js';
import { compareValues } from './keys.js';

/**
 * Validation of everything a client hands the table engine: schemas, rows,
 * delete keys and queries. Each function returns a fresh, normalised copy
 * and throws a RepriseError whose message names the table, column and row.
 */

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/** Matches NAME_RE but names an object's prototype: a row object given it as a key would lose the value or change its prototype. */
const RESERVED_NAME = '__proto__';

/** A table, column or output name: letters, digits and _, not starting with a digit, at most 128, not `__proto__`. */
export function isValidName(name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name) && name !== RESERVED_NAME;
}

/** Why `name` is not a valid name (for messages). */
function nameRule(name: unknown): string {
  return name === RESERVED_NAME ? `is reserved (${RESERVED_NAME} is an object's prototype in JavaScript)` : `must match ${NAME_RE}`;
}
const SCHEMA_KEYS = new Set(['name', 'columns', 'partition']);
const COLUMN_KEYS = new Set(['name', 'type', 'role']);
const PARTITION_KEYS = new Set(['column', 'bounds']);
const QUERY_KEYS = new Set(['where', 'timeRange', 'columns', 'limit', 'order', 'groupBy', 'interval', 'aggregates']);
const AGGREGATE_KEYS = new Set(['fn', 'column', 'as']);
const NUMERIC_TYPES = new Set<ColumnType>(['float64', 'int64', 'timestamp']);
const RANGE_KEYS = new Set(['eq', 'gt', 'gte', 'lt', 'lte', 'in', 'notIn']);
/** Operators whose operand is a list of values. */
const LIST_OPS = new Set(['in', 'notIn']);
/** Values one `in` or `notIn` list may hold: each is looked up per row scanned, and the query travels between nodes. */
export const MAX_IN_VALUES = 10_000;
const TIME_RANGE_KEYS = new Set(['from', 'to']);

export function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/** Whether a non-null value has the column type's representation. */
export function isValueOfType(type: ColumnType, v: unknown): boolean {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'float64':
      return typeof v === 'number' && Number.isFinite(v);
    case 'int64':
      return Number.isSafeInteger(v);
    case 'bool':
      return typeof v === 'boolean';
    case 'timestamp':
      return Number.isSafeInteger(v) && (v as number) >= 0;
  }
}

export const TYPE_DESCRIPTIONS: Record<ColumnType, string> = {
  string: 'a string',
  float64: 'a finite number',
  int64: 'a safe integer',
  bool: 'a boolean',
  timestamp: 'a non-negative integer (epoch ms)',
};

/** A short rendering of an offending value for error messages. */
export function show(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

/** show(holder[key]), quoting an integer as the JSON text wrote it when parsing rounded it (see written-numbers.ts). */
export function showAt(holder: object, key: string | number, v: unknown): string {
  return (typeof v === 'number' ? writtenNumber(holder, key) : undefined) ?? show(v);
}

function unknownKey(obj: Record<string, unknown>, allowed: Set<string>): string | undefined {
  return Object.keys(obj).find((k) => !allowed.has(k));
}

// ---------------------------------------------------------------- schema

/** Caps on what one table may declare: each costs memory and work per row, per region or per query. */
export interface SchemaLimits {
  /** Columns of a table (tags, fields and the time column). */
  readonly maxColumns: number;
  /** Partition bounds (a table has one region more than it has bounds). */
  readonly maxPartitionBounds: number;
}

export const DEFAULT_SCHEMA_LIMITS: SchemaLimits = { maxColumns: 1024, maxPartitionBounds: 1023 };

export function validateSchema(input: unknown, limits: SchemaLimits = DEFAULT_SCHEMA_LIMITS): TableSchema {
  const fail = (table: string, message: string, details?: Record<string, unknown>): never => {
    throw new RepriseError('INVALID_SCHEMA', `invalid schema for table ${table}: ${message}`, { table, ...details });
  };
  if (!isPlainObject(input)) fail('(unnamed)', `expected an object, got ${show(input)}`);
  const obj = input as Record<string, unknown>;
  const name = obj.name;
  if (!isValidName(name)) fail(show(name), `table name ${show(name)} ${nameRule(name)}`);
  const table = JSON.stringify(name);
  const extra = unknownKey(obj, SCHEMA_KEYS);
  if (extra !== undefined) fail(table, `unknown key "${extra}" (expected name, columns, partition)`, { key: extra });
  if (!Array.isArray(obj.columns) || obj.columns.length === 0) fail(table, 'columns must be a non-empty array');
  if ((obj.columns as unknown[]).length > limits.maxColumns) {
    fail(table, `${(obj.columns as unknown[]).length} columns, more than the limit of ${limits.maxColumns} (maxColumns)`, { limit: limits.maxColumns });
  }

  const columns: ColumnDef[] = [];
  const seen = new Set<string>();
  (obj.columns as unknown[]).forEach((c, i) => {
    const where = `column ${i}`;
    if (!isPlainObject(c)) return fail(table, `${where}: expected an object, got ${show(c)}`, { column: i });
    const colName = c.name;
    if (!isValidName(colName)) return fail(table, `${where}: column name ${show(colName)} ${nameRule(colName)}`, { column: i });
    const col = `column "${colName}"`;
    const bad = unknownKey(c, COLUMN_KEYS);
    if (bad !== undefined) fail(table, `${col}: unknown key "${bad}" (expected name, type, role)`, { column: colName, key: bad });
    if (seen.has(colName)) fail(table, `${col} is defined more than once`, { column: colName });
    seen.add(colName);
    if (!COLUMN_TYPES.includes(c.type as ColumnType)) {
      fail(table, `${col}: type ${show(c.type)} is not one of ${COLUMN_TYPES.join(', ')}`, { column: colName });
    }
    if (!COLUMN_ROLES.includes(c.role as ColumnDef['role'])) {
      fail(table, `${col}: role ${show(c.role)} is not one of ${COLUMN_ROLES.join(', ')}`, { column: colName });
    }
    const def: ColumnDef = { name: colName, type: c.type as ColumnType, role: c.role as ColumnDef['role'] };
    if (def.role === 'time' && def.type !== 'timestamp') {
      fail(table, `${col}: the time column must have type timestamp, not ${def.type}`, { column: colName });
    }
    if (def.role === 'tag' && def.type === 'float64') {
      fail(table, `${col}: tag (primary key) columns cannot be float64`, { column: colName });
    }
    columns.push(def);
  });

  const times = columns.filter((c) => c.role === 'time');
  if (times.length !== 1) {
    fail(table, `exactly one column must have role time, found ${times.length}${times.length ? ` (${times.map((c) => `"${c.name}"`).join(', ')})` : ''}`);
  }

  const schema: { name: string; columns: ColumnDef[]; partition?: PartitionRule } = { name: name as string, columns };
  if (obj.partition !== undefined) schema.partition = validatePartition(table, columns, obj.partition, fail, limits);
  return schema;
}

function validatePartition(
  table: string,
  columns: readonly ColumnDef[],
  input: unknown,
  fail: (table: string, message: string, details?: Record<string, unknown>) => never,
  limits: SchemaLimits,
): PartitionRule {
  if (!isPlainObject(input)) return fail(table, `partition: expected an object, got ${show(input)}`);
  const bad = unknownKey(input, PARTITION_KEYS);
  if (bad !== undefined) fail(table, `partition: unknown key "${bad}" (expected column, bounds)`, { key: bad });
  const column = columns.find((c) => c.name === input.column);
  if (column === undefined) return fail(table, `partition column ${show(input.column)} is not a column of the table`);
  const col = `partition column "${column.name}"`;
  if (column.role !== 'tag') fail(table, `${col} must be a tag column, not ${column.role}`, { column: column.name });
  if (!Array.isArray(input.bounds)) return fail(table, `${col}: bounds must be an array`, { column: column.name });
  const bounds = input.bounds as unknown[];
  if (bounds.length > limits.maxPartitionBounds) {
    fail(table, `${col}: ${bounds.length} bounds, more than the limit of ${limits.maxPartitionBounds} (maxPartitionBounds)`, { column: column.name, limit: limits.maxPartitionBounds });
  }
  bounds.forEach((b, i) => {
    if (!isValueOfType(column.type, b)) {
      fail(table, `${col}: bound ${i} (${showAt(bounds, i, b)}) must be ${TYPE_DESCRIPTIONS[column.type]}`, { column: column.name, bound: i });
    }
    if (i > 0 && compareValues(bounds[i - 1] as Value, b as Value) >= 0) {
      fail(table, `${col}: bounds must be strictly increasing, but bound ${i} (${show(b)}) follows ${show(bounds[i - 1])}`, {
        column: column.name,
        bound: i,
      });
    }
  });
  return { column: column.name, bounds: bounds as (string | number)[] };
}

// ---------------------------------------------------------------- rows

// Rows to insert are validated as they are encoded, in one pass: see
// tableMutationCodec.preparePuts in ./codec.ts, which uses these.

export interface ValidateRowsOptions {
  /** Every column, fields included, must be present in each row (a field may still be null). */
  readonly requireAll?: boolean;
}

/** The INVALID_ROW error of a table's rows, naming the table: `fail(message, details)` throws it. */
export function rowsError(schema: TableSchema): (message: string, details?: Record<string, unknown>) => never {
  return (message, details) => {
    throw new RepriseError('INVALID_ROW', `table ${JSON.stringify(schema.name)}: ${message}`, { table: schema.name, ...details });
  };
}

export const hasOwn = (obj: object, key: string): boolean => Object.prototype.hasOwnProperty.call(obj, key);

/** Primary keys to delete: exactly the tag and time columns of each row, all non-null. */
export function validateKeys(schema: TableSchema, input: unknown): Row[] {
  const table = JSON.stringify(schema.name);
  const keysFail = (message: string, details?: Record<string, unknown>): never => {
    throw new RepriseError('INVALID_ROW', `table ${table}: ${message}`, { table: schema.name, ...details });
  };
  if (!Array.isArray(input)) return keysFail(`keys must be an array, got ${show(input)}`);
  const keyColumns = schema.columns.filter((c) => c.role !== 'field');
  const byName = new Map(schema.columns.map((c) => [c.name, c]));
  return input.map((raw, i) => {
    if (!isPlainObject(raw)) return keysFail(`key ${i}: expected an object, got ${show(raw)}`, { row: i });
    for (const k of Object.keys(raw)) {
      const c = byName.get(k);
      if (c === undefined) keysFail(`key ${i}: unknown column "${k}"`, { row: i, column: k });
      else if (c.role === 'field') keysFail(`key ${i}: field column "${k}" is not part of the primary key`, { row: i, column: k });
    }
    const key: Row = {};
    for (const c of keyColumns) {
      const v = raw[c.name];
      if (v === null || v === undefined) keysFail(`key ${i}: ${c.role} column "${c.name}" is required`, { row: i, column: c.name });
      if (!isValueOfType(c.type, v)) {
        keysFail(`key ${i}: column "${c.name}" must be ${TYPE_DESCRIPTIONS[c.type]}, got ${showAt(raw, c.name, v)}`, { row: i, column: c.name });
      }
      key[c.name] = v as Value;
    }
    return key;
  });
}

// ---------------------------------------------------------------- queries

export function validateQuery(schema: TableSchema, input: unknown): TableQuery {
  const table = JSON.stringify(schema.name);
  const queryFail = (message: string, details?: Record<string, unknown>): never => {
    throw new RepriseError('INVALID_QUERY', `query on table ${table}: ${message}`, { table: schema.name, ...details });
  };
  if (input === undefined) return {};
  if (!isPlainObject(input)) return queryFail(`expected an object, got ${show(input)}`);
  const bad = unknownKey(input, QUERY_KEYS);
  if (bad !== undefined) queryFail(`unknown key "${bad}" (expected where, timeRange, columns, limit, order, groupBy, interval, aggregates)`, { key: bad });
  const byName = new Map(schema.columns.map((c) => [c.name, c]));
  const query: { -readonly [K in keyof TableQuery]: TableQuery[K] } = {};

  if (input.where !== undefined) {
    if (!isPlainObject(input.where)) queryFail(`where must be an object, got ${show(input.where)}`);
    const where: Record<string, Value | RangeCondition> = {};
    for (const [name, cond] of Object.entries(input.where as Record<string, unknown>)) {
      const c = byName.get(name);
      if (c === undefined) queryFail(`where: unknown column "${name}"`, { column: name });
      else if (c.role === 'field') queryFail(`where: column "${name}" is a field; only tag and time columns can be filtered`, { column: name });
      const col = c as ColumnDef;
      /** `label` names the operand in the message ('' for a bare value), `key` is where `holder` has it. */
      const checkOperand = (holder: object, key: string | number, label: string, v: unknown): Value => {
        if (!isValueOfType(col.type, v)) {
          queryFail(`where: column "${name}"${label ? ` ${label}` : ''} must be ${TYPE_DESCRIPTIONS[col.type]}, got ${showAt(holder, key, v)}`, { column: name });
        }
        return v as Value;
      };
      /** An `in`/`notIn` list: checked, then sorted and without duplicates (the canonical form the engine plans by). */
      const checkList = (op: string, list: unknown): Value[] => {
        if (!Array.isArray(list)) {
          return queryFail(`where: column "${name}" ${op} must be a non-empty array of values (each ${TYPE_DESCRIPTIONS[col.type]}), got ${show(list)}`, { column: name });
        }
        if (list.length === 0) queryFail(`where: column "${name}" ${op} must be a non-empty array of values, got an empty array`, { column: name });
        if (list.length > MAX_IN_VALUES) {
          queryFail(`where: column "${name}" ${op}: ${list.length} values, more than the limit of ${MAX_IN_VALUES}`, { column: name, limit: MAX_IN_VALUES });
        }
        const values = (list as unknown[]).map((v, i) => checkOperand(list, i, `${op}[${i}]`, v));
        values.sort(compareValues);
        let n = 0;
        for (let i = 0; i < values.length; i++) if (n === 0 || compareValues(values[n - 1], values[i]) !== 0) values[n++] = values[i];
        values.length = n;
        return values;
      };
      if (isPlainObject(cond)) {
        const ops = Object.keys(cond);
        const badOp = ops.find((op) => !RANGE_KEYS.has(op));
        if (badOp !== undefined) queryFail(`where: column "${name}": unknown operator "${badOp}" (expected eq, gt, gte, lt, lte, in, notIn)`, { column: name });
        if (ops.length === 0) queryFail(`where: column "${name}": empty condition`, { column: name });
        const range: Record<string, Value | readonly Value[]> = {};
        for (const op of ops) range[op] = LIST_OPS.has(op) ? checkList(op, cond[op]) : checkOperand(cond, op, op, cond[op]);
        where[name] = range as RangeCondition;
      } else {
        where[name] = checkOperand(input.where as object, name, '', cond);
      }
    }
    query.where = where;
  }

  if (input.timeRange !== undefined) {
    const tr = input.timeRange;
    if (!isPlainObject(tr)) return queryFail(`timeRange must be an object, got ${show(tr)}`);
    const badKey = unknownKey(tr, TIME_RANGE_KEYS);
    if (badKey !== undefined) queryFail(`timeRange: unknown key "${badKey}" (expected from, to)`, { key: badKey });
    const range: { from?: number; to?: number } = {};
    for (const k of ['from', 'to'] as const) {
      if (tr[k] === undefined) continue;
      if (typeof tr[k] !== 'number' || !Number.isFinite(tr[k])) queryFail(`timeRange.${k} must be a finite number, got ${show(tr[k])}`);
      range[k] = tr[k] as number;
    }
    query.timeRange = range;
  }

  if (input.columns !== undefined) {
    if (!Array.isArray(input.columns) || input.columns.length === 0) queryFail('columns must be a non-empty array of column names');
    const cols = input.columns as unknown[];
    cols.forEach((name, i) => {
      if (typeof name !== 'string' || !byName.has(name)) queryFail(`columns: unknown column ${show(name)}`, { column: name });
      if (cols.indexOf(name) !== i) queryFail(`columns: column "${name as string}" is listed twice`, { column: name });
    });
    query.columns = cols as string[];
  }

  if (input.limit !== undefined) {
    if (!Number.isSafeInteger(input.limit) || (input.limit as number) <= 0) queryFail(`limit must be a positive integer, got ${showAt(input, 'limit', input.limit)}`);
    query.limit = input.limit as number;
  }

  if (input.order !== undefined) {
    if (input.order !== 'asc' && input.order !== 'desc') queryFail(`order must be "asc" or "desc", got ${show(input.order)}`);
    query.order = input.order as 'asc' | 'desc';
  }

  if (input.aggregates !== undefined) {
    if (!Array.isArray(input.aggregates) || input.aggregates.length === 0) queryFail('aggregates must be a non-empty array of {fn, column, as}');
    if (query.columns !== undefined) queryFail('columns cannot be combined with aggregates: the output columns are the groupBy tags, the time bucket and the aggregates');
    const names = new Set<string>();
    query.aggregates = (input.aggregates as unknown[]).map((a, i) => {
      const where = `aggregates[${i}]`;
      if (!isPlainObject(a)) return queryFail(`${where} must be an object {fn, column, as}, got ${show(a)}`);
      const badKey = unknownKey(a, AGGREGATE_KEYS);
      if (badKey !== undefined) queryFail(`${where}: unknown key "${badKey}" (expected fn, column, as)`, { key: badKey });
      const fn = a.fn;
      if (typeof fn !== 'string' || !(AGGREGATE_FNS as readonly string[]).includes(fn)) queryFail(`${where}: fn must be one of ${AGGREGATE_FNS.join(', ')}, got ${show(fn)}`);
      let column: string | undefined;
      if (a.column === undefined) {
        if (fn !== 'count') queryFail(`${where}: ${fn as string} needs a column`);
      } else {
        const c = typeof a.column === 'string' ? byName.get(a.column) : undefined;
        if (c === undefined) return queryFail(`${where}: unknown column ${show(a.column)}`, { column: a.column });
        if (c.role !== 'field') queryFail(`${where}: column "${c.name}" is a ${c.role}; aggregates take field columns`, { column: c.name });
        if ((fn === 'sum' || fn === 'avg' || fn === 'min' || fn === 'max') && !NUMERIC_TYPES.has(c.type)) {
          queryFail(`${where}: ${fn as string} needs a numeric column, "${c.name}" is ${c.type}`, { column: c.name });
        }
        column = c.name;
      }
      if (a.as !== undefined && !isValidName(a.as)) queryFail(`${where}: as must be a name of letters, digits and _ (not ${RESERVED_NAME}), got ${show(a.as)}`);
      const name = aggregateName({ fn: fn as AggregateFn, column, as: a.as as string | undefined });
      if (names.has(name) || byName.get(name)?.role === 'tag' || byName.get(name)?.role === 'time') queryFail(`${where}: output column "${name}" is used twice`);
      names.add(name);
      return { fn: fn as AggregateFn, ...(column !== undefined ? { column } : {}), ...(a.as !== undefined ? { as: a.as as string } : {}) };
    });
  }

  if (input.groupBy !== undefined) {
    if (query.aggregates === undefined) queryFail('groupBy needs aggregates');
    if (!Array.isArray(input.groupBy)) return queryFail('groupBy must be an array of tag column names');
    const tags = input.groupBy as unknown[];
    tags.forEach((name, i) => {
      const c = typeof name === 'string' ? byName.get(name) : undefined;
      if (c === undefined) queryFail(`groupBy: unknown column ${show(name)}`, { column: name });
      else if (c.role !== 'tag') queryFail(`groupBy: column "${c.name}" is a ${c.role}; group by tags (and interval for time)`, { column: c.name });
      if (tags.indexOf(name) !== i) queryFail(`groupBy: column "${name as string}" is listed twice`, { column: name });
    });
    query.groupBy = tags as string[];
  }

  if (input.interval !== undefined) {
    if (query.aggregates === undefined) queryFail('interval needs aggregates');
    if (!Number.isSafeInteger(input.interval) || (input.interval as number) <= 0) queryFail(`interval must be a positive integer (ms), got ${showAt(input, 'interval', input.interval)}`);
    query.interval = input.interval as number;
  }
  return query;
}
