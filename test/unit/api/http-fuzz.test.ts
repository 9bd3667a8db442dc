import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { parseLineProtocol, TooManyLinesError } from '../../../src/api/line-protocol.js';
import { open, type Reprise } from '../../../src/api/runtime.js';

/**
 * Hostile requests against a listening server (issue 14: the suite keeps a
 * fuzz test of the HTTP API and the line-protocol parser). Whatever a client
 * sends, every answer that is not a 2xx is the {"error":{"code","message"}}
 * envelope with a code a client can act on and a status below 500, and the
 * rows stored before are unchanged after.
 */

/** Codes client input may get (server faults, 5xx, are not among them). */
const CLIENT_CODES = new Set([
  'INVALID_ARGUMENT',
  'INVALID_SCHEMA',
  'INVALID_ROW',
  'INVALID_QUERY',
  'QUERY_TOO_LARGE',
  'MALFORMED_JSON',
  'FORBIDDEN',
  'TABLE_NOT_FOUND',
  'NOT_FOUND',
  'TABLE_EXISTS',
  'REQUEST_TOO_LARGE',
  'REQUEST_TIMEOUT',
]);

const STORED = 'stored';
const storedSchema = {
  name: STORED,
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'n', type: 'int64', role: 'field' },
    { name: 'note', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['stored-3'] },
};
// Keys no generator below makes (hosts "stored-<n>"), so no fuzzed write can hit them.
const storedRows = Array.from({ length: 6 }, (_, i) => ({ host: `stored-${i}`, n: i, note: `row ${i}`, ts: 1_000 + i }));

interface RawRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: readonly (readonly [string, string])[];
  readonly body: Buffer | undefined;
}

interface RawResponse {
  readonly status: number;
  readonly head: string;
  readonly body: Buffer<ArrayBufferLike>;
}

