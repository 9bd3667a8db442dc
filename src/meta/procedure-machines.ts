import { assign, fromPromise, setup, type AnyStateMachine } from 'xstate';
import { effectNotProvided, errorReason, reasonOfError } from '../machine-effects.js';
import type { EntryId } from '../wal/log-store.js';
import type { ProcedureKind } from './model.js';
import type { Move } from './placement.js';

/**
 * Meta's procedures: multi-step changes of the cluster whose progress is in
 * the meta log, so that a meta restarted mid-way resumes them. Each is an
 * xstate machine (the specification: steps, and the names of the effects
 * they invoke); ProcedureRunner (and TableCreations, for create table)
 * provides the effects and runs them. Every step is recorded
 * (`procedure_step`) before its effect runs, and a restarted meta starts
 * the machine again at the recorded step, so each step's effect must be
 * safe to run twice:
 *
 *   migrate   (planned hand-off of one shard; recorded with the shard's epoch)
 *     handing_off      ask the leader to stop writing, flush and close the shard
 *                      (a node asked again for a shard it no longer holds says
 *                      yes); if the leader dies meanwhile the procedure fails
 *                      and failover takes the shard over
 *     assigning        assign the shard to the target (`shard_assigned`), which
 *                      opens it with a new epoch; a no-op if already done
 *     awaiting_target  until the target's heartbeat reports the shard serving,
 *                      every region of it, at a higher epoch (done); if it
 *                      reports a failed open, dies, or has not served within
 *                      the settle timeout:
 *     rolling_back     assign the shard back to the source, which reopens it
 *                      (outcome aborted, with the reason; the caller gets it)
 *   failover  (dynamic topology: a dead node's shard moves to a live node,
 *              started by MetaServer's placement)
 *     assigning        assign the shard to the target chosen by placement (a
 *                      live follower first); a no-op if already done. The
 *                      procedure's start is the only append before it
 *     awaiting_leader  until the target's heartbeat reports the shard serving
 *                      at an epoch above the dead leader's; fails if the
 *                      target dies meanwhile (placement then starts another)
 *   rebalance (dynamic topology: one move at a time until leader counts of
 *              live nodes differ by at most one)
 *     planning     wait until the cluster is settled (every shard placed, led by
 *                  a live node that reports it serving, no other procedure),
 *                  then pick a move from the most to the least loaded node
 *                  (a shard an operator migrated last: the meta log knows them)
 *     moving       run that move as a migrate procedure of its own (parent:
 *                  the rebalance); resumed at planning, which first waits for
 *                  the move it was making
 *   create_table (driven by the frontend: begin_create, commit_create, abort_create)
 *     creating_regions  recorded with `table_creating`: the frontend writes each
 *                       region's region_create on its shard's leader
 *     committing        `table_created`: the table becomes visible
 *     aborting          `table_create_aborted`: the frontend gave up, or a meta
 *                       restart cut the procedure short. Meta alone cannot
 *                       create regions, so a resumed create_table is rolled back
 *
 * One procedure per shard: a migration or a failover holds its shard; a
 * create_table holds the shards of its regions against migrations only (a
 * migration's new leader would not host a region whose table is not
 * visible yet), and regions are not placed on a shard being moved.
 * Failover does not wait for a create_table (a dead leader's shard must
 * move); it waits for a running migration, which ends once its source is
 * declared dead.
 */

// ---------------------------------------------------------------- migrate

export type MigrateStep = 'handing_off' | 'assigning' | 'awaiting_target' | 'rolling_back';
export const MIGRATE_STEPS: readonly MigrateStep[] = ['handing_off', 'assigning', 'awaiting_target', 'rolling_back'];

/**
 * A move with the shard's epoch when its procedure started (a failover's:
 * when `from` was declared dead): the target must serve it at a higher one.
 */
export interface EpochMove extends Move {
  readonly epoch: number;
}

const epochMoveOf = ({ context }: { context: EpochMove & { id: number } }): EpochMove & { id: number } => ({ id: context.id, shard: context.shard, from: context.from, to: context.to, epoch: context.epoch });

export interface MigrateInput extends EpochMove {
  readonly id: number;
  /** The step recorded in the meta log: where the procedure (re)starts. */
  readonly resumeAt: MigrateStep;
}

export interface MigrateContext extends MigrateInput {
  error: string | undefined;
}

