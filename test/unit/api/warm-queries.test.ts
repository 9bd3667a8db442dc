import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpServer, warmHttpQueries, warmHttpQueriesWhenIdle } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { parseUserProvider } from '../../../src/api/users.js';

// The warm-up before a server listens: the common queries through the
// server's own query route, as a read-only internal user.

const logger = pino({ level: 'silent' });
const schema = (name: string) => ({
  name,
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'core', type: 'string', role: 'tag' },
    { name: 'v', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
});

let dir: string | undefined;
let db: Reprise | undefined;

afterEach(async () => {
  await db?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  db = dir = undefined;
});

async function runtimeWith(tables: Record<string, number>): Promise<Reprise> {
  dir = await mkdtemp(join(tmpdir(), 'reprise-warm-'));
  db = await open({ dataDir: dir, logger });
  for (const [name, newest] of Object.entries(tables)) {
    await db.createTable(schema(name));
    if (newest > 0) await db.insert(name, Array.from({ length: 50 }, (_, i) => ({ host: `h${i % 3}`, core: `c${i % 2}`, v: i, ts: newest - i * 10_000 })));
  }
  return db;
}

describe('warmHttpQueries', () => {
  it('queries the table with the newest row, behind a user provider too, and changes nothing', async () => {
    const db = await runtimeWith({ old: 1_000_000, empty: 0, recent: 9_000_000 });
    const app = createHttpServer(db, { logger, users: parseUserProvider('static_user_provider:cmd:admin=s3cret') });
    const before = await db.query('recent', {});
    const outcome = await warmHttpQueries(app, db, logger);
    expect(outcome.table).toBe('recent');
    // One newest-row query per table, then rounds of three (rows of a series, of a tag, an aggregation).
    expect(outcome.queries).toBeGreaterThan(3 + 3);
    expect(await db.query('recent', {})).toEqual(before);
    expect(db.listTables().map((t) => t.name).sort()).toEqual(['empty', 'old', 'recent']);
    await app.close();
  });

  it('does nothing without rows, and its header is no credential to anyone else', async () => {
    const db = await runtimeWith({ empty: 0 });
    const app = createHttpServer(db, { logger, users: parseUserProvider('static_user_provider:cmd:admin=s3cret') });
    const outcome = await warmHttpQueries(app, db, logger);
    expect(outcome.table).toBeUndefined();
    expect(outcome.queries).toBe(1);
    for (const value of ['', 'x', 'true', 'é'.repeat(32)]) {
      const res = await app.inject({ method: 'POST', url: '/v1/tables/empty/query', payload: {}, headers: { 'x-reprise-warm-up': value } });
      expect(res.statusCode).toBe(401);
    }
    await app.close();
  });

  it('warms up once a server loaded after its start goes idle, and leaves it out of the request metrics', async () => {
    const db = await runtimeWith({ cpu: 0 });
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => lines.push(line) });
    const app = createHttpServer(db, { logger: log });
    const stop = warmHttpQueriesWhenIdle(app, db, log);
    try {
      await new Promise((r) => setTimeout(r, 1600));
      expect(lines.some((l) => l.includes('warmed once idle'))).toBe(false); // no request yet: nothing to warm on
      const write = await app.inject({ method: 'POST', url: '/v1/tables/cpu/rows', payload: [{ host: 'a', core: 'c0', v: 1, ts: 60_000 }] });
      expect(write.statusCode).toBe(200);
      const deadline = Date.now() + 5000;
      while (!lines.some((l) => l.includes('warmed once idle')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const warmed = JSON.parse(lines.find((l) => l.includes('warmed once idle')) as string);
      expect(warmed).toMatchObject({ table: 'cpu' });
      expect(warmed.queries).toBeGreaterThan(3);
      const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      const queryCount = /reprise_http_request_duration_seconds_count\{[^}]*route="\/v1\/tables\/:name\/query"/;
      expect(metrics).not.toMatch(queryCount);
      // The header alone does not hide a request from the metrics.
      await app.inject({ method: 'POST', url: '/v1/tables/cpu/query', payload: {}, headers: { 'x-reprise-warm-up': 'guess' } });
      expect((await app.inject({ method: 'GET', url: '/metrics' })).body).toMatch(queryCount);
    } finally {
      stop();
      await app.close();
    }
  });
});
