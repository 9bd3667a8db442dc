import { assign, fromPromise, setup } from 'xstate';
import type { EntryId } from '../wal/log-store.js';
import { effectNotProvided, reasonOfError, reasonOfEvent } from '../machine-effects.js';

/**
 * The lifecycle of one region (one partition of a table) on the node that
 * hosts it. The machine is the specification; the effects (opening the
 * region's manifest, flushing, closing, handing off) are injected with
 * `regionMachine.provide({ actors })` by the runtime and by model tests.
 *
 * Replay is driven by the region's shard (replay by shard: one pass over
 * the topic for all regions), which sends REPLAYED when it reaches the end.
 * On a follower shard the region goes on to `following`: read-only, fed by
 * the shard's tail of the topic, until the shard is promoted (REPLAYED).
 * Admission is tagged on the states, and the actors ask the tags: `writable`
 * (writes accepted) and `readable` (queries answered).
 * Writes are accepted in `serving` and `flushing`; reads also in `migrating`
 * and `following`.
 */
export type RegionEvent =
  /** The shard's replay (or a follower's promotion) reached the end of the topic: serve. */
  | { type: 'REPLAYED'; appliedEntryId: EntryId }
  /** The follower shard caught up: keep applying what the leader writes, read-only. */
  | { type: 'FOLLOW' }
  /** Flush the memtable; every entry of this region up to coveredUpTo has been applied. */
  | { type: 'FLUSH'; coveredUpTo: EntryId }
  | { type: 'MIGRATE' }
  | { type: 'CLOSE' }
  /** A fault outside the machine's own effects (replay error, WAL error, shard failure). */
  | { type: 'FAIL'; reason: string };

export interface RegionContext {
  readonly regionId: number;
  flushedEntryId: EntryId;
  /** Why the region is `failed`, or the last flush/migration error while it kept serving. */
  error: string | undefined;
}

export interface RegionInput {
  readonly regionId: number;
}

export const regionMachine = setup({
  types: {
    context: {} as RegionContext,
    events: {} as RegionEvent,
    input: {} as RegionInput,
  },
  actors: {
    /** Load the manifest and check the SSTs; resolves with the flushed entry id. */
    openRegion: fromPromise<{ flushedEntryId: EntryId }, { regionId: number }>(effectNotProvided('openRegion')),
    /** Freeze and write the memtable; resolves with the new flushed entry id. */
    flushRegion: fromPromise<{ flushedEntryId: EntryId }, { regionId: number; coveredUpTo: EntryId }>(
      effectNotProvided('flushRegion'),
    ),
    /** Planned handoff: make the region's data durable for its next owner. */
    handOffRegion: fromPromise<void, { regionId: number }>(effectNotProvided('handOffRegion')),
    /** Wait for a running flush, then release the region's resources. */
    closeRegion: fromPromise<void, { regionId: number }>(effectNotProvided('closeRegion')),
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'region',
  context: ({ input }) => ({ regionId: input.regionId, flushedEntryId: -1, error: undefined }),
  initial: 'opening',
  // A fault outside the effects (an entry it cannot apply, damaged files, its shard failing) fails it in any state that does not say otherwise.
  on: {
    FAIL: { target: '.failed', actions: { type: 'recordFailure', params: reasonOfEvent } },
  },
  states: {
    opening: {
      invoke: {
        src: 'openRegion',
        input: ({ context }) => ({ regionId: context.regionId }),
        onDone: {
          target: 'replaying',
          actions: assign({ flushedEntryId: ({ event }) => event.output.flushedEntryId }),
        },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      on: { CLOSE: 'closed' },
    },
    replaying: {
      on: {
        REPLAYED: 'serving',
        FOLLOW: 'following',
        CLOSE: 'closing',
      },
    },
    following: {
      tags: ['readable'],
      on: {
        REPLAYED: 'serving',
        CLOSE: 'closing',
      },
    },
    serving: {
      tags: ['writable', 'readable'],
      on: {
        FLUSH: 'flushing',
        MIGRATE: 'migrating',
        CLOSE: 'closing',
      },
    },
    flushing: {
      tags: ['writable', 'readable'],
      invoke: {
        src: 'flushRegion',
        input: ({ context, event }) => ({
          regionId: context.regionId,
          coveredUpTo: event.type === 'FLUSH' ? event.coveredUpTo : context.flushedEntryId,
        }),
        onDone: {
          target: 'serving',
          actions: assign({ flushedEntryId: ({ event }) => event.output.flushedEntryId, error: undefined }),
        },
        // A failed flush loses nothing (the rows are still in the memtable and
        // the WAL), so the region keeps serving and reports the error.
        onError: {
          target: 'serving',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      on: { CLOSE: 'closing' },
    },
    migrating: {
      tags: ['readable'],
      invoke: {
        src: 'handOffRegion',
        input: ({ context }) => ({ regionId: context.regionId }),
        onDone: 'closed',
        onError: {
          target: 'serving',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
    },
    closing: {
      invoke: {
        src: 'closeRegion',
        input: ({ context }) => ({ regionId: context.regionId }),
        onDone: 'closed',
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      // It is closing already; its close reports how that went.
      on: { FAIL: undefined },
    },
    // Final: nothing more happens to a closed or failed region.
    closed: { type: 'final', on: { FAIL: undefined } },
    failed: { type: 'final', on: { FAIL: undefined } },
  },
});

export type RegionState = 'opening' | 'replaying' | 'following' | 'serving' | 'flushing' | 'migrating' | 'closing' | 'closed' | 'failed';
