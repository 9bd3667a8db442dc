import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { mountSmallDisk } from '../harness/small-disk.js';
import { call, startServer, type Server } from '../harness/standalone.js';

/**
 * A full disk under `reprise standalone`, on a real file system that fills
 * up (a small tmpfs) (issue 14, findings 8 and 9): LevelDB's background
 * compaction failing leaves it refusing every write until it is reopened,
 * and a shutdown whose flush cannot write its SSTs is not a clean one.
 */

const TABLE = {
  name: 'blobs',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'payload', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};

/** `count` rows of ~2 KB that do not compress (LevelDB compresses its tables). */
const rowsAt = (ts: number, count: number) => Array.from({ length: count }, (_, k) => ({ host: `h${k}`, payload: randomBytes(1500).toString('base64'), ts }));
const keysOf = (rows: { host: string; ts: number }[]) => rows.map((r) => `${r.host}@${r.ts}`);

async function visibleKeys(server: Server): Promise<Set<string>> {
  const response = await call(server, 'POST', '/v1/tables/blobs/query', { columns: ['host', 'ts'] });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return new Set(keysOf(response.body.rows));
}

/** The process's stdout (JSON log lines) as it comes. */
function logOf(server: Server): () => string {
  let out = '';
  server.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  return () => out;
}

describe('a full disk under a real process', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  async function setUp(bytes: number) {
    const disk = await mountSmallDisk(bytes);
    cleanup.push(() => disk.unmount());
    const dataDir = join(disk.dir, 'data');
    const start = async () => {
      const server = await startServer(dataDir);
      cleanup.push(async () => {
        server.child.kill('SIGKILL');
        await server.exited;
      });
      return server;
    };
    return { disk, start };
  }

  it('writes refused after LevelDB failed a background write on a full disk succeed again once space is freed, without a restart (finding 9)', async () => {
    const { disk, start } = await setUp(48 << 20);
    let server = await start();
    expect((await call(server, 'POST', '/v1/tables', TABLE)).status).toBe(201);
    const acked = new Set<string>();
    const insert = async (rows: ReturnType<typeof rowsAt>) => {
      const response = await call(server, 'POST', '/v1/tables/blobs/rows', rows);
      if (response.status === 200) for (const k of keysOf(rows)) acked.add(k);
      return response;
    };
    // Most of LevelDB's 4 MiB write buffer, while there is room.
    for (let ts = 0; ts < 48; ts++) expect((await insert(rowsAt(ts, 50))).status).toBe(200);
    // Room for the log, not for the table LevelDB writes when the buffer is full.
    await disk.fill(1_500_000);
    let failure: { status: number; body: any } | undefined;
    for (let ts = 100; ts < 300 && !failure; ts++) {
      const response = await insert(rowsAt(ts, 10));
      if (response.status !== 200) failure = response;
    }
    expect(failure, 'no write failed on the full disk').toBeDefined();
    expect(failure!.status).toBe(500);
    expect(failure!.body.error.code).toBe('WAL_APPEND_FAILED');
    const degraded = await call(server, 'GET', '/health');
    expect(degraded.status).toBe(503);
    expect(degraded.body.failed.wal).toMatch(/refuses writes since .*No space left on device/);

    await disk.free();
    for (let i = 0; ; i++) {
      if ((await call(server, 'GET', '/health')).status === 200) break;
      expect(i, 'the WAL did not recover after space was freed').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (let ts = 1000; ts < 1010; ts++) {
      const response = await insert(rowsAt(ts, 10));
      expect(response.status, JSON.stringify(response.body)).toBe(200);
    }
    const visible = await visibleKeys(server);
    expect([...acked].filter((k) => !visible.has(k)), 'acknowledged rows missing').toEqual([]);

    // A clean shutdown and a restart keep every acknowledged row.
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    server = await start();
    const after = await visibleKeys(server);
    expect([...acked].filter((k) => !after.has(k)), 'acknowledged rows missing after the restart').toEqual([]);
  });

  it('a shutdown whose flush cannot write its SSTs exits 1 naming FLUSH_FAILED, and the next start has every acknowledged row (finding 8)', async () => {
    const { disk, start } = await setUp(24 << 20);
    let server = await start();
    const log = logOf(server);
    expect((await call(server, 'POST', '/v1/tables', TABLE)).status).toBe(201);
    const rows = [...rowsAt(1, 50), ...rowsAt(2, 50)];
    expect((await call(server, 'POST', '/v1/tables/blobs/rows', rows)).status).toBe(200);
    await disk.fill(0);

    server.child.kill('SIGTERM');
    const exit = await server.exited;
    expect(exit.code, log()).toBe(1);
    const lines = log()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; err?: { code?: string; message?: string } });
    const failed = lines.find((l) => l.msg === 'shutdown failed');
    expect(failed?.err?.code, log()).toBe('FLUSH_FAILED');
    expect(failed!.err!.message).toMatch(/region \d+ of table 'blobs': flush failed: STORE_WRITE_FAILED: .*ENOSPC/);

    await disk.free();
    server = await start();
    const visible = await visibleKeys(server);
    expect(keysOf(rows).filter((k) => !visible.has(k))).toEqual([]);
  });
});
