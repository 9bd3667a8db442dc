import Fastify, { type FastifyError } from 'fastify';
import type { Logger } from 'pino';
import { RepriseError, type ErrorCode } from '../errors.js';
import type { Reprise } from './runtime.js';

export const DEFAULT_BODY_LIMIT = 64 * 1024 * 1024;

const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  INVALID_SCHEMA: 400,
  INVALID_ROW: 400,
  INVALID_QUERY: 400,
  MALFORMED_JSON: 400,
  TABLE_NOT_FOUND: 404,
  NOT_FOUND: 404,
  TABLE_EXISTS: 409,
  REQUEST_TOO_LARGE: 413,
  ENTRY_TOO_LARGE: 413,
  NOT_LEADER: 503,
  REGION_NOT_SERVING: 503,
  SHARD_NOT_SERVING: 503,
  CLOSED: 503,
};

/** Fastify's own errors (parsing, limits, routing) in the API's error vocabulary. */
function toRepriseError(err: FastifyError | Error): RepriseError {
  if (err instanceof RepriseError) return err;
  const fastifyError = err as FastifyError;
  const code = fastifyError.code ?? '';
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new RepriseError('REQUEST_TOO_LARGE', `request body is larger than the limit: ${err.message}`);
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new RepriseError('INVALID_ARGUMENT', `${err.message}; send Content-Type: application/json`);
  if (err instanceof SyntaxError || code.startsWith('FST_ERR_CTP')) {
    return new RepriseError('MALFORMED_JSON', `request body is not valid JSON: ${err.message}`);
  }
  if (fastifyError.statusCode && fastifyError.statusCode < 500) return new RepriseError('INVALID_ARGUMENT', err.message);
  return new RepriseError('INTERNAL', err.message, undefined, { cause: err });
}

function statusOf(err: RepriseError): number {
  return STATUS_BY_CODE[err.code] ?? 500;
}

export interface HttpOptions {
  readonly bodyLimit?: number;
  readonly logger: Logger;
}

/**
 * The HTTP API (bodies are a public contract: extend, do not change).
 * Errors are always `{"error":{"code","message"}}` with a non-2xx status.
 */
export function createHttpServer(runtime: Reprise, options: HttpOptions) {
  // Requests are not logged one by one; server-side failures are, below.
  const app = Fastify({ bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT, logger: false });
  const log = options.logger.child({ component: 'http' });

  app.setErrorHandler((err, request, reply) => {
    const error = toRepriseError(err as Error);
    const status = statusOf(error);
    if (status >= 500) log.error({ err, code: error.code, method: request.method, url: request.url }, error.message);
    void reply.status(status).send({ error: { code: error.code, message: error.message } });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } });
  });

  app.get('/health', async (_request, reply) => {
    const node = runtime.status().nodes[0]!;
    const healthy = node.state === 'serving' || node.state === 'flushing';
    return reply.status(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'unavailable', node: node.id, state: node.state });
  });

  app.get('/v1/status', async () => runtime.status());

  app.get('/v1/tables', async () => ({ tables: runtime.listTables() }));

  app.get<{ Params: { name: string } }>('/v1/tables/:name', async (request) => runtime.describeTable(request.params.name));

  app.post('/v1/tables', async (request, reply) => reply.status(201).send(await runtime.createTable(request.body)));

  app.delete<{ Params: { name: string } }>('/v1/tables/:name', async (request) => {
    await runtime.dropTable(request.params.name);
    return { dropped: request.params.name };
  });

  app.post<{ Params: { name: string } }>('/v1/tables/:name/rows', async (request) => runtime.insert(request.params.name, request.body));

  app.post<{ Params: { name: string } }>('/v1/tables/:name/delete', async (request) => runtime.delete(request.params.name, request.body));

  app.post<{ Params: { name: string } }>('/v1/tables/:name/query', async (request) => ({
    rows: await runtime.query(request.params.name, request.body ?? {}),
  }));

  app.post('/v1/flush', async () => {
    await runtime.flush();
    return { flushed: true };
  });

  return app;
}

/** Parse `host:port` (as GreptimeDB's --http-addr). */
export function parseAddr(addr: string): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(addr);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !match[1] || port > 65535) {
    throw new RepriseError('INVALID_ARGUMENT', `http address '${addr}' is not host:port (e.g. 127.0.0.1:4000)`);
  }
  return { host: match[1].replace(/^\[(.*)\]$/, '$1'), port };
}
