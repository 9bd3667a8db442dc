#!/usr/bin/env node
// `npm run sim -- --seeds N [--from S] [--length L]`: run the cluster
// simulation over N more seeds (default 20, from 1000, 24 steps each) through
// vitest (test/sim/many-seeds.sim.ts, vitest.sim.config.ts), so the TypeScript runs as in `npm test`.
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '20' },
    from: { type: 'string', default: '1000' },
    length: { type: 'string', default: '24' },
  },
});
for (const [k, v] of Object.entries(values)) {
  if (!/^\d+$/.test(v)) {
    console.error(`--${k} must be a non-negative integer, got '${v}'`);
    process.exit(2);
  }
}
const result = spawnSync('npx', ['vitest', 'run', '--config', 'vitest.sim.config.ts'], {
  stdio: 'inherit',
  env: { ...process.env, SIM_SEEDS: values.seeds, SIM_FROM: values.from, SIM_LENGTH: values.length },
});
process.exit(result.status ?? 1);
