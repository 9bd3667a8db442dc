import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { WriteBudget } from '../../../src/api/write-budget.js';

// Backpressure: writes hold their body's bytes until answered; past
// limits.maxWriteBytesInFlight a write is refused 503 OVERLOADED with
// Retry-After, nothing of it written, and the node recovers once the
// writes in flight are answered.

describe('WriteBudget', () => {
  it('admits up to the bound, refuses past it, admits a write larger than the bound alone, and releases once', () => {
    const budget = new WriteBudget(100);
    const a = budget.admit(60, 'a');
    expect(() => budget.admit(50, 'b')).toThrow(expect.objectContaining({ code: 'OVERLOADED', message: expect.stringMatching(/60 bytes of writes are in flight.*50 more.*\(100\)/) }));
    const c = budget.admit(40, 'c');
    expect(budget.inFlight()).toBe(100);
    a();
    a();
    expect(budget.inFlight()).toBe(40);
    c();
    const huge = budget.admit(1_000, 'huge');
    expect(() => budget.admit(1, 'one more')).toThrow(expect.objectContaining({ code: 'OVERLOADED' }));
    huge();
    expect([budget.inFlight(), budget.refused()]).toEqual([0, 2]);
  });
});

describe('HTTP writes past the budget', () => {
  let dir: string;
  let db: Reprise;
  let app: ReturnType<typeof createHttpServer>;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-write-budget-'));
    db = await open({ dataDir: dir, logger: pino({ level: 'silent' }) });
    app = createHttpServer(db, { logger: pino({ level: 'silent' }), maxWriteBytesInFlight: 4_096 });
    await db.createTable({ name: 'm', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'v', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] });
  });
  afterAll(async () => {
    await app?.close();
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses 503 OVERLOADED with Retry-After while the bound is held, writes nothing of what it refuses, and recovers', async () => {
    const batch = (k: number) => Array.from({ length: 40 }, (_, i) => ({ host: `h${k}`, v: i, ts: i }));
    const bodies = Array.from({ length: 16 }, (_, k) => JSON.stringify(batch(k)));
    expect(bodies[0]!.length).toBeGreaterThan(1_000);
    const answers = await Promise.all(
      bodies.map((payload) => app.inject({ method: 'POST', url: '/v1/tables/m/rows', payload, headers: { 'content-type': 'application/json' } })),
    );
    const refused = answers.filter((a) => a.statusCode === 503);
    const written = answers.filter((a) => a.statusCode === 200);
    expect(refused.length + written.length).toBe(16);
    expect(refused.length).toBeGreaterThan(0);
    expect(written.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(r.headers['retry-after']).toBe('1');
      expect(r.json().error).toMatchObject({ code: 'OVERLOADED', message: expect.stringMatching(/maxWriteBytesInFlight/) });
    }
    // Exactly the acknowledged batches are stored.
    const hosts = new Set((await db.query('m', { columns: ['host'] })).map((r) => r.host));
    const acked = new Set(answers.flatMap((a, k) => (a.statusCode === 200 ? [`h${k}`] : [])));
    expect(hosts).toEqual(acked);
    // Everything answered: the budget is free again, and line protocol is admitted too.
    const again = await app.inject({ method: 'POST', url: '/v1/tables/m/rows', payload: bodies[0]!, headers: { 'content-type': 'application/json' } });
    expect(again.statusCode).toBe(200);
    const lines = await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: 'cpu,host=a v=1 1000' });
    expect(lines.statusCode).toBe(204);
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(new RegExp(`reprise_http_writes_overloaded_total ${refused.length}\\b`));
    expect(metrics).toMatch(/reprise_http_write_bytes_in_flight 0\b/);
  });
});
