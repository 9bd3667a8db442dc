import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ColumnType } from '../engine/schema.js';
import { RepriseError } from '../errors.js';
import type { SqlSessionFactory, SqlUser, StatementResult } from '../frontend/sql/types.js';

/** GreptimeDB's names for column types in /v1/sql answers. */
const DATA_TYPES: Record<ColumnType, string> = {
  string: 'String',
  float64: 'Float64',
  int64: 'Int64',
  bool: 'Boolean',
  timestamp: 'TimestampMillisecond',
};

/** One statement's answer as GreptimeDB's HTTP API gives it: records (schema and rows as arrays) or affected rows. */
function outputOf(result: StatementResult): unknown {
  if (result.kind === 'affected') return { affectedrows: result.affectedRows };
  const n = result.data[0]?.length ?? 0;
  const rows: unknown[][] = new Array(n);
  for (let r = 0; r < n; r++) rows[r] = result.data.map((col) => col[r]);
  return {
    records: {
      schema: { column_schemas: result.columns.map((c) => ({ name: c.name, data_type: DATA_TYPES[c.type] })) },
      rows,
      total_rows: n,
    },
  };
}

/**
 * `POST /v1/sql` (form field `sql`, or `?sql=`, or JSON {"sql"}), and `GET
 * /v1/sql?sql=` for reads, as GreptimeDB's HTTP API: every statement's
 * output in order and `execution_time_ms`. A failing statement answers the
 * error envelope; statements before it have taken effect.
 */
export function registerSqlRoutes(app: FastifyInstance, sessions: SqlSessionFactory, userOf: (request: object) => SqlUser): void {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, text, done) => {
    done(null, Object.fromEntries(new URLSearchParams(text as string)));
  });
  const run = async (request: { query: unknown; body: unknown }, reply: FastifyReply, sqlText: unknown, db: unknown) => {
    if (typeof sqlText !== 'string' || sqlText.trim() === '') {
      throw new RepriseError('INVALID_ARGUMENT', 'no SQL given: send the statements as the form field "sql" (or ?sql=)');
    }
    const started = performance.now();
    const session = sessions({ dialect: 'mysql', user: userOf(request), ...(typeof db === 'string' && db !== '' ? { database: db } : {}) });
    // The rows count against the result budget until the answer is sent (or the client is gone).
    reply.raw.once('finish', () => session.close()).once('close', () => session.close());
    const results = await session.execute(sqlText);
    return { output: results.map(outputOf), execution_time_ms: Math.round(performance.now() - started) };
  };
  type Params = { Querystring: { sql?: string; db?: string }; Body: { sql?: unknown; db?: unknown } | undefined };
  app.post<Params>('/v1/sql', async (request, reply) => run(request, reply, request.body?.sql ?? request.query.sql, request.body?.db ?? request.query.db));
  app.get<Params>('/v1/sql', async (request, reply) => run(request, reply, request.query.sql, request.query.db));
}
