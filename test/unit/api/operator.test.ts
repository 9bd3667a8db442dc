import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { describeMachine, MACHINES } from '../../../src/actors/diagram.js';
import { damageColumnChunks } from '../../harness/tamper.js';

const schema = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'cpu_util', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'z'] },
};
const rows = ['alpha', 'golf', 'zulu'].map((host, i) => ({ host, cpu_util: i, ts: 1000 + i }));
const logger = pino({ level: 'silent' });

/** `name{labels} value` lines of a scrape, by series. */
function series(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

function promtool(): Promise<string | undefined> {
  return new Promise((resolve) => execFile('promtool', ['--version'], (err) => resolve(err ? undefined : 'promtool')));
}

describe('operator endpoints (in process)', () => {
  let dir: string;
  let db: Reprise;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-operator-'));
    db = await open({ dataDir: dir, shards: 3, logger: false });
  });
  afterEach(async () => {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** The table with its rows flushed, the runtime closed: the first region and its SST directory, to damage. */
  async function flushedAndClosed(app: ReturnType<typeof createHttpServer>) {
    const table = (await app.inject({ method: 'POST', url: '/v1/tables', payload: schema })).json();
    await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: rows });
    await app.inject({ method: 'POST', url: '/v1/flush' });
    await db.close();
    const victim = table.regions[0].id as number;
    return { victim, sstDir: join(dir, 'objects', 'regions', String(victim), 'sst') };
  }

  it('GET /health: 200 ok while everything serves, 503 degraded naming a failed region and its reason (issue 14, finding 8)', async () => {
    let app = createHttpServer(db, { logger });
    expect((await app.inject({ method: 'GET', url: '/health' })).json()).toMatchObject({ status: 'ok', state: 'serving' });
    const { victim, sstDir } = await flushedAndClosed(app);
    for (const file of await readdir(sstDir)) await unlink(join(sstDir, file));
    db = await open({ dataDir: dir, shards: 3, logger: false });
    app = createHttpServer(db, { logger });
    const health = await app.inject({ method: 'GET', url: '/health' });
    expect(health.statusCode).toBe(503);
    expect(health.json()).toMatchObject({ status: 'degraded', state: 'serving', failed: { shards: [], regions: [{ id: victim, table: 'system_metrics' }] } });
    expect(health.json().failed.regions[0].error).toMatch(/SST_MISSING/);
  });

  it('an SST found corrupt by a query fails its region: /health is degraded and the region refuses writes, the others serve (issue 14, finding 8)', async () => {
    let app = createHttpServer(db, { logger });
    const { victim, sstDir } = await flushedAndClosed(app);
    const [file] = await readdir(sstDir);
    // Found when a chunk is read, not at open.
    await damageColumnChunks(join(sstDir, file!));
    db = await open({ dataDir: dir, shards: 3, logger: false });
    app = createHttpServer(db, { logger });
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);

    const query = await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', payload: { where: { host: 'alpha' } } });
    expect(query.statusCode).toBe(500);
    expect(query.json().error.code).toBe('SST_CORRUPT');
    const health = await app.inject({ method: 'GET', url: '/health' });
    expect(health.statusCode).toBe(503);
    expect(health.json()).toMatchObject({ status: 'degraded', failed: { shards: [], regions: [{ id: victim, table: 'system_metrics' }] } });
    expect(health.json().failed.regions[0].error).toMatch(/SST_CORRUPT.*corrupt/);
    const write = await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: [{ host: 'alpha', cpu_util: 9, ts: 5000 }] });
    expect(write.json().error.code).toBe('REGION_FAILED');
    expect((await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: [{ host: 'golf', cpu_util: 9, ts: 5000 }] })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', payload: { where: { host: 'golf' } } })).json().rows).toHaveLength(2);
  });

  it('GET /metrics: WAL, flush, state and HTTP metrics of this runtime only', async () => {
    const app = createHttpServer(db, { logger });
    expect((await app.inject({ method: 'POST', url: '/v1/tables', payload: schema })).statusCode).toBe(201);
    expect((await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: rows })).json()).toEqual({ written: 3 });
    expect((await app.inject({ method: 'POST', url: '/v1/flush' })).statusCode).toBe(200);
    await app.inject({ method: 'GET', url: '/v1/nothing' });

    const scrape = await app.inject({ method: 'GET', url: '/metrics' });
    expect(scrape.statusCode).toBe(200);
    expect(scrape.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const s = series(scrape.body);
    expect(s.get('reprise_wal_append_duration_seconds_count')).toBeGreaterThanOrEqual(4);
    expect(s.get('reprise_wal_append_batch_records_count')).toBe(s.get('reprise_wal_append_duration_seconds_count'));
    expect(s.get('reprise_wal_appended_bytes_total{topic="reprise_wal_meta"}')).toBeGreaterThan(0);
    for (const shard of [0, 1, 2]) expect(s.get(`reprise_wal_appended_records_total{topic="reprise_wal_${shard}"}`)).toBeGreaterThanOrEqual(3);
    expect(s.get('reprise_flushes_total{actor="node",result="ok"}')).toBe(1);
    expect(s.get('reprise_flushes_total{actor="shard",result="ok"}')).toBe(3);
    expect(s.get('reprise_flushes_total{actor="region",result="ok"}')).toBe(3);
    expect(s.get('reprise_flush_duration_seconds_count{actor="node"}')).toBe(1);
    expect(s.get('reprise_regions{state="serving"}')).toBe(3);
    expect(s.get('reprise_regions{state="failed"}')).toBe(0);
    expect(s.get('reprise_shards{state="serving"}')).toBe(3);
    expect(s.get('reprise_nodes{state="serving"}')).toBe(1);
    expect(s.get('reprise_memtable_bytes')).toBe(0);
    expect(s.get('reprise_transitions_total{actor="region",from="serving",to="flushing"}')).toBe(3);
    expect(s.get('reprise_http_request_duration_seconds_count{method="POST",route="/v1/tables/:name/rows",status_code="200"}')).toBe(1);
    expect(s.get('reprise_http_request_duration_seconds_count{method="GET",route="unmatched",status_code="404"}')).toBe(1);
    // Every sample is ours: no global registry, no process metrics unless asked.
    expect([...s.keys()].every((k) => k.startsWith('reprise_'))).toBe(true);

    // A second runtime in the same process has its own registry.
    const other = await open({ dataDir: join(dir, 'other'), shards: 1, logger: false });
    const otherScrape = series(await createHttpServer(other, { logger }).inject({ method: 'GET', url: '/metrics' }).then((r) => r.body));
    expect(otherScrape.get('reprise_shards{state="serving"}')).toBe(1);
    expect(otherScrape.get('reprise_flushes_total{actor="node",result="ok"}')).toBeUndefined();
    await other.close();
    await app.close();
  });

  it('replay metrics after a restart that replays', async () => {
    await db.createTable(schema);
    for (let i = 0; i < 20; i++) await db.insert('system_metrics', rows.map((r) => ({ ...r, ts: r.ts + i * 10 })));
    await db.close({ flush: false });
    db = await open({ dataDir: dir, shards: 3, logger: false });
    const s = series(await db.observer.registry.metrics());
    const replayed = [0, 1, 2].map((shard) => s.get(`reprise_replay_entries_total{shard="${shard}"}`) ?? 0);
    expect(replayed.reduce((a, b) => a + b)).toBeGreaterThanOrEqual(60);
    expect(s.get('reprise_replay_bytes_total{shard="0"}')).toBeGreaterThan(0);
    expect(s.get('reprise_replay_duration_seconds_count')).toBe(3);
    for (const shard of [0, 1, 2]) expect(s.get(`reprise_replay_remaining_records{shard="${shard}"}`)).toBe(0);
    expect(s.get('reprise_memtable_bytes')).toBeGreaterThan(0);
  });

  it('promtool check metrics accepts the scrape (process metrics included)', async (ctx) => {
    if (!(await promtool())) ctx.skip('promtool is not installed (Debian package prometheus; CI installs it)');
    const app = createHttpServer(db, { logger, processMetrics: true });
    await app.inject({ method: 'POST', url: '/v1/tables', payload: schema });
    await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: rows });
    await app.inject({ method: 'POST', url: '/v1/flush' });
    await app.inject({ method: 'POST', url: '/v1/tables/system_metrics/rows', payload: rows.map((r) => ({ ...r, ts: r.ts + 1 })) });
    await db.close({ flush: false });
    db = await open({ dataDir: dir, shards: 3, logger: false });
    const app2 = createHttpServer(db, { logger, processMetrics: true });
    await app2.inject({ method: 'POST', url: '/v1/tables/system_metrics/query', payload: {} });
    const body = (await app2.inject({ method: 'GET', url: '/metrics' })).body;
    expect(body).toMatch(/^process_cpu_seconds_total /m);
    expect(body).toMatch(/^reprise_replay_entries_total\{shard="0"\} /m);
    const result = await new Promise<{ code: number; output: string }>((resolve) => {
      const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
      );
      child.stdin!.end(body);
    });
    expect(result).toEqual({ code: 0, output: '' });
    await app.close();
    await app2.close();
  });

  it('GET /v1/machines: each machine with its states, transitions and an SVG', async () => {
    const app = createHttpServer(db, { logger });
    const { machines } = (await app.inject({ method: 'GET', url: '/v1/machines' })).json() as {
      machines: { kind: string; states: { name: string }[]; transitions: unknown[]; svg: string }[];
    };
    expect(machines.map((m) => m.kind)).toEqual(['node', 'shard', 'region']);
    for (const m of machines) {
      const d = describeMachine(MACHINES[m.kind]!);
      expect(m.states).toEqual(d.states);
      expect(m.svg).toMatch(/^<svg class="machine"/);
      for (const s of d.states) expect(m.svg).toContain(`data-state="${s.name}"`);
      const pairs = new Set(d.transitions.map((t) => `${t.from}>${t.to}`));
      expect(m.svg.match(/<path class="edge" data-from/g)).toHaveLength(pairs.size);
    }
  });

  it('serves the dashboard files, nothing else from their folder', async () => {
    const app = createHttpServer(db, { logger });
    const page = await app.inject({ method: 'GET', url: '/' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.body).toContain('/dashboard/app.js');
    expect((await app.inject({ method: 'GET', url: '/dashboard/app.js' })).headers['content-type']).toMatch(/^text\/javascript/);
    expect((await app.inject({ method: 'GET', url: '/dashboard/style.css' })).headers['content-type']).toMatch(/^text\/css/);
    for (const url of ['/dashboard/index.html', '/dashboard/..%2fhttp.ts', '/dashboard/nope.js']) {
      expect((await app.inject({ method: 'GET', url })).statusCode).toBe(404);
    }
  });

  it('GET /v1/events: a snapshot, then transitions and status as they happen; bounded; ended by close', async () => {
    const app = createHttpServer(db, { logger, events: { maxClients: 1, statusEveryMs: 50 } });
    await db.createTable(schema);
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const response = await fetch(`${url}/v1/events`);
    expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const events: { event: string; data: any }[] = [];
    let buffer = '';
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    const until = async (predicate: () => boolean) => {
      while (!predicate()) {
        const { value, done } = await reader.read();
        if (done) return false;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(frame)?.[1];
          const data = /^data: (.*)$/m.exec(frame)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) });
        }
      }
      return true;
    };
    await until(() => events.length > 0);
    expect(events[0]!.event).toBe('snapshot');
    expect(events[0]!.data.status.nodes[0].state).toBe('serving');
    expect(events[0]!.data.transitions.some((t: { kind: string; to: string }) => t.kind === 'node' && t.to === 'serving')).toBe(true);

    // One stream at most here: the next is refused.
    const refused = await fetch(`${url}/v1/events`);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('UNAVAILABLE');

    await db.insert('system_metrics', rows);
    await db.flush();
    await until(() => events.some((e) => e.event === 'transition' && e.data.kind === 'node' && e.data.to === 'serving' && e.data.from === 'flushing'));
    const transitions = events.filter((e) => e.event === 'transition').map((e) => `${e.data.kind}:${e.data.from}>${e.data.to}`);
    expect(transitions).toContain('region:serving>flushing');
    expect(transitions).toContain('shard:flushing>serving');
    await until(() => events.some((e) => e.event === 'status' && e.data.nodes[0].shards.some((s: { flushedEntryId: number }) => s.flushedEntryId > 1)));

    // Closing the server ends the stream (it would otherwise hold the close forever).
    await app.close();
    expect(await until(() => false)).toBe(false);
  });
});
