import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { maxHeaderSize, STATUS_CODES } from 'node:http';
import { createRequire } from 'node:module';
import { isIP, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyError, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describeMachine, MACHINES } from '../actors/diagram.js';
import { RepriseError, type ErrorCode } from '../errors.js';
import { sqlSessions } from '../frontend/sql/session.js';
import type { SqlSessionFactory, SqlUser } from '../frontend/sql/types.js';
import { clientDeadline } from './client-deadline.js';
import { EventStreams, type EventStreamOptions } from './event-stream.js';
import { registerInfluxRoutes } from './influxdb.js';
import { inlineEncoder, type WriteEncoder } from './ingest-pool.js';
import { checkRowCount, DEFAULT_MAX_ROWS_PER_WRITE } from './line-protocol-rows.js';
import { parseJsonBody } from './json-body.js';
import { jsonRowChunks, STREAMED_RESULT_ROWS } from './json-rows.js';
import { machineSvg } from './machine-svg.js';
import type { Reprise } from './runtime.js';
import { checkRouteMode, httpUserOf } from './http-auth.js';
import { registerSqlRoutes } from './sql-http.js';
import { ANONYMOUS_USER, type UserProvider } from './users.js';
import { warmQueries, type WarmOutcome } from './warm-queries.js';
import { WriteBudget } from './write-budget.js';
import { sqlServerVersion } from './version.js';

export const DEFAULT_BODY_LIMIT = 64 * 1024 * 1024;
/** A request not received whole (headers and body) within this is answered 408 and its connection closed. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/** Connections served at once; more are closed as they arrive (each holds a descriptor). */
export const DEFAULT_MAX_CONNECTIONS = 512;

const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  INVALID_SCHEMA: 400,
  INVALID_ROW: 400,
  INVALID_QUERY: 400,
  QUERY_TOO_LARGE: 400,
  MALFORMED_JSON: 400,
  SQL_SYNTAX: 400,
  SQL_UNSUPPORTED: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  TABLE_NOT_FOUND: 404,
  NOT_FOUND: 404,
  TABLE_EXISTS: 409,
  PROCEDURE_RUNNING: 409,
  REQUEST_TIMEOUT: 408,
  REQUEST_TOO_LARGE: 413,
  ENTRY_TOO_LARGE: 413,
  NOT_LEADER: 503,
  REGION_NOT_SERVING: 503,
  SHARD_NOT_SERVING: 503,
  CLOSED: 503,
  OVERLOADED: 503,
  UNAVAILABLE: 503,
  STORE_UNAVAILABLE: 503,
  TIMEOUT: 504,
  DEADLINE_EXCEEDED: 504,
};