export const migrateProcedure = setup({
  types: {
    context: {} as MigrateContext,
    input: {} as MigrateInput,
  },
  actors: {
    /** Ask the leader to hand the shard off (stop writes, flush, close); rejects if it dies meanwhile. */
    handOff: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('handOff')),
    /** Assign the shard to the target, which opens it with a new epoch (nothing to replay). */
    assignTarget: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('assignTarget')),
    /** Until the target's heartbeat reports the shard serving (every region) at a higher epoch; rejects if it reports a failed open, dies, or takes too long. */
    awaitTarget: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('awaitTarget')),
    /** Assign the shard back to the source, which reopens it. */
    rollBack: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('rollBack')),
  },
  guards: {
    resumedAt: ({ context }, params: { step: MigrateStep }) => context.resumeAt === params.step,
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'migrate',
  context: ({ input }) => ({ ...input, error: undefined }),
  // Start (or resume) at the step the meta log holds.
  initial: 'resuming',
  states: {
    resuming: {
      always: [
        { guard: { type: 'resumedAt', params: { step: 'assigning' } }, target: 'assigning' },
        { guard: { type: 'resumedAt', params: { step: 'awaiting_target' } }, target: 'awaiting_target' },
        // Why the target did not serve is not in the log: only that it did not.
        { guard: { type: 'resumedAt', params: { step: 'rolling_back' } }, target: 'rolling_back', actions: assign({ error: 'the target did not serve the shard (meta restarted while giving it back)' }) },
        { target: 'handing_off' },
      ],
    },
    handing_off: {
      invoke: {
        src: 'handOff',
        input: epochMoveOf,
        onDone: 'assigning',
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    assigning: {
      invoke: {
        src: 'assignTarget',
        input: epochMoveOf,
        onDone: 'awaiting_target',
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    awaiting_target: {
      invoke: {
        src: 'awaitTarget',
        input: epochMoveOf,
        onDone: 'done',
        onError: { target: 'rolling_back', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    rolling_back: {
      invoke: {
        src: 'rollBack',
        input: epochMoveOf,
        onDone: 'rolled_back',
        // The reason it was rolling back stays; the rollback's own error is added.
        onError: { target: 'failed', actions: assign({ error: ({ context, event }) => `${context.error ?? 'rolling back'}; giving the shard back failed: ${errorReason(event.error)}` }) },
      },
    },
    done: { type: 'final' },
    rolled_back: { type: 'final' },
    failed: { type: 'final' },
  },
});

// ---------------------------------------------------------------- failover

export type FailoverStep = 'assigning' | 'awaiting_leader';
export const FAILOVER_STEPS: readonly FailoverStep[] = ['assigning', 'awaiting_leader'];

export interface FailoverInput extends EpochMove {
  readonly id: number;
  /** The step recorded in the meta log: where the procedure (re)starts. */
  readonly resumeAt: FailoverStep;
}

export interface FailoverContext extends FailoverInput {
  error: string | undefined;
}

export const failoverProcedure = setup({
  types: {
    context: {} as FailoverContext,
    input: {} as FailoverInput,
  },
  actors: {
    /** Assign the dead node's shard to the target (a follower is promoted, another node opens it with a new epoch). */
    assignTarget: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('assignTarget')),
    /** Wait until the target serves the shard at a higher epoch; rejects if it dies first. */
    awaitLeader: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('awaitLeader')),
  },
  guards: {
    assigned: ({ context }) => context.resumeAt === 'awaiting_leader',
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'failover',
  context: ({ input }) => ({ ...input, error: undefined }),
  initial: 'resuming',
  states: {
    resuming: {
      always: [{ guard: 'assigned', target: 'awaiting_leader' }, { target: 'assigning' }],
    },
    assigning: {
      invoke: {
        src: 'assignTarget',
        input: epochMoveOf,
        onDone: 'awaiting_leader',
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    awaiting_leader: {
      invoke: {
        src: 'awaitLeader',
        input: epochMoveOf,
        onDone: 'done',
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
});

// ---------------------------------------------------------------- rebalance

/** What planning decided: one move, nothing to do, or stop (the cluster is not in a state to rebalance). */
export type RebalancePlan = { readonly move: Move } | { readonly balanced: true } | { readonly stop: string };

export interface RebalanceContext {
  readonly id: number;
  move: Move | undefined;
  moves: number;
  error: string | undefined;
}

export const rebalanceProcedure = setup({
  types: {
    context: {} as RebalanceContext,
    input: {} as { id: number },
  },
  actors: {
    /** Wait until the cluster is settled, then pick one move (or none). */
    planMove: fromPromise<RebalancePlan, { id: number }>(effectNotProvided('planMove')),
    /** Run the move as a migrate procedure (parent: this rebalance). */
    moveShard: fromPromise<void, { id: number; move: Move }>(effectNotProvided('moveShard')),
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'rebalance',
  context: ({ input }) => ({ id: input.id, move: undefined, moves: 0, error: undefined }),
  // A resumed rebalance starts here too: planning first waits for the move it was making.
  initial: 'planning',
  states: {
    planning: {
      invoke: {
        src: 'planMove',
        input: ({ context }) => ({ id: context.id }),
        onDone: [
          { guard: ({ event }) => 'move' in event.output, target: 'moving', actions: assign({ move: ({ event }) => ('move' in event.output ? event.output.move : undefined) }) },
          { guard: ({ event }) => 'balanced' in event.output, target: 'balanced' },
          { target: 'stopped', actions: assign({ error: ({ event }) => ('stop' in event.output ? event.output.stop : undefined) }) },
        ],
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    moving: {
      invoke: {
        src: 'moveShard',
        input: ({ context }) => ({ id: context.id, move: context.move! }),
        onDone: { target: 'planning', actions: assign({ moves: ({ context }) => context.moves + 1, move: undefined }) },
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    balanced: { type: 'final' },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
});

// ---------------------------------------------------------------- create table

export type CreateTableStep = 'creating_regions' | 'committing' | 'aborting';
export const CREATE_TABLE_STEPS: readonly CreateTableStep[] = ['creating_regions', 'committing', 'aborting'];

export interface CreateTableInput {
  readonly id: number;
  readonly tableId: number;
  /** A procedure a meta restart cut short: rolled back, whatever its step (meta alone cannot create regions). */
  readonly resumed: boolean;
}

export interface CreateTableContext extends CreateTableInput {
  createdAt: Record<number, EntryId> | undefined;
  error: string | undefined;
}

export const createTableProcedure = setup({
  types: {
    context: {} as CreateTableContext,
    input: {} as CreateTableInput,
  },
  actors: {
    /** The frontend's step: resolves with each region's region_create entry id when it commits; rejects when it aborts (or gives up). */
    regionsCreated: fromPromise<Record<number, EntryId>, { id: number; tableId: number }>(effectNotProvided('regionsCreated')),
    /** `table_created`: the table becomes visible. */
    commit: fromPromise<void, { id: number; tableId: number; createdAt: Record<number, EntryId> }>(effectNotProvided('commit')),
    /** `table_create_aborted` (nothing to do for a table no longer there). */
    abort: fromPromise<void, { id: number; tableId: number }>(effectNotProvided('abort')),
  },
  guards: {
    resumed: ({ context }) => context.resumed,
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'create_table',
  context: ({ input }) => ({ ...input, createdAt: undefined, error: undefined }),
  initial: 'resuming',
  states: {
    resuming: {
      always: [
        { guard: 'resumed', target: 'aborting', actions: assign({ error: 'meta restarted before the table was created: rolled back (the frontend was not told it succeeded)' }) },
        { target: 'creating_regions' },
      ],
    },
    creating_regions: {
      invoke: {
        src: 'regionsCreated',
        input: ({ context }) => ({ id: context.id, tableId: context.tableId }),
        onDone: { target: 'committing', actions: assign({ createdAt: ({ event }) => event.output }) },
        onError: { target: 'aborting', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    committing: {
      invoke: {
        src: 'commit',
        input: ({ context }) => ({ id: context.id, tableId: context.tableId, createdAt: context.createdAt! }),
        onDone: 'done',
        onError: { target: 'aborting', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    aborting: {
      invoke: {
        src: 'abort',
        input: ({ context }) => ({ id: context.id, tableId: context.tableId }),
        onDone: 'aborted',
        // The reason it was aborting stays; the abort's own error is in the log (the procedure is recorded failed).
        onError: { target: 'failed', actions: assign({ error: ({ context, event }) => `${context.error ?? 'aborting'}; the rollback failed: ${errorReason(event.error)}` }) },
      },
    },
    done: { type: 'final' },
    aborted: { type: 'final' },
    failed: { type: 'final' },
  },
});

/** The machines, by procedure kind (for documentation and tests). */
export const PROCEDURE_MACHINES: Record<ProcedureKind, AnyStateMachine> = {
  migrate: migrateProcedure,
  failover: failoverProcedure,
  rebalance: rebalanceProcedure,
  create_table: createTableProcedure,
};
