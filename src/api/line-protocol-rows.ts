import type { ColumnDef, ColumnType, Row, TableSchema, Value } from '../engine/schema.js';
import { isValidName } from '../engine/table/validate.js';
import { RepriseError } from '../errors.js';
import {
  BACKSLASH,
  COMMA,
  eachLine,
  EQUALS,
  FALSE,
  FLOAT_RE,
  LOWER_E,
  LOWER_I,
  LOWER_U,
  parseLineOrError,
  QUOTE,
  SPACE,
  TooManyLinesError,
  TRUE,
  type FieldValue,
  type LineError,
  type Point,
} from './line-protocol.js';

/**
 * Line protocol as rows of tables, as InfluxDB and GreptimeDB map it:
 * measurement -> table, tags -> tag (primary key) columns, fields -> field
 * columns, timestamp -> the time column (epoch ms). A measurement without a
 * table gets a schema derived from its lines (autoCreateTables, with the time
 * column `ts` and no partition rule). A table must already have every column
 * a line names: schema evolution is not supported. Pure: the HTTP route
 * (./influxdb.ts) runs it on the main thread or an ingest worker
 * (./write-encoding.ts) alike.
 */

export type Precision = 'ns' | 'us' | 'ms' | 's' | 'm' | 'h';

/** Units per millisecond (sub-ms precisions) or milliseconds per unit. */
const PRECISIONS: Record<string, Precision> = { ns: 'ns', n: 'ns', us: 'us', u: 'us', ms: 'ms', s: 's', m: 'm', h: 'h' };

/** The time column of tables created from line protocol. */
export const TIME_COLUMN = 'ts';


export function parsePrecision(value: string | undefined): Precision {
  if (value === undefined || value === '') return 'ns';
  const precision = PRECISIONS[value];
  if (!precision) throw new RepriseError('INVALID_ARGUMENT', `precision '${value}' is not one of ns, us, ms, s (or n, u, m, h)`);
  return precision;
}

/** A timestamp in `precision` units as epoch milliseconds (rounded down). */
export function toEpochMs(timestamp: bigint, precision: Precision): bigint {
  const floorDiv = (a: bigint, b: bigint) => (a >= 0n || a % b === 0n ? a / b : a / b - 1n);
  switch (precision) {
    case 'ns':
      return floorDiv(timestamp, 1_000_000n);
    case 'us':
      return floorDiv(timestamp, 1_000n);
    case 'ms':
      return timestamp;
    case 's':
      return timestamp * 1_000n;
    case 'm':
      return timestamp * 60_000n;
    case 'h':
      return timestamp * 3_600_000n;
  }
}

/** The latest time a row holds (epoch ms, a safe integer). */
const MAX_SAFE_MS = BigInt(Number.MAX_SAFE_INTEGER);

const NAME_RULE = '(letters, digits and _, not starting with a digit; not __proto__)';

/** A batch of line protocol rarely names more than a few measurements; each new one is a table with its regions. */
export const DEFAULT_MAX_TABLES_PER_WRITE = 100;

/**
 * Rows (or keys, or lines) one write may carry: 20 times the batch InfluxDB
 * recommends (5,000 lines), 100 times Telegraf's default (1,000). The body
 * limit alone allows ten million short lines, each parsed into objects.
 */
export const DEFAULT_MAX_ROWS_PER_WRITE = 100_000;

/** REQUEST_TOO_LARGE for a write that holds `what` ("12 rows", "more than 5 lines"), past `limit` (limits.maxRowsPerWrite): nothing is written. */
export function tooManyRows(what: string, limit: number): RepriseError {
  return new RepriseError('REQUEST_TOO_LARGE', `nothing written: the request holds ${what}, past the limit of ${limit} rows per write (maxRowsPerWrite); send them over several requests`, { limit });
}

/** REQUEST_TOO_LARGE if `rows` (a parsed JSON body) is an array of more than `limit` rows. */
export function checkRowCount(rows: unknown, limit: number): void {
  if (Array.isArray(rows) && rows.length > limit) throw tooManyRows(`${rows.length} rows`, limit);
}

const FIELD_TYPES: Record<FieldValue['type'], ColumnType> = {
  float: 'float64',
  integer: 'int64',
  unsigned: 'int64',
  boolean: 'bool',
  string: 'string',
};

function describeValue(v: FieldValue): string {
  switch (v.type) {
    case 'float':
      return `a float (${v.value})`;
    case 'integer':
      return `an integer (${v.value}i)`;
    case 'unsigned':
      return `an unsigned integer (${v.value}u)`;
    case 'boolean':
      return `a boolean (${v.value})`;
    case 'string':
      return 'a string';
  }
}

