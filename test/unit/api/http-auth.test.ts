import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { parseUserProvider } from '../../../src/api/users.js';

// The HTTP API behind a static user provider: Basic auth everywhere but
// /health, InfluxDB's u/p and Token forms, and each user's mode.

let dir: string;
let db: Reprise;
let app: ReturnType<typeof createHttpServer>;

const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const schema = { name: 'm', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'v', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-auth-'));
  db = await open({ dataDir: dir, logger: pino({ level: 'silent' }) });
  const users = parseUserProvider('static_user_provider:cmd:admin=s3cret,viewer:ro=look,writer:wo=put');
  app = createHttpServer(db, { logger: pino({ level: 'silent' }), users });
});

afterAll(async () => {
  await app?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('HTTP with a user provider', () => {
  it('answers /health without credentials and everything else 401 with a Basic challenge', async () => {
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    const res = await app.inject({ method: 'GET', url: '/v1/tables' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Basic realm="reprise"');
    expect(res.json().error.code).toBe('UNAUTHENTICATED');
    const wrong = await app.inject({ method: 'GET', url: '/v1/tables', headers: basic('admin', 'nope') });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().error.message).not.toContain('nope');
    expect((await app.inject({ method: 'GET', url: '/v1/tables', headers: basic('admin', 's3cret') })).statusCode).toBe(200);
  });

  it('takes InfluxDB clients\' u/p and Token credentials on the line-protocol route', async () => {
    expect((await app.inject({ method: 'POST', url: '/v1/influxdb/write', payload: 'cpu,host=a v=1 1000' })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/v1/influxdb/write?u=admin&p=s3cret&precision=ms', payload: 'cpu,host=a v=1 1000' })).statusCode).toBe(204);
    expect((await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: 'cpu,host=b v=2 1000', headers: { authorization: 'Token admin:s3cret' } })).statusCode).toBe(204);
    expect(await db.query('cpu', { columns: ['host'] })).toEqual([{ host: 'a' }, { host: 'b' }]);
  });

  it("enforces each user's mode on the JSON API and on SQL", async () => {
    expect((await app.inject({ method: 'POST', url: '/v1/tables', payload: schema, headers: basic('viewer', 'look') })).json().error.code).toBe('FORBIDDEN');
    expect((await app.inject({ method: 'POST', url: '/v1/tables', payload: schema, headers: basic('writer', 'put') })).statusCode).toBe(201);
    expect((await app.inject({ method: 'POST', url: '/v1/tables/m/rows', payload: [{ host: 'h', v: 1, ts: 5 }], headers: basic('writer', 'put') })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: '/v1/tables/m/query', payload: {}, headers: basic('writer', 'put') })).statusCode).toBe(403);
    expect((await app.inject({ method: 'POST', url: '/v1/tables/m/query', payload: {}, headers: basic('viewer', 'look') })).json().rows).toEqual([{ host: 'h', v: 1, ts: 5 }]);
    const sql = (user: string, password: string, text: string) =>
      app.inject({ method: 'POST', url: '/v1/sql', payload: `sql=${encodeURIComponent(text)}`, headers: { ...basic(user, password), 'content-type': 'application/x-www-form-urlencoded' } });
    expect((await sql('viewer', 'look', 'DELETE FROM m')).json().error.code).toBe('FORBIDDEN');
    expect((await sql('writer', 'put', 'SELECT * FROM m')).json().error.code).toBe('FORBIDDEN');
    expect((await sql('viewer', 'look', 'SELECT v FROM m')).json().output[0].records.rows).toEqual([[1]]);
  });
});
