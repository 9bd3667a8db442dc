import { assign, fromPromise, setup } from 'xstate';
import { effectNotProvided, reasonOfError } from '../machine-effects.js';

/**
 * One meta replica (`reprise meta` run N times): each tails the meta log
 * and campaigns in the meta election; the one elected leads.
 *   starting      - tail the meta log from its start (a MetaReplica)
 *   following     - keep tailing, ready to lead
 *   taking_over   - elected at an epoch: append the epoch marker, fold the
 *                   log up to it (entries a deposed leader still had in
 *                   flight), roll back unfinished table creations, serve
 *                   meta's subjects; procedures resume from the log
 *   leading       - answer nodes and clients, place shards, run procedures
 *   stepping_down - the election lease is gone (or the takeover failed):
 *                   stop serving, resign if still elected, drop the
 *                   state, tail the log again
 * An ELECTED that arrives while starting or stepping down is remembered
 * (`electedEpoch`), and the member takes over once that is done; DEPOSED
 * forgets it. Effects are injected with `metaMemberMachine.provide({ actors })`.
 */
export type MetaMemberEvent =
  /** The election made this replica leader at `epoch` (its lease holds). */
  | { type: 'ELECTED'; epoch: number }
  /** Its election lease is gone: whatever it does next must not count. */
  | { type: 'DEPOSED'; reason: string }
  | { type: 'STOP' };

export interface MetaMemberContext {
  /** The epoch this replica was elected at and has not been deposed from since (undefined: none). */
  electedEpoch: number | undefined;
  /** The epoch it leads (or is taking over) at. */
  leadingEpoch: number | undefined;
  /** Why it last stepped down or failed. */
  error: string | undefined;
}

export const metaMemberMachine = setup({
  types: {
    context: {} as MetaMemberContext,
    events: {} as MetaMemberEvent,
  },
  actors: {
    /** Open a replica that tails the meta log; resolves once it has caught up with the log's end. */
    follow: fromPromise<void, void>(effectNotProvided('follow')),
    /** Lead at `epoch`: marker, fold to it, roll back unfinished creates, serve. */
    takeOver: fromPromise<void, { epoch: number }>(effectNotProvided('takeOver')),
    /** Stop serving, resign if still elected, and tail the log again (waits for a takeover still running). */
    stepDown: fromPromise<void, void>(effectNotProvided('stepDown')),
    /** Stop everything (resigning if leading). */
    stop: fromPromise<void, void>(effectNotProvided('stop')),
  },
  guards: {
    elected: ({ context }) => context.electedEpoch !== undefined,
  },
  actions: {
    rememberElection: assign({ electedEpoch: ({ event }) => (event.type === 'ELECTED' ? event.epoch : undefined) }),
    forgetElection: assign({ electedEpoch: undefined }),
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
    recordDeposed: assign({ electedEpoch: undefined, error: ({ event }) => (event.type === 'DEPOSED' ? `deposed: ${event.reason}` : undefined) }),
  },
}).createMachine({
  id: 'metaMember',
  context: { electedEpoch: undefined, leadingEpoch: undefined, error: undefined },
  initial: 'starting',
  on: {
    ELECTED: { actions: 'rememberElection' },
    DEPOSED: { actions: 'recordDeposed' },
    STOP: '.stopping',
  },
  states: {
    starting: {
      invoke: {
        src: 'follow',
        onDone: [{ guard: 'elected', target: 'taking_over' }, { target: 'following' }],
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    following: {
      on: { ELECTED: { target: 'taking_over', actions: 'rememberElection' } },
    },
    taking_over: {
      entry: assign({ leadingEpoch: ({ context }) => context.electedEpoch }),
      invoke: {
        src: 'takeOver',
        input: ({ context }) => ({ epoch: context.electedEpoch! }),
        onDone: 'leading',
        // Gives the leadership up (stepDown resigns): another replica takes over.
        onError: { target: 'stepping_down', actions: ['forgetElection', { type: 'recordFailure', params: reasonOfError }] },
      },
      on: { DEPOSED: { target: 'stepping_down', actions: 'recordDeposed' } },
    },
    leading: {
      on: { DEPOSED: { target: 'stepping_down', actions: 'recordDeposed' } },
    },
    stepping_down: {
      entry: assign({ leadingEpoch: undefined }),
      invoke: {
        src: 'stepDown',
        onDone: [{ guard: 'elected', target: 'taking_over' }, { target: 'following' }],
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    stopping: {
      entry: 'forgetElection',
      invoke: { src: 'stop', onDone: 'stopped', onError: 'stopped' },
      on: { ELECTED: undefined, DEPOSED: undefined, STOP: undefined },
    },
    stopped: { type: 'final' },
    // Final: the process exits and its supervisor starts it again.
    failed: { type: 'final' },
  },
});

export type MetaMemberState = 'starting' | 'following' | 'taking_over' | 'leading' | 'stepping_down' | 'stopping' | 'stopped' | 'failed';
