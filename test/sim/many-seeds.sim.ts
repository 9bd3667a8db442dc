import { describe, expect, it } from 'vitest';
import { report, runSeed, shrink } from './cluster-sim.js';

/**
 * More seeds, on demand: `npm run sim -- --seeds N [--from S] [--length L]`
 * (test/sim/cli.mjs sets SIM_SEEDS, SIM_FROM, SIM_LENGTH and runs this file
 * through vitest.sim.config.ts; `npm test` does not include it: its fixed
 * seeds are in sim.test.ts). Each failing seed is shrunk and printed with
 * its shortest failing schedule; the run fails if any seed did.
 */
const seeds = Number(process.env.SIM_SEEDS ?? 20);
const from = Number(process.env.SIM_FROM ?? 1000);
const length = Number(process.env.SIM_LENGTH ?? 24);

describe('simulation over more seeds', () => {
  it(`${seeds} seeds from ${from}, ${length} steps each`, { timeout: 0 }, async () => {
    const failed: string[] = [];
    for (let seed = from; seed < from + seeds; seed++) {
      const result = await runSeed(seed, length);
      console.log(`sim seed ${seed}: ${result.violations.length} violation(s), ${result.acked} acknowledged rows, ${result.ms} ms`);
      if (result.violations.length === 0) continue;
      const shortest = await shrink(result, 120_000);
      const text = `${report(result)}\nshortest failing schedule:\n${report(shortest)}`;
      console.log(text);
      failed.push(text);
    }
    expect(failed, failed.join('\n\n')).toEqual([]);
  });
});
