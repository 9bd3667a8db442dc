import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, startServer, type Server } from '../harness/standalone.js';
import { until } from '../harness/wait.js';

// The HTTP counterpart of test/unit/api/write-budget.test.ts, against a real
// `reprise standalone`: with limits.maxWriteBytesInFlight at 4 MiB, a flood
// of 64 concurrent 2 MB bodies (line protocol and JSON rows, half each)
// cannot all be in flight at once: two fill the budget, and each holds it
// through its parse and WAL append. No way to stall the WAL of a real
// process is needed (SIGSTOP would stop the answers too): 64 bodies arriving
// together is enough, and measured runs refuse 52-61 of the 64, also with the
// machine's two cores kept busy by other processes. The refused are answered
// 503 OVERLOADED before anything of them is written, and the node answers
// normally once the flood is over. The 503 count is asserted > 0 (on both
// routes), so the test cannot pass without provoking the overload.

const BUDGET = 4 * 1024 * 1024;
const CLIENTS = 64;
const BODY_BYTES = 2_000_000;
const T0 = 1_700_000_000_000;
const PAD = 'p'.repeat(900);

const TABLE = {
  name: 'flood',
  columns: [
    { name: 'batch', type: 'string', role: 'tag' },
    { name: 'i', type: 'int64', role: 'field' },
    { name: 'pad', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};

/**
 * Batch k of the flood: about BODY_BYTES of ~950-byte rows, tagged
 * batch=b<k>, each row its own timestamp; line protocol for even k, JSON
 * rows for odd k, so both write routes are admitted by the one budget.
 */
function floodBatch(k: number): { id: string; lines: number; request: RequestInit & { path: string }; ok: (status: number, text: string) => boolean } {
  const id = `b${k}`;
  const lines: string[] = [];
  let bytes = 0;
  const lp = k % 2 === 0;
  for (let i = 0; bytes < BODY_BYTES; i++) {
    const ts = T0 + k * 1_000_000 + i;
    const line = lp ? `flood,batch=${id} i=${i}i,pad="${PAD}" ${ts}\n` : JSON.stringify({ batch: id, i, pad: PAD, ts });
    lines.push(line);
    bytes += lp ? line.length : line.length + 1;
  }
  if (lp) {
    return { id, lines: lines.length, request: { path: '/v1/influxdb/write?precision=ms', method: 'POST', body: lines.join('') }, ok: (status, text) => status === 204 && text === '' };
  }
  return {
    id,
    lines: lines.length,
    request: { path: '/v1/tables/flood/rows', method: 'POST', headers: { 'content-type': 'application/json' }, body: `[${lines.join(',')}]` },
    ok: (status, text) => status === 200 && text === JSON.stringify({ written: lines.length }),
  };
}

async function metricsText(server: Server): Promise<string> {
  return (await fetch(new URL('/metrics', server.url))).text();
}

function metricValue(text: string, name: string): number | undefined {
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
}

describe('write admission of a real process: limits.maxWriteBytesInFlight', () => {
  let server: Server;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-ingest-overload-'));
    server = await startServer(dir, { REPRISE_MAX_WRITE_BYTES_IN_FLIGHT: String(BUDGET) });
    expect((await call(server, 'POST', '/v1/tables', TABLE)).status).toBe(201);
  });
  afterAll(async () => {
    if (server) {
      server.child.kill('SIGKILL');
      await server.exited;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('overload answers 503 OVERLOADED with Retry-After and recovers', async () => {
    const batches = Array.from({ length: CLIENTS }, (_, k) => floodBatch(k));
    const size = (k: number) => (batches[k]!.request.body as string).length;
    expect(Math.min(size(0), size(1))).toBeGreaterThanOrEqual(BODY_BYTES);
    // Two bodies fit the budget, a third does not.
    expect(size(0) + size(1) + size(2)).toBeGreaterThan(BUDGET);

    const answers = await Promise.all(
      batches.map(async ({ request: { path, ...init } }) => {
        const response = await fetch(new URL(path, server.url), init);
        return { status: response.status, retryAfter: response.headers.get('retry-after'), text: await response.text() };
      }),
    );
    const accepted = answers.flatMap((a, k) => (batches[k]!.ok(a.status, a.text) ? [k] : []));
    const refused = answers.flatMap((a, k) => (a.status === 503 ? [k] : []));
    const other = answers.flatMap((a, k) => (!accepted.includes(k) && a.status !== 503 ? [`b${k}: ${a.status} ${a.text.slice(0, 300)}`] : []));
    expect(other, 'answers other than 2xx and 503').toEqual([]);
    expect(refused.length, 'the flood must provoke the overload').toBeGreaterThan(0);
    expect(accepted.length, 'the budget must admit some of the flood').toBeGreaterThan(0);
    // Both routes are refused past the budget: line protocol (even k) and JSON rows (odd k).
    expect(refused.filter((k) => k % 2 === 0).length, 'line-protocol writes refused').toBeGreaterThan(0);
    expect(refused.filter((k) => k % 2 === 1).length, 'JSON writes refused').toBeGreaterThan(0);
    for (const k of refused) {
      const a = answers[k]!;
      expect(a.retryAfter, `b${k}: Retry-After`).toBe('1');
      const error = (JSON.parse(a.text) as { error: { code: string; message: string } }).error;
      expect(error.code).toBe('OVERLOADED');
      expect(error.message).toMatch(new RegExp(`limits\\.maxWriteBytesInFlight \\(${BUDGET}\\)`));
    }

    // Every 204 batch is stored whole, no 503 batch has a single row.
    const stored = await call(server, 'POST', '/v1/tables/flood/query', {
      groupBy: ['batch'],
      aggregates: [{ fn: 'count', as: 'n' }, { fn: 'sum', column: 'i', as: 'sum_i' }],
    });
    expect(stored.status).toBe(200);
    const byBatch = new Map((stored.body.rows as { batch: string; n: number; sum_i: number }[]).map((r) => [r.batch, r]));
    expect([...byBatch.keys()].sort()).toEqual(accepted.map((k) => `b${k}`).sort());
    for (const k of accepted) {
      const { id, lines } = batches[k]!;
      expect(byBatch.get(id), `batch ${id}`).toEqual({ batch: id, n: lines, sum_i: (lines * (lines - 1)) / 2 });
    }

    // Recovered: the budget is free again once every write is answered, and a normal write is admitted.
    await until(async () => (metricValue(await metricsText(server), 'reprise_http_write_bytes_in_flight') === 0 ? true : undefined), 'write bytes in flight back at 0', {
      timeoutMs: 5_000,
      everyMs: 50,
    });
    const after = await fetch(new URL('/v1/influxdb/write?precision=ms', server.url), { method: 'POST', body: `flood,batch=after i=1i,pad="x" ${T0 - 1}\n` });
    expect([after.status, await after.text()]).toEqual([204, '']);
    expect((await call(server, 'POST', '/v1/tables/flood/query', { where: { batch: 'after' } })).body.rows).toEqual([{ batch: 'after', i: 1, pad: 'x', ts: T0 - 1 }]);
    const metrics = await metricsText(server);
    expect(metricValue(metrics, 'reprise_http_writes_overloaded_total')).toBe(refused.length);
    expect(metricValue(metrics, 'reprise_http_write_bytes_in_flight')).toBe(0);
  });
});
