import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';

const logger = pino({ level: 'silent' });
const schema = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'cpu_util', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};

/** A raw TCP client: what it was sent back, and when the server closed it. */
function rawClient(port: number): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    const t0 = performance.now();
    const closed = new Promise<number>((done) => socket.on('close', () => done(performance.now() - t0)));
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, received: () => text, closed }));
    socket.once('error', reject);
  });
}

// What a page on another site can make a browser send (issue 14, finding 11), and slow or numerous clients (finding 12).
describe('HTTP hardening', () => {
  let dir: string;
  let db: Reprise;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-http-'));
    db = await open({ dataDir: dir, shards: 1, logger: false });
  });
  afterEach(async () => {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  const rowsOf = async (app: ReturnType<typeof createHttpServer>) =>
    (await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', payload: {} })).json().rows as unknown[];

  it('refuses a Host it does not answer to (DNS rebinding), serves IPs, localhost and configured names', async () => {
    const app = createHttpServer(db, { logger, allowedHosts: ['reprise.internal'] });
    const refused = await app.inject({ method: 'GET', url: '/v1/tables', headers: { host: 'attacker.example' } });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error.code).toBe('FORBIDDEN');
    expect(refused.json().error.message).toContain("'attacker.example'");
    for (const host of ['127.0.0.1:4000', '[::1]:4000', 'localhost:4000', 'app.localhost', '10.1.2.3', 'Reprise.Internal:4000']) {
      expect((await app.inject({ method: 'GET', url: '/v1/tables', headers: { host } })).statusCode, host).toBe(200);
    }
    // Refused before routing: a rebound page cannot create a table either.
    const write = await app.inject({ method: 'POST', url: '/v1/tables', headers: { host: 'attacker.example:4000' }, payload: schema });
    expect(write.statusCode).toBe(403);
    expect((await app.inject({ method: 'GET', url: '/v1/tables' })).json()).toEqual({ tables: [] });
    const any = createHttpServer(db, { logger, allowedHosts: ['*'] });
    expect((await any.inject({ method: 'GET', url: '/v1/tables', headers: { host: 'attacker.example' } })).statusCode).toBe(200);
  });

  it('refuses writes from another origin\'s page (form, text/plain, JSON), takes its own and configured ones, and clients without an Origin', async () => {
    const app = createHttpServer(db, { logger, allowedOrigins: ['https://grafana.example'] });
    expect((await app.inject({ method: 'POST', url: '/v1/tables', payload: schema })).statusCode).toBe(201);
    const line = 'system_metrics,host=h1 cpu_util=1 1000';
    const foreign = { host: '127.0.0.1:4000', origin: 'http://evil.example' };
    for (const [url, type, payload] of [
      ['/v1/influxdb/write?precision=ms', 'text/plain', line],
      ['/v1/influxdb/write?precision=ms', 'application/x-www-form-urlencoded', line],
      ['/v1/flush', 'text/plain', ''],
      ['/v1/tables/system_metrics/rows', 'application/json', JSON.stringify([{ host: 'h1', cpu_util: 2, ts: 1000 }])],
    ] as const) {
      const res = await app.inject({ method: 'POST', url, headers: { ...foreign, 'content-type': type }, payload });
      expect(res.statusCode, url).toBe(403);
      expect(res.json().error.message).toContain("origin 'http://evil.example'");
    }
    // A sandboxed page or a file sends Origin: null.
    expect((await app.inject({ method: 'POST', url: '/v1/flush', headers: { host: '127.0.0.1:4000', origin: 'null' } })).statusCode).toBe(403);
    expect(await rowsOf(app)).toEqual([]);
    // A page of another port on the same host is another origin.
    expect((await app.inject({ method: 'POST', url: '/v1/flush', headers: { host: '127.0.0.1:4000', origin: 'http://127.0.0.1:8080' } })).statusCode).toBe(403);

    // The dashboard (this server's own origin), a configured origin, and clients that send no Origin.
    const own = await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', headers: { host: '127.0.0.1:4000', origin: 'http://127.0.0.1:4000', 'content-type': 'text/plain' }, payload: line });
    expect(own.statusCode).toBe(204);
    const grafana = await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', headers: { host: '127.0.0.1:4000', origin: 'https://grafana.example' }, payload: {} });
    expect(grafana.statusCode).toBe(200);
    const curl = await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', headers: { 'content-type': 'text/plain' }, payload: 'system_metrics,host=h2 cpu_util=2 1000' });
    expect(curl.statusCode).toBe(204);
    expect(await rowsOf(app)).toHaveLength(2);
    // Reads from another origin are not writes: the browser's same-origin policy keeps their answers from the page.
    expect((await app.inject({ method: 'GET', url: '/v1/tables', headers: foreign })).statusCode).toBe(200);
  });

  it('takes JSON only on the JSON API: a text/plain body (sent cross-site without a preflight) is refused with a code', async () => {
    const app = createHttpServer(db, { logger });
    const res = await app.inject({ method: 'POST', url: '/v1/tables', headers: { 'content-type': 'text/plain' }, payload: JSON.stringify(schema) });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(res.json().error.message).toContain('application/json');
    expect((await app.inject({ method: 'GET', url: '/v1/tables' })).json()).toEqual({ tables: [] });
  });

  it('cuts off a request whose body never comes (408), and keeps serving', async () => {
    const app = createHttpServer(db, { logger, requestTimeoutMs: 300 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (app.server.address() as { port: number }).port;
      const stalled = await rawClient(port);
      stalled.socket.write('POST /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"na');
      const after = await stalled.closed;
      expect(stalled.received()).toMatch(/^HTTP\/1\.1 408/);
      expect(after).toBeGreaterThanOrEqual(250);
      expect(after).toBeLessThan(5000);
      expect((await fetch(`http://127.0.0.1:${port}/v1/tables`)).status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('closes connections past maxConnections as they arrive; the ones it holds are served', async () => {
    const app = createHttpServer(db, { logger, maxConnections: 3 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (app.server.address() as { port: number }).port;
      const held = await Promise.all([0, 1, 2].map(() => rawClient(port)));
      await new Promise((r) => setTimeout(r, 100)); // the server has accepted them
      const extra = await rawClient(port);
      await extra.closed;
      expect(extra.received()).toBe('');
      held[0]!.socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      await held[0]!.closed;
      expect(held[0]!.received()).toMatch(/^HTTP\/1\.1 200/);
      for (const c of held) c.socket.destroy();
    } finally {
      await app.close();
    }
  });

  it('refuses a table past the column cap with a coded error, and creates nothing (finding 13)', async () => {
    const app = createHttpServer(db, { logger });
    const columns = [...schema.columns, ...Array.from({ length: 1022 }, (_, i) => ({ name: `f${i}`, type: 'float64', role: 'field' }))];
    const res = await app.inject({ method: 'POST', url: '/v1/tables', payload: { name: 'wide', columns } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('INVALID_SCHEMA');
    expect(res.json().error.message).toContain('1025 columns, more than the limit of 1024 (maxColumns)');
    expect((await app.inject({ method: 'GET', url: '/v1/tables' })).json()).toEqual({ tables: [] });
  });

  it('answers what Node\'s HTTP parser or the router refuses with the error envelope, not fastify\'s own format', async () => {
    const app = createHttpServer(db, { logger, requestTimeoutMs: 300 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (app.server.address() as { port: number }).port;
      /** Send these bytes, half-close after `endAfterMs` (undefined: never), and read the reply. */
      const exchange = async (bytes: string, endAfterMs?: number) => {
        const client = await rawClient(port);
        client.socket.write(bytes);
        if (endAfterMs !== undefined) setTimeout(() => client.socket.end(), endAfterMs);
        await client.closed;
        const text = client.received();
        const [head = '', body = ''] = text.split('\r\n\r\n');
        return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head, body: JSON.parse(body) as { error: { code: string; message: string } } };
      };
      const post = 'POST /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n';
      const cases: [string, string, number | undefined, number, string, string][] = [
        ['a 100 KB URL', `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, undefined, 431, 'REQUEST_TOO_LARGE', 'headers are larger than the limit'],
        ['bad percent-encoding', 'GET /v1/tables/%zz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n', undefined, 400, 'INVALID_ARGUMENT', 'bad percent-encoding'],
        ['a request not received in time', `${post}Content-Length: 100\r\n\r\n{"na`, undefined, 408, 'REQUEST_TIMEOUT', 'within 300 ms (httpRequestTimeoutMs)'],
        ['NUL in a header', 'GET /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: a\0b\r\n\r\n', undefined, 400, 'INVALID_ARGUMENT', 'Invalid header value char'],
        ['Content-Length with chunked', `${post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, undefined, 400, 'INVALID_ARGUMENT', "Transfer-Encoding can't be present with Content-Length"],
        ['a short body', `${post}Content-Length: 100\r\n\r\n{"name":"t"}`, 50, 400, 'INVALID_ARGUMENT', 'shorter than its Content-Length'],
      ];
      for (const [what, bytes, endAfterMs, status, code, message] of cases) {
        const reply = await exchange(bytes, endAfterMs);
        expect(reply.status, what).toBe(status);
        expect(reply.head.toLowerCase(), what).toContain('content-type: application/json');
        expect(Object.keys(reply.body), what).toEqual(['error']);
        expect(reply.body.error.code, what).toBe(code);
        expect(reply.body.error.message, what).toContain(message);
      }
      expect((await fetch(`http://127.0.0.1:${port}/v1/tables`)).status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('parses valid JSON with __proto__ and constructor keys as JSON: validation names them, nothing is polluted, no name may be __proto__', async () => {
    const app = createHttpServer(db, { logger });
    const post = (url: string, payload: string) => app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload });
    const table = JSON.stringify(schema).slice(0, -1);
    const refusals: [string, string, string, string][] = [
      ['/v1/tables', `${table},"__proto__":{"polluted":true}}`, 'INVALID_SCHEMA', 'unknown key "__proto__"'],
      ['/v1/tables', JSON.stringify({ ...schema, columns: [...schema.columns, { name: '__proto__', type: 'string', role: 'field' }] }), 'INVALID_SCHEMA', 'is reserved'],
    ];
    for (const [url, payload, code, message] of refusals) {
      const res = await post(url, payload);
      expect(res.statusCode, payload).toBe(400);
      expect(res.json().error.code, payload).toBe(code);
      expect(res.json().error.message, payload).toContain(message);
    }
    expect((await post('/v1/tables', JSON.stringify(schema))).statusCode).toBe(201);
    const more: [string, string, string, string][] = [
      ['/v1/tables/system_metrics/rows', '[{"host":"h1","cpu_util":1,"ts":1000,"__proto__":{"polluted":true}}]', 'INVALID_ROW', 'unknown column "__proto__"'],
      ['/v1/tables/system_metrics/delete', '[{"host":"h1","ts":1000,"__proto__":{"polluted":true}}]', 'INVALID_ROW', 'unknown column "__proto__"'],
      ['/v1/tables/system_metrics/query', '{"where":{"__proto__":{"polluted":true}}}', 'INVALID_QUERY', 'unknown column "__proto__"'],
      ['/v1/tables/system_metrics/query', '{"constructor":{"prototype":{"polluted":true}}}', 'INVALID_QUERY', 'unknown key "constructor"'],
      ['/v1/tables/system_metrics/query', '{"aggregates":[{"fn":"count","as":"__proto__"}]}', 'INVALID_QUERY', 'not __proto__'],
    ];
    for (const [url, payload, code, message] of more) {
      const res = await post(url, payload);
      expect(res.statusCode, payload).toBe(400);
      expect(res.json().error.code, payload).toBe(code);
      expect(res.json().error.message, payload).toContain(message);
    }
    const line = await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: 'system_metrics,__proto__=x cpu_util=1 1000\nfresh,__proto__=x v=1 1000' });
    expect(line.statusCode).toBe(400);
    expect(line.json().error.lines).toHaveLength(2);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await rowsOf(app)).toEqual([]);
  });

  it('takes an empty JSON body as no body: {} where the body is optional (flush, drop, query), a coded validation error where it is not', async () => {
    const app = createHttpServer(db, { logger });
    const json = { 'content-type': 'application/json' };
    expect((await app.inject({ method: 'POST', url: '/v1/tables', payload: schema })).statusCode).toBe(201);
    expect((await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: [{ host: 'h1', cpu_util: 1, ts: 1000 }] })).statusCode).toBe(200);
    for (const payload of ['', ' \n']) {
      const flush = await app.inject({ method: 'POST', url: '/v1/flush', headers: json, payload });
      expect(flush.statusCode).toBe(200);
      expect(flush.json()).toEqual({ flushed: true });
      const query = await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', headers: json, payload });
      expect(query.json()).toEqual({ rows: [{ host: 'h1', cpu_util: 1, ts: 1000 }] });
      const rows = await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', headers: json, payload });
      expect(rows.statusCode).toBe(400);
      expect(rows.json().error.code).toBe('INVALID_ROW');
    }
    const malformed = await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', headers: json, payload: '{"where":' });
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json().error.code).toBe('MALFORMED_JSON');
    const drop = await app.inject({ method: 'DELETE', url: '/v1/tables/system_metrics', headers: json, payload: '' });
    expect(drop.statusCode).toBe(200);
    expect(drop.json()).toEqual({ dropped: 'system_metrics' });
  });

  it('an integer beyond ±(2^53-1) is quoted in errors as the client wrote it, not as JSON.parse rounded it', async () => {
    const app = createHttpServer(db, { logger });
    const post = (url: string, payload: string) => app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload });
    const counters = { name: 'counters', columns: [{ name: 'id', type: 'int64', role: 'tag' }, { name: 'n', type: 'int64', role: 'field' }, { name: 'x', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] };
    const bound = await post('/v1/tables', JSON.stringify({ ...counters, partition: { column: 'id', bounds: [0] } }).replace('"bounds":[0]', '"bounds":[9007199254740993]'));
    expect(bound.json().error.message).toContain('bound 0 (9007199254740993)');
    expect((await post('/v1/tables', JSON.stringify(counters))).statusCode).toBe(201);
    const cases: [string, string, string][] = [
      ['/v1/tables/counters/rows', '[{"id":1,"n":9007199254740993,"ts":1000}]', 'column "n" must be a safe integer, got 9007199254740993'],
      ['/v1/tables/counters/rows', '[{"id":1,"n":1,"ts":1000},{"id":2,"n":-18446744073709551617,"ts":1000}]', 'row 1: column "n" must be a safe integer, got -18446744073709551617'],
      // A key given twice holds its last value: that is the one quoted.
      ['/v1/tables/counters/rows', '[{"id":1,"n":9007199254740993,"n":9007199254740995,"ts":1000}]', 'got 9007199254740995'],
      ['/v1/tables/counters/delete', '[{"id":1,"ts":18446744073709551615}]', 'column "ts" must be a non-negative integer (epoch ms), got 18446744073709551615'],
      ['/v1/tables/counters/query', '{"where":{"id":{"gte":9007199254740993}}}', 'gte must be a safe integer, got 9007199254740993'],
      ['/v1/tables/counters/query', '{"where":{"id":12345678901234567891}}', 'got 12345678901234567891'],
      ['/v1/tables/counters/query', '{"limit":9007199254740993}', 'limit must be a positive integer, got 9007199254740993'],
    ];
    for (const [url, payload, message] of cases) {
      const res = await post(url, payload);
      expect(res.statusCode, payload).toBe(400);
      expect(res.json().error.message, payload).toContain(message);
    }
    // A float64 field takes a long integer literal as the double it is.
    expect((await post('/v1/tables/counters/rows', '[{"id":1,"n":1,"x":12345678901234567890,"ts":1000}]')).statusCode).toBe(200);
    expect((await post('/v1/tables/counters/query', '{}')).json().rows).toEqual([{ id: 1, n: 1, x: 12345678901234567000, ts: 1000 }]);
    // Safe but long integers are not quoted from the record of a key given twice.
    const duplicate = await post('/v1/tables/counters/rows', '[{"id":1,"n":9007199254740993,"n":"s","ts":1000}]');
    expect(duplicate.json().error.message).toContain('got "s"');
  });

  it('refuses a write of more rows than maxRowsPerWrite (JSON rows, delete keys, line protocol lines) with REQUEST_TOO_LARGE, writing nothing (finding 13)', async () => {
    const app = createHttpServer(db, { logger, maxRowsPerWrite: 3 });
    expect((await app.inject({ method: 'POST', url: '/v1/tables', payload: schema })).statusCode).toBe(201);
    const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ host: `h${i}`, cpu_util: i, ts: 1000 }));
    const lines = (n: number) => Array.from({ length: n }, (_, i) => `system_metrics,host=l${i} cpu_util=1 1000`).join('\n');
    const refused = [
      await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: rows(4) }),
      await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/delete', payload: rows(4).map(({ host, ts }) => ({ host, ts })) }),
      await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: lines(4) }),
      await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms&partial=true', payload: `${lines(3)}\nbad line` }),
    ];
    for (const res of refused) {
      expect(res.statusCode).toBe(413);
      expect(res.json().error.code).toBe('REQUEST_TOO_LARGE');
      expect(res.json().error.message).toMatch(/^nothing written: the request holds (4 rows|more than 3 lines), past the limit of 3 rows per write \(maxRowsPerWrite\)/);
    }
    expect(await rowsOf(app)).toEqual([]);
    // At the limit, and blank lines or comments do not count.
    expect((await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: rows(3) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: `# three\n\n${lines(3)}\n\n` })).statusCode).toBe(204);
    expect(await rowsOf(app)).toHaveLength(6);
  });
});
