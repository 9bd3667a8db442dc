import type { RegionWriter } from '../../src/engine/region-engine.js';

/** Open options of a region this test leads: epoch 1, a lease that always holds. */
export const LEADER: { readonly writer: RegionWriter } = { writer: { epoch: 1, mayDelete: () => true } };
