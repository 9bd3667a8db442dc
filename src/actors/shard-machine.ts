import { assign, fromPromise, setup } from 'xstate';
import type { EntryId } from '../wal/log-store.js';
import { effectNotProvided, reasonOfError, reasonOfEvent } from '../machine-effects.js';

/**
 * The lifecycle of one shard on one node: a group of regions sharing one WAL
 * topic, the unit of placement, failover and replay. The shard leader:
 *   opening   - acquire leadership (a new epoch) from meta, open its regions
 *   replaying - read the topic once from min(flushed entry id) + 1 to the
 *               end, route entries to regions, then append the epoch marker
 *               that fences any older leader
 *   serving   - accept writes (group-committed appends to the topic)
 *   flushing  - flush every region, prune the topic below the new minimum;
 *               writes keep flowing
 *   migrating - hand leadership to another node
 * A hot-standby follower opens without leadership, replays the same way
 * (no marker), then stays in
 *   following - tail the topic into read-only regions
 *   promoting - meta made it leader: take a new epoch, apply the last few
 *               entries, append the marker, then serve
 * Admission is tagged on the states: `writable` (serving, flushing) and
 * `readable` (also migrating); a leader still opening, replaying or
 * promoting has not applied everything acknowledged, and answers neither.
 * Effects are injected with `shardMachine.provide({ actors })`.
 */
export type ShardRole = 'leader' | 'follower';

export type ShardEvent =
  | { type: 'FLUSH' }
  /** A follower becomes the leader (meta assigned it the shard). */
  | { type: 'PROMOTE' }
  | { type: 'MIGRATE'; to: string }
  | { type: 'CLOSE' }
  /** Meta did not renew (or revoked) the lease: stop writing at once. */
  | { type: 'LEASE_LOST' }
  /** A fault outside the machine's effects (e.g. the log store failed). */
  | { type: 'FAIL'; reason: string }
  /** A follower read the leader's epoch marker: its status shows that generation. */
  | { type: 'EPOCH_SEEN'; epoch: number };

/** The one copy of the shard's role and epoch: the actor reads them from here. */
export interface ShardContext {
  readonly shardId: number;
  /** 'leader' from PROMOTE on: a promoting shard acts as the leader it is becoming (it owns its files). */
  role: ShardRole;
  /** A leader's own epoch once opened or promoted; a follower's, the leader's generation it last saw. */
  epoch: number;
  error: string | undefined;
}

export interface ShardInput {
  readonly shardId: number;
  readonly role: ShardRole;
}

export const shardMachine = setup({
  types: {
    context: {} as ShardContext,
    events: {} as ShardEvent,
    input: {} as ShardInput,
  },
  actors: {
    /** Acquire leadership from meta (a new epoch; a follower only reads the current one) and start the region actors. */
    openShard: fromPromise<{ epoch: number }, { shardId: number; role: ShardRole }>(effectNotProvided('openShard')),
    /** One pass over the topic; a leader then appends its epoch marker, a follower starts tailing. */
    replayShard: fromPromise<{ lastEntryId: EntryId }, { shardId: number; epoch: number; role: ShardRole }>(
      effectNotProvided('replayShard'),
    ),
    /** Follower to leader: a new epoch, stop tailing, apply the rest of the topic, append the marker. */
    promoteShard: fromPromise<{ epoch: number; lastEntryId: EntryId }, { shardId: number }>(effectNotProvided('promoteShard')),
    /** Flush all regions, then prune the topic below the lowest flushed entry id + 1. */
    flushShard: fromPromise<void, { shardId: number }>(effectNotProvided('flushShard')),
    /** Hand leadership to another node. */
    migrateShard: fromPromise<void, { shardId: number; to: string }>(effectNotProvided('migrateShard')),
    /** Drain in-flight writes, flush, close regions and release the lease. */
    closeShard: fromPromise<void, { shardId: number }>(effectNotProvided('closeShard')),
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
  guards: {
    isFollower: ({ context }) => context.role === 'follower',
  },
}).createMachine({
  id: 'shard',
  context: ({ input }) => ({ shardId: input.shardId, role: input.role, epoch: 0, error: undefined }),
  initial: 'opening',
  // In every state that does not say otherwise: a lost lease stops the
  // shard at once (it neither issues nor acknowledges an append without
  // one), and so does a fault outside its effects.
  on: {
    EPOCH_SEEN: { actions: assign({ epoch: ({ context, event }) => Math.max(context.epoch, event.epoch) }) },
    LEASE_LOST: { target: '.failed', actions: { type: 'recordFailure', params: { reason: 'lease lost' } } },
    FAIL: { target: '.failed', actions: { type: 'recordFailure', params: reasonOfEvent } },
  },
  states: {
    opening: {
      invoke: {
        src: 'openShard',
        input: ({ context }) => ({ shardId: context.shardId, role: context.role }),
        onDone: { target: 'replaying', actions: assign({ epoch: ({ event }) => event.output.epoch }) },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      // Its effect fails on its own if meta or the log does: nothing to stop.
      on: { CLOSE: 'closing', LEASE_LOST: undefined, FAIL: undefined },
    },
    replaying: {
      invoke: {
        src: 'replayShard',
        input: ({ context }) => ({ shardId: context.shardId, epoch: context.epoch, role: context.role }),
        onDone: [
          { guard: 'isFollower', target: 'following' },
          { target: 'serving' },
        ],
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      on: { CLOSE: 'closing', FAIL: undefined },
    },
    // A follower holds no lease, so losing one changes nothing here.
    following: {
      on: {
        PROMOTE: { target: 'promoting', actions: assign({ role: 'leader' }) },
        CLOSE: 'closing',
        LEASE_LOST: undefined,
      },
    },
    promoting: {
      invoke: {
        src: 'promoteShard',
        input: ({ context }) => ({ shardId: context.shardId }),
        onDone: {
          target: 'serving',
          actions: assign({ epoch: ({ event }) => event.output.epoch }),
        },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      on: { CLOSE: 'closing' },
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
        src: 'flushShard',
        input: ({ context }) => ({ shardId: context.shardId }),
        onDone: { target: 'serving', actions: assign({ error: undefined }) },
        // Nothing is lost when a flush fails: the rows stay in memtables and the WAL.
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
        src: 'migrateShard',
        input: ({ context, event }) => ({ shardId: context.shardId, to: event.type === 'MIGRATE' ? event.to : '' }),
        onDone: 'closed',
        onError: {
          target: 'serving',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
    },
    closing: {
      invoke: {
        src: 'closeShard',
        input: ({ context }) => ({ shardId: context.shardId }),
        onDone: 'closed',
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      // It is stopping already; its close reports how that went.
      on: { LEASE_LOST: undefined, FAIL: undefined },
    },
    // Final: nothing more happens to a closed or failed shard.
    closed: { type: 'final', on: { LEASE_LOST: undefined, FAIL: undefined } },
    failed: { type: 'final', on: { LEASE_LOST: undefined, FAIL: undefined } },
  },
});

export type ShardState = 'opening' | 'replaying' | 'following' | 'promoting' | 'serving' | 'flushing' | 'migrating' | 'closing' | 'closed' | 'failed';
