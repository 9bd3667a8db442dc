import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ColumnDef, ColumnType, Row, TableSchema } from '../engine/schema.js';
import type { Deadline } from '../deadline.js';
import { isValidName } from '../engine/table/validate.js';
import { RepriseError } from '../errors.js';
import { clientDeadline } from './client-deadline.js';
import { parseLineProtocol, TooManyLinesError, type FieldValue, type LineError, type Point } from './line-protocol.js';
import type { Reprise } from './runtime.js';

/**
 * InfluxDB line protocol ingestion, as InfluxDB and GreptimeDB offer it:
 * measurement -> table, tags -> tag (primary key) columns, fields -> field
 * columns, timestamp -> the time column (epoch ms). A table that does not
 * exist is created on first write (autoCreateTables, with the time column
 * `ts` and no partition rule); requests that write a new measurement at once
 * create it once and all write to it (Reprise.ensureTable). An existing
 * table (or one another request created first) must already have every
 * column a line names: schema evolution is not supported.
 */

export type Precision = 'ns' | 'us' | 'ms' | 's' | 'm' | 'h';

/** Units per millisecond (sub-ms precisions) or milliseconds per unit. */
const PRECISIONS: Record<string, Precision> = { ns: 'ns', n: 'ns', us: 'us', u: 'us', ms: 'ms', s: 's', m: 'm', h: 'h' };

/** The time column of tables created from line protocol. */
export const TIME_COLUMN = 'ts';


/** The `partial` query parameter: true, false, 1 or 0 (absent: false). */
export function parsePartial(value: unknown): boolean {
  if (value === undefined || value === 'false' || value === '0') return false;
  if (value === 'true' || value === '1') return true;
  throw new RepriseError('INVALID_ARGUMENT', `query parameter partial must be true or false (or 1 or 0), got ${JSON.stringify(value)}`, { parameter: 'partial' });
}

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

export interface LineProtocolOptions {
  readonly precision: Precision;
  /** Write the good lines and report the bad ones (default: any bad line rejects the whole request). */
  readonly partial: boolean;
  readonly autoCreateTables: boolean;
  /** Tables one request may create (more: REQUEST_TOO_LARGE, nothing written). Default DEFAULT_MAX_TABLES_PER_WRITE. */
  readonly maxTablesPerWrite?: number;
  /** Lines one request may hold (more: REQUEST_TOO_LARGE, nothing written). Default DEFAULT_MAX_ROWS_PER_WRITE. */
  readonly maxRowsPerWrite?: number;
  /** The server's clock, for points without a timestamp. */
  readonly now?: () => number;
  /** Rows whose appends have not started when it passes are dropped (DEADLINE_EXCEEDED). */
  readonly deadline?: Deadline;
}

export interface LineProtocolResult {
  /** Points written. */
  readonly written: number;
  /** Bad lines (only with `partial`; otherwise a bad line throws). */
  readonly rejected: LineError[];
  /** Tables this request created. */
  readonly created: string[];
}

