import { describe, expect, it } from 'vitest';
import { report, runSeed, shrink } from './cluster-sim.js';

/**
 * The fixed seeds `npm test` runs: each a 24-step schedule of writes, reads,
 * crashes, restarts, pauses, lost messages, partitions from meta, stalled WAL
 * appends, migrations and clean shutdowns, and meta replicas crashed, stopped,
 * stalled, partitioned and restarted, against 3 meta replicas + 3 nodes
 * sharing one local WAL, checked on the leaders and again after every shard
 * is handed to its hot standby. More seeds: `npm run sim -- --seeds N`.
 */
export const FIXED_SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];

describe('seeded cluster simulation', () => {
  for (const seed of FIXED_SEEDS) {
    it(`seed ${seed}`, async () => {
      const result = await runSeed(seed);
      console.log(`sim seed ${seed}: ${result.violations.length} violation(s), ${result.acked} acknowledged rows, ${result.ms} ms${result.reasons.length ? `; not serving: ${result.reasons.join('; ')}` : ''}`);
      if (result.violations.length > 0) {
        const shortest = await shrink(result, 60_000);
        expect.fail(`${report(result)}\nshortest failing schedule:\n${report(shortest)}`);
      }
    });
  }
});
