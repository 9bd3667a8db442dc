import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BIN, call, ROWS, startServer, SYSTEM_METRICS, type Server } from '../harness/standalone.js';

/**
 * Issue #14 against real `reprise standalone` processes killed with SIGKILL:
 * a damaged local WAL (a byte flipped, its end cut) and a lost one (the WAL
 * directory deleted, its log emptied) are refused with a coded error that
 * names what is lost, instead of a healthy server missing acknowledged rows
 * (or deleting flushed ones); --wal-skip-corrupt goes on knowingly.
 */

/** One region, so that every insert lands in one shard's topic. */
const ONE_REGION = { ...SYSTEM_METRICS, partition: undefined };

/** `reprise standalone` that must refuse to start: its exit code and stderr. */
function startRefused(dataDir: string, args: string[] = []): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, 'standalone', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', ...args],
      { timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr, stdout }),
    );
  });
}

async function newestLog(walDir: string): Promise<string> {
  const logs = (await readdir(walDir)).filter((n) => /^\d+\.log$/.test(n)).sort((a, b) => Number(a.slice(0, -4)) - Number(b.slice(0, -4)));
  expect(logs.length).toBeGreaterThan(0);
  return join(walDir, logs[logs.length - 1]!);
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
}

const row = (i: number) => ({ ...ROWS[0]!, host: 'host1', ts: 1667446797450 + i, cpu_util: i });

