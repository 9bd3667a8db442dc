import { and, assign, fromPromise, setup, type AnyStateMachine } from 'xstate';
import { codeOfReason } from '../errors.js';
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
 * safe to run twice. Waiting is part of the machines: a step that looks
 * and finds it must wait goes to a `*_pending` state, whose `after poll`
 * (meta's heartbeat interval) runs the step again, and a step that may
 * give up does so after settleTimeout / poll looks (the count is in the
 * context, so the machines stay pure):
 *
 *   migrate   (planned hand-off of one shard; recorded with the shard's epoch)
 *     handing_off      ask the leader to stop writing, flush and close the shard
 *                      (a node asked again for a shard it no longer holds says
 *                      yes); if the leader dies meanwhile the procedure fails
 *                      and failover takes the shard over. A source still
 *                      (re)opening the shard is asked again (source_pending)
 *     assigning        assign the shard to the target (`shard_assigned`), which
 *                      opens it with a new epoch; a no-op if already done
 *     awaiting_target  until the target's heartbeat reports the shard serving,
 *                      every region of it, at a higher epoch (done); if it
 *                      reports a failed open, dies, or has not served within
 *                      the settle timeout (target_pending between looks):
 *     rolling_back     assign the shard back to the source, which reopens it
 *                      (outcome aborted, with the reason; the caller gets it)
 *   failover  (dynamic topology: a dead node's shard moves to a live node,
 *              started by MetaServer's placement)
 *     assigning        assign the shard to the target chosen by placement (a
 *                      live follower first); a no-op if already done. The
 *                      procedure's start is the only append before it
 *     awaiting_leader  until the target's heartbeat reports the shard serving
 *                      at an epoch above the dead leader's (leader_pending
 *                      between looks); fails if the target dies meanwhile
 *                      (placement then starts another)
 *   rebalance (dynamic topology: one move at a time until leader counts of
 *              live nodes differ by at most one)
 *     planning     wait until the cluster is settled (every shard placed, led by
 *                  a live node that reports it serving, no other procedure),
 *                  then pick a move from the most to the least loaded node
 *                  (a shard an operator migrated last: the meta log knows them);
 *                  unsettled, it looks again (settling) until the settle timeout
 *     moving       run that move as a migrate procedure of its own (parent:
 *                  the rebalance); resumed at planning, which first waits for
 *                  the move it was making
 *   create_table (driven by the frontend: begin_create, commit_create, abort_create)
 *     creating_regions  recorded with `table_creating`: the frontend writes each
 *                       region's region_create on its shard's leader
 *                       (or, after the commit timeout, gives up: aborting)
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

// ---------------------------------------------------------------- shared

/** What a step that waits found when it looked: done, or what it still waits for. */
export type Poll = { readonly done: true } | { readonly waiting: string };

/** How a procedure waits: meta's look-again interval, and how long a step that may give up waits. */
export interface Patience {
  /** Between looks (meta's heartbeat interval). */
  readonly pollMs: number;
  /** A step that may give up (a hand-off, a migration's target, a rebalance waiting to settle) does so after this long. */
  readonly settleTimeoutMs: number;
}

/** Looks a step that may give up takes before it does. */
const looksWithin = ({ pollMs, settleTimeoutMs }: Patience): number => Math.max(1, Math.ceil(settleTimeoutMs / pollMs));

interface Waiting extends Patience {
  /** Looks taken by the current waiting step. */
  looks: number;
  /** What it last found it waits for. */
  waitingFor: string | undefined;
}

/** Whether the current waiting step may look again (fewer than settleTimeout / poll looks so far). */
const hasPatience = (context: Waiting): boolean => context.looks + 1 < looksWithin(context);
const pollDone = (event: unknown): boolean => 'done' in (event as { output: Poll }).output;
/** The context after a look that found it must wait (an effect's output), or an error it may retry. */
const nextLook = (context: Waiting, event: unknown): Pick<Waiting, 'looks' | 'waitingFor'> => {
  const { output, error } = event as { output?: Poll; error?: unknown };
  return { looks: context.looks + 1, waitingFor: output && 'waiting' in output ? output.waiting : error === undefined ? context.waitingFor : errorReason(error) };
};

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

export interface MigrateInput extends EpochMove, Patience {
  readonly id: number;
  /** The step recorded in the meta log: where the procedure (re)starts. */
  readonly resumeAt: MigrateStep;
}

export interface MigrateContext extends MigrateInput, Waiting {
  error: string | undefined;
}

export const migrateProcedure = setup({
  types: {
    context: {} as MigrateContext,
    input: {} as MigrateInput,
  },
  actors: {
    /** Ask the leader to hand the shard off (stop writes, flush, close); rejects if it dies meanwhile, or (SHARD_NOT_SERVING) while it is opening the shard. */
    handOff: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('handOff')),
    /** Assign the shard to the target, which opens it with a new epoch (nothing to replay). */
    assignTarget: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('assignTarget')),
    /** Whether the target's heartbeat reports the shard serving (every region) at a higher epoch; rejects if it reports a failed open or died. */
    checkTarget: fromPromise<Poll, EpochMove & { id: number }>(effectNotProvided('checkTarget')),
    /** Assign the shard back to the source, which reopens it. */
    rollBack: fromPromise<void, EpochMove & { id: number }>(effectNotProvided('rollBack')),
  },
  guards: {
    resumedAt: ({ context }, params: { step: MigrateStep }) => context.resumeAt === params.step,
    patient: ({ context }) => hasPatience(context),
    isDone: ({ event }) => pollDone(event),
    /** The source is (re)opening the shard, e.g. it reopened after meta's restart outlasted its hand-off grace: ask again once it serves. */
    sourceOpening: ({ event }) => codeOfReason(errorReason((event as { error?: unknown }).error)) === 'SHARD_NOT_SERVING',
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
    lookedAgain: assign(({ context, event }) => nextLook(context, event)),
    startWaiting: assign({ looks: 0, waitingFor: undefined }),
  },
  delays: { poll: ({ context }) => context.pollMs },
}).createMachine({
  id: 'migrate',
  context: ({ input }) => ({ ...input, looks: 0, waitingFor: undefined, error: undefined }),
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
        onDone: { target: 'assigning', actions: 'startWaiting' },
        onError: [
          { guard: and(['sourceOpening', 'patient']), target: 'source_pending', actions: 'lookedAgain' },
          { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
        ],
      },
    },
    source_pending: { after: { poll: 'handing_off' } },
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
        src: 'checkTarget',
        input: epochMoveOf,
        onDone: [
          { guard: 'isDone', target: 'done' },
          { guard: 'patient', target: 'target_pending', actions: 'lookedAgain' },
          {
            target: 'rolling_back',
            actions: assign({
              error: ({ context, event }) => `SHARD_NOT_SERVING: '${context.to}' did not serve shard ${context.shard} within ${context.settleTimeoutMs} ms (${'waiting' in event.output ? event.output.waiting : 'it serves it now'})`,
            }),
          },
        ],
        onError: { target: 'rolling_back', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    target_pending: { after: { poll: 'awaiting_target' } },
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
  /** Between looks at the new leader (meta's heartbeat interval). */
  readonly pollMs: number;
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
    /** Whether the target serves the shard at a higher epoch; rejects if it died. */
    checkLeader: fromPromise<Poll, EpochMove & { id: number }>(effectNotProvided('checkLeader')),
  },
  guards: {
    assigned: ({ context }) => context.resumeAt === 'awaiting_leader',
    isDone: ({ event }) => pollDone(event),
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
  },
  delays: { poll: ({ context }) => context.pollMs },
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
    // No timeout: the target serves, dies (placement starts another failover), or meta closes.
    awaiting_leader: {
      invoke: {
        src: 'checkLeader',
        input: epochMoveOf,
        onDone: [{ guard: 'isDone', target: 'done' }, { target: 'leader_pending' }],
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    leader_pending: { after: { poll: 'awaiting_leader' } },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
});

// ---------------------------------------------------------------- rebalance

/** What planning decided: one move, nothing to do, stop (the cluster is not in a state to rebalance), or wait for it to settle. */
export type RebalancePlan = { readonly move: Move } | { readonly balanced: true } | { readonly stop: string } | { readonly wait: string };

export interface RebalanceContext extends Waiting {
  readonly id: number;
  move: Move | undefined;
  moves: number;
  error: string | undefined;
}

export const rebalanceProcedure = setup({
  types: {
    context: {} as RebalanceContext,
    input: {} as { id: number } & Patience,
  },
  actors: {
    /** Pick one move, none, or say what the cluster has yet to settle (a resumed rebalance first waits for the move it was making). */
    planMove: fromPromise<RebalancePlan, { id: number }>(effectNotProvided('planMove')),
    /** Run the move as a migrate procedure (parent: this rebalance). */
    moveShard: fromPromise<void, { id: number; move: Move }>(effectNotProvided('moveShard')),
  },
  guards: {
    patient: ({ context }) => hasPatience(context),
    planned: ({ event }, params: { plan: 'move' | 'balanced' | 'wait' }) => params.plan in (event as unknown as { output: RebalancePlan }).output,
  },
  actions: {
    recordFailure: assign({ error: (_, params: { reason: string }) => params.reason }),
    lookedAgain: assign(({ context, event }) => nextLook(context, event)),
  },
  delays: { poll: ({ context }) => context.pollMs },
}).createMachine({
  id: 'rebalance',
  context: ({ input }) => ({ id: input.id, pollMs: input.pollMs, settleTimeoutMs: input.settleTimeoutMs, looks: 0, waitingFor: undefined, move: undefined, moves: 0, error: undefined }),
  // A resumed rebalance starts here too: planning first waits for the move it was making.
  initial: 'planning',
  states: {
    planning: {
      invoke: {
        src: 'planMove',
        input: ({ context }) => ({ id: context.id }),
        onDone: [
          { guard: { type: 'planned', params: { plan: 'move' as const } }, target: 'moving', actions: assign({ move: ({ event }) => ('move' in event.output ? event.output.move : undefined) }) },
          { guard: { type: 'planned', params: { plan: 'balanced' as const } }, target: 'balanced' },
          { guard: and([{ type: 'planned', params: { plan: 'wait' as const } }, 'patient']), target: 'settling', actions: 'lookedAgain' },
          {
            target: 'stopped',
            actions: assign({ error: ({ context, event }) => ('stop' in event.output ? event.output.stop : `the cluster did not settle within ${context.settleTimeoutMs} ms: ${'wait' in event.output ? event.output.wait : ''}`) }),
          },
        ],
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    settling: { after: { poll: 'planning' } },
    moving: {
      invoke: {
        src: 'moveShard',
        input: ({ context }) => ({ id: context.id, move: context.move! }),
        onDone: { target: 'planning', actions: assign({ moves: ({ context }) => context.moves + 1, move: undefined, looks: 0, waitingFor: undefined }) },
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    balanced: { type: 'final' },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
});

/**
 * When meta starts a rebalance (dynamic topology): on a scheduler tick
 * that finds the cluster unbalanced, one at a time, and after one that did
 * not end balanced not again for a backoff that doubles while they keep
 * not finishing (e.g. a hand-off that fails every time), up to a cap.
 * Not a procedure (nothing of it is in the log): a restarted meta starts
 * idle, or rebalancing when it resumes one.
 */
export interface RebalanceSchedulerContext {
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  /** Rebalances in a row that did not end balanced. */
  unfinished: number;
  /** A rebalance the log has unfinished, to resume rather than start. */
  resume: number | undefined;
}

export type RebalanceSchedulerEvent = { type: 'TICK' } | { type: 'RESUME'; procedure: number };

export const rebalanceScheduler = setup({
  types: {
    context: {} as RebalanceSchedulerContext,
    input: {} as { backoffMs: number; maxBackoffMs: number },
    events: {} as RebalanceSchedulerEvent,
  },
  actors: {
    /** Whether the settled cluster's leader counts differ by more than one. */
    unbalanced: fromPromise<boolean, void>(effectNotProvided('unbalanced')),
    /** Start (or resume) a rebalance procedure and run it; resolves with whether it ended balanced. */
    rebalance: fromPromise<boolean, { resume: number | undefined }>(effectNotProvided('rebalance')),
  },
  guards: {
    /** The effect found what it looked for: an unbalanced cluster, a rebalance that ended balanced. */
    found: ({ event }) => (event as { output?: boolean }).output === true,
  },
  delays: {
    backoff: ({ context }) => Math.min(context.maxBackoffMs, context.backoffMs * 2 ** Math.max(0, context.unfinished - 1)),
  },
}).createMachine({
  id: 'rebalance_scheduler',
  context: ({ input }) => ({ ...input, unfinished: 0, resume: undefined }),
  initial: 'idle',
  states: {
    idle: {
      on: {
        TICK: 'checking',
        RESUME: { target: 'rebalancing', actions: assign({ resume: ({ event }) => event.procedure }) },
      },
    },
    checking: {
      invoke: {
        src: 'unbalanced',
        onDone: [{ guard: 'found', target: 'rebalancing' }, { target: 'idle' }],
        onError: 'idle',
      },
    },
    rebalancing: {
      invoke: {
        src: 'rebalance',
        input: ({ context }) => ({ resume: context.resume }),
        onDone: [
          { guard: 'found', target: 'idle', actions: assign({ unfinished: 0, resume: undefined }) },
          { target: 'backing_off', actions: assign({ unfinished: ({ context }) => context.unfinished + 1, resume: undefined }) },
        ],
        onError: { target: 'backing_off', actions: assign({ unfinished: ({ context }) => context.unfinished + 1, resume: undefined }) },
      },
    },
    backing_off: { after: { backoff: 'idle' } },
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
  /** How long the frontend has to commit or abort before meta rolls the creation back (it may have died mid-way). */
  readonly commitTimeoutMs: number;
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
    /** The frontend's step: resolves with each region's region_create entry id when it commits; rejects when it aborts. */
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
  delays: {
    commitTimeout: ({ context }) => context.commitTimeoutMs,
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
      // The frontend died mid-way: the creation neither holds its name nor blocks migrations of its shards until the next meta restart.
      after: { commitTimeout: { target: 'aborting', actions: assign({ error: ({ context }) => `the frontend did not commit or abort it within ${context.commitTimeoutMs} ms` }) } },
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
