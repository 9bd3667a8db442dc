import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BIN, call, ROWS, startServer, SYSTEM_METRICS, type Server } from '../harness/standalone.js';

const cli = promisify(execFile);

describe('reprise standalone (real process, HTTP)', () => {
  const dirs: string[] = [];
  const servers: Server[] = [];
  const newDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-standalone-'));
    dirs.push(dir);
    return dir;
  };
  const start = async (dir: string, env?: Record<string, string>) => {
    const server = await startServer(dir, env);
    servers.push(server);
    return server;
  };
  afterEach(() => {
    for (const s of servers.splice(0)) s.child.kill('SIGKILL');
  });
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('the README walkthrough: create, insert, query, kill -9, restart, same rows', async () => {
    const dir = await newDir();
    let server = await start(dir);
    expect((await call(server, 'GET', '/health')).body.status).toBe('ok');
    const created = await call(server, 'POST', '/v1/tables', SYSTEM_METRICS);
    expect(created.status).toBe(201);
    expect(created.body.regions).toHaveLength(3);
    expect(await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS)).toEqual({ status: 200, body: { written: 5 } });

    const host1 = await call(server, 'POST', '/v1/tables/system_metrics/query', {
      where: { host: 'host1' },
      timeRange: { from: 1667446797000, to: 1667446798000 },
    });
    expect(host1.body.rows).toEqual([ROWS[0], ROWS[2]]);
    const before = await call(server, 'POST', '/v1/tables/system_metrics/query', {});
    expect(before.body.rows.map((r: { host: string }) => r.host)).toEqual(['apollo', 'host1', 'host1', 'host2', 'zeus']);

    const status = await call(server, 'GET', '/v1/status');
    const regions = status.body.nodes[0].shards.flatMap((s: { regions: unknown[] }) => s.regions);
    expect(regions.map((r: { state: string }) => r.state)).toEqual(['serving', 'serving', 'serving']);

    const { stdout: statusText } = await cli(process.execPath, [BIN, 'status', '--server', server.url]);
    expect(statusText).toMatch(/node node-1\s+serving/);
    expect(statusText).toMatch(/region \d+\s+system_metrics\[0\]\s+serving/);
    const { stdout: queryText } = await cli(process.execPath, [BIN, 'query', 'system_metrics', '--server', server.url, '--where', '{"host":"host2"}']);
    expect(queryText).toMatch(/host2\s+idc_a\s+80\.1/);

    server.child.kill('SIGKILL');
    expect((await server.exited).signal).toBe('SIGKILL');
    server = await start(dir);
    const after = await call(server, 'POST', '/v1/tables/system_metrics/query', {});
    expect(after.body.rows).toEqual(before.body.rows);
    const epochs = (await call(server, 'GET', '/v1/status')).body.nodes[0].shards.map((s: { epoch: number }) => s.epoch);
    expect(epochs.every((e: number) => e === 2)).toBe(true);
  });

  it('bad input gets a code and a message; the server keeps serving', async () => {
    const server = await start(await newDir(), { REPRISE_BODY_LIMIT_BYTES: '65536' });
    await call(server, 'POST', '/v1/tables', SYSTEM_METRICS);
    const cases: [string, string, unknown, string | undefined, number, string][] = [
      ['POST', '/v1/tables/system_metrics/rows', undefined, '[{"host": "a",', 400, 'MALFORMED_JSON'],
      ['POST', '/v1/tables/nope/rows', ROWS, undefined, 404, 'TABLE_NOT_FOUND'],
      ['POST', '/v1/tables/system_metrics/rows', [{ ...ROWS[0], cpu_util: 'high' }], undefined, 400, 'INVALID_ROW'],
      ['POST', '/v1/tables/system_metrics/rows', [{ idc: 'x', ts: 1 }], undefined, 400, 'INVALID_ROW'],
      ['POST', '/v1/tables/system_metrics/rows', [{ host: 'a', idc: 'x' }], undefined, 400, 'INVALID_ROW'],
      ['POST', '/v1/tables/system_metrics/rows', { not: 'an array' }, undefined, 400, 'INVALID_ROW'],
      ['POST', '/v1/tables/system_metrics/query', { where: { cpu_util: 1 } }, undefined, 400, 'INVALID_QUERY'],
      ['POST', '/v1/tables', SYSTEM_METRICS, undefined, 409, 'TABLE_EXISTS'],
      ['POST', '/v1/tables', { name: 't', columns: [{ name: 'v', type: 'float64', role: 'field' }] }, undefined, 400, 'INVALID_SCHEMA'],
      ['POST', '/v1/tables/system_metrics/rows', Array.from({ length: 2000 }, () => ROWS[0]), undefined, 413, 'REQUEST_TOO_LARGE'],
      ['GET', '/v1/nothing', undefined, undefined, 404, 'NOT_FOUND'],
      ['DELETE', '/v1/tables/nope', undefined, undefined, 404, 'TABLE_NOT_FOUND'],
    ];
    for (const [method, path, body, raw, status, code] of cases) {
      const reply = await call(server, method, path, body, raw);
      expect({ path, status: reply.status, code: reply.body.error?.code }).toEqual({ path, status, code });
      expect(typeof reply.body.error.message).toBe('string');
      expect(reply.body.error.message.length).toBeGreaterThan(5);
    }
    expect(await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS)).toEqual({ status: 200, body: { written: 5 } });
    expect((await call(server, 'POST', '/v1/tables/system_metrics/query', {})).body.rows).toHaveLength(5);
  });

  it('SIGTERM flushes and exits 0; the next start has nothing to replay', async () => {
    const dir = await newDir();
    let server = await start(dir);
    await call(server, 'POST', '/v1/tables', SYSTEM_METRICS);
    await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS);
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    server = await start(dir);
    const shards = (await call(server, 'GET', '/v1/status')).body.nodes[0].shards;
    for (const shard of shards) for (const region of shard.regions) expect(region.flushedEntryId).toBeGreaterThanOrEqual(region.appliedEntryId);
    expect((await call(server, 'POST', '/v1/tables/system_metrics/query', {})).body.rows).toHaveLength(5);
  });

  it('names a bad config key and refuses to start', async () => {
    const dir = await newDir();
    const failed = await cli(process.execPath, [BIN, 'standalone', '--data-dir', dir], { env: { ...process.env, REPRISE_SHARDS: 'many' } }).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/shards/);
  });
});
