import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Deadline } from '../deadline.js';
import { RepriseError } from '../errors.js';
import { clientDeadline } from './client-deadline.js';
import { inlineEncoder, type WriteEncoder } from './ingest-pool.js';
import type { LineError } from './line-protocol.js';
import { mapPoints, parsePrecision, planLines, rejectedLines, type LinePlanOptions, type Precision } from './line-protocol-rows.js';
import type { Reprise } from './runtime.js';
import { bodyText } from './write-encoding.js';

/**
 * InfluxDB line protocol ingestion, as InfluxDB and GreptimeDB offer it (the
 * mapping to rows is ./line-protocol-rows.ts). A table that does not exist
 * is created on first write (autoCreateTables); requests that write a new
 * measurement at once create it once and all write to it
 * (Reprise.ensureTable). An existing table (or one another request created
 * first) must already have every column a line names: schema evolution is
 * not supported.
 */

/** The `partial` query parameter: true, false, 1 or 0 (absent: false). */
export function parsePartial(value: unknown): boolean {
  if (value === undefined || value === 'false' || value === '0') return false;
  if (value === 'true' || value === '1') return true;
  throw new RepriseError('INVALID_ARGUMENT', `query parameter partial must be true or false (or 1 or 0), got ${JSON.stringify(value)}`, { parameter: 'partial' });
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
  /** Where the body is parsed and encoded. Default: this thread (inlineEncoder). */
  readonly encoder?: WriteEncoder;
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

function summary(errors: LineError[]): string {
  const shown = errors.slice(0, 3).map((e) => e.message);
  const more = errors.length > shown.length ? `; and ${errors.length - shown.length} more` : '';
  return `${errors.length} bad line${errors.length === 1 ? '' : 's'}: ${shown.join('; ')}${more}`;
}

/**
 * Parse, map and write a line protocol body: encoded by `options.encoder`
 * (default: on this thread) against the runtime's catalog, then appended.
 * A body naming a measurement without a table, or encoded against a
 * catalog that changed before the append, is planned here instead, where
 * tables are created. Throws LineProtocolError for bad lines unless
 * `partial`.
 */
export async function writeLineProtocol(runtime: Reprise, body: string | Uint8Array, options: LineProtocolOptions): Promise<LineProtocolResult> {
  const plan: LinePlanOptions = {
    precision: options.precision,
    autoCreateTables: options.autoCreateTables,
    maxTablesPerWrite: options.maxTablesPerWrite,
    maxRowsPerWrite: options.maxRowsPerWrite,
    nowMs: (options.now ?? Date.now)(),
  };
  const encoded = await (options.encoder ?? inlineEncoder).encodeLines(body, runtime.tableCatalog(), { ...plan, partial: options.partial });
  if (encoded.kind === 'rejected') throw new LineProtocolError(`nothing written: ${summary(encoded.lines)}`, encoded.lines);
  if (encoded.kind === 'encoded') {
    const writing = runtime.writeEncoded(encoded.tables, options.deadline);
    if (writing) return { written: (await writing).written, rejected: encoded.rejected, created: [] };
  }
  return planAndWrite(runtime, bodyText(body), plan, options);
}

/** writeLineProtocol on this thread, creating the tables the body's new measurements need. */
async function planAndWrite(runtime: Reprise, body: string, plan: LinePlanOptions, options: LineProtocolOptions): Promise<LineProtocolResult> {
  const catalog = runtime.tableCatalog();
  const { plans, bad } = planLines(body, (name) => catalog.get(name)?.schema, plan);
  if (bad.size > 0 && !options.partial) throw new LineProtocolError(`nothing written: ${summary(rejectedLines(bad))}`, rejectedLines(bad));

  const created: string[] = [];
  for (const [i, p] of plans.entries()) {
    if (!p.create || p.rows.length === 0) continue;
    // Created once however many requests write a new measurement at once;
    // each of the others waits until that table is visible.
    const { table, created: mine } = await runtime.ensureTable(p.schema);
    if (mine) {
      created.push(p.schema.name);
      continue;
    }
    // Another request created it first: its columns decide, as for any existing table.
    plans[i] = { schema: table.schema, create: false, points: p.points, rows: mapPoints(p.points, table.schema, plan, bad) };
  }
  if (bad.size > 0 && !options.partial) throw new LineProtocolError(`nothing written: ${summary(rejectedLines(bad))}`, rejectedLines(bad));

  let written = 0;
  await Promise.all(
    plans.map(async (p) => {
      if (p.rows.length === 0) return;
      written += (await runtime.insert(p.schema.name, p.rows, options.deadline)).written;
    }),
  );
  return { written, rejected: rejectedLines(bad), created };
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
  options: { autoCreateTables: boolean; bodyLimit: number; maxTablesPerWrite?: number; maxRowsPerWrite?: number; encoder?: WriteEncoder },
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
        const result = await writeLineProtocol(runtime, bytes, {
          precision,
          partial,
          autoCreateTables: options.autoCreateTables,
          maxTablesPerWrite: options.maxTablesPerWrite,
          deadline: clientDeadline(reply),
          maxRowsPerWrite: options.maxRowsPerWrite,
          encoder: options.encoder,
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
