import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { open } from '../../src/api/runtime.js';
import { expectAcknowledgedBatches, runAndKill } from '../harness/crash.js';

const ITERATIONS = Number(process.env.REPRISE_CRASH_ITERATIONS ?? 20);

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
      await expectAcknowledgedBatches(db, tried, acked);
    } finally {
      await db.close();
    }
  });
});
