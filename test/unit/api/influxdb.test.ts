import { gzipSync } from 'node:zlib';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { parsePrecision, toEpochMs } from '../../../src/api/line-protocol-rows.js';
import { open, type Reprise } from '../../../src/api/runtime.js';

const logger = pino({ level: 'silent' });

describe('InfluxDB line protocol writes (in process)', () => {
  let dir: string;
  let db: Reprise;
  let app: ReturnType<typeof createHttpServer>;
  const write = (body: string | Buffer, query = '', headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: `/v1/influxdb/write?db=public${query}`, payload: body, headers: { 'content-type': 'text/plain', ...headers } });
  const rowsOf = async (table: string) => db.query(table, {});

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-influx-'));
    db = await open({ dataDir: dir, shards: 2, logger: false });
    app = createHttpServer(db, { logger });
  });
  afterEach(async () => {
    await app.close();
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a write that would create more tables than maxTablesPerWrite, creating none (issue 14, finding 13)', async () => {
    const capped = createHttpServer(db, { logger, maxTablesPerWrite: 2 });
    const body = ['m1,host=a v=1 1000', 'm2,host=a v=1 1000', 'm3,host=a v=1 1000'].join('\n');
    const res = await capped.inject({ method: 'POST', url: '/v1/influxdb/write?db=public&precision=ms', payload: body, headers: { 'content-type': 'text/plain' } });
    expect(res.statusCode).toBe(413);
    expect(res.json().error).toMatchObject({ code: 'REQUEST_TOO_LARGE' });
    expect(res.json().error.message).toMatch(/create 3 tables, more than the limit of 2 per write \(maxTablesPerWrite\)/);
    expect(db.listTables()).toEqual([]);
    const two = await capped.inject({ method: 'POST', url: '/v1/influxdb/write?db=public&precision=ms', payload: body.split('\n').slice(0, 2).join('\n'), headers: { 'content-type': 'text/plain' } });
    expect(two.statusCode).toBe(204);
    expect(db.listTables().map((t) => t.name).sort()).toEqual(['m1', 'm2']);
    await capped.close();
  });

  it('creates the table on first write: tags, fields (typed), ts; 204 like InfluxDB', async () => {
    const reply = await write(
      [
        'cpu,host=h1,region=eu usage=1.5,cores=8i,up=true,model="x \\"86\\"" 1667446797450000000',
        'cpu,host=h2 usage=2,cores=4i 1667446797451000000',
        'mem,host=h1 used=12i 1667446797452000000',
      ].join('\n'),
    );
    expect(reply.statusCode).toBe(204);
    expect(reply.body).toBe('');
    expect(db.describeTable('cpu').schema).toEqual({
      name: 'cpu',
      columns: [
        { name: 'host', type: 'string', role: 'tag' },
        { name: 'region', type: 'string', role: 'tag' },
        { name: 'usage', type: 'float64', role: 'field' },
        { name: 'cores', type: 'int64', role: 'field' },
        { name: 'up', type: 'bool', role: 'field' },
        { name: 'model', type: 'string', role: 'field' },
        { name: 'ts', type: 'timestamp', role: 'time' },
      ],
    });
    expect(db.describeTable('cpu').regions).toHaveLength(1);
    expect(await rowsOf('cpu')).toEqual([
      { host: 'h1', region: 'eu', usage: 1.5, cores: 8, up: true, model: 'x "86"', ts: 1667446797450 },
      // A tag a line leaves out is the empty string (tags are the primary key); a missing field is null.
      { host: 'h2', region: '', usage: 2, cores: 4, up: null, model: null, ts: 1667446797451 },
    ]);
    expect(await rowsOf('mem')).toEqual([{ host: 'h1', used: 12, ts: 1667446797452 }]);
    // Later writes to the existing table.
    expect((await write('cpu,host=h3 usage=3 1667446797453000000')).statusCode).toBe(204);
    expect((await rowsOf('cpu')).map((r) => r.host)).toEqual(['h1', 'h2', 'h3']);
  });

  it('precision: ns (default), us, ms, s (and the v1 aliases); no timestamp means now', async () => {
    await write('t,k=ns v=1 1700000000123456789');
    await write('t,k=us v=1 1700000000123456', '&precision=us');
    await write('t,k=u v=1 1700000000123456', '&precision=u');
    await write('t,k=ms v=1 1700000000123', '&precision=ms');
    await write('t,k=s v=1 1700000000', '&precision=s');
    const before = Date.now();
    await write('t,k=now v=1');
    const rows = Object.fromEntries((await rowsOf('t')).map((r) => [r.k, r.ts]));
    expect(rows).toMatchObject({ ns: 1700000000123, us: 1700000000123, u: 1700000000123, ms: 1700000000123, s: 1700000000000 });
    expect(rows.now).toBeGreaterThanOrEqual(before);
    const bad = await write('t,k=x v=1', '&precision=fortnight');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/precision 'fortnight'/) });
    expect(parsePrecision(undefined)).toBe('ns');
    expect(toEpochMs(-1n, 'ns')).toBe(-1n);
    expect(toEpochMs(-1_000_000n, 'ns')).toBe(-1n);
    expect(toEpochMs(2n, 'h')).toBe(7_200_000n);
  });

  it('all or nothing by default: any bad line is a 400 naming each bad line, nothing written, no table created', async () => {
    const reply = await write(['ok,host=a v=1 1000000', 'ok,host=b v=oops 1000000', 'ok,host=c v=1 1000000', 'ok,host=d v="one" 1000000'].join('\n'));
    expect(reply.statusCode).toBe(400);
    const { error } = reply.json() as { error: { code: string; message: string; lines: { line: number; message: string }[] } };
    expect(error.code).toBe('INVALID_ROW');
    expect(error.message).toMatch(/^nothing written: 2 bad lines: line 2: field 'v' has an invalid value 'oops'/);
    expect(error.lines.map((l) => l.line)).toEqual([2, 4]);
    expect(error.lines[1]!.message).toBe("line 4: field 'v' is a string here but float64 in earlier lines of measurement 'ok'");
    expect(db.listTables()).toEqual([]);
  });

  it('a measurement without tags is a table without tag columns: one series, keyed by time (as InfluxDB and GreptimeDB take it)', async () => {
    expect((await write(['uptime seconds=10i 3000000', 'uptime seconds=20i 1000000', 'uptime seconds=30i 2000000', 'uptime seconds=11i 3000000'].join('\n'), '&precision=ns')).statusCode).toBe(204);
    expect(db.describeTable('uptime').schema.columns).toEqual([
      { name: 'seconds', type: 'int64', role: 'field' },
      { name: 'ts', type: 'timestamp', role: 'time' },
    ]);
    // The same time replaces (the last line wins), as for any series.
    expect(await rowsOf('uptime')).toEqual([
      { seconds: 20, ts: 1 },
      { seconds: 30, ts: 2 },
      { seconds: 11, ts: 3 },
    ]);
    await db.flush();
    expect((await write('uptime seconds=40i 4000000')).statusCode).toBe(204);
    expect(await db.query('uptime', { order: 'desc', limit: 2 })).toEqual([
      { seconds: 40, ts: 4 },
      { seconds: 11, ts: 3 },
    ]);
    expect(await db.query('uptime', { aggregates: [{ fn: 'sum', column: 'seconds' }] })).toEqual([{ 'sum(seconds)': 101 }]);
    expect(await db.delete('uptime', [{ ts: 2 }])).toEqual({ deleted: 1 });
    expect((await rowsOf('uptime')).map((r) => r.ts)).toEqual([1, 3, 4]);
    // A line with tags for a table without them names the missing column.
    const tagged = await write('uptime,host=a seconds=1i 5000000');
    expect(tagged.statusCode).toBe(400);
    expect(tagged.json().error.message).toContain("table 'uptime' has no column 'host'");
  });

  it('takes the body as line protocol whatever the Content-Type: none, empty, unparseable, JSON', async () => {
    const headersOf: Record<string, string>[] = [{}, { 'content-type': '' }, { 'content-type': 'garbage' }, { 'content-type': 'application/json' }, { 'content-type': 'application/x-www-form-urlencoded' }];
    for (const [i, headers] of headersOf.entries()) {
      const res = await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: Buffer.from(`ct,host=h${i} v=1 1000`), headers });
      expect(res.statusCode, JSON.stringify(headers)).toBe(204);
    }
    expect(await rowsOf('ct')).toHaveLength(headersOf.length);
  });

  it('?partial takes true, false, 1 or 0; anything else is a 400 naming the parameter, nothing written', async () => {
    for (const value of ['maybe', 'yes', '']) {
      const res = await write('pm,host=a v=1 1000000', `&partial=${value}`);
      expect(res.statusCode, value).toBe(400);
      expect(res.json().error.code).toBe('INVALID_ARGUMENT');
      expect(res.json().error.message).toContain('query parameter partial must be true or false');
    }
    expect(db.listTables()).toEqual([]);
    expect((await write('pm,host=a v=1 1000000\nbad', '&partial=1')).statusCode).toBe(200);
    expect((await write('pm,host=a v=1 1000000\nbad', '&partial=0')).statusCode).toBe(400);
    expect((await write('pm,host=b v=1 1000000', '&partial=false')).statusCode).toBe(204);
  });

  it('?partial=true writes the good lines and reports the bad ones', async () => {
    const reply = await write(['p,host=a v=1 1000000', 'p,host=b v=1i 2000000', 'p,host=c v=3 3000000', 'garbage'].join('\n'), '&partial=true');
    expect(reply.statusCode).toBe(200);
    expect(reply.json()).toEqual({
      written: 2,
      rejected: [
        { line: 2, message: "line 2: field 'v' is an integer (1i) here but float64 in earlier lines of measurement 'p'" },
        { line: 4, message: 'line 4: missing fields (expected a space and then field=value after the measurement)' },
      ],
    });
    expect((await rowsOf('p')).map((r) => r.host)).toEqual(['a', 'c']);
    const none = await write('p,host=z v="str" 1', '&partial=true');
    expect(none.statusCode).toBe(400);
    expect(none.json().error.lines).toEqual([{ line: 1, message: "line 1: field 'v' is float64 in table 'p', but this line has a string" }]);
  });

  it('existing tables: columns must exist (no schema evolution) and match in role and type', async () => {
    await db.createTable({
      name: 'sys',
      columns: [
        { name: 'host', type: 'string', role: 'tag' },
        { name: 'n', type: 'int64', role: 'tag' },
        { name: 'cpu', type: 'float64', role: 'field' },
        { name: 'time', type: 'timestamp', role: 'time' },
      ],
      partition: { column: 'host', bounds: ['m'] },
    });
    const cases: [string, RegExp][] = [
      ['sys,host=a cpu=1,disk=2 1', /table 'sys' has no column 'disk' \(a field of line protocol\): adding columns to an existing table \(schema evolution\) is not supported/],
      ['sys,host=a,dc=x cpu=1 1', /table 'sys' has no column 'dc' \(a tag/],
      ['sys,host=a,cpu=x time=1 1', /'cpu' is a field column of table 'sys', not a tag/],
      ['sys,n=1 cpu=1 1', /tag column 'n' of table 'sys' has type int64; line protocol tags are strings/],
      ['sys,host=a host=1 1', /'host' is a tag column of table 'sys', not a field/],
      ['sys,host=a cpu=1i 1', /field 'cpu' is float64 in table 'sys', but this line has an integer \(1i\)/],
    ];
    for (const [line, message] of cases) {
      const reply = await write(line);
      expect(reply.statusCode).toBe(400);
      expect(reply.json().error.lines[0].message).toMatch(message);
    }
    expect((await write('sys,host=a cpu=1 1')).json().error.lines[0].message).toMatch(/table 'sys' needs tag 'n' \(a tag column of type int64/);
    // The table's own time column, whatever its name; rows of several regions.
    await db.createTable({
      name: 'sys2',
      columns: [
        { name: 'host', type: 'string', role: 'tag' },
        { name: 'cpu', type: 'float64', role: 'field' },
        { name: 'time', type: 'timestamp', role: 'time' },
      ],
      partition: { column: 'host', bounds: ['m'] },
    });
    expect((await write('sys2,host=a cpu=1 5000000\nsys2,host=z cpu=2 6000000')).statusCode).toBe(204);
    expect(await rowsOf('sys2')).toEqual([
      { host: 'a', cpu: 1, time: 5 },
      { host: 'z', cpu: 2, time: 6 },
    ]);
  });

  it('8 clients writing a new measurement at once: all acknowledged, the table created once, every row there', async () => {
    const clients = Array.from({ length: 8 }, (_, c) => Array.from({ length: 50 }, (_, i) => `cpu,host=c${c} usage=${i} ${1 + i}000000`).join('\n'));
    const replies = await Promise.all(clients.map((body) => write(body)));
    expect(replies.map((r) => `${r.statusCode} ${r.body}`)).toEqual(clients.map(() => '204 '));
    expect(db.listTables().filter((t) => t.name === 'cpu')).toHaveLength(1);
    expect(await rowsOf('cpu')).toHaveLength(8 * 50);
  });

  it('a write that meets a create of its table under way (TABLE_EXISTS) waits for it; lines with columns the table lacks are rejected as for any existing table', async () => {
    const schema = {
      name: 'mem',
      columns: [
        { name: 'host', type: 'string', role: 'tag' },
        { name: 'used', type: 'float64', role: 'field' },
        { name: 'ts', type: 'timestamp', role: 'time' },
      ],
    };
    // Another frontend's create (the JSON API here): begun, not yet visible, when the writes reach meta.
    const creating = db.createTable(schema);
    const [same, wider, partial] = await Promise.all([
      write('mem,host=a used=1 1000000'),
      write('mem,host=b used=2 2000000\nmem,host=c used=3,free=4 3000000'),
      write('mem,host=d used=5 5000000\nmem,host=e used=6,free=7 6000000', '&partial=true'),
    ]);
    await creating;
    expect(same.statusCode).toBe(204);
    expect(wider.statusCode).toBe(400);
    expect(wider.json().error.lines).toEqual([
      {
        line: 2,
        message: "line 2: table 'mem' has no column 'free' (a field of line protocol): adding columns to an existing table (schema evolution) is not supported; create the table with every column first",
      },
    ]);
    expect(partial.statusCode).toBe(200);
    expect(partial.json()).toMatchObject({ written: 1, rejected: [{ line: 2 }] });
    expect(db.describeTable('mem').schema.columns.map((c) => c.name)).toEqual(['host', 'used', 'ts']);
    expect((await rowsOf('mem')).map((r) => r.host)).toEqual(['a', 'd']);
  });

  it('a create that others wait for and that is rolled back: a waiting write creates the table itself', async () => {
    // The first create's region fails (once), after the other writes have met it in meta.
    const router = (db as unknown as { router: { createRegion: (...args: unknown[]) => Promise<number> } }).router;
    const createRegion = router.createRegion.bind(router);
    let failures = 0;
    router.createRegion = async (...args: unknown[]) => {
      if (failures++ > 0) return createRegion(...args);
      await new Promise((r) => setTimeout(r, 50));
      throw new Error('region creation failed (test)');
    };
    const creating = db.createTable({ name: 'disk', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'free', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] });
    const [first, second] = await Promise.all([write('disk,host=a used=1 1000000'), write('disk,host=b used=2 2000000'), creating.catch(() => undefined)]);
    await expect(creating).rejects.toThrow(/region creation failed/);
    expect([first.statusCode, second.statusCode]).toEqual([204, 204]);
    // Created from the line protocol writes' columns, not the rolled-back schema.
    expect(db.describeTable('disk').schema.columns.map((c) => c.name)).toEqual(['host', 'used', 'ts']);
    expect((await rowsOf('disk')).map((r) => r.host)).toEqual(['a', 'b']);
  });

  it('a create under way that does not commit in time: the waiting write is UNAVAILABLE (503, a client retries it), not a 404', async () => {
    const router = (db as unknown as { router: { createRegion: (...args: unknown[]) => Promise<number> } }).router;
    const createRegion = router.createRegion.bind(router);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    router.createRegion = async (...args: unknown[]) => {
      await held;
      return createRegion(...args);
    };
    const creating = db.createTable({ name: 'net', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'rx', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] });
    await expect(db.ensureTable({ name: 'net', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'ts', type: 'timestamp', role: 'time' }] }, { waitMs: 100 })).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      message: "table 'net' is being created by another request, which did not commit it within 100 ms; retry",
    });
    release();
    await creating;
    expect((await write('net,host=a rx=1 1000000')).statusCode).toBe(204);
  });

  it('autoCreateTables off: a missing table is a bad line', async () => {
    const strict = createHttpServer(db, { logger, autoCreateTables: false });
    const reply = await strict.inject({ method: 'POST', url: '/v1/influxdb/write', payload: 'nope,host=a v=1', headers: { 'content-type': 'text/plain' } });
    expect(reply.statusCode).toBe(400);
    expect(reply.json().error.lines[0].message).toBe("line 1: table 'nope' does not exist (autoCreateTables is off)");
    await strict.close();
  });

  it('bad names, reserved ts, int64 outside the exact range, gzip bodies, the v2 path, ping', async () => {
    const bad = await write(['bad-name,host=a v=1', 'n,host=a ts=1', 'n,ho.st=a v=1', 'n,host=a v=9007199254740993i', 'n,host=a w=1 -1000000000'].join('\n'));
    expect(bad.json().error.lines.map((l: { message: string }) => l.message)).toEqual([
      "line 1: measurement 'bad-name' is not a valid table name (letters, digits and _, not starting with a digit; not __proto__)",
      "line 2: field 'ts' uses the name of the time column 'ts'",
      "line 3: tag 'ho.st' is not a valid column name (letters, digits and _, not starting with a digit; not __proto__)",
      "line 4: field 'v': 9007199254740993 is outside the integers int64 columns hold exactly (±2^53-1)",
      'line 5: timestamp -1000000000 (ns) is not a time from 1970 on',
    ]);
    const gz = await write(gzipSync('z,host=a v=1 1000000'), '', { 'content-encoding': 'gzip' });
    expect(gz.statusCode).toBe(204);
    const notGz = await write('z,host=a v=1', '', { 'content-encoding': 'gzip' });
    expect(notGz.json().error.code).toBe('INVALID_ARGUMENT');
    const v2 = await app.inject({
      method: 'POST',
      url: '/v1/influxdb/api/v2/write?org=o&bucket=b&precision=ms',
      payload: 'z,host=b v=2 2',
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
    expect(v2.statusCode).toBe(204);
    // curl -d sends a form content type; any type is line protocol here.
    const form = await app.inject({ method: 'POST', url: '/v1/influxdb/write?precision=ms', payload: 'z,host=c v=3 3', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(form.statusCode).toBe(204);
    expect(await rowsOf('z')).toEqual([
      { host: 'a', v: 1, ts: 1 },
      { host: 'b', v: 2, ts: 2 },
      { host: 'c', v: 3, ts: 3 },
    ]);
    expect((await app.inject({ method: 'GET', url: '/v1/influxdb/ping' })).statusCode).toBe(204);
    // The JSON API still parses JSON (the line protocol parser is scoped to its routes).
    expect((await app.inject({ method: 'POST', url: '/v1/tables/z/query', payload: '{"limit":1}', headers: { 'content-type': 'application/json' } })).json()).toEqual({
      rows: [{ host: 'a', v: 1, ts: 1 }],
    });
  });
});
