import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { open, type Reprise } from '../../../src/api/runtime.js';
import { sqlSessions } from '../../../src/frontend/sql/session.js';

// A SQL session's results count against the node's result budget
// (memory.maxResultRowsInFlight) until its next statement or its close, as
// the JSON API's count until their answer is sent.

let dir: string;
let db: Reprise;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-sql-budget-'));
  db = await open({ dataDir: dir, logger: pino({ level: 'silent' }), memory: { maxResultRows: 10, maxResultRowsInFlight: 12 } });
  await db.createTable({ name: 't', columns: [{ name: 'v', type: 'float64', role: 'field' }, { name: 'ts', type: 'timestamp', role: 'time' }] });
  await db.insert('t', Array.from({ length: 8 }, (_, i) => ({ v: i, ts: i })));
});

afterAll(async () => {
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

it('holds the rows of the last results until the next statement or close, then gives them back', async () => {
  const sessions = sqlSessions(db, { version: 'x' });
  const a = sessions({ dialect: 'mysql', user: { name: 'a', mode: 'rw' } });
  const b = sessions({ dialect: 'mysql', user: { name: 'b', mode: 'rw' } });
  expect((await a.execute('SELECT * FROM t'))[0]).toMatchObject({ kind: 'rows' });
  // a holds 8 of 12: b's 8 more would pass the budget.
  await expect(b.execute('SELECT * FROM t')).rejects.toMatchObject({ code: 'OVERLOADED' });
  // a's next statement gives its rows back (it holds 1 now).
  await a.execute('SELECT count(*) FROM t');
  expect((await b.execute('SELECT * FROM t'))[0]).toMatchObject({ kind: 'rows' });
  await expect(a.execute('SELECT * FROM t')).rejects.toMatchObject({ code: 'OVERLOADED' });
  b.close();
  expect((await a.execute('SELECT * FROM t'))[0]).toMatchObject({ kind: 'rows' });
  a.close();
  // A DELETE's key lookup is given back at once.
  await sessions({ dialect: 'mysql', user: { name: 'c', mode: 'rw' } }).execute('DELETE FROM t WHERE ts < 4');
  expect((await b.execute('SELECT * FROM t'))[0]).toMatchObject({ kind: 'rows', data: [[4, 5, 6, 7], [4, 5, 6, 7]] });
  b.close();
});