/** Send a request's bytes as they are and read the whole answer (the server closes: Connection: close). */
function exchange(port: number, request: RawRequest): Promise<RawResponse> {
  const head = [`${request.method} ${request.path} HTTP/1.1`, 'Connection: close', ...request.headers.map(([k, v]) => `${k}: ${v}`)];
  if (request.body !== undefined) head.push(`Content-Length: ${request.body.length}`);
  const bytes = Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), request.body ?? Buffer.alloc(0)]);
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 10 s to ${request.method} ${request.path}`));
    }, 10_000);
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      const text = all.subarray(0, end < 0 ? all.length : end).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? NaN);
      let body: Buffer<ArrayBufferLike> = end < 0 ? Buffer.alloc(0) : all.subarray(end + 4);
      if (/\r\ntransfer-encoding: chunked/i.test(text)) body = dechunk(body);
      resolve({ status, head: text, body });
    });
    socket.write(bytes);
  });
}

function dechunk(data: Buffer<ArrayBufferLike>): Buffer<ArrayBufferLike> {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const line = data.indexOf('\r\n', at);
    if (line < 0) break;
    const size = parseInt(data.subarray(at, line).toString('latin1'), 16);
    if (!(size > 0)) break;
    parts.push(data.subarray(line + 2, line + 2 + size));
    at = line + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- generators

/** Strings with the characters that break parsers: quotes, escapes, separators, controls, NUL, non-ASCII, lone surrogates. */
const nasty = (maxLength: number) =>
  fc.string({
    maxLength,
    unit: fc.oneof(
      fc.constantFrom('a', 'Z', '0', '9', '_', '-', '.', ',', '=', ' ', '"', '\\', '\n', '\r', '\t', '\0', '#', '%', '/', '{', '}', '[', ']', ':', 'é', '\u2028', '\ud800', '💥'),
      fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }),
    ),
  });

/** Percent-encode what a URL cannot hold as it is, byte by byte of the UTF-8 form (encodeURIComponent refuses lone surrogates). */
const percentEncoded = (s: string) => s.replace(/[^A-Za-z0-9_.~-]/gu, (c) => [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''));

/** Mostly `usual`, now and then `odd` (what Node's parser or the router refuses). */
const rarely = <T>(usual: fc.Arbitrary<T>, odd: fc.Arbitrary<T>) => fc.oneof({ weight: 12, arbitrary: usual }, { weight: 1, arbitrary: odd });

const columnName = fc.oneof(fc.constantFrom('host', 'n', 'note', 'ts', 'v', '__proto__', 'constructor', ''), nasty(8));
const tableName = fc.oneof(fc.constantFrom(STORED, STORED, 'fuzz', 'm', '__proto__', 'Bad-Name', ''), nasty(10));

const scalar = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 2 ** 53, -(2 ** 63), Number.MAX_VALUE, '', 'f', 'z', 'host', 'ts'),
  fc.integer(),
  fc.nat(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  nasty(12),
);
const anyJson: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.dictionary(fc.oneof(columnName, fc.constantFrom('name', 'columns', 'where', 'limit', 'gte', 'lt', 'eq')), tie('value'), { maxKeys: 4 }),
})).value;
const maybe = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: arb }, { weight: 1, arbitrary: scalar }, { weight: 1, arbitrary: anyJson });

/** Rows and keys shaped like the stored table's, with values of every type (the stored hosts are filtered out below). */
const row = fc.record(
  { host: maybe(nasty(8)), n: maybe(fc.oneof(fc.integer(), fc.constant(2 ** 53))), note: maybe(nasty(8)), ts: maybe(fc.nat()), v: scalar },
  { requiredKeys: [] },
);
const condition = fc.oneof(scalar, fc.dictionary(fc.oneof(fc.constantFrom('eq', 'gt', 'gte', 'lt', 'lte'), nasty(3)), scalar, { maxKeys: 3 }));
const query = fc.record(
  {
    where: maybe(fc.dictionary(columnName, condition, { maxKeys: 3 })),
    timeRange: maybe(fc.record({ from: maybe(fc.nat()), to: maybe(fc.nat()) }, { requiredKeys: [] })),
    columns: maybe(fc.array(columnName, { maxLength: 4 })),
    limit: maybe(fc.integer({ min: -1, max: 10 })),
    order: maybe(fc.constantFrom('asc', 'desc')),
    groupBy: maybe(fc.array(columnName, { maxLength: 3 })),
    interval: maybe(fc.integer({ min: -1, max: 5000 })),
    aggregates: maybe(
      fc.array(fc.record({ fn: maybe(fc.constantFrom('count', 'sum', 'avg', 'min', 'max', 'first', 'last')), column: maybe(columnName), as: maybe(columnName) }, { requiredKeys: [] }), { maxLength: 3 }),
    ),
    constructor: anyJson,
  },
  { requiredKeys: [] },
);
const column = fc.record({ name: maybe(columnName), type: maybe(fc.constantFrom('string', 'float64', 'int64', 'bool', 'timestamp')), role: maybe(fc.constantFrom('tag', 'field', 'time')) }, { requiredKeys: [] });
const schema = fc.record(
  {
    name: maybe(fc.oneof(fc.constantFrom(STORED, 'fuzz'), fc.stringMatching(/^fuzz_[a-z0-9]{1,6}$/), nasty(8))),
    columns: maybe(fc.array(column, { maxLength: 5 })),
    partition: maybe(fc.record({ column: maybe(columnName), bounds: maybe(fc.array(scalar, { maxLength: 4 })) }, { requiredKeys: [] })),
  },
  { requiredKeys: [] },
);

/** A JSON body as text: as it should be, cut short, with bytes spliced in, or with integers past 2^53 written out. */
const jsonText = (value: fc.Arbitrary<unknown>) =>
  fc.oneof(
    { weight: 6, arbitrary: value.map((v) => JSON.stringify(v) ?? '') },
    {
      weight: 1,
      arbitrary: fc.tuple(value, fc.nat(), nasty(4)).map(([v, at, junk]) => {
        const text = JSON.stringify(v) ?? '';
        const cut = at % (text.length + 1);
        return text.slice(0, cut) + junk + text.slice(cut);
      }),
    },
    { weight: 1, arbitrary: value.map((v) => (JSON.stringify(v) ?? '').replace(/\d+/g, (d) => `${d}000000000000000000`)) },
    { weight: 1, arbitrary: fc.constantFrom('', ' ', 'null', '[]', '{}', '[{}]', '{"__proto__":{"polluted":1}}', '[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]') },
  );

/** A line of line protocol built from hostile pieces: measurement, tags, fields, timestamp. */
const lineOfPieces = fc
  .tuple(
    fc.oneof(tableName, fc.constant('cpu')),
    fc.array(fc.tuple(columnName, nasty(6)), { maxLength: 3 }),
    fc.array(fc.tuple(columnName, fc.oneof(fc.constantFrom('1', '-1.5', '1i', '9223372036854775808i', '18446744073709551616u', 't', 'FALSE', '"s"', '"unclosed', '1e400', ''), nasty(6))), { maxLength: 3 }),
    fc.oneof(fc.constant(''), fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String), nasty(4)),
  )
  .map(([m, tags, fields, ts]) => `${m}${tags.map(([k, v]) => `,${k}=${v}`).join('')} ${fields.map(([k, v]) => `${k}=${v}`).join(',')}${ts === '' ? '' : ` ${ts}`}`);
const lineProtocol = fc
  .tuple(fc.array(fc.oneof({ weight: 4, arbitrary: lineOfPieces }, { weight: 1, arbitrary: nasty(30) }, { weight: 1, arbitrary: fc.constantFrom('', '# comment', ' \t') }), { maxLength: 8 }), fc.constantFrom('\n', '\r\n'))
  .map(([lines, newline]) => lines.join(newline));

const contentType = rarely(
  fc.constantFrom(undefined, 'text/plain', '', 'application/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', 'garbage', 'application/json; charset=latin1'),
  nasty(12),
);
const jsonType = rarely(fc.constantFrom('application/json', 'application/json; charset=utf-8'), contentType);

interface Shape {
  readonly method: string;
  readonly path: string;
  readonly contentType: string | undefined;
  readonly body: Buffer | undefined;
}

/** The JSON API as a client would call it, with hostile bodies. */
const jsonCall: fc.Arbitrary<Shape> = fc.oneof(
  fc.record({ method: fc.constant('POST'), path: fc.constant('/v1/tables'), body: jsonText(schema) }),
  fc.record({ method: fc.constant('POST'), path: tableName.map((t) => `/v1/tables/${percentEncoded(t)}/rows`), body: jsonText(fc.oneof(fc.array(row, { maxLength: 4 }), row)) }),
  fc.record({ method: fc.constant('POST'), path: tableName.map((t) => `/v1/tables/${percentEncoded(t)}/delete`), body: jsonText(fc.oneof(fc.array(row, { maxLength: 4 }), row)) }),
  fc.record({ method: fc.constant('POST'), path: tableName.map((t) => `/v1/tables/${percentEncoded(t)}/query`), body: jsonText(query) }),
  fc.record({ method: fc.constantFrom('POST', 'GET'), path: fc.constantFrom('/v1/flush', '/v1/tables', '/v1/status', '/health'), body: jsonText(anyJson) }),
  fc.record({ method: fc.constant('DELETE'), path: tableName.map((t) => `/v1/tables/${percentEncoded(t)}`), body: jsonText(anyJson) }),
  fc.record({ method: fc.constant('POST'), path: fc.oneof(fc.nat(5), nasty(4)).map((id) => `/v1/shards/${percentEncoded(String(id))}/migrate`), body: jsonText(anyJson) }),
).chain((call) => jsonType.map((type) => ({ ...call, contentType: type, body: Buffer.from(call.body) })));

const lineParams = fc
  .array(fc.tuple(fc.constantFrom('precision', 'partial', 'db', 'org', 'bucket'), fc.oneof(fc.constantFrom('ns', 'ms', 's', 'h', 'n', 'true', '1', 'false', 'maybe', ''), nasty(4).map(percentEncoded))), { maxLength: 3 })
  .map((params) => (params.length === 0 ? '' : `?${params.map(([k, v]) => `${k}=${v}`).join('&')}`));
/** Line protocol writes: any content type, plain or gzip. */
const lineCall: fc.Arbitrary<Shape & { readonly gzip: boolean }> = fc
  .record({ path: fc.constantFrom('/v1/influxdb/write', '/v1/influxdb/api/v2/write'), params: lineParams, contentType, text: lineProtocol, gzip: rarely(fc.constant(false), fc.constant(true)) })
  .map(({ path, params, contentType: type, text, gzip }) => ({ method: 'POST', path: path + params, contentType: type, body: gzip ? gzipSync(text) : Buffer.from(text), gzip }));

/** Anything: methods, targets, bodies a client may not send. */
const segment = fc.oneof({ weight: 4, arbitrary: tableName.map(percentEncoded) }, { weight: 1, arbitrary: fc.constantFrom('%zz', '%E0%A4%A', '..', '%2e%2e', '%00', '') });
const wildCall: fc.Arbitrary<Shape> = fc.record({
  method: rarely(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), fc.oneof(fc.constantFrom('TRACE', 'CONNECT', 'PROPFIND'), fc.string({ minLength: 1, maxLength: 8, unit: fc.constantFrom('A', 'Z', 'g', '-', '!', '\u00ff') }))),
  path: rarely(
    fc.oneof(
      fc.constantFrom('/v1/tables', '/v1/flush', '/v1/status', '/v1/cluster/status', '/health', '/metrics', '/v1/machines', '/', '/dashboard/app.js', '/dashboard/x', '/v1/influxdb/ping', '/v1/influxdb/health'),
      fc.tuple(segment, fc.constantFrom('', '/rows', '/delete', '/query', '/nope')).map(([t, rest]) => `/v1/tables/${t}${rest}`),
      fc.tuple(segment, segment).map(([a, b]) => `/${a}/${b}`),
    ),
    fc.oneof(nasty(20).map((t) => `/${t}`), nasty(6).map((q) => `/v1/tables?${q}`)),
  ),
  contentType,
  body: fc.oneof(fc.constant(undefined), fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), jsonText(anyJson).map((t) => Buffer.from(t)), lineProtocol.map((t) => Buffer.from(t))),
});

const request: fc.Arbitrary<RawRequest> = fc
  .record({
    call: fc.oneof({ weight: 3, arbitrary: jsonCall }, { weight: 2, arbitrary: lineCall }, { weight: 2, arbitrary: wildCall }),
    host: rarely(fc.constant('127.0.0.1'), fc.oneof(fc.constantFrom('attacker.example', 'localhost:1', '[::1]'), nasty(8))),
    origin: rarely(fc.constant(undefined), fc.constantFrom('http://evil.example', 'null', 'http://127.0.0.1')),
    extra: rarely(fc.constant([] as [string, string][]), fc.array(fc.tuple(fc.oneof(fc.constantFrom('X-Note', 'Accept', 'Transfer-Encoding', 'Content-Encoding'), nasty(6)), nasty(10)), { minLength: 1, maxLength: 2 })),
  })
  // The stored rows must be out of every write's reach: no dropping their table, no keys of theirs (hosts "stored-<n>").
  // /v1/events streams for ever.
  .filter(({ call }) => !(call.method === 'DELETE' && /^\/v1\/tables\/stored\/?(\?|$)/.test(call.path)) && !call.path.startsWith('/v1/events') && !(call.body?.includes('stored-') ?? false))
  .map(({ call, host, origin, extra }) => ({
    method: call.method,
    path: call.path,
    body: call.body,
    headers: [
      ['Host', host],
      ...(call.contentType === undefined ? [] : [['Content-Type', call.contentType] as const]),
      ...('gzip' in call && call.gzip ? [['Content-Encoding', 'gzip'] as const] : []),
      ...(origin === undefined ? [] : [['Origin', origin] as const]),
      ...extra,
    ],
  }));

// ---------------------------------------------------------------- the properties

describe('fuzz: the HTTP API and the line-protocol parser', () => {
  let dir: string;
  let db: Reprise;
  let app: ReturnType<typeof createHttpServer>;
  let port: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-fuzz-'));
    db = await open({ dataDir: dir, shards: 2, logger: false });
    // Small caps, so that fuzzed requests reach them too.
    app = createHttpServer(db, { logger: pino({ level: 'silent' }), requestTimeoutMs: 2000, maxRowsPerWrite: 50, maxTablesPerWrite: 5 });
    await db.createTable(storedSchema);
    await db.insert(STORED, storedRows);
    await db.flush();
    // One stored row in the memtable as well as in an SST.
    await db.insert(STORED, [{ ...storedRows[5]!, note: 'newer' }]);
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await app.close();
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the line-protocol parser never throws on any text, names a line for every error, and stops at its line cap', () => {
    fc.assert(
      fc.property(fc.oneof(lineProtocol, fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('utf8'))), fc.integer({ min: 1, max: 5 }), (text, cap) => {
        const { points, errors } = parseLineProtocol(text);
        const lines = text.split('\n').length;
        for (const e of errors) {
          expect(e.line).toBeGreaterThanOrEqual(1);
          expect(e.line).toBeLessThanOrEqual(lines);
          expect(e.message.startsWith(`line ${e.line}: `)).toBe(true);
        }
        for (const p of points) expect(p.fields.length).toBeGreaterThan(0);
        try {
          const capped = parseLineProtocol(text, cap);
          expect(capped.points.length + capped.errors.length).toBeLessThanOrEqual(cap);
        } catch (err) {
          expect(err).toBeInstanceOf(TooManyLinesError);
          expect(points.length + errors.length).toBeGreaterThan(cap);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('every answer to a hostile request that is not a 2xx is the error envelope with a client code and a status below 500; stored rows are unchanged', async () => {
    // The stored rows' hosts, "stored-<n>": fuzzed writes to this table have other hosts.
    const storedOnes = () => db.query(STORED, { where: { host: { gte: 'stored-', lt: 'stored.' } } });
    const before = await storedOnes();
    expect(before).toHaveLength(6);
    let written = 0;
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        const res = await exchange(port, req);
        if (res.status === 204 || (res.status === 200 && req.path.includes('/rows'))) written++;
        const what = `${req.method} ${req.path} -> ${res.head.split('\r\n')[0]}`;
        expect(res.status, what).toBeGreaterThanOrEqual(200);
        expect(res.status, what).toBeLessThan(500);
        if (res.status < 300 || req.method === 'HEAD') return;
        expect(res.head.toLowerCase(), what).toContain('content-type: application/json');
        const answer = JSON.parse(res.body.toString('utf8')) as { error: { code: unknown; message: unknown } };
        expect(Object.keys(answer), what).toEqual(['error']);
        expect(CLIENT_CODES.has(answer.error.code as string), `${what}: ${String(answer.error.code)}`).toBe(true);
        expect(typeof answer.error.message, what).toBe('string');
        expect((answer.error.message as string).length, what).toBeGreaterThan(0);
      }),
      { numRuns: 1500 },
    );
    // The fuzzed writes that succeeded went elsewhere (other keys, other tables).
    expect(written).toBeGreaterThan(0);
    expect(await storedOnes()).toEqual(before);
    await db.flush();
    expect(await storedOnes()).toEqual(before);
    const health = await exchange(port, { method: 'GET', path: '/health', headers: [['Host', '127.0.0.1']], body: undefined });
    expect(health.status).toBe(200);
  });
});
