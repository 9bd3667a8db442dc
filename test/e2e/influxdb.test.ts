import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpError, InfluxDB, Point, setLogger } from '@influxdata/influxdb-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, startServer, type Server } from '../harness/standalone.js';

describe('InfluxDB line protocol: the official client writing to reprise standalone', () => {
  let server: Server;
  let dir: string;
  beforeAll(async () => {
    // The client logs rejected writes itself; the tests check them.
    setLogger({ error: () => undefined, warn: () => undefined });
    dir = await mkdtemp(join(tmpdir(), 'reprise-influx-e2e-'));
    server = await startServer(dir);
  });
  afterAll(async () => {
    server?.child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  // The client appends /api/v2/write to its URL, as it does for InfluxDB 2 (and GreptimeDB).
  const client = () => new InfluxDB({ url: `${server.url}/v1/influxdb`, token: 'unused' });

  it('writes points of every field type, creates the table, and the rows come back through the HTTP API', async () => {
    const writeApi = client().getWriteApi('org', 'public', 'ns', { maxRetries: 0, batchSize: 1000 });
    const t0 = Date.UTC(2024, 0, 1);
    for (let i = 0; i < 300; i++) {
      writeApi.writePoint(
        new Point('weather')
          .tag('station', `st ${i % 3}`)
          .tag('city', i % 2 ? 'Oslo, NO' : 'Lima=PE')
          .floatField('temp', 10 + i / 4)
          .intField('humidity', i)
          .booleanField('raining', i % 5 === 0)
          .stringField('note', `"quoted" \\ note ${i}`)
          .timestamp(new Date(t0 + i * 1000)),
      );
    }
    // 300 points: well over the client's gzip threshold, so the body arrives compressed.
    await writeApi.close();

    const table = await call(server, 'GET', '/v1/tables/weather');
    // The client writes tags and fields sorted by key: the order they are first seen in.
    expect(table.body.schema.columns).toEqual([
      { name: 'city', type: 'string', role: 'tag' },
      { name: 'station', type: 'string', role: 'tag' },
      { name: 'humidity', type: 'int64', role: 'field' },
      { name: 'note', type: 'string', role: 'field' },
      { name: 'raining', type: 'bool', role: 'field' },
      { name: 'temp', type: 'float64', role: 'field' },
      { name: 'ts', type: 'timestamp', role: 'time' },
    ]);
    const all = await call(server, 'POST', '/v1/tables/weather/query', {});
    expect(all.body.rows).toHaveLength(300);
    const one = await call(server, 'POST', '/v1/tables/weather/query', { where: { station: 'st 1', city: 'Oslo, NO' }, timeRange: { from: t0, to: t0 + 2000 } });
    expect(one.body.rows).toEqual([
      { city: 'Oslo, NO', station: 'st 1', humidity: 1, note: '"quoted" \\ note 1', raining: false, temp: 10.25, ts: t0 + 1000 },
    ]);
  });

  it('a bad point is a 400 naming its line; nothing of that request is written', async () => {
    const writeApi = client().getWriteApi('org', 'public', 'ms', { maxRetries: 0 });
    writeApi.writeRecords(['weather,station=x,city=y temp=1 1', 'weather,station=x,city=y temp="hot" 2', 'weather,station=x,city=y wind=3 3']);
    const err = await writeApi.close().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HttpError);
    const http = err as HttpError;
    expect(http.statusCode).toBe(400);
    const body = JSON.parse(http.body ?? '') as { error: { code: string; message: string; lines: { line: number; message: string }[] } };
    expect(body.error.code).toBe('INVALID_ROW');
    expect(body.error.lines.map((l) => l.line)).toEqual([2, 3]);
    expect(body.error.lines[1]!.message).toMatch(/no column 'wind'.*schema evolution\) is not supported/);
    const rows = await call(server, 'POST', '/v1/tables/weather/query', { where: { station: 'x' } });
    expect(rows.body.rows).toEqual([]);
  });

  it('8 Telegraf-like clients writing a measurement that has no table yet, at the same moment: every write acknowledged, the table created once', async () => {
    const t0 = 1_700_000_000_000;
    const bodies = Array.from({ length: 8 }, (_, c) => Array.from({ length: 100 }, (_, i) => `telegraf_cpu,host=h${c},cpu=cpu${i % 4} usage_idle=${i / 2} ${t0 + i}`).join('\n'));
    const replies = await Promise.all(bodies.map((body) => fetch(`${server.url}/v1/influxdb/write?db=telegraf&precision=ms`, { method: 'POST', body })));
    const answers = await Promise.all(replies.map(async (r) => `${r.status} ${await r.text()}`));
    expect(answers).toEqual(bodies.map(() => '204 '));
    const tables = await call(server, 'GET', '/v1/tables');
    expect(tables.body.tables.filter((t: { name: string }) => t.name === 'telegraf_cpu')).toHaveLength(1);
    const rows = await call(server, 'POST', '/v1/tables/telegraf_cpu/query', {});
    expect(rows.body.rows).toHaveLength(8 * 100);
  });

  it('the v1 path with db and precision, as curl or Telegraf send it', async () => {
    const response = await fetch(`${server.url}/v1/influxdb/write?db=public&precision=s`, {
      method: 'POST',
      body: 'disk,host=h1 used_percent=71.5,inodes=12i 1700000000\ndisk,host=h2 used_percent=12 1700000001\n',
    });
    expect(response.status).toBe(204);
    const rows = await call(server, 'POST', '/v1/tables/disk/query', {});
    expect(rows.body.rows).toEqual([
      { host: 'h1', used_percent: 71.5, inodes: 12, ts: 1700000000000 },
      { host: 'h2', used_percent: 12, inodes: null, ts: 1700000001000 },
    ]);
  });
});