describe('local WAL integrity with real processes (issue #14)', () => {
  const dirs: string[] = [];
  const servers: Server[] = [];
  const newDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-wal-integrity-'));
    dirs.push(dir);
    return dir;
  };
  const start = async (dir: string, args: string[] = []) => {
    const server = await startServer(dir, {}, args);
    servers.push(server);
    return server;
  };
  const kill9 = async (server: Server) => {
    server.child.kill('SIGKILL');
    expect((await server.exited).signal).toBe('SIGKILL');
  };
  afterEach(() => {
    for (const s of servers.splice(0)) s.child.kill('SIGKILL');
  });
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  /** Three inserts acknowledged one by one, then kill -9. Returns the topic and the entry id of the third. */
  async function threeAcknowledgedInserts(dir: string): Promise<{ topic: string; third: number }> {
    const server = await start(dir);
    expect((await call(server, 'POST', '/v1/tables', ONE_REGION)).status).toBe(201);
    for (let i = 0; i < 3; i++) expect(await call(server, 'POST', '/v1/tables/system_metrics/rows', [row(i)])).toEqual({ status: 200, body: { written: 1 } });
    const shard = (await call(server, 'GET', '/v1/status')).body.nodes[0].shards.find((s: { regions: unknown[] }) => s.regions.length === 1);
    await kill9(server);
    return { topic: shard.topic as string, third: shard.lastEntryId as number };
  }

  async function rowsOf(server: Server): Promise<number[]> {
    const reply = await call(server, 'POST', '/v1/tables/system_metrics/query', {});
    expect(reply.status).toBe(200);
    return (reply.body.rows as { cpu_util: number }[]).map((r) => r.cpu_util);
  }

  async function lastEntryId(server: Server, topic: string): Promise<number> {
    return (await call(server, 'GET', '/v1/status')).body.nodes[0].shards.find((s: { topic: string }) => s.topic === topic).lastEntryId as number;
  }

  it('a byte flipped near the end of the newest .log: refused with WAL_CORRUPT naming topic and entry id; --wal-skip-corrupt goes on without reusing it', async () => {
    const dir = await newDir();
    const { topic, third } = await threeAcknowledgedInserts(dir);
    const log = await newestLog(join(dir, 'wal'));
    const bytes = await readFile(log);
    bytes[bytes.length - 10] ^= 0x5a;
    await writeFile(log, bytes);

    for (let attempt = 0; attempt < 2; attempt++) {
      const refused = await startRefused(dir);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('WAL_CORRUPT');
      expect(refused.stderr).toMatch(new RegExp(`entries lost: topic "${topic}" entry ids ${third}\\b`));
      expect(refused.stderr).toContain('--wal-skip-corrupt');
    }
    expect(Buffer.compare(await readFile(log), bytes), 'the damaged log is left as it was').toBe(0);

    const skipping = await start(dir, ['--wal-skip-corrupt']);
    expect((await call(skipping, 'GET', '/health')).body.status).toBe('ok');
    expect(await rowsOf(skipping)).toEqual([0, 1]);
    expect(await call(skipping, 'POST', '/v1/tables/system_metrics/rows', [row(3)])).toEqual({ status: 200, body: { written: 1 } });
    expect(await lastEntryId(skipping, topic)).toBeGreaterThan(third);
    skipping.child.kill('SIGTERM');
    expect((await skipping.exited).code).toBe(0);
    expect((await readdir(join(dir, 'wal', 'quarantine'))).length).toBe(1);

    // The skip is remembered: a plain start serves the rows that are left and the new one.
    const plain = await start(dir);
    expect(await rowsOf(plain)).toEqual([0, 1, 3]);
  });

  it('the last 30 bytes of the newest .log cut: refused with WAL_TAIL_LOST naming topic and entry id; skipping keeps the id issued', async () => {
    const dir = await newDir();
    const { topic, third } = await threeAcknowledgedInserts(dir);
    const log = await newestLog(join(dir, 'wal'));
    await truncate(log, (await stat(log)).size - 30);

    const refused = await startRefused(dir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('WAL_TAIL_LOST');
    expect(refused.stderr).toContain(`topic "${topic}" ends before entry id ${third}, but entry ids ${third} were acknowledged`);
    expect((await startRefused(dir)).stderr).toContain('WAL_TAIL_LOST');

    const skipping = await start(dir, ['--wal-skip-corrupt']);
    expect(await rowsOf(skipping)).toEqual([0, 1]);
    expect(await call(skipping, 'POST', '/v1/tables/system_metrics/rows', [row(3)])).toEqual({ status: 200, body: { written: 1 } });
    expect(await lastEntryId(skipping, topic)).toBeGreaterThan(third);
  });

  it('6,000 acknowledged rows: a flip in the middle and a truncation to half are refused; skipping loses exactly the entries named', async () => {
    const dir = await newDir();
    const server = await start(dir);
    expect((await call(server, 'POST', '/v1/tables', ONE_REGION)).status).toBe(201);
    for (let b = 0; b < 60; b++) {
      const batch = Array.from({ length: 100 }, (_, i) => row(b * 100 + i));
      expect((await call(server, 'POST', '/v1/tables/system_metrics/rows', batch)).body).toEqual({ written: 100 });
    }
    await kill9(server);
    const copy = await newDir();
    await cp(dir, copy, { recursive: true });

    const log = await newestLog(join(dir, 'wal'));
    const bytes = await readFile(log);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    await writeFile(log, bytes);
    const refused = await startRefused(dir);
    expect(refused.code).toBe(1);
    // One id ("ids 33") or a range ("ids 33..40"), depending on how many records the flipped byte's block held.
    const named = /WAL_CORRUPT: .*entries lost: topic "[^"]+" entry ids (\d+)(?:\.\.(\d+))?/.exec(refused.stderr);
    expect(named, refused.stderr).not.toBeNull();
    const lostEntries = Number(named![2] ?? named![1]) - Number(named![1]) + 1;
    const skipping = await start(dir, ['--wal-skip-corrupt']);
    // One 100-row insert per entry: exactly the entries the error named are gone, nothing else.
    expect((await rowsOf(skipping)).length).toBe(6000 - 100 * lostEntries);

    const half = await newestLog(join(copy, 'wal'));
    await truncate(half, Math.floor((await stat(half)).size / 2));
    const cut = await startRefused(copy);
    expect(cut.code).toBe(1);
    expect(cut.stderr).toMatch(/WAL_TAIL_LOST: .*ends before entry id (\d+), but entry ids \1\.\.\d+ were acknowledged/);
  });

  it('the WAL directory deleted after a flush: refused with CATALOG_LOST naming the regions; no SST is deleted', async () => {
    const dir = await newDir();
    const server = await start(dir);
    await call(server, 'POST', '/v1/tables', SYSTEM_METRICS);
    await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS);
    expect((await call(server, 'POST', '/v1/flush')).status).toBe(200);
    await kill9(server);
    const objects = await filesUnder(join(dir, 'objects'));
    expect(objects.some((f) => f.endsWith('.sst'))).toBe(true);

    await rm(join(dir, 'wal'), { recursive: true });
    for (let attempt = 0; attempt < 2; attempt++) {
      const refused = await startRefused(dir);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('CATALOG_LOST');
      expect(refused.stderr).toContain('regions 1, 2, 3');
      expect(refused.stderr).toContain(join(dir, 'objects'));
    }
    expect(await filesUnder(join(dir, 'objects'))).toEqual(objects);
  });

  it('the newest .log emptied after a flush: refused with WAL_TAIL_LOST; no SST is deleted', async () => {
    const dir = await newDir();
    const first = await start(dir);
    await call(first, 'POST', '/v1/tables', SYSTEM_METRICS);
    await call(first, 'POST', '/v1/tables/system_metrics/rows', ROWS);
    expect((await call(first, 'POST', '/v1/flush')).status).toBe(200);
    // A clean stop waits for the compaction of the pruned range: what the flush
    // left is in LevelDB's tables, and the next start writes a new .log.
    first.child.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);
    const second = await start(dir);
    expect((await call(second, 'POST', '/v1/tables/system_metrics/rows', [row(1)])).status).toBe(200);
    await kill9(second);
    const objects = await filesUnder(join(dir, 'objects'));
    expect(objects.some((f) => f.endsWith('.sst'))).toBe(true);

    await truncate(await newestLog(join(dir, 'wal')), 0);
    const refused = await startRefused(dir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/WAL_TAIL_LOST: .*topic "reprise_wal_\d+" ends before entry id \d+, but entry ids [\d.]+ were acknowledged/);
    expect(await filesUnder(join(dir, 'objects'))).toEqual(objects);
  });
});
