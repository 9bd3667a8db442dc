import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { isRepriseError } from '../../../src/errors.js';

const logger = pino({ level: 'silent' });
// Three regions: hosts < "f", < "q", and the rest.
const schema = {
  name: 'm',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'note', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'q'] },
};
const rows = (host: string, n: number, note = '') => Array.from({ length: n }, (_, i) => ({ host, note, ts: i }));

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (err: unknown) => (isRepriseError(err) ? err.code : String(err)),
  );
}

// A node-wide bound on result rows held at once (issue 14, finding 13: four concurrent 430 MB results took RSS to 5.7 GB).
describe('memory.maxResultRowsInFlight', () => {
  let dir: string;
  let db: Reprise;
  const held = () => db.status().memory!.resultRowsInFlight;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-budget-'));
    db = await open({ dataDir: dir, shards: 2, logger: false, memory: { maxResultRows: 100, maxResultRowsInFlight: 150 } });
    await db.createTable(schema);
    await db.insert('m', [...rows('alpha', 60), ...rows('golf', 60), ...rows('tango', 60), ...rows('zulu', 101)]);
  });
  afterEach(async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a query that would pass it, OVERLOADED naming the setting; queries that finish give their rows back', async () => {
    expect(db.status().memory).toMatchObject({ maxResultRows: 100, maxResultRowsInFlight: 150, resultRowsInFlight: 0, queriesOverloaded: 0 });
    const a = await db.queryHeld('m', { where: { host: 'alpha' } });
    const b = await db.queryHeld('m', { where: { host: 'golf' } });
    expect(held()).toBe(120);
    // Asks two regions, the first answer passes the bound: refused, nothing kept of it, the later answer is not counted either.
    const refused = await db.queryHeld('m', { where: { host: { gte: 'alpha', lt: 'tz' } } }).catch((err: unknown) => err);
    expect(isRepriseError(refused, 'OVERLOADED')).toBe(true);
    expect((refused as Error).message).toMatch(/hold 120 result rows, and this one's 60 more would pass memory\.maxResultRowsInFlight \(150\)/);
    expect(held()).toBe(120);
    // Up to the bound is allowed; at it, a query is refused before any region is asked.
    const c = await db.queryHeld('m', { where: { host: 'tango' }, limit: 30 });
    expect(held()).toBe(150);
    expect(await codeOf(db.query('m', { where: { host: 'nobody' } }))).toBe('OVERLOADED');
    expect(db.status().memory!.queriesOverloaded).toBe(2);
    a.release();
    a.release();
    expect(held()).toBe(90);
    expect(await db.query('m', { where: { host: 'tango' } })).toHaveLength(60);
    b.release();
    c.release();
    expect(held()).toBe(0);
  });

  it('a query that fails gives back what it held: a region past maxResultRows, a bad query', async () => {
    const a = await db.queryHeld('m', { where: { host: 'alpha' } });
    // zulu's region answers QUERY_TOO_LARGE, the other regions' rows are given back.
    expect(await codeOf(db.query('m', { where: { host: { gte: 'golf' } } }))).toBe('QUERY_TOO_LARGE');
    expect(await codeOf(db.query('m', { where: { nope: 1 } }))).toBe('INVALID_QUERY');
    expect(held()).toBe(60);
    a.release();
    expect(held()).toBe(0);
    // An aggregation holds its groups, not the rows it folded.
    const groups = await db.queryHeld('m', { groupBy: ['host'], aggregates: [{ fn: 'count' }] });
    expect(held()).toBe(4);
    groups.release();
  });

  it('must be at least maxResultRows (one query could never run)', async () => {
    const other = await mkdtemp(join(tmpdir(), 'reprise-budget-'));
    try {
      expect(await codeOf(open({ dataDir: other, logger: false, memory: { maxResultRows: 100, maxResultRowsInFlight: 99 } }))).toBe('INVALID_ARGUMENT');
      const fine = await open({ dataDir: other, logger: false, memory: { maxResultRows: 100 } });
      expect(fine.status().memory!.maxResultRowsInFlight).toBe(200);
      await fine.close();
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('over HTTP: 503 OVERLOADED with Retry-After in the envelope; an answer holds its rows until it is sent; /v1/status and /metrics report them', async () => {
    const app = createHttpServer(db, { logger });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    const query = (body: unknown) => fetch(`http://127.0.0.1:${port}/v1/tables/m/query`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    try {
      const hold = await db.queryHeld('m', { where: { host: 'alpha' } });
      const b = await db.queryHeld('m', { where: { host: 'golf' } });
      const refused = await query({ where: { host: 'tango' } });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('OVERLOADED');
      b.release();
      expect((await query({ where: { host: 'tango' } })).status).toBe(200);
      expect((await query({ where: { host: 'zulu' } })).status).toBe(400); // QUERY_TOO_LARGE
      expect(held()).toBe(60);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toContain('reprise_result_rows_in_flight{kind="held"} 60');
      expect(metrics).toContain('reprise_result_rows_in_flight{kind="limit"} 150');
      expect(metrics).toContain('reprise_queries_overloaded_total 1');
      const status = (await (await fetch(`http://127.0.0.1:${port}/v1/status`)).json()) as { memory: Record<string, number> };
      expect(status.memory).toMatchObject({ maxResultRowsInFlight: 150, resultRowsInFlight: 60 });
      hold.release();

      // A streamed answer to a client that does not read: its rows stay held until it is sent, or the client is gone.
      // 20 MB: more than loopback's socket buffers take.
      await db.insert('m', rows('kilo', 100, 'x'.repeat(200_000)));
      for (const end of ['read', 'hang up'] as const) {
        const client = connect(port, '127.0.0.1');
        await new Promise((resolve) => client.once('connect', resolve));
        const body = JSON.stringify({ where: { host: 'kilo' } });
        client.write(`POST /v1/tables/m/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        client.pause();
        const deadline = Date.now() + 5000;
        while (held() !== 100 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
        expect(held(), end).toBe(100);
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(held(), end).toBe(100);
        const closed = new Promise((resolve) => client.once('close', resolve));
        if (end === 'read') client.resume().on('data', () => undefined);
        else client.destroy();
        await closed;
        while (held() !== 0 && Date.now() < deadline + 5000) await new Promise((resolve) => setTimeout(resolve, 10));
        expect(held(), end).toBe(0);
      }
    } finally {
      await app.close();
    }
  });
});