/** Fastify's own errors (parsing, limits, routing) in the API's error vocabulary. */
function toRepriseError(err: FastifyError | Error): RepriseError {
  if (err instanceof RepriseError) return err;
  const fastifyError = err as FastifyError;
  const code = fastifyError.code ?? '';
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new RepriseError('REQUEST_TOO_LARGE', `request body is larger than the limit: ${err.message}`);
  if (code === 'FST_ERR_BAD_URL') return new RepriseError('INVALID_ARGUMENT', `the URL is not valid (bad percent-encoding): ${err.message}`);
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

/** The error body every non-2xx answer carries. */
function envelope(err: RepriseError): { error: { code: ErrorCode; message: string } } {
  return { error: { code: err.code, message: err.message } };
}

/**
 * What Node's HTTP parser refuses before fastify sees a request (a server
 * 'clientError'), as a coded error and its status: headers too large, a
 * malformed request, a body shorter than announced, a request not received
 * in time. Undefined when there is nobody left to answer (a reset).
 */
function clientErrorOf(err: Error & { code?: string; reason?: string }, requestTimeoutMs: number): { error: RepriseError; status: number } | undefined {
  switch (err.code) {
    case 'ECONNRESET':
      return undefined;
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return {
        error: new RepriseError('REQUEST_TIMEOUT', `the request was not received whole within ${requestTimeoutMs} ms (httpRequestTimeoutMs); the connection is closed`),
        status: 408,
      };
    case 'HPE_HEADER_OVERFLOW':
      // 431 (not REQUEST_TOO_LARGE's 413): it is the request line and headers, not the body.
      return {
        error: new RepriseError('REQUEST_TOO_LARGE', `the request line and headers are larger than the limit of ${maxHeaderSize} bytes (Node's --max-http-header-size); send a shorter URL or fewer headers`),
        status: 431,
      };
    case 'HPE_INVALID_EOF_STATE':
      return { error: new RepriseError('INVALID_ARGUMENT', 'the connection ended before the whole request was received (a body shorter than its Content-Length)'), status: 400 };
    default:
      return { error: new RepriseError('INVALID_ARGUMENT', `malformed HTTP request: ${err.reason ?? err.message}${err.code ? ` (${err.code})` : ''}`), status: 400 };
  }
}

/**
 * Answer with the error envelope on a socket Node's HTTP server handed over,
 * then close it. Not when an answer to an earlier request on it has begun
 * (the parser can fail after a request went out, e.g. on a body framed by an
 * unknown Transfer-Encoding): a second one would corrupt the stream. Node's
 * own default checks the same, on the socket's current response.
 */
function answerRaw(socket: Socket & { _httpMessage?: { headersSent?: boolean } | null }, answer: { error: RepriseError; status: number } | undefined): void {
  if (answer && !socket.destroyed && socket.writable && !socket._httpMessage?.headersSent) {
    const body = JSON.stringify(envelope(answer.error));
    socket.write(
      `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

export interface HttpOptions {
  readonly bodyLimit?: number;
  readonly logger: Logger;
  /** Create a table on the first line-protocol write to a measurement that has none. Default true. */
  readonly autoCreateTables?: boolean;
  /** Add the process's own metrics (CPU, memory, event loop: `process_*`, `nodejs_*`) to /metrics. Default false. */
  readonly processMetrics?: boolean;
  readonly events?: EventStreamOptions;
  /**
   * Host names (the Host header, without the port) this server answers to,
   * besides IP addresses and localhost: a request naming another host is
   * refused, so a page whose DNS name is rebound to this address cannot
   * use it. `*` turns the check off.
   */
  readonly allowedHosts?: readonly string[];
  /** Origins (scheme://host[:port]) whose pages may write, besides this server's own (its dashboard). */
  readonly allowedOrigins?: readonly string[];
  /** Time to receive a whole request (a slow or stalled sender is cut off: 408). Default DEFAULT_REQUEST_TIMEOUT_MS. */
  readonly requestTimeoutMs?: number;
  /** Connections served at once. Default DEFAULT_MAX_CONNECTIONS. */
  readonly maxConnections?: number;
  /** Tables one line-protocol request may create. Default DEFAULT_MAX_TABLES_PER_WRITE. */
  readonly maxTablesPerWrite?: number;
  /** Rows one insert, keys one delete, lines one line-protocol request may hold. Default DEFAULT_MAX_ROWS_PER_WRITE. */
  readonly maxRowsPerWrite?: number;
  /** The SQL sessions /v1/sql runs statements in. Default: sessions over `runtime`. */
  readonly sqlSessions?: SqlSessionFactory;
  /** Who may call the API (HTTP Basic; see http-auth.ts). Unset: anyone, as the anonymous read-write user. */
  readonly users?: UserProvider;
  /** Bytes of write bodies worked on at once; a write past it is refused OVERLOADED (503, Retry-After). Default DEFAULT_MAX_WRITE_BYTES_IN_FLIGHT. */
  readonly maxWriteBytesInFlight?: number;
  /** Where line protocol and JSON inserts are parsed and encoded (an IngestPool: worker threads). Default: the main thread. The caller closes it. */
  readonly encoder?: WriteEncoder;
}

/** The JSON body of an insert, left as text for the write encoder (which may run on another thread). */
class UnparsedJson {
  constructor(readonly text: string) {}
}

const INSERT_ROUTE = '/v1/tables/:name/rows';

/** The writes that hold their body's bytes against the write budget (method and route pattern). */
const BUDGETED_WRITES = new Set([`POST ${INSERT_ROUTE}`, 'POST /v1/tables/:name/delete', 'POST /v1/influxdb/write', 'POST /v1/influxdb/api/v2/write']);

/** The host of a Host header or URL authority, without port or IPv6 brackets, lower case. */
function hostOf(authority: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(authority);
  if (bracketed) return bracketed[1]!.toLowerCase();
  return authority.replace(/:\d*$/, '').toLowerCase();
}

/**
 * Refuse what a browser can be made to send: a request for a Host this
 * server does not answer to (DNS rebinding), and a state-changing request
 * from another origin's page (a cross-site form, fetch or text/plain POST;
 * browsers always send Origin on those). Clients that are not browsers
 * (curl, Telegraf, SDKs) send no Origin and are not affected.
 */
function browserGuard(options: Pick<HttpOptions, 'allowedHosts' | 'allowedOrigins'>) {
  const hosts = new Set((options.allowedHosts ?? []).map((h) => h.toLowerCase()));
  const origins = new Set((options.allowedOrigins ?? []).map((o) => o.toLowerCase().replace(/\/$/, '')));
  const hostAllowed = (host: string) => hosts.has('*') || isIP(host) !== 0 || host === 'localhost' || host.endsWith('.localhost') || hosts.has(host);
  return (method: string, hostHeader: string | undefined, origin: string | undefined): void => {
    if (hostHeader !== undefined && !hostAllowed(hostOf(hostHeader))) {
      throw new RepriseError(
        'FORBIDDEN',
        `Host '${hostHeader}' is not a name this server answers to; add it to allowedHosts (REPRISE_ALLOWED_HOSTS) or connect by IP address`,
        { host: hostHeader },
      );
    }
    if (origin === undefined || method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return;
    const normalised = origin.toLowerCase();
    let own = false;
    try {
      own = hostHeader !== undefined && new URL(normalised).host === hostHeader.toLowerCase();
    } catch {
      // 'null' (a sandboxed page, a file) or garbage: not this server's.
    }
    if (!own && !origins.has(normalised)) {
      throw new RepriseError(
        'FORBIDDEN',
        `${method} from a page of origin '${origin}' refused: only this server's own pages may write; add the origin to allowedOrigins (REPRISE_ALLOWED_ORIGINS) to let it`,
        { origin },
      );
    }
  };
}

