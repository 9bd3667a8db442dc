import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIN, call, ROWS, startServer, SYSTEM_METRICS, type Server } from '../harness/standalone.js';

/** Run the CLI; resolves with its exit code and output whatever the code. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('reprise CLI: config print, exit codes, shutdown', () => {
  let dir: string;
  const servers: Server[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-cli-'));
  });
  afterEach(() => {
    for (const s of servers.splice(0)) s.child.kill('SIGKILL');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('config print: the effective configuration, flags > REPRISE_* env > config file > defaults', async () => {
    const file = join(dir, 'reprise.toml');
    await writeFile(file, 'httpAddr = "0.0.0.0:4100"\nshards = 2\nlogLevel = "warn"\n[wal]\nmaxBatchBytes = 65536\n');
    const { code, stdout, stderr } = await cli(['config', 'print', '--config', file, '--shards', '6'], { REPRISE_SHARDS: '3', REPRISE_LOG_LEVEL: 'debug', REPRISE_DATA_DIR: '' });
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    // (toMatchObject: keys of other modes, e.g. the cluster's, may sit beside these.)
    expect(JSON.parse(stdout)).toMatchObject({
      dataDir: './reprise_data',
      httpAddr: '0.0.0.0:4100',
      shards: 6,
      logLevel: 'debug',
      bodyLimitBytes: 64 * 1024 * 1024,
      autoCreateTables: true,
      wal: { provider: 'local', maxBatchBytes: 65536, topicPrefix: 'reprise_wal' },
    });
    // The same JSON file works too; bad values are named, exit 1.
    const json = join(dir, 'reprise.json');
    await writeFile(json, JSON.stringify({ wal: { provider: 'kafka', brokerEndpoints: ['k:9092'], sasl: { mechanism: 'plain', username: 'u', password: 'secret' } } }));
    const printed = JSON.parse((await cli(['config', 'print', '-c', json])).stdout) as { wal: { sasl: { password: string } } };
    expect(printed.wal.sasl.password).toBe('***');
    const bad = await cli(['config', 'print'], { REPRISE_AUTO_CREATE_TABLES: 'maybe' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^reprise: INVALID_ARGUMENT: invalid configuration: autoCreateTables: /);
  });

  it('exit codes: 0 for help and version, 2 for usage errors, 1 for failures', async () => {
    const ok = [['--version'], ['config', 'print', '--help']];
    const usage = [['nonsense'], ['standalone', '--shards', 'four'], ['standalone', '--wal', 'rocks'], []];
    const results = await Promise.all([...ok, ...usage].map(async (args) => ({ args, ...(await cli(args)) })));
    for (const { args, code, stderr } of results) {
      const expected = ok.includes(args) ? 0 : 2;
      expect({ args, code }).toEqual({ args, code: expected });
      if (expected === 2) expect(stderr.length).toBeGreaterThan(0);
    }
    // A failure that is not a usage error: nothing listens there.
    const unreachable = await cli(['status', '--server', 'http://127.0.0.1:1']);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/cannot reach reprise/);
    // Startup failure: the address is taken.
    const server = await startServer(join(dir, 'busy'));
    servers.push(server);
    const taken = await cli(['standalone', '--data-dir', join(dir, 'other'), '--http-addr', new URL(server.url).host, '--log-level', 'silent']);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/EADDRINUSE/);
  });

  it('help says what --data-dir and --http-addr are to each service: meta serves no HTTP unless asked and writes nothing to its data dir (issue 14, smaller list)', async () => {
    const [meta, node, standalone] = await Promise.all(['meta', 'node', 'standalone'].map((command) => cli([command, '--help'])));
    const option = (help: string, flag: string) => new RegExp(`^  ${flag} <[^>]+>\\s+([\\s\\S]*?)\\n  -`, 'm').exec(help)?.[1]?.replace(/\s+/g, ' ');
    expect(meta.code).toBe(0);
    expect(option(meta.stdout, '--http-addr')).toBe('serve /health, /metrics and /v1/cluster/status at this address (no HTTP unless set; env REPRISE_META_HTTP_ADDR)');
    expect(option(meta.stdout, '--data-dir')).toBe('not used by meta: its state is the meta log in Kafka, and it writes nothing to disk');
    expect(meta.stdout).not.toContain('127.0.0.1:4000');
    expect(option(node.stdout, '--data-dir')).toMatch(/^storage local: the SST and manifest directory every node shares; storage s3: this node's own, its SST cache in <dir>\/cache/);
    expect(option(node.stdout, '--http-addr')).toBe('HTTP API address (default 127.0.0.1:4000; env REPRISE_HTTP_ADDR)');
    expect(option(standalone.stdout, '--data-dir')).toBe('where the WAL, meta and SSTs live (default ./reprise_data; env REPRISE_DATA_DIR)');
  });

  it('SIGTERM with a dashboard event stream open still flushes and exits 0', async () => {
    const data = join(dir, 'sse');
    let server = await startServer(data);
    servers.push(server);
    await call(server, 'POST', '/v1/tables', SYSTEM_METRICS);
    await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS);
    const stream = await fetch(new URL('/v1/events', server.url));
    const reader = stream.body!.getReader();
    await reader.read();
    const started = Date.now();
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    // The stream ended with the server.
    let done = false;
    while (!done) done = (await reader.read().catch(() => ({ done: true }))).done;
    server = await startServer(data);
    servers.push(server);
    const regions = (await call(server, 'GET', '/v1/status')).body.nodes[0].shards.flatMap((s: { regions: unknown[] }) => s.regions);
    for (const r of regions) expect(r.flushedEntryId).toBeGreaterThanOrEqual(r.appliedEntryId);
    expect((await call(server, 'POST', '/v1/tables/system_metrics/query', {})).body.rows).toHaveLength(5);
  });

  it('GET /metrics of the real process: runtime, HTTP and process metrics', async () => {
    const server = await startServer(join(dir, 'metrics'));
    servers.push(server);
    await call(server, 'POST', '/v1/tables', SYSTEM_METRICS);
    await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS);
    const response = await fetch(new URL('/metrics', server.url));
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    for (const name of ['reprise_wal_append_duration_seconds_bucket', 'reprise_regions{state="serving"} 3', 'reprise_http_request_duration_seconds_count', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds']) {
      expect(text).toContain(name);
    }
  });
});