/** A request rejected because of its lines: the HTTP layer reports each. */
export class LineProtocolError extends RepriseError {
  constructor(
    message: string,
    readonly lines: LineError[],
  ) {
    super('INVALID_ROW', message);
  }
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
function toRow(p: Point, schema: TableSchema, options: LineProtocolOptions, nowMs: number): Row | string {
  const table = `table '${schema.name}'`;
  const byName = new Map(schema.columns.map((c) => [c.name, c]));
  const row: Row = {};
  for (const c of schema.columns) row[c.name] = c.role === 'tag' ? '' : null;
  const missing = (key: string, role: string) =>
    `${table} has no column '${key}' (${role} of line protocol): adding columns to an existing table (schema evolution) is not supported; create the table with every column first`;
  for (const [key, value] of p.tags) {
    const c = byName.get(key);
    if (!c) return missing(key, 'a tag');
    if (c.role !== 'tag') return `'${key}' is a ${c.role} column of ${table}, not a tag`;
    if (c.type !== 'string') return `tag column '${key}' of ${table} has type ${c.type}; line protocol tags are strings`;
    row[key] = value;
  }
  for (const [key, value] of p.fields) {
    const c = byName.get(key);
    if (!c) return missing(key, 'a field');
    if (c.role !== 'field') return `'${key}' is a ${c.role} column of ${table}, not a field`;
    if (c.type !== FIELD_TYPES[value.type]) return `field '${key}' is ${c.type} in ${table}, but this line has ${describeValue(value)}`;
    if (value.type === 'integer' || value.type === 'unsigned') {
      const n = Number(value.value);
      if (!Number.isSafeInteger(n)) return `field '${key}': ${value.value} is outside the integers int64 columns hold exactly (±2^53-1)`;
      row[key] = n;
    } else {
      row[key] = value.value;
    }
  }
  for (const c of schema.columns) {
    if (c.role === 'tag' && c.type !== 'string' && !p.tags.some(([k]) => k === c.name)) {
      return `${table} needs tag '${c.name}' (a tag column of type ${c.type}: only string tags can be left out, as empty strings)`;
    }
  }
  const time = schema.columns.find((c) => c.role === 'time')!;
  let ms: bigint;
  if (p.timestamp === undefined) ms = BigInt(nowMs);
  else ms = toEpochMs(p.timestamp, options.precision);
  if (ms < 0n || ms > BigInt(Number.MAX_SAFE_INTEGER)) return `timestamp ${p.timestamp} (${options.precision}) is not a time from 1970 on`;
  row[time.name] = Number(ms);
  return row;
}

function summary(errors: LineError[]): string {
  const shown = errors.slice(0, 3).map((e) => e.message);
  const more = errors.length > shown.length ? `; and ${errors.length - shown.length} more` : '';
  return `${errors.length} bad line${errors.length === 1 ? '' : 's'}: ${shown.join('; ')}${more}`;
}

/** Parse, map and write a line protocol body. Throws LineProtocolError for bad lines unless `partial`. */
export async function writeLineProtocol(runtime: Reprise, body: string, options: LineProtocolOptions): Promise<LineProtocolResult> {
  const nowMs = (options.now ?? Date.now)();
  const maxRows = options.maxRowsPerWrite ?? DEFAULT_MAX_ROWS_PER_WRITE;
  let parsed: ReturnType<typeof parseLineProtocol>;
  try {
    parsed = parseLineProtocol(body, maxRows);
  } catch (err) {
    if (err instanceof TooManyLinesError) throw tooManyRows(`more than ${maxRows} lines`, maxRows);
    throw err;
  }
  const { points, errors: syntaxErrors } = parsed;
  const bad = new Map<number, string>(syntaxErrors.map((e) => [e.line, e.message]));
  const byMeasurement = new Map<string, Point[]>();
  for (const p of points) {
    const list = byMeasurement.get(p.measurement);
    if (list) list.push(p);
    else byMeasurement.set(p.measurement, [p]);
  }
  const existing = new Map(runtime.listTables().map((t) => [t.name, t.schema]));
  const plans: { schema: TableSchema; create: boolean; points: Point[] }[] = [];
  for (const [measurement, list] of byMeasurement) {
    const schema = existing.get(measurement);
    if (schema) {
      plans.push({ schema, create: false, points: list });
      continue;
    }
    const problem = !options.autoCreateTables
      ? `table '${measurement}' does not exist (autoCreateTables is off)`
      : !isValidName(measurement)
        ? `measurement '${measurement}' is not a valid table name ${NAME_RULE}`
        : undefined;
    if (problem) {
      for (const p of list) bad.set(p.line, `line ${p.line}: ${problem}`);
      continue;
    }
    const shapeErrors = new Map<number, string>();
    const derived = deriveSchema(measurement, list, shapeErrors);
    for (const [line, message] of shapeErrors) bad.set(line, `line ${line}: ${message}`);
    const good = list.filter((p) => !shapeErrors.has(p.line));
    if (good.length > 0) plans.push({ schema: derived, create: true, points: good });
  }

  const creating = plans.filter((p) => p.create).length;
  const maxTables = options.maxTablesPerWrite ?? DEFAULT_MAX_TABLES_PER_WRITE;
  if (creating > maxTables) {
    throw new RepriseError('REQUEST_TOO_LARGE', `nothing written: the request would create ${creating} tables, more than the limit of ${maxTables} per write (maxTablesPerWrite); create them over several requests`, {
      tables: creating,
      limit: maxTables,
    });
  }

  // Map every point before anything is written: all or nothing unless partial.
  const mapAll = (plan: (typeof plans)[number]) => {
    const rows: Row[] = [];
    for (const p of plan.points) {
      const row = toRow(p, plan.schema, options, nowMs);
      if (typeof row === 'string') bad.set(p.line, `line ${p.line}: ${row}`);
      else rows.push(row);
    }
    return rows;
  };
  let rowsByPlan = plans.map(mapAll);
  const rejected = () => [...bad].sort((a, b) => a[0] - b[0]).map(([line, message]) => ({ line, message }));
  if (bad.size > 0 && !options.partial) throw new LineProtocolError(`nothing written: ${summary(rejected())}`, rejected());

  const created: string[] = [];
  for (const [i, plan] of plans.entries()) {
    if (!plan.create || rowsByPlan[i]!.length === 0) continue;
    // Created once however many requests write a new measurement at once;
    // each of the others waits until that table is visible.
    const { table, created: mine } = await runtime.ensureTable(plan.schema);
    if (mine) {
      created.push(plan.schema.name);
      continue;
    }
    // Another request created it first: its columns decide, as for any existing table.
    plans[i] = { ...plan, schema: table.schema, create: false };
    rowsByPlan[i] = mapAll(plans[i]!);
  }
  if (bad.size > 0 && !options.partial) throw new LineProtocolError(`nothing written: ${summary(rejected())}`, rejected());

  let written = 0;
  await Promise.all(
    plans.map(async (plan, i) => {
      const rows = rowsByPlan[i]!;
      if (rows.length === 0) return;
      written += (await runtime.insert(plan.schema.name, rows, options.deadline)).written;
    }),
  );
  rowsByPlan = [];
  return { written, rejected: rejected(), created };
}

/**
 * The InfluxDB write endpoints: `POST /v1/influxdb/write?db=&precision=`
 * (v1) and `POST /v1/influxdb/api/v2/write?org=&bucket=&precision=` (v2, what
 * the official clients call with the URL `http://host:port/v1/influxdb`), plus
 * ping and health. `db`/`bucket`/`org` are accepted and ignored: reprise has
 * one database.
 */
export function registerInfluxRoutes(
  app: FastifyInstance,
  runtime: Reprise,
  options: { autoCreateTables: boolean; bodyLimit: number; maxTablesPerWrite?: number; maxRowsPerWrite?: number },
): void {
  void app.register(async (scope) => {
    // Line protocol comes as text/plain, form-encoded (curl -d) or anything else: take the bytes.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    // The body is line protocol whatever its Content-Type says, as InfluxDB
    // takes it: an empty or unparseable one must not fail fastify's media-type
    // check before the parser above is reached.
    scope.addHook('onRequest', (request, _reply, done) => {
      delete request.raw.headers['content-type'];
      done();
    });
    const gunzipAsync = promisify(gunzip);

    const write = async (
      request: { query: Record<string, string | undefined>; body: unknown; headers: Record<string, string | string[] | undefined> },
      reply: FastifyReply,
    ) => {
      const precision = parsePrecision(request.query.precision);
      const partial = parsePartial(request.query.partial);
      let bytes = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const encoding = String(request.headers['content-encoding'] ?? 'identity').toLowerCase();
      if (encoding === 'gzip') {
        try {
          bytes = await gunzipAsync(bytes, { maxOutputLength: options.bodyLimit });
        } catch (err) {
          const tooLarge = (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
          throw new RepriseError(tooLarge ? 'REQUEST_TOO_LARGE' : 'INVALID_ARGUMENT', `gzip body ${tooLarge ? 'is larger than the limit once decompressed' : `cannot be decompressed: ${(err as Error).message}`}`);
        }
      } else if (encoding !== 'identity') {
        throw new RepriseError('INVALID_ARGUMENT', `Content-Encoding '${encoding}' is not supported (gzip or none)`);
      }
      try {
        const result = await writeLineProtocol(runtime, bytes.toString('utf8'), {
          precision,
          partial,
          autoCreateTables: options.autoCreateTables,
          maxTablesPerWrite: options.maxTablesPerWrite,
          deadline: clientDeadline(reply),
          maxRowsPerWrite: options.maxRowsPerWrite,
        });
        if (result.rejected.length === 0) return reply.status(204).send();
        if (result.written === 0) {
          return reply.status(400).send({
            error: { code: 'INVALID_ROW', message: `nothing written: ${summary(result.rejected)}`, lines: result.rejected },
          });
        }
        return reply.status(200).send({ written: result.written, rejected: result.rejected });
      } catch (err) {
        if (err instanceof LineProtocolError) {
          return reply.status(400).send({ error: { code: err.code, message: err.message, lines: err.lines } });
        }
        throw err;
      }
    };

    type Query = { Querystring: Record<string, string | undefined> };
    scope.post<Query>('/v1/influxdb/write', (request, reply) => write(request, reply));
    scope.post<Query>('/v1/influxdb/api/v2/write', (request, reply) => write(request, reply));
    scope.get('/v1/influxdb/ping', async (_request, reply) => reply.status(204).send());
    scope.get('/v1/influxdb/health', async () => ({ name: 'reprise', status: 'pass', message: 'ready for queries and writes' }));
  });
}
