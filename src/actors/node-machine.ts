import { assign, fromPromise, setup } from 'xstate';
import { effectNotProvided, reasonOfError, reasonOfEvent } from '../machine-effects.js';

/**
 * The lifecycle of a node: the process that hosts shard leaders (and, in a
 * cluster, followers).
 *   opening   - register with meta, learn which shards it hosts
 *   replaying - open those shards (each replays its topic) until every one
 *               serves or has failed with a reason
 *   serving   - route writes and reads to its shards
 *   flushing  - flush every shard (on demand)
 * A cluster node that leaves hands its shards over through meta
 * (`meta.leave`, runtime.ts) before it closes; the node itself only closes.
 * Effects are injected with `nodeMachine.provide({ actors })`.
 */
export type NodeEvent =
  | { type: 'FLUSH' }
  | { type: 'CLOSE' }
  | { type: 'FAIL'; reason: string };

export interface NodeContext {
  readonly nodeId: string;
  error: string | undefined;
}

export const nodeMachine = setup({
  types: {
    context: {} as NodeContext,
    events: {} as NodeEvent,
    input: {} as { nodeId: string },
  },
  actors: {
    registerNode: fromPromise<void, { nodeId: string }>(effectNotProvided('registerNode')),
    openShards: fromPromise<void, { nodeId: string }>(effectNotProvided('openShards')),
    flushNode: fromPromise<void, { nodeId: string }>(effectNotProvided('flushNode')),
    closeNode: fromPromise<void, { nodeId: string }>(effectNotProvided('closeNode')),
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'node',
  context: ({ input }) => ({ nodeId: input.nodeId, error: undefined }),
  initial: 'opening',
  states: {
    opening: {
      invoke: {
        src: 'registerNode',
        input: ({ context }) => ({ nodeId: context.nodeId }),
        onDone: 'replaying',
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
    },
    replaying: {
      invoke: {
        src: 'openShards',
        input: ({ context }) => ({ nodeId: context.nodeId }),
        onDone: 'serving',
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      on: { CLOSE: 'closing' },
    },
    serving: {
      on: {
        FLUSH: 'flushing',
        CLOSE: 'closing',
        FAIL: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfEvent } },
      },
    },
    flushing: {
      invoke: {
        src: 'flushNode',
        input: ({ context }) => ({ nodeId: context.nodeId }),
        onDone: { target: 'serving', actions: assign({ error: undefined }) },
        onError: {
          target: 'serving',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
      on: { CLOSE: 'closing' },
    },
    closing: {
      invoke: {
        src: 'closeNode',
        input: ({ context }) => ({ nodeId: context.nodeId }),
        onDone: 'closed',
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: reasonOfError },
        },
      },
    },
    closed: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type NodeState = 'opening' | 'replaying' | 'serving' | 'flushing' | 'closing' | 'closed' | 'failed';