/** The schema a new table gets from its first write: tags, then fields, in the order first seen, then `ts`. */
function deriveSchema(measurement: string, points: readonly Point[], errors: Map<number, string>): TableSchema {
  const columns = new Map<string, ColumnDef>();
  for (const p of points) {
    const problem = schemaProblem(p, columns);
    if (problem) {
      errors.set(p.line, problem);
      continue;
    }
    for (const [key] of p.tags) if (!columns.has(key)) columns.set(key, { name: key, type: 'string', role: 'tag' });
    for (const [key, value] of p.fields) if (!columns.has(key)) columns.set(key, { name: key, type: FIELD_TYPES[value.type], role: 'field' });
  }
  return { name: measurement, columns: [...columns.values(), { name: TIME_COLUMN, type: 'timestamp', role: 'time' }] };
}

/** Why a point cannot shape (or join) a table being derived, if it cannot. */
function schemaProblem(p: Point, columns: Map<string, ColumnDef>): string | undefined {
  for (const [key, role] of [...p.tags.map(([k]) => [k, 'tag'] as const), ...p.fields.map(([k]) => [k, 'field'] as const)]) {
    if (!isValidName(key)) return `${role} '${key}' is not a valid column name ${NAME_RULE}`;
    if (key === TIME_COLUMN) return `${role} '${key}' uses the name of the time column '${TIME_COLUMN}'`;
    const known = columns.get(key);
    if (known && known.role !== role) return `'${key}' is a ${role} here but a ${known.role} in earlier lines of measurement '${p.measurement}'`;
  }
  for (const [key, value] of p.fields) {
    const known = columns.get(key);
    if (known && known.type !== FIELD_TYPES[value.type]) {
      return `field '${key}' is ${describeValue(value)} here but ${known.type} in earlier lines of measurement '${p.measurement}'`;
    }
  }
  return undefined;
}

/** A point as a row of `schema`, or why it cannot be one. */
export function toRow(p: Point, schema: TableSchema, precision: Precision, nowMs: number): Row | string {
  const { table, columns, index, emptyValues, neededTags, timePosition, rowOf } = rowShapeOf(schema);
  const values = emptyValues.slice();
  const missing = (key: string, role: string) =>
    `${table} has no column '${key}' (${role} of line protocol): adding columns to an existing table (schema evolution) is not supported; create the table with every column first`;
  for (const [key, value] of p.tags) {
    const at = index.get(key);
    if (at === undefined) return missing(key, 'a tag');
    const c = columns[at]!;
    if (c.role !== 'tag') return `'${key}' is a ${c.role} column of ${table}, not a tag`;
    if (c.type !== 'string') return `tag column '${key}' of ${table} has type ${c.type}; line protocol tags are strings`;
    values[at] = value;
  }
  for (const [key, value] of p.fields) {
    const at = index.get(key);
    if (at === undefined) return missing(key, 'a field');
    const c = columns[at]!;
    if (c.role !== 'field') return `'${key}' is a ${c.role} column of ${table}, not a field`;
    if (c.type !== FIELD_TYPES[value.type]) return `field '${key}' is ${c.type} in ${table}, but this line has ${describeValue(value)}`;
    if (value.type === 'integer' || value.type === 'unsigned') {
      const n = Number(value.value);
      if (!Number.isSafeInteger(n)) return `field '${key}': ${value.value} is outside the integers int64 columns hold exactly (±2^53-1)`;
      values[at] = n;
    } else {
      values[at] = value.value;
    }
  }
  for (const c of neededTags) {
    if (!p.tags.some(([k]) => k === c.name)) {
      return `${table} needs tag '${c.name}' (a tag column of type ${c.type}: only string tags can be left out, as empty strings)`;
    }
  }
  let ms: bigint;
  if (p.timestamp === undefined) ms = BigInt(nowMs);
  else ms = toEpochMs(p.timestamp, precision);
  if (ms < 0n || ms > MAX_SAFE_MS) return `timestamp ${p.timestamp} (${precision}) is not a time from 1970 on`;
  values[timePosition] = Number(ms);
  return rowOf(values);
}

