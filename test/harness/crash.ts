import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Reprise } from '../../src/api/runtime.js';
// @ts-expect-error plain ESM fixture shared with the child process
import { batchRows, batchSize, CRASH_SCHEMA } from '../e2e/fixtures/crash-rows.mjs';

const WRITER = fileURLToPath(new URL('../e2e/fixtures/crash-writer.mjs', import.meta.url));

export { CRASH_SCHEMA };

/** What one writer run printed: batches it started, and batches the runtime acknowledged. */
export interface RunResult {
  tried: Set<string>;
  acked: Set<string>;
}

/**
 * Start the crash writer (test/e2e/fixtures/crash-writer.mjs) on `dataDir`,
 * let it write for `ms` after it is ready, then SIGKILL it. `wal` is passed
 * to the writer's open() as it is (JSON), e.g. a Kafka WAL.
 */
export function runAndKill(dataDir: string, run: number, ms: number, wal?: Record<string, unknown>): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const env = wal ? { ...process.env, REPRISE_CRASH_WAL: JSON.stringify(wal) } : process.env;
    const child = spawn(process.execPath, [WRITER, dataDir, String(run)], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const result: RunResult = { tried: new Set(), acked: new Set() };
    let stderr = '';
    let killed = false;
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line === 'ready') {
        setTimeout(() => {
          killed = true;
          child.kill('SIGKILL');
        }, ms);
      } else if (line.startsWith('try ')) result.tried.add(line.slice(4));
      else if (line.startsWith('ack ')) result.acked.add(line.slice(4));
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (killed && signal === 'SIGKILL') resolve(result);
      else reject(new Error(`writer exited on its own (code ${code}, signal ${signal}): ${stderr}`));
    });
  });
}

/**
 * The crash tests' check on a reopened runtime: every region serves, every
 * acknowledged batch is there, each row once, every batch whole (a torn
 * entry would show a partial batch) and only batches that were written.
 */
export async function expectAcknowledgedBatches(db: Reprise, tried: Set<string>, acked: Set<string>): Promise<void> {
  const status = db.status().nodes[0]!;
  const regions = status.shards.flatMap((s) => s.regions);
  expect(regions.map((r) => r.state), `region errors: ${regions.map((r) => r.error ?? '-').join('; ')}`).toEqual(['serving', 'serving', 'serving']);
  const rows = await db.query(CRASH_SCHEMA.name);
  const byBatch = new Map<string, Map<number, Record<string, unknown>>>();
  for (const row of rows) {
    const batch = row.batch as string;
    let seen = byBatch.get(batch);
    if (!seen) byBatch.set(batch, (seen = new Map()));
    expect(seen.has(row.i as number), `row ${batch}#${row.i} appears twice`).toBe(false);
    seen.set(row.i as number, row);
  }
  const missing = [...acked].filter((id) => !byBatch.has(id));
  expect(missing, 'acknowledged batches lost').toEqual([]);
  for (const [batch, seen] of byBatch) {
    expect(tried.has(batch), `batch ${batch} was never written`).toBe(true);
    expect(seen.size, `batch ${batch} is partial`).toBe(batchSize(batch));
    const expected = batchRows(batch) as Record<string, unknown>[];
    for (const row of expected) expect(seen.get(row.i as number)).toEqual(row);
  }
}
