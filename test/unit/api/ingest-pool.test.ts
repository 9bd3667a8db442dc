import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { IngestPool, inlineEncoder, type WriteEncoder } from '../../../src/api/ingest-pool.js';
import { open, type Reprise } from '../../../src/api/runtime.js';
import type { TableSchema } from '../../../src/engine/schema.js';
import type { LineEncodeOptions, TableCatalog } from '../../../src/api/write-encoding.js';

// Writes encoded on ingest worker threads (IngestPool) against writes
// encoded on the main thread (inlineEncoder): the same bodies, the same
// errors, the same rows stored; a worker that dies loses nothing.

const LOADER = fileURLToPath(new URL('../../harness/ts-loader.mjs', import.meta.url));
const WORKER = new URL('../../../src/api/ingest-worker.ts', import.meta.url);
// Every body to a worker, however small (the default keeps small ones on the calling thread).
const poolOf = (threads: number, inlineBelowBytes = 0) => new IngestPool({ threads, script: WORKER, execArgv: ['--import', LOADER], inlineBelowBytes });

const CPU: TableSchema = {
  name: 'cpu',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'region', type: 'string', role: 'tag' },
    { name: 'usage', type: 'float64', role: 'field' },
    { name: 'count', type: 'int64', role: 'field' },
    { name: 'up', type: 'bool', role: 'field' },
    { name: 'note', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['h', 'p'] },
};
const MEM: TableSchema = {
  name: 'mem',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'free', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};
const CATALOG: TableCatalog = new Map([
  ['cpu', { id: 7, schema: CPU }],
  ['mem', { id: 9, schema: MEM }],
]);
const OPTIONS: LineEncodeOptions = { precision: 'ms', autoCreateTables: true, nowMs: 1_767_225_600_000, partial: false };
const bytes = (text: string) => Buffer.from(text, 'utf8');

/** What an encoder gives for a request: its result, or the error it threw (code and message). */
async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return { result: await run() };
  } catch (err) {
    const e = err as { code?: string; message: string; details?: unknown };
    return { error: { code: e.code, message: e.message, details: e.details } };
  }
}

