import { defineConfig } from 'vitest/config';

// `npm run sim -- --seeds N`: the seeded cluster simulation over more seeds
// than `npm test` runs (test/sim/many-seeds.sim.ts; see test/sim/cli.mjs).
export default defineConfig({
  test: {
    include: ['test/sim/many-seeds.sim.ts'],
    testTimeout: 0,
  },
});