/** What toRow and lineAsRow need of a schema, computed once per schema object (not per line). */
interface RowShape {
  readonly table: string;
  readonly columns: readonly ColumnDef[];
  /** Column name -> position. */
  readonly index: ReadonlyMap<string, number>;
  /** The tags' and the fields' positions, in schema order. */
  readonly tagPositions: readonly number[];
  readonly fieldPositions: readonly number[];
  readonly timePosition: number;
  /** Tags a line must name: those that are not strings. */
  readonly neededTags: readonly ColumnDef[];
  /** Per column, its value when a line does not name it: '' for a tag, null otherwise. */
  readonly emptyValues: readonly Value[];
  /**
   * The row of `values` (schema order). Compiled, so every row has one
   * hidden class with its columns in order (the encoder's in-order fast path).
   */
  readonly rowOf: (values: readonly Value[]) => Row;
}

const rowShapes = new WeakMap<TableSchema, RowShape>();

function rowShapeOf(schema: TableSchema): RowShape {
  let shape = rowShapes.get(schema);
  if (shape === undefined) {
    const positionsOf = (role: ColumnDef['role']) => schema.columns.flatMap((c, i) => (c.role === role ? [i] : []));
    shape = {
      table: `table '${schema.name}'`,
      columns: schema.columns,
      index: new Map(schema.columns.map((c, i) => [c.name, i])),
      tagPositions: positionsOf('tag'),
      fieldPositions: positionsOf('field'),
      timePosition: positionsOf('time')[0]!,
      neededTags: schema.columns.filter((c) => c.role === 'tag' && c.type !== 'string'),
      emptyValues: schema.columns.map((c) => (c.role === 'tag' ? '' : null)),
      // Column names are checked names (letters, digits, _), quoted by JSON.stringify all the same.
      // eslint-disable-next-line @typescript-eslint/no-implied-eval
      rowOf: new Function(`return (v) => ({ ${schema.columns.map((c, i) => `${JSON.stringify(c.name)}: v[${i}]`).join(', ')} });`)() as (values: readonly Value[]) => Row,
    };
    rowShapes.set(schema, shape);
  }
  return shape;
}

/** The lines of one measurement, as rows of its table. */
export interface LinePlan {
  readonly schema: TableSchema;
  /** The table does not exist: `schema` is derived from these lines, for autoCreateTables. */
  readonly create: boolean;
  /** The points of a table to create (to map again if another request creates it first); none otherwise. */
  readonly points: readonly Point[];
  readonly rows: Row[];
}

export interface PlannedLines {
  readonly plans: LinePlan[];
  /** Each bad line's message (naming the line), by line number. */
  readonly bad: Map<number, string>;
}

export interface LinePlanOptions {
  readonly precision: Precision;
  readonly autoCreateTables: boolean;
  /** Tables one request may create (more: REQUEST_TOO_LARGE). Default DEFAULT_MAX_TABLES_PER_WRITE. */
  readonly maxTablesPerWrite?: number;
  /** Lines one request may hold (more: REQUEST_TOO_LARGE). Default DEFAULT_MAX_ROWS_PER_WRITE. */
  readonly maxRowsPerWrite?: number;
  /** The server's clock when the request arrived, for points without a timestamp. */
  readonly nowMs: number;
}

/**
 * Parse a body and map every point to a row of its table (`schemaOf`), or of
 * the table its measurement would create. Every bad line is in `bad`;
 * REQUEST_TOO_LARGE (nothing to write) past the line or table limits.
 */