describe('IngestPool against the main thread', () => {
  let pool: IngestPool;
  beforeAll(() => {
    pool = poolOf(2);
  });
  afterAll(async () => {
    await pool.close();
  });

  const bodies: [string, string, Partial<LineEncodeOptions>?][] = [
    ['one table, every field type', 'cpu,host=a,region=eu usage=1.5,count=3i,up=true,note="x y" 1000\ncpu,host=b usage=2 2000\n'],
    ['rows of three partitions, interleaved', Array.from({ length: 60 }, (_, i) => `cpu,host=${'aiz'[i % 3]}${i} usage=${i} ${1000 + i}`).join('\n')],
    ['two tables', 'cpu,host=a usage=1 1000\nmem,host=a free=2 1000\ncpu,host=q usage=3 1001'],
    ['a bad line rejects the request', 'cpu,host=a usage=1 1000\ncpu,host=a usage="s" 1001\nnot a line\n'],
    ['a bad line with partial', 'cpu,host=a usage=1 1000\ncpu,host=a nope=1 1001\n', { partial: true }],
    ['seconds precision, no timestamp', 'cpu,host=a usage=1 5\ncpu,host=b usage=2\n', { precision: 's' }],
    ['a new measurement goes to the main thread', 'cpu,host=a usage=1 1000\ndisk,host=a used=1 1000\n'],
    ['a new measurement without autoCreateTables is a bad line', 'disk,host=a used=1 1000\n', { autoCreateTables: false }],
    ['past the line limit', 'cpu,host=a usage=1 1\ncpu,host=a usage=1 2\ncpu,host=a usage=1 3\n', { maxRowsPerWrite: 2 }],
  ];
  for (const [name, body, extra] of bodies) {
    it(`line protocol, ${name}: the same outcome, byte for byte`, async () => {
      const options = { ...OPTIONS, ...extra };
      const onWorker = await outcome(() => pool.encodeLines(bytes(body), CATALOG, options));
      expect(onWorker).toEqual(await outcome(() => inlineEncoder.encodeLines(bytes(body), CATALOG, options)));
    });
  }

  it('line protocol, generated bodies: the same outcome, byte for byte (property)', async () => {
    const tag = fc.stringMatching(/^[a-z]{1,6}$/);
    const line = fc.record({ m: fc.constantFrom('cpu', 'mem', 'cpu'), host: tag, v: fc.double({ noNaN: true, noDefaultInfinity: true }), t: fc.integer({ min: 0, max: 2 ** 40 }) });
    await fc.assert(
      fc.asyncProperty(fc.array(line, { minLength: 1, maxLength: 40 }), fc.boolean(), async (lines, partial) => {
        const body = lines.map((l) => (l.m === 'cpu' ? `cpu,host=${l.host} usage=${l.v} ${l.t}` : `mem,host=${l.host} free=${l.v} ${l.t}`)).join('\n');
        const options = { ...OPTIONS, partial };
        expect(await outcome(() => pool.encodeLines(bytes(body), CATALOG, options))).toEqual(await outcome(() => inlineEncoder.encodeLines(bytes(body), CATALOG, options)));
      }),
      { numRuns: 50 },
    );
  });

  const jsonBodies: [string, string][] = [
    ['rows over partitions', JSON.stringify(Array.from({ length: 30 }, (_, i) => ({ host: `${'aiz'[i % 3]}${i}`, region: 'eu', usage: i / 3, count: i, up: i % 2 === 0, note: null, ts: 1000 + i })))],
    ['a bad row', JSON.stringify([{ host: 'a', usage: 'high', ts: 1 }])],
    ['malformed JSON', '[{"host": "a"'],
    ['not an array', '{"host": "a"}'],
    ['an integer past 2^53, quoted as sent', '[{"host": "a", "count": 9007199254740993, "ts": 1}]'],
  ];
  for (const [name, body] of jsonBodies) {
    it(`JSON rows, ${name}: the same outcome, byte for byte`, async () => {
      const onWorker = await outcome(() => pool.encodeJsonRows(body, CATALOG, 'cpu', 1000));
      expect(onWorker).toEqual(await outcome(() => inlineEncoder.encodeJsonRows(body, CATALOG, 'cpu', 1000)));
    });
  }

  it('a table the catalog does not hold is left to the caller (undefined), on either thread', async () => {
    expect(await pool.encodeJsonRows('[]', CATALOG, 'disk', 10)).toBeUndefined();
    expect(await inlineEncoder.encodeJsonRows('[]', CATALOG, 'disk', 10)).toBeUndefined();
  });

  it('a changed catalog reaches the workers: the new schema decides', async () => {
    const body = bytes('cpu,host=a usage=1 1000\n');
    const changed: TableCatalog = new Map([['cpu', { id: 8, schema: MEM }]]);
    const before = await pool.encodeLines(body, CATALOG, OPTIONS);
    const after = await pool.encodeLines(body, changed, OPTIONS);
    expect(before).toMatchObject({ kind: 'encoded', tables: [{ id: 7 }] });
    expect(after).toMatchObject({ kind: 'rejected', lines: [{ line: 1, message: expect.stringMatching(/no column 'usage'/) }] });
  });

  it('a worker that dies: what it held is encoded on the main thread, and a new worker takes its place', async () => {
    const lonely = poolOf(1);
    try {
      const body = bytes(Array.from({ length: 2000 }, (_, i) => `cpu,host=a usage=${i} ${i}`).join('\n'));
      const expected = await inlineEncoder.encodeLines(body, CATALOG, OPTIONS);
      const inFlight = Array.from({ length: 8 }, () => lonely.encodeLines(body, CATALOG, OPTIONS));
      await (lonely as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots[0]!.worker.terminate();
      for (const result of await Promise.all(inFlight)) expect(result).toEqual(expected);
      // The replacement answers (and was sent the catalog again).
      expect(await lonely.encodeLines(body, CATALOG, OPTIONS)).toEqual(expected);
    } finally {
      await lonely.close();
    }
  });

  it('bodies below inlineBelowBytes are encoded on the calling thread: the same outcome, and a dead worker is not asked', async () => {
    const small = poolOf(1, 1024);
    try {
      const body = bytes('cpu,host=a usage=1 1000\n');
      await (small as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots[0]!.worker.terminate();
      // Encoded at once, on this thread: no worker is involved.
      expect(await small.encodeLines(body, CATALOG, OPTIONS)).toEqual(await inlineEncoder.encodeLines(body, CATALOG, OPTIONS));
      expect(await small.encodeJsonRows('[]', CATALOG, 'cpu', 10)).toEqual(await inlineEncoder.encodeJsonRows('[]', CATALOG, 'cpu', 10));
    } finally {
      await small.close();
    }
  });

  it('an awaited encode keeps the process alive, though an idle pool does not (its workers are unref-ed)', async () => {
    // A script whose only pending work is an encode on an idle, warmed worker: it must finish, then exit by itself.
    const script = `
      import { IngestPool } from ${JSON.stringify(new URL('../../../src/api/ingest-pool.ts', import.meta.url).href)};
      const pool = new IngestPool({ threads: 1, inlineBelowBytes: 0, script: new URL(${JSON.stringify(WORKER.href)}), execArgv: ['--import', ${JSON.stringify(LOADER)}] });
      const catalog = new Map([['mem', { id: 1, schema: ${JSON.stringify(MEM)} }]]);
      const options = ${JSON.stringify(OPTIONS)};
      await pool.encodeLines(Buffer.from('mem,host=a free=1 1'), catalog, options);
      await new Promise((r) => setTimeout(r, 200));
      const again = await pool.encodeLines(Buffer.from('mem,host=a free=1 2'), catalog, options);
      console.log(again.kind);`;
    const child = spawnSync(process.execPath, ['--import', LOADER, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect({ status: child.status, stdout: child.stdout.trim() }, child.stderr).toEqual({ status: 0, stdout: 'encoded' });
  });

  it('a closed pool refuses with CLOSED', async () => {
    const closed = poolOf(1);
    await closed.close();
    await expect(closed.encodeLines(bytes('cpu,host=a usage=1 1'), CATALOG, OPTIONS)).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('threads must be at least 1', () => {
    expect(() => new IngestPool({ threads: 0, script: WORKER })).toThrow(/whole number from 1/);
  });
});

describe('rows stored through HTTP: the same whichever thread encoded them', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  /** Write the same requests through a server encoding with `encoder`; the table's rows. */
  async function store(encoder: WriteEncoder): Promise<unknown> {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-ingest-'));
    dirs.push(dir);
    const db: Reprise = await open({ dataDir: dir, shards: 2, logger: false });
    const app = createHttpServer(db, { logger: pino({ level: 'silent' }), encoder });
    try {
      const post = async (url: string, payload: string, json = false) =>
        app.inject({ method: 'POST', url, payload, headers: json ? { 'content-type': 'application/json' } : {} });
      // Created by line protocol (on the main thread), then written on whichever.
      expect((await post('/v1/influxdb/write?precision=ms', 'cpu,host=a,dc=x usage=1,n=1i 1000')).statusCode).toBe(204);
      const lines = Array.from({ length: 500 }, (_, i) => `cpu,host=h${i % 7},dc=${i % 2 ? 'x' : 'y'} usage=${i / 4},n=${i}i ${2000 + i}`).join('\n');
      expect((await post('/v1/influxdb/write?precision=ms', lines)).statusCode).toBe(204);
      // Overwrites of the same keys, newest wins.
      expect((await post('/v1/influxdb/write?precision=ms', 'cpu,host=h1,dc=x usage=-1,n=0i 2001')).statusCode).toBe(204);
      const partial = await post('/v1/influxdb/write?precision=ms&partial=true', 'cpu,host=p usage=2 3000\ncpu,host=p usage="bad" 3001');
      expect(partial.statusCode).toBe(200);
      const rows = Array.from({ length: 200 }, (_, i) => ({ host: `j${i % 5}`, dc: 'z', usage: i, n: -i, ts: 5000 + i }));
      expect((await post('/v1/tables/cpu/rows', JSON.stringify(rows), true)).json()).toEqual({ written: 200 });
      expect((await post('/v1/tables/cpu/rows', JSON.stringify([{ host: 'j', usage: 'x', ts: 1 }]), true)).statusCode).toBe(400);
      const query = await post('/v1/tables/cpu/query', '{}', true);
      expect(query.statusCode).toBe(200);
      return query.json();
    } finally {
      await app.close();
      await db.close();
    }
  }

  it('line protocol and JSON rows, overwrites and a partial write', async () => {
    const pool = poolOf(2);
    try {
      const onWorkers = await store(pool);
      const onMain = await store(inlineEncoder);
      expect((onWorkers as { rows: unknown[] }).rows.length).toBe(1 + 500 + 1 + 200);
      expect(onWorkers).toEqual(onMain);
    } finally {
      await pool.close();
    }
  });

  it('a table dropped and created again between encoding and append: encoded again, against the new schema', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-ingest-'));
    dirs.push(dir);
    const db = await open({ dataDir: dir, shards: 1, logger: false });
    try {
      await db.createTable(MEM);
      const old = db.tableCatalog();
      const encoded = await inlineEncoder.encodeLines(bytes('mem,host=a free=1 1000'), old, OPTIONS);
      expect(encoded.kind).toBe('encoded');
      await db.dropTable('mem');
      await db.createTable(MEM);
      expect(db.tableCatalog()).not.toBe(old);
      expect(db.writeEncoded(encoded.kind === 'encoded' ? encoded.tables : [])).toBeUndefined();
      expect(await db.query('mem')).toEqual([]);
      // The same catalog object while nothing changes: workers are not sent it again.
      expect(db.tableCatalog()).toBe(db.tableCatalog());
    } finally {
      await db.close();
    }
  });
});