/** The dashboard's files: beside this module in src/, or in src/ from the compiled dist/src/api/. */
function dashboardDir(): string {
  for (const rel of ['./dashboard/', '../../../src/api/dashboard/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  throw new Error('the dashboard files (src/api/dashboard) are missing from this installation');
}

const DASHBOARD_FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/** Each machine's states, transitions and an SVG drawing (static: computed once). */
function machinesView() {
  return {
    machines: Object.entries(MACHINES).map(([kind, machine]) => {
      const d = describeMachine(machine);
      return { kind, ...d, svg: machineSvg(d) };
    }),
  };
}

const QUERY_ROUTE = '/v1/tables/:name/query';
/**
 * The warm-up's queries carry a credential made per server and never sent
 * anywhere: they are injected (no socket), on the query route only, as a
 * read-only user, so they work with a user provider too.
 */
const WARM_HEADER = 'x-reprise-warm-up';
const WARM_USER: SqlUser = Object.freeze({ name: 'warm-up', mode: 'ro' });
const warmCredentials = new WeakMap<object, string>();

/** Whether a request's warm-up header holds the server's credential (compared in constant time). */
function isWarmCredential(header: string | string[] | undefined, credential: string): boolean {
  if (typeof header !== 'string') return false;
  const given = Buffer.from(header, 'latin1');
  const expected = Buffer.from(credential, 'latin1');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
/** When each server last began or ended a request other than the warm-up's (performance.now()). */
const activityOf = new WeakMap<object, number>();
/** How long a server must have been without requests before it warms up after its start (see warmHttpQueriesWhenIdle). */
const WARM_IDLE_MS = 1000;

/**
 * For a server whose start found nothing to warm up on (no table had a
 * row): once, after requests came and then none for WARM_IDLE_MS, run the
 * warm-up, so a server loaded after its start answers its first queries
 * compiled too (measured on 10M rows loaded into a new server: the first
 * 50 one-series queries' p50 2.0-2.9 ms without, against 0.9 ms warm).
 * Returns a stop.
 */
export function warmHttpQueriesWhenIdle(app: ReturnType<typeof createHttpServer>, runtime: Reprise, logger: Logger): () => void {
  let checked = activityOf.get(app) ?? 0;
  let running = false;
  const timer = setInterval(() => {
    const last = activityOf.get(app) ?? 0;
    if (running || last === checked || performance.now() - last < WARM_IDLE_MS) return;
    checked = last;
    running = true;
    void warmHttpQueries(app, runtime, logger).then((outcome) => {
      running = false;
      if (outcome.table === undefined) return;
      clearInterval(timer);
      logger.debug(outcome, 'query path warmed once idle');
    });
  }, WARM_IDLE_MS / 2);
  timer.unref();
  return () => clearInterval(timer);
}

/** Before listening: run the common queries through the server's own query route (see warm-queries.ts). */
export function warmHttpQueries(app: ReturnType<typeof createHttpServer>, runtime: Reprise, logger: Logger): Promise<WarmOutcome> {
  const headers = { [WARM_HEADER]: warmCredentials.get(app) as string };
  return warmQueries(
    async (table, body) => {
      const res = await app.inject({ method: 'POST', url: `/v1/tables/${encodeURIComponent(table)}/query`, headers, payload: body as object });
      return res.statusCode === 200 ? res.body : undefined;
    },
    runtime,
    logger,
  );
}

/**
 * The HTTP API (bodies are a public contract: extend, do not change).
 * Errors are always `{"error":{"code","message"}}` with a non-2xx status.
 */
export function createHttpServer(runtime: Reprise, options: HttpOptions) {
  // Requests are not logged one by one; server-side failures are, below.
  const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const app = Fastify({
    bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
    logger: false,
    // fastify's default (0) turns Node's request timeout off: a client that
    // sent headers and never its body held its connection for ever.
    requestTimeout,
    // Node checks the timeout this often (its default, 30 s, would let a stalled request live that much longer).
    http: { headersTimeout: requestTimeout, connectionsCheckingInterval: Math.max(10, Math.min(1000, requestTimeout / 4)) },
    // No idle-socket timeout: a long query keeps its socket quiet, and /v1/events sends a ping every 15 s.
    // What Node's parser refuses, and URLs fastify cannot decode, get the error envelope too.
    clientErrorHandler: (err, socket) => answerRaw(socket as Socket, clientErrorOf(err, requestTimeout)),
    frameworkErrors: (err, _request, reply) => {
      const error = toRepriseError(err);
      void (reply as FastifyReply).status(statusOf(error)).send(envelope(error));
    },
  });
  app.server.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  // Node hands CONNECT (a proxy's method) to this event, and without a listener drops the connection unanswered.
  app.server.on('connect', (request: { url?: string }, socket: Socket) =>
    answerRaw(socket, { error: new RepriseError('INVALID_ARGUMENT', `CONNECT ${request.url ?? ''} refused: this server is not a proxy`), status: 400 }),
  );
  const log = options.logger.child({ component: 'http' });
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;

  // Metrics of this server (HTTP, and the process if asked), served with the runtime's.
  const registry = new Registry();
  if (options.processMetrics) {
    collectDefaultMetrics({ register: registry });
    // Gauges whose names end in _total break the Prometheus naming rules (promtool rejects them).
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  }
  const requestSeconds = new Histogram({
    name: 'reprise_http_request_duration_seconds',
    help: 'HTTP requests by method, route (the pattern, not the URL) and status code',
    labelNames: ['method', 'route', 'status_code'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  app.addHook('onResponse', (request, reply, done) => {
    if (warmRequests.has(request)) return done();
    activityOf.set(app, performance.now());
    requestSeconds.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
    done();
  });

  // Before anything is parsed or routed: a refused request touches nothing.
  const guard = browserGuard(options);
  // Then who is asking: the user each request authenticated as, for the routes and SQL sessions to check.
  const userOfRequest = new WeakMap<object, SqlUser>();
  /** The warm-up's own requests (left out of the request metrics and of the activity the idle warm-up waits on). */
  const warmRequests = new WeakSet<object>();
  const warmCredential = randomBytes(24).toString('base64url');
  warmCredentials.set(app, warmCredential);
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      guard(request.method, request.headers.host, request.headers.origin);
      const route = request.routeOptions.url;
      const warming = route === QUERY_ROUTE && isWarmCredential(request.headers[WARM_HEADER], warmCredential);
      if (warming) warmRequests.add(request);
      else activityOf.set(app, performance.now());
      const user = warming ? WARM_USER : httpUserOf(options.users, request, route);
      if (user !== undefined) {
        checkRouteMode(user, request.method, route);
        userOfRequest.set(request, user);
      }
      done();
    } catch (err) {
      done(err as Error);
    }
  });
  // JSON routes take application/json only: text/plain is what a browser
  // sends cross-site without asking first (the line-protocol route keeps its own parser).
  app.removeContentTypeParser('text/plain');
  app.removeContentTypeParser('application/json');
  // A JSON body's size, for the write budget (line protocol's is its buffer's).
  const bodyBytes = new WeakMap<object, number>();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, text, done) => {
    try {
      // Its length in characters (bytes for ASCII): O(1), where counting UTF-8 bytes would read every body once more.
      bodyBytes.set(request, (text as string).length);
      done(null, request.routeOptions.url === INSERT_ROUTE ? new UnparsedJson(text as string) : parseJsonBody(text as string));
    } catch (err) {
      done(err as Error);
    }
  });

  // Writes hold their body's bytes from parsed until answered (see WriteBudget).
  const writeBudget = new WriteBudget(options.maxWriteBytesInFlight);
  new Gauge({
    name: 'reprise_http_write_bytes_in_flight',
    help: 'Bytes of write bodies being worked on (limits.maxWriteBytesInFlight bounds it)',
    registers: [registry],
    collect() {
      this.set(writeBudget.inFlight());
    },
  });
  new Counter({
    name: 'reprise_http_writes_overloaded_total',
    help: 'Writes refused OVERLOADED: they would have passed limits.maxWriteBytesInFlight',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(writeBudget.refused());
    },
  });
  app.addHook('preHandler', (request, reply, done) => {
    if (request.method !== 'POST') return done();
    const route = `POST ${request.routeOptions.url}`;
    if (!BUDGETED_WRITES.has(route)) return done();
    try {
      const release = writeBudget.admit(Buffer.isBuffer(request.body) ? request.body.length : (bodyBytes.get(request) ?? 0), route);
      reply.raw.once('finish', release).once('close', release);
      done();
    } catch (err) {
      done(err as Error);
    }
  });

  const streams = new EventStreams(runtime, options.events);
  app.addHook('preClose', (done) => {
    streams.closeAll();
    done();
  });

  app.setErrorHandler((err, request, reply) => {
    const error = toRepriseError(err as Error);
    const status = statusOf(error);
    // A refusal for load is expected, and counted (reprise_queries_overloaded_total), not logged per request.
    if (error.code === 'OVERLOADED') void reply.header('retry-after', '1');
    else if (error.code === 'UNAUTHENTICATED') void reply.header('www-authenticate', 'Basic realm="reprise"');
    else if (status >= 500) log.error({ err, code: error.code, method: request.method, url: request.url }, error.message);
    void reply.status(status).send(envelope(error));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } });
  });

  // 200 only when the node serves, none of its shards or regions has
  // failed and its WAL takes appends: a load balancer then stops sending it
  // the writes that would fail.
  app.get('/health', async (_request, reply) => {
    const status = runtime.status();
    const node = status.nodes[0]!;
    const serving = node.state === 'serving' || node.state === 'flushing';
    const shards = node.shards.filter((s) => s.state === 'failed').map((s) => ({ id: s.id, error: s.error }));
    const regions = node.shards.flatMap((s) => s.regions.filter((r) => r.state === 'failed').map((r) => ({ id: r.id, table: r.table, shard: s.id, error: r.error })));
    if (!serving) return reply.status(503).send({ status: 'unavailable', node: node.id, state: node.state });
    const wal = status.wal.error;
    const objectStore = status.objectStore?.error;
    if (shards.length > 0 || regions.length > 0 || wal || objectStore) {
      return reply.status(503).send({ status: 'degraded', node: node.id, state: node.state, failed: { shards, regions, ...(wal ? { wal } : {}), ...(objectStore ? { objectStore } : {}) } });
    }
    return reply.status(200).send({ status: 'ok', node: node.id, state: node.state });
  });

  const encoder = options.encoder ?? inlineEncoder;
  app.get('/v1/status', async () => ({ ...runtime.status(), ingest: { threads: encoder.threads } }));

  app.get('/v1/cluster/status', async () => runtime.clusterStatus());

  app.post<{ Params: { id: string }; Body: { to?: unknown } }>('/v1/shards/:id/migrate', async (request) => {
    const shard = Number(request.params.id);
    const to = request.body?.to;
    if (!Number.isInteger(shard) || shard < 0) throw new RepriseError('INVALID_ARGUMENT', `shard id '${request.params.id}' is not a non-negative integer`);
    if (typeof to !== 'string' || to === '') throw new RepriseError('INVALID_ARGUMENT', 'body must be {"to": "<node id>"}');
    return runtime.migrateShard(shard, to);
  });

  app.get('/v1/tables', async () => ({ tables: runtime.listTables() }));

  app.get<{ Params: { name: string } }>('/v1/tables/:name', async (request) => runtime.describeTable(request.params.name));

  app.post('/v1/tables', async (request, reply) => reply.status(201).send(await runtime.createTable(request.body)));

  app.delete<{ Params: { name: string } }>('/v1/tables/:name', async (request) => {
    await runtime.dropTable(request.params.name);
    return { dropped: request.params.name };
  });

  // Rows one write may hold: counted once the body is parsed (bounded by the body limit), before anything is validated or written.
  const maxRows = options.maxRowsPerWrite ?? DEFAULT_MAX_ROWS_PER_WRITE;

  app.post<{ Params: { name: string } }>(INSERT_ROUTE, async (request, reply) => {
    const { name } = request.params;
    const deadline = clientDeadline(reply);
    if (request.body instanceof UnparsedJson) {
      const { text } = request.body;
      const encoded = await encoder.encodeJsonRows(text, runtime.tableCatalog(), name, maxRows);
      const writing = encoded && runtime.writeEncoded([encoded], deadline);
      if (writing) return writing;
      // A table this node's catalog does not hold (yet), or one dropped meanwhile: an insert looks it up.
      request.body = parseJsonBody(text);
    }
    checkRowCount(request.body, maxRows);
    return runtime.insert(name, request.body, deadline);
  });

  app.post<{ Params: { name: string } }>('/v1/tables/:name/delete', async (request, reply) => {
    checkRowCount(request.body, maxRows);
    return runtime.delete(request.params.name, request.body, clientDeadline(reply));
  });

  app.post<{ Params: { name: string } }>(QUERY_ROUTE, async (request, reply) => {
    // The rows count against memory.maxResultRowsInFlight until the answer is sent (or the client is gone).
    const { rows: result, release } = await runtime.queryHeld(request.params.name, request.body ?? {});
    reply.raw.once('finish', release).once('close', release);
    const chunks = jsonRowChunks(result);
    void reply.header('content-type', 'application/json; charset=utf-8');
    if ((result.data[0]?.length ?? 0) <= STREAMED_RESULT_ROWS) return reply.send([...chunks].join(''));
    return reply.send(Readable.from(chunks, { objectMode: false }));
  });

  registerSqlRoutes(app, options.sqlSessions ?? sqlSessions(runtime, { version: sqlServerVersion() }), (request) => userOfRequest.get(request) ?? ANONYMOUS_USER);

  app.post('/v1/flush', async () => {
    await runtime.flush();
    return { flushed: true };
  });

  app.get('/metrics', async (_request, reply) => {
    const merged = Registry.merge([runtime.observer.registry, registry]);
    return reply.header('content-type', merged.contentType).send(await merged.metrics());
  });

  app.get('/v1/events', (request, reply) => streams.handle(request, reply));

  const machines = machinesView();
  app.get('/v1/machines', async () => machines);

  // The dashboard: static files, no build step.
  const dashboard = dashboardDir();
  const sendFile = (name: string, reply: FastifyReply) =>
    reply.header('content-type', DASHBOARD_FILES[name]!).header('cache-control', 'no-cache').send(readFileSync(`${dashboard}${name}`));
  app.get('/', async (_request, reply) => sendFile('index.html', reply));
  app.get<{ Params: { file: string } }>('/dashboard/:file', async (request, reply) => {
    const name = request.params.file;
    if (!Object.hasOwn(DASHBOARD_FILES, name) || name === 'index.html') {
      return reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no dashboard file '${name}'` } });
    }
    return sendFile(name, reply);
  });
  // The SQL console's chart library, served from its npm package (nothing from the network): uPlot
  // (MIT, no dependencies, one 50 KB minified script and its CSS, maintained since 2019): canvas line
  // charts made for time series, with a time axis built in and fast on many points. Chart.js (which needs a
  // date adapter for a time axis) and ECharts are several to twenty times larger. These two files only, by
  // name: nothing else of the package, nor any other path, is reachable here.
  const VENDOR_FILES: Record<string, string> = { 'uPlot.iife.min.js': 'text/javascript; charset=utf-8', 'uPlot.min.css': 'text/css; charset=utf-8' };
  app.get<{ Params: { file: string } }>('/dashboard/vendor/:file', async (request, reply) => {
    const name = request.params.file;
    let path: string | undefined;
    try {
      if (Object.hasOwn(VENDOR_FILES, name)) path = createRequire(import.meta.url).resolve(`uplot/dist/${name}`);
    } catch {
      // the package is not installed: no chart, the rest of the dashboard works
    }
    if (path === undefined) return reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no dashboard vendor file '${name}'` } });
    return reply.header('content-type', VENDOR_FILES[name]!).header('cache-control', 'no-cache').send(readFileSync(path));
  });

  registerInfluxRoutes(app, runtime, { autoCreateTables: options.autoCreateTables ?? true, bodyLimit, maxTablesPerWrite: options.maxTablesPerWrite, maxRowsPerWrite: maxRows, encoder });

  return app;
}

/** Parse `host:port` (as GreptimeDB's --http-addr). */
export function parseAddr(addr: string, what = 'http'): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(addr);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !match[1] || port > 65535) {
    throw new RepriseError('INVALID_ARGUMENT', `${what} address '${addr}' is not host:port (e.g. 127.0.0.1:4000)`);
  }
  return { host: match[1].replace(/^\[(.*)\]$/, '$1'), port };
}