export function planLines(body: string, schemaOf: (table: string) => TableSchema | undefined, options: LinePlanOptions): PlannedLines {
  const maxRows = options.maxRowsPerWrite ?? DEFAULT_MAX_ROWS_PER_WRITE;
  const bad = new Map<number, string>();
  // By measurement, in the order first seen: the rows of a table that exists, the points of one that does not.
  type Group = { readonly schema: TableSchema | undefined; readonly rows: Row[]; readonly points: Point[] };
  const byMeasurement = new Map<string, Group>();
  const groupOf = (measurement: string) => {
    let group = byMeasurement.get(measurement);
    if (group === undefined) byMeasurement.set(measurement, (group = { schema: schemaOf(measurement), rows: [], points: [] }));
    return group;
  };
  // The previous line's measurement and group: a body is mostly runs of one measurement, found again without a slice.
  let lastName = '';
  let lastGroup: Group | undefined;
  try {
    eachLine(body, maxRows, (line, lineNo) => {
      // The common line of an existing table becomes its row directly; any other goes through the point.
      const end = plainMeasurementEnd(line);
      if (end > 0) {
        if (lastGroup === undefined || end !== lastName.length || !line.startsWith(lastName)) {
          lastName = line.slice(0, end);
          lastGroup = groupOf(lastName);
        }
        const group = lastGroup;
        const row = group.schema && lineAsRow(line, end, group.schema, options.precision, options.nowMs);
        if (row) {
          group.rows.push(row);
          return;
        }
      }
      const p = parseLineOrError(line, lineNo);
      if (!('measurement' in p)) {
        bad.set(p.line, p.message);
        return;
      }
      const group = groupOf(p.measurement);
      if (group.schema === undefined) {
        group.points.push(p);
        return;
      }
      const row = toRow(p, group.schema, options.precision, options.nowMs);
      if (typeof row === 'string') bad.set(p.line, `line ${p.line}: ${row}`);
      else group.rows.push(row);
    });
  } catch (err) {
    if (err instanceof TooManyLinesError) throw tooManyRows(`more than ${maxRows} lines`, maxRows);
    throw err;
  }
  const plans: LinePlan[] = [];
  for (const [measurement, { schema, rows, points }] of byMeasurement) {
    if (schema) {
      plans.push({ schema, create: false, points: [], rows });
      continue;
    }
    const problem = !options.autoCreateTables
      ? `table '${measurement}' does not exist (autoCreateTables is off)`
      : !isValidName(measurement)
        ? `measurement '${measurement}' is not a valid table name ${NAME_RULE}`
        : undefined;
    if (problem) {
      for (const p of points) bad.set(p.line, `line ${p.line}: ${problem}`);
      continue;
    }
    const shapeErrors = new Map<number, string>();
    const derived = deriveSchema(measurement, points, shapeErrors);
    for (const [line, message] of shapeErrors) bad.set(line, `line ${line}: ${message}`);
    const good = points.filter((p) => !shapeErrors.has(p.line));
    if (good.length > 0) plans.push({ schema: derived, create: true, points: good, rows: mapPoints(good, derived, options, bad) });
  }
  const creating = plans.filter((p) => p.create).length;
  const maxTables = options.maxTablesPerWrite ?? DEFAULT_MAX_TABLES_PER_WRITE;
  if (creating > maxTables) {
    throw new RepriseError('REQUEST_TOO_LARGE', `nothing written: the request would create ${creating} tables, more than the limit of ${maxTables} per write (maxTablesPerWrite); create them over several requests`, {
      tables: creating,
      limit: maxTables,
    });
  }
  return { plans, bad };
}

/** `points` as rows of `schema`; a point that cannot be one goes to `bad` instead. */
export function mapPoints(points: readonly Point[], schema: TableSchema, options: Pick<LinePlanOptions, 'precision' | 'nowMs'>, bad: Map<number, string>): Row[] {
  const rows: Row[] = [];
  for (const p of points) {
    const row = toRow(p, schema, options.precision, options.nowMs);
    if (typeof row === 'string') bad.set(p.line, `line ${p.line}: ${row}`);
    else rows.push(row);
  }
  return rows;
}

/** The bad lines in line order. */
export function rejectedLines(bad: ReadonlyMap<number, string>): LineError[] {
  return [...bad].sort((a, b) => a[0] - b[0]).map(([line, message]) => ({ line, message }));
}

// ---------------------------------------------------------------- the common line, directly

/** Where a line's measurement ends (its first comma or space), if it has no backslash before; else -1. */
function plainMeasurementEnd(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === COMMA || c === SPACE) return i;
    if (c === BACKSLASH) return -1;
  }
  return -1;
}

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const INT64_MAX_DIGITS = '9223372036854775807';
/** An int64 field a double holds exactly: at most 15 digits. */
const SHORT_INTEGER_RE = /^[-+]?\d{1,15}i$/;

/**
 * The row `s` (a line whose measurement, a table with `schema`, ends at
 * `from`) is, written straight from the text without building its point:
 * for lines with no escapes, one space between parts, each tag and field a
 * column of the table given once, values of their column's type (floats,
 * integers of up to 15 digits, booleans, strings without escapes) and a
 * non-negative timestamp. undefined for any other line, which then takes
 * the general path (parseLine, toRow) and gets its row or its error there.
 * On every line it accepts it gives the row that path gives (the property
 * test checks): it is that path for the common line, not a second one.
 */
