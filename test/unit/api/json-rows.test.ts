import { constants } from 'node:buffer';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { jsonRowChunks, STREAMED_RESULT_ROWS } from '../../../src/api/json-rows.js';
import { open } from '../../../src/api/runtime.js';
import { rowsOf, type ColumnarRows } from '../../../src/engine/schema.js';

describe('query results as JSON (issue 14, smaller list: a result past V8\'s string limit was a 500)', () => {
  it('writes what JSON.stringify writes for the rows as objects', () => {
    const result: ColumnarRows = {
      columns: ['host', 'n', 'up', 'note', 'ts'],
      data: [['a', 'b"\\\n', 'é'], [1.5, null, -0], [true, false, null], ['x', undefined as never, '\u2028'], [0, 1, 2]],
    };
    expect([...jsonRowChunks(result)].join('')).toBe(JSON.stringify({ rows: rowsOf(result) }));
    expect([...jsonRowChunks({ columns: [], data: [] })].join('')).toBe('{"rows":[]}');
    expect([...jsonRowChunks({ columns: ['a'], data: [[]] })].join('')).toBe('{"rows":[]}');
  });

  it('writes what JSON.stringify writes, for any values a result can hold (property)', () => {
    const value = fc.oneof(
      fc.double(),
      fc.integer(),
      // Hundredths (written from the integer 100 v), up to where a double holds them.
      fc.maxSafeInteger().map((k) => k / 100),
      fc.integer({ min: -100_000, max: 100_000 }).map((k) => k / 100),
      fc.integer({ min: -100_000, max: 100_000 }).map((k) => k / 1000),
      fc.constantFrom(-0, 0, Number.MAX_SAFE_INTEGER, 1e21, 1e-7, Infinity, -Infinity, Number.NaN),
      fc.string({ unit: 'binary' }),
      fc.constantFrom('a', 'b', 'host_0001'),
      fc.boolean(),
      fc.constant(null),
      fc.constant(undefined),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 30 }), fc.infiniteStream(value), (width, rows, values) => {
        const data = Array.from({ length: width }, () => Array.from({ length: rows }, () => values.next().value));
        const result = { columns: Array.from({ length: width }, (_, c) => `c${c}"`), data } as ColumnarRows;
        const expected = width === 0 ? '{"rows":[]}' : JSON.stringify({ rows: rowsOf(result) });
        expect([...jsonRowChunks(result)].join('')).toBe(expected);
      }),
      { numRuns: 1000, seed: 19 },
    );
  });

  it('writes a result whose JSON is longer than V8\'s longest string, in bounded chunks', () => {
    // One 5,000-character string shared by every row: little memory, 550M characters of JSON.
    const text = 'x'.repeat(5000);
    const rows = Math.ceil(constants.MAX_STRING_LENGTH / text.length) + 2000;
    const result: ColumnarRows = { columns: ['s'], data: [new Array<string>(rows).fill(text)] };
    let chars = 0;
    let longest = 0;
    let last = '';
    for (const chunk of jsonRowChunks(result)) {
      chars += chunk.length;
      longest = Math.max(longest, chunk.length);
      last = chunk;
    }
    expect(chars).toBeGreaterThan(constants.MAX_STRING_LENGTH);
    expect(chars).toBe('{"rows":['.length + rows * `{"s":"${text}"}`.length + (rows - 1) + ']}'.length);
    expect(longest).toBeLessThan(80 * 1024);
    expect(last.endsWith('"}]}')).toBe(true);
  });

  it('the HTTP API streams a large result (chunked, no Content-Length) and sends a small one whole', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-json-rows-'));
    const db = await open({ dataDir: dir, shards: 1, logger: false });
    const app = createHttpServer(db, { logger: pino({ level: 'silent' }) });
    try {
      await db.createTable({ name: 'm', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'v', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] });
      const n = STREAMED_RESULT_ROWS * 3;
      await db.insert('m', Array.from({ length: n }, (_, i) => ({ host: `h${i % 7}`, v: i / 3, ts: i })));
      await app.listen({ host: '127.0.0.1', port: 0 });
      const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/v1/tables/m/query`;
      const query = (body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const large = await query({});
      expect(large.status).toBe(200);
      expect(large.headers.get('transfer-encoding')).toBe('chunked');
      expect(large.headers.get('content-length')).toBeNull();
      expect(large.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(await large.text()).toBe(JSON.stringify({ rows: await db.query('m', {}) }));
      const small = await query({ where: { host: 'h1' }, limit: 10 });
      expect(small.headers.get('content-length')).not.toBeNull();
      expect(await small.json()).toEqual({ rows: await db.query('m', { where: { host: 'h1' }, limit: 10 }) });
    } finally {
      await app.close();
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
