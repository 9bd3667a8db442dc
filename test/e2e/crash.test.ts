import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { open } from '../../src/api/runtime.js';
// @ts-expect-error plain ESM fixture shared with the child process
import { batchRows, batchSize, CRASH_SCHEMA } from './fixtures/crash-rows.mjs';

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.mjs', import.meta.url));
const ITERATIONS = Number(process.env.REPRISE_CRASH_ITERATIONS ?? 20);

interface RunResult {
  tried: Set<string>;
  acked: Set<string>;
}

/** Start the writer, let it write for `ms` after it is ready, then SIGKILL it. */
function runAndKill(dataDir: string, run: number, ms: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dataDir, String(run)], { stdio: ['ignore', 'pipe', 'pipe'] });
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

describe('crash safety: SIGKILL during writes, restart, check', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it(`every acknowledged batch survives ${ITERATIONS} kills, whole, exactly once; nothing torn appears`, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reprise-crash-'));
    dirs.push(dataDir);
    const tried = new Set<string>();
    const acked = new Set<string>();
    for (let run = 0; run < ITERATIONS; run++) {
      // Kill at moments spread from "just opened" (mid-replay of the last
      // run's tail) to well into steady writes with flushes.
      const ms = 20 + Math.floor(Math.random() * 900);
      const result = await runAndKill(dataDir, run, ms);
      for (const id of result.tried) tried.add(id);
      for (const id of result.acked) acked.add(id);
    }
    expect(acked.size).toBeGreaterThan(ITERATIONS * 5);

    const db = await open({ dataDir, shards: 2, logger: false });
    try {
      const status = db.status().nodes[0]!;
      expect(status.shards.flatMap((s) => s.regions).map((r) => r.state)).toEqual(['serving', 'serving', 'serving']);
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
        // Whole or not at all: a torn entry would show a partial batch.
        expect(seen.size, `batch ${batch} is partial`).toBe(batchSize(batch));
        const expected = batchRows(batch) as Record<string, unknown>[];
        for (const row of expected) expect(seen.get(row.i as number)).toEqual(row);
      }
    } finally {
      await db.close();
    }
  });
});