export function lineAsRow(s: string, from: number, schema: TableSchema, precision: Precision, nowMs: number): Row | undefined {
  const shape = rowShapeOf(schema);
  if (shape.neededTags.length > 0) return undefined;
  const { columns } = shape;
  const n = s.length;
  const values = shape.emptyValues.slice();
  let i = from;
  // Keys are matched in place against the next column of their kind in schema order (the usual order), else looked up.
  let nextTag = 0;
  while (s.charCodeAt(i) === COMMA) {
    i++;
    const at = keyAt(s, i, shape, shape.tagPositions, nextTag);
    if (at < 0) return undefined;
    const column = columns[at]!;
    // Not a string tag, or given twice ('' until set: a tag value is never empty).
    if (column.role !== 'tag' || column.type !== 'string' || values[at] !== '') return undefined;
    nextTag = shape.tagPositions.indexOf(at) + 1;
    i += column.name.length + 1;
    const v0 = i;
    for (let c = s.charCodeAt(i); i < n && c !== COMMA && c !== SPACE; c = s.charCodeAt(++i)) if (c === BACKSLASH) return undefined;
    if (i === v0) return undefined;
    values[at] = s.slice(v0, i);
  }
  if (s.charCodeAt(i) !== SPACE || s.charCodeAt(i + 1) === SPACE) return undefined;
  i++;
  let nextField = 0;
  for (;;) {
    const at = keyAt(s, i, shape, shape.fieldPositions, nextField);
    if (at < 0) return undefined;
    const column = columns[at]!;
    // Not a field, or given twice (null until set: a field value is never null).
    if (column.role !== 'field' || values[at] !== null) return undefined;
    nextField = shape.fieldPositions.indexOf(at) + 1;
    i += column.name.length + 1;
    if (s.charCodeAt(i) === QUOTE) {
      const v0 = ++i;
      for (let c = s.charCodeAt(i); c !== QUOTE; c = s.charCodeAt(++i)) if (i >= n || c === BACKSLASH) return undefined;
      if (column.type !== 'string') return undefined;
      values[at] = s.slice(v0, i++);
    } else {
      const v0 = i;
      while (i < n && s.charCodeAt(i) !== COMMA && s.charCodeAt(i) !== SPACE) i++;
      if (i === v0) return undefined;
      const token = s.slice(v0, i);
      const last = token.charCodeAt(token.length - 1);
      if (column.type === 'float64') {
        if (last === LOWER_I || last === LOWER_U || last === LOWER_E || !FLOAT_RE.test(token)) return undefined;
        const value = Number(token);
        if (!Number.isFinite(value)) return undefined;
        values[at] = value;
      } else if (column.type === 'int64') {
        if (!SHORT_INTEGER_RE.test(token)) return undefined;
        // + 0: "-0i" is the integer 0, not the float -0.
        values[at] = Number(token.slice(0, -1)) + 0;
      } else if (column.type === 'bool') {
        if (TRUE.has(token)) values[at] = true;
        else if (FALSE.has(token)) values[at] = false;
        else return undefined;
      } else {
        return undefined;
      }
    }
    const c = s.charCodeAt(i);
    if (c === COMMA) {
      i++;
      continue;
    }
    if (i < n && c !== SPACE) return undefined;
    break;
  }
  let ms = nowMs;
  if (i < n) {
    const t0 = ++i;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < DIGIT_0 || c > DIGIT_9) return undefined;
    }
    const digits = n - t0;
    if (digits === 0 || digits > 19 || (digits === 19 && s.slice(t0) > INT64_MAX_DIGITS)) return undefined;
    // Non-negative: rounding down to ms is dropping digits.
    const drop = precision === 'ns' ? 6 : precision === 'us' ? 3 : 0;
    const kept = digits <= drop ? 0 : Number(s.slice(t0, n - drop));
    ms = kept * (precision === 's' ? 1_000 : precision === 'm' ? 60_000 : precision === 'h' ? 3_600_000 : 1);
    if (!(ms <= Number.MAX_SAFE_INTEGER)) return undefined;
  }
  values[shape.timePosition] = ms;
  return shape.rowOf(values);
}

/**
 * The column whose name is the key at `k` (followed by '='): first the
 * column at `positions[next]` is tried in place, else the key is read (no
 * comma, space or backslash in it) and looked up. -1: no such column.
 */
function keyAt(s: string, k: number, shape: RowShape, positions: readonly number[], next: number): number {
  const expected = positions[next];
  if (expected !== undefined) {
    const name = shape.columns[expected]!.name;
    if (s.startsWith(name, k) && s.charCodeAt(k + name.length) === EQUALS) return expected;
  }
  let i = k;
  for (let c = s.charCodeAt(i); c !== EQUALS; c = s.charCodeAt(++i)) if (i >= s.length || c === COMMA || c === SPACE || c === BACKSLASH) return -1;
  return shape.index.get(s.slice(k, i)) ?? -1;
}
