import type { Logger } from 'pino';
import { assign, createActor, fromPromise, setup, type AnyActorRef, type AnyStateMachine } from 'xstate';
import { effectNotProvided, errorReason, reasonOfError } from '../actors/effects.js';
import { asRepriseError, isRepriseError, RepriseError } from '../errors.js';
import { testProcedurePauseMs } from '../testing/faults.js';
import type { MetaService } from './meta-service.js';
import type { TableSchema } from '../engine/schema.js';
import type { EntryId } from '../wal/log-store.js';
import type { ProcedureInfo, ProcedureKind, ProcedureOutcome, ShardInfo, ShardReport, TableInfo } from './model.js';

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

export interface Move {
  readonly shard: number;
  readonly from: string;
  readonly to: string;
}

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

/**
 * One rebalancing move, or null when leader counts of the live nodes differ
 * by at most one: a shard of the most loaded node goes to the least loaded
 * one (ties: lowest node id), first a shard the target follows, then the
 * lowest id. Shards in `avoid` (placed by an operator) move last: another
 * node as loaded gives one of its own shards instead, and only a node with
 * nothing else gives an avoided one.
 */
export function planRebalanceMove(shards: readonly (Pick<ShardInfo, 'id' | 'leader'> & { readonly followers?: readonly string[] })[], live: readonly string[], avoid: ReadonlySet<number> = new Set()): Move | null {
  const load = new Map([...live].sort().map((id) => [id, [] as number[]]));
  for (const shard of shards) if (shard.leader !== null) load.get(shard.leader)?.push(shard.id);
  if (load.size < 2) return null;
  const byLoad = [...load.entries()].sort((a, b) => a[1].length - b[1].length || (a[0] < b[0] ? -1 : 1));
  const [to, least] = byLoad[0]!;
  const most = Math.max(...byLoad.map(([, s]) => s.length));
  if (most - least.length <= 1) return null;
  // A shard the target follows moves fastest: it is promoted, not opened.
  const followedByTarget = new Set(shards.filter((s) => s.followers?.includes(to)).map((s) => s.id));
  const preferred = (a: number, b: number) => Number(followedByTarget.has(b)) - Number(followedByTarget.has(a)) || a - b;
  const givers = byLoad.filter(([, held]) => held.length === most);
  // Only when every shard of the most loaded nodes was placed by an operator does the preference give way to balance.
  const [from, held] = givers.find(([, held]) => held.some((id) => !avoid.has(id))) ?? givers[0]!;
  const movable = held.filter((id) => !avoid.has(id));
  const shard = (movable.length > 0 ? movable : [...held]).sort(preferred)[0]!;
  return { shard, from, to };
}

// ---------------------------------------------------------------- running machines

/** A meta shutting down: the procedure stops where it is; the next meta resumes it from the log. */
class Closing extends RepriseError {
  constructor(id: number | null) {
    super('UNAVAILABLE', id === null ? 'meta is shutting down' : `meta is shutting down: procedure #${id} resumes from its last step when meta starts again`);
  }
}

/** Whether an error is a procedure stopped by meta's shutdown (nothing went wrong: the next meta resumes it). */
export function isClosing(err: unknown): boolean {
  return err instanceof Closing;
}

type Final = { value: string; context: { error?: string; [key: string]: unknown } };

/**
 * What drives a procedure's machine, whoever provides its effects: runs it
 * to a final state, records each step before its effect, records the
 * outcome, and on close stops every machine where it is (recording nothing
 * more: the next meta resumes them).
 */
abstract class MachineDriver {
  /** Running machines and pending sleeps, each with how to reject its waiter when meta closes. */
  private readonly actors = new Map<AnyActorRef, () => void>();
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  /** The error behind a failed step, by procedure id, so the caller gets its code (not just its text). */
  protected readonly errors = new Map<number, unknown>();
  protected closed = false;

  constructor(
    protected readonly meta: MetaService,
    protected readonly logger: Logger,
  ) {}

  close(): void {
    this.closed = true;
    for (const [actor, reject] of this.actors) {
      actor.stop();
      reject();
    }
    for (const [timer, reject] of this.timers) {
      clearTimeout(timer);
      reject();
    }
    this.actors.clear();
    this.timers.clear();
  }

  /** Run a machine to a final state; rejects with Closing if meta closes first. */
  protected drive(p: ProcedureInfo, machine: AnyStateMachine, input: unknown): Promise<Final> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Closing(p.id));
      const actor = createActor(machine, { input });
      this.actors.set(actor, () => reject(new Closing(p.id)));
      actor.subscribe({
        next: (snapshot) => {
          if (snapshot.status !== 'done') return;
          this.actors.delete(actor);
          resolve({ value: String(snapshot.value), context: snapshot.context as { error?: string } });
        },
        error: (err) => {
          this.actors.delete(actor);
          reject(err);
        },
      });
      actor.start();
    });
  }

  /** A step's effect: record the step (unless the log already has it), run the effect, keep its error. */
  protected step<I, O>(p: ProcedureInfo, state: string, effect: (input: I) => Promise<O>) {
    return fromPromise<O, I>(async ({ input }) => {
      try {
        this.assertOpen(p.id);
        const recorded = this.meta.procedures().find((q) => q.id === p.id);
        if (recorded && recorded.state !== state) await this.meta.recordProcedureStep(p.id, state);
        const output = await effect(input);
        const pause = testProcedurePauseMs(p.kind, state);
        if (pause > 0) {
          this.logger.warn({ procedure: p.id, step: state, ms: pause }, `test pause: ${p.kind} #${p.id} waits ${pause} ms after step '${state}'`);
          await this.sleep(pause, p.id);
        }
        return output;
      } catch (err) {
        this.errors.set(p.id, err);
        throw err;
      }
    });
  }

  protected async finish(p: ProcedureInfo, outcome: ProcedureOutcome, reason?: string): Promise<void> {
    this.assertOpen(p.id);
    await this.meta.finishProcedure(p.id, outcome, reason);
  }

  /** A procedure at a step its machine does not have (a log written by another version): recorded failed. */
  protected async assertKnownStep(p: ProcedureInfo, steps: readonly string[]): Promise<void> {
    if (steps.includes(p.state)) return;
    await this.finish(p, 'failed', `unknown step '${p.state}'`);
    throw new RepriseError('META_CORRUPT', `procedure #${p.id} (${p.kind}) is at unknown step '${p.state}'`);
  }

  protected assertOpen(id: number | null): void {
    if (this.closed) throw new Closing(id);
  }

  /** Sleep; rejects with Closing if meta closes meanwhile. */
  protected sleep(ms: number, id: number | null): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.set(timer, () => reject(new Closing(id)));
    });
  }
}

// ---------------------------------------------------------------- runner

/** What the runner needs from meta's server: the log, liveness, and the hand-off request. */
export interface ProcedureHost {
  readonly meta: MetaService;
  readonly logger: Logger;
  readonly topology: 'static' | 'dynamic';
  readonly counters: { migrations: number; migrationMs: number; rebalanceMoves: number };
  /** How often to look again while waiting (meta's heartbeat interval). */
  readonly pollMs: number;
  /** How long a rebalance waits for the cluster to settle, a hand-off for its shard to serve, and a migration for its target to serve it, before giving up. */
  readonly settleTimeoutMs: number;
  /** After a rebalance that did not finish balanced, wait this long before starting another (doubling while they keep failing, up to 5 min). */
  readonly rebalanceBackoffMs: number;
  /** Ask `from` to hand the shard off; rejects (UNAVAILABLE) once `from` is declared dead. */
  handOff(shard: number, from: string, to: string): Promise<void>;
  /** Tell a node its assignment changed (best effort). */
  nudge(node: string): void;
  /** Ids of the nodes meta considers alive. */
  liveNodes(): string[];
  /** What `node`'s last heartbeat reports of `shard` (undefined: it does not hold it). */
  report(node: string, shard: number): ShardReport | undefined;
}

export interface MigrateResult extends Move {
  readonly id: number;
  readonly ms: number;
}

/** The longest wait between rebalances that keep not finishing (e.g. a hand-off that fails every time). */
const MAX_REBALANCE_BACKOFF_MS = 5 * 60_000;

/**
 * Runs procedures for meta's server: starts them (recorded in the meta
 * log), drives their machines with the effects below, records each step
 * before its effect and the outcome at the end, resumes unfinished ones at
 * start, and starts a rebalance when the cluster is unbalanced. Closing
 * stops every machine where it is, recording nothing more.
 */
export class ProcedureRunner extends MachineDriver {
  private readonly running = new Map<number, Promise<unknown>>();
  /** Failovers being started: resolved once the shard is assigned (placement waits for that, not for the new leader). */
  private readonly assigned = new Map<number, () => void>();
  private rebalancing = false;
  private rebalanceNotBefore = 0;
  /** Rebalances in a row that did not end balanced: each doubles the wait before the next (the log is never pruned). */
  private rebalancesUnfinished = 0;

  constructor(private readonly host: ProcedureHost) {
    super(host.meta, host.logger);
  }

  /** Start a migration (recorded before anything moves) and run it to its end. */
  async migrate(move: Move, parent: number | null = null): Promise<MigrateResult> {
    this.assertOpen(null);
    const { epoch } = this.meta.shard(move.shard);
    const p = await this.meta.startProcedure({ kind: 'migrate', shard: move.shard, from: move.from, to: move.to, parent, epoch, state: 'handing_off' });
    return (await this.run(p)) as MigrateResult;
  }

  /**
   * Start a failover of a dead node's shard: recorded (the one append
   * before the assignment), then the shard assigned to `to`. Resolves once
   * it is assigned (or the procedure ended without assigning it: the caller
   * reads the shard's leader); waiting for the new leader to serve goes on
   * in the background.
   */
  async failover(move: EpochMove): Promise<ProcedureInfo> {
    this.assertOpen(null);
    const p = await this.meta.startProcedure({ kind: 'failover', shard: move.shard, from: move.from, to: move.to, parent: null, epoch: move.epoch, state: 'assigning' });
    const assigned = new Promise<void>((resolve) => this.assigned.set(p.id, resolve));
    const run = this.run(p);
    run.catch(() => undefined);
    try {
      await Promise.race([assigned, run]);
    } finally {
      this.assigned.delete(p.id);
    }
    return p;
  }

  /**
   * A shard procedure the log has and this meta is not running (its run
   * ended before recording its outcome, e.g. an append failed): run it
   * again from its recorded step. Placement calls this for the procedure
   * of a shard it waits to fail over, so that nothing stays stuck.
   */
  ensureRunning(p: ProcedureInfo): void {
    if (this.closed || this.running.has(p.id) || (p.kind !== 'migrate' && p.kind !== 'failover')) return;
    this.logger.warn({ procedure: p.id, kind: p.kind, shard: p.shard, step: p.state }, `${describe(p)} is recorded at step '${p.state}' but was not running: resuming it`);
    this.run({ ...p }).catch(() => undefined);
  }

  /**
   * At meta start: resume every procedure the log has unfinished, shard
   * procedures first (a rebalance waits for its move). A create_table is
   * rolled back (meta alone cannot create its regions).
   */
  resume(): void {
    const unfinished = this.meta.procedures();
    if (unfinished.some((p) => p.kind === 'create_table')) {
      this.meta.rollBackIncompleteCreates(this.logger).catch((err: unknown) => this.logger.warn({ err }, `rolling back interrupted table creations failed: ${errorReason(err)}`));
    }
    const shardProcedures = unfinished.filter((q) => q.kind === 'migrate' || q.kind === 'failover');
    for (const p of [...shardProcedures, ...unfinished.filter((q) => q.kind === 'rebalance')]) {
      this.logger.warn({ procedure: p.id, kind: p.kind, shard: p.shard, from: p.from, to: p.to, step: p.state }, `resuming ${describe(p)} at step '${p.state}'`);
      if (p.kind !== 'rebalance') {
        this.run(p).catch(() => undefined);
        continue;
      }
      this.rebalancing = true;
      this.run(p)
        .catch(() => undefined)
        .finally(() => (this.rebalancing = false));
    }
  }

  /**
   * Called by meta's scheduler each tick: in the dynamic topology, when no
   * procedure runs and the settled cluster's leader counts differ by more
   * than one, start a rebalance (in the background).
   */
  rebalanceIfNeeded(): void {
    if (this.closed || this.host.topology !== 'dynamic' || this.rebalancing || Date.now() < this.rebalanceNotBefore) return;
    if (!('move' in this.plan(-1))) return;
    this.rebalancing = true;
    void (async () => {
      try {
        const p = await this.meta.startProcedure({ kind: 'rebalance', shard: null, from: null, to: null, parent: null, state: 'planning' });
        this.logger.info({ procedure: p.id }, `rebalance #${p.id}: leader counts of live nodes differ by more than one`);
        await this.run(p);
      } catch (err) {
        if (!(err instanceof Closing)) this.logger.warn({ err }, `rebalance did not start or failed: ${errorReason(err)}`);
      } finally {
        this.rebalancing = false;
      }
    })();
  }

  // ---- running a procedure

  private run(p: ProcedureInfo): Promise<unknown> {
    const existing = this.running.get(p.id);
    if (existing) return existing;
    const promise = p.kind === 'migrate' ? this.runMigrate(p) : p.kind === 'failover' ? this.runFailover(p) : this.runRebalance(p);
    this.running.set(p.id, promise);
    promise.then(
      () => this.running.delete(p.id),
      () => this.running.delete(p.id),
    );
    return promise;
  }

  private async runMigrate(p: ProcedureInfo): Promise<MigrateResult> {
    // A migration recorded without the epoch (by an older meta): any epoch the target takes is above it.
    const move: EpochMove = { shard: p.shard!, from: p.from!, to: p.to!, epoch: p.epoch ?? -1 };
    await this.assertKnownStep(p, MIGRATE_STEPS);
    const machine = migrateProcedure.provide({
      actors: {
        handOff: this.step(p, 'handing_off', () => this.handOff(p, move)),
        assignTarget: this.step(p, 'assigning', () => this.assignTarget(move)),
        awaitTarget: this.step(p, 'awaiting_target', () => this.awaitTarget(p, move)),
        rollBack: this.step(p, 'rolling_back', () => this.rollBack(move)),
      },
    });
    const final = await this.drive(p, machine, { id: p.id, ...move, resumeAt: p.state as MigrateStep });
    const ms = Date.now() - p.startedAt;
    if (final.value === 'done') {
      await this.finish(p, 'done');
      this.host.counters.migrations++;
      this.host.counters.migrationMs += ms;
      if (p.parent !== null) this.host.counters.rebalanceMoves++;
      this.logger.info({ procedure: p.id, ...move, ms }, `shard ${move.shard} handed off from '${move.from}' to '${move.to}', which serves it, in ${ms} ms`);
      return { id: p.id, shard: move.shard, from: move.from, to: move.to, ms };
    }
    if (final.value === 'rolled_back') {
      const reason = `${final.context.error}; shard ${move.shard} was given back to '${move.from}'`;
      await this.finish(p, 'aborted', reason);
      this.logger.warn({ procedure: p.id, ...move, reason }, `migration of shard ${move.shard} from '${move.from}' to '${move.to}' rolled back: ${reason}`);
      throw this.failure(p, reason);
    }
    const reason = final.context.error ?? String(final.value);
    await this.finish(p, 'failed', reason);
    this.logger.warn({ procedure: p.id, ...move, reason }, `migration of shard ${move.shard} from '${move.from}' to '${move.to}' failed: ${reason}`);
    throw this.failure(p, reason);
  }

  private async runFailover(p: ProcedureInfo): Promise<void> {
    // A failover recorded without the epoch (never written so): any epoch the target takes is above it.
    const move: EpochMove = { shard: p.shard!, from: p.from!, to: p.to!, epoch: p.epoch ?? -1 };
    await this.assertKnownStep(p, FAILOVER_STEPS);
    const machine = failoverProcedure.provide({
      actors: {
        assignTarget: this.step(p, 'assigning', async () => {
          await this.assignFailoverTarget(move);
          this.assigned.get(p.id)?.();
        }),
        awaitLeader: this.step(p, 'awaiting_leader', () => this.awaitLeader(p, move)),
      },
    });
    const final = await this.drive(p, machine, { id: p.id, ...move, resumeAt: p.state as FailoverStep });
    this.errors.delete(p.id);
    const ms = Date.now() - p.startedAt;
    if (final.value === 'done') {
      await this.finish(p, 'done');
      this.logger.info({ procedure: p.id, ...move, ms }, `failover #${p.id}: shard ${move.shard} serves on '${move.to}' ${ms} ms after it was assigned there`);
      return;
    }
    const reason = final.context.error ?? String(final.value);
    await this.finish(p, 'failed', reason);
    this.logger.warn({ procedure: p.id, ...move, reason }, `failover #${p.id} of shard ${move.shard} to '${move.to}' failed: ${reason}`);
  }

  private async runRebalance(p: ProcedureInfo): Promise<void> {
    const machine = rebalanceProcedure.provide({
      actors: {
        planMove: this.step(p, 'planning', () => this.planMove(p)),
        moveShard: this.step(p, 'moving', async ({ move }: { id: number; move: Move }) => {
          await this.migrate(move, p.id);
        }),
      },
    });
    const final = await this.drive(p, machine, { id: p.id });
    const moves = final.context.moves as number;
    if (final.value === 'balanced') {
      this.rebalancesUnfinished = 0;
      await this.finish(p, 'done');
      this.logger.info({ procedure: p.id, moves }, `rebalance #${p.id} done: ${moves} shard(s) moved`);
      return;
    }
    const reason = final.context.error ?? String(final.value);
    this.rebalanceNotBefore = Date.now() + Math.min(MAX_REBALANCE_BACKOFF_MS, this.host.rebalanceBackoffMs * 2 ** this.rebalancesUnfinished++);
    await this.finish(p, final.value === 'stopped' ? 'stopped' : 'failed', reason);
    this.logger.warn({ procedure: p.id, moves, reason }, `rebalance #${p.id} ${final.value} after ${moves} move(s): ${reason}`);
  }

  /** The error to give the caller: the failed step's own (its code), prefixed with what failed. */
  private failure(p: ProcedureInfo, reason: string): RepriseError {
    const cause = this.errors.get(p.id);
    this.errors.delete(p.id);
    const code = cause === undefined ? 'INTERNAL' : asRepriseError(cause).code;
    return new RepriseError(code, `migration of shard ${p.shard} from '${p.from}' to '${p.to}' failed: ${reason}`, { shard: p.shard, procedure: p.id }, { cause });
  }

  // ---- effects: migrate

  private async handOff(p: ProcedureInfo, move: Move): Promise<void> {
    const deadline = Date.now() + this.host.settleTimeoutMs;
    for (;;) {
      this.assertOpen(p.id);
      const leader = this.meta.shard(move.shard).leader;
      if (leader === move.to) return; // a resumed procedure whose assignment was done
      if (leader !== move.from) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is led by '${leader}' now, not '${move.from}' (failover moved it)`, { shard: move.shard });
      try {
        await this.host.handOff(move.shard, move.from, move.to);
        return;
      } catch (err) {
        // The source's shard is (re)opening, e.g. it reopened after meta's
        // restart outlasted its hand-off grace: ask again once it serves.
        if (!isRepriseError(err, 'SHARD_NOT_SERVING') || Date.now() >= deadline) throw err;
        await this.sleep(this.host.pollMs, p.id);
      }
    }
  }

  private async assignTarget(move: Move): Promise<void> {
    const leader = this.meta.shard(move.shard).leader;
    if (leader === move.to) return;
    if (leader !== move.from) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is led by '${leader}' now, not '${move.from}' (failover moved it)`, { shard: move.shard });
    await this.meta.assignShard(move.shard, move.to);
    this.host.nudge(move.to);
  }

  /**
   * Until the target's heartbeat reports the shard serving, every region
   * included, as its leader at meta's epoch, above the one the migration
   * started at. Rejects when the target reports the shard (or a region of
   * it) failed at such an epoch: its node would open it again, but the
   * source had it serving. Rejects too when the target dies, or has not
   * served within the settle timeout.
   */
  private async awaitTarget(p: ProcedureInfo, move: EpochMove): Promise<void> {
    const deadline = Date.now() + this.host.settleTimeoutMs;
    const details = { shard: move.shard, node: move.to };
    for (;;) {
      this.assertOpen(p.id);
      const shard = this.meta.shard(move.shard);
      if (shard.leader !== move.to) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is assigned to '${shard.leader}' now, not '${move.to}'`, { shard: move.shard });
      const report = this.host.report(move.to, move.shard);
      const opened = report !== undefined && report.epoch > move.epoch ? report : undefined;
      if (opened?.epoch === shard.epoch && opened.state === 'serving' && opened.role !== 'follower' && !opened.failedRegions?.length) return;
      const failure = opened?.state === 'failed' ? (opened.error ?? 'failed') : opened?.failedRegions?.map((r) => `region ${r.id}: ${r.error}`).join('; ');
      if (failure) throw new RepriseError('SHARD_NOT_SERVING', `'${move.to}' failed to open shard ${move.shard}: ${failure}`, details);
      if (!this.host.liveNodes().includes(move.to)) throw new RepriseError('UNAVAILABLE', `node '${move.to}' died before it served shard ${move.shard}`, details);
      if (Date.now() >= deadline) {
        throw new RepriseError('SHARD_NOT_SERVING', `'${move.to}' did not serve shard ${move.shard} within ${this.host.settleTimeoutMs} ms (it reports it ${report ? `${report.state} at epoch ${report.epoch}` : 'not at all'})`, details);
      }
      await this.sleep(this.host.pollMs, p.id);
    }
  }

  /** The target did not serve the shard: assign it back to the source, which reopens it (a no-op if done already). */
  private async rollBack(move: Move): Promise<void> {
    const leader = this.meta.shard(move.shard).leader;
    if (leader === move.from) return;
    if (leader !== move.to) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is assigned to '${leader}' now, not '${move.to}': not given back to '${move.from}'`, { shard: move.shard });
    await this.meta.assignShard(move.shard, move.from);
    this.host.nudge(move.from);
    this.host.nudge(move.to);
  }

  // ---- effects: failover

  private async assignFailoverTarget(move: EpochMove): Promise<void> {
    const leader = this.meta.shard(move.shard).leader;
    if (leader !== move.to) {
      if (leader !== move.from) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is assigned to '${leader}' now, not '${move.from}'`, { shard: move.shard });
      await this.meta.assignShard(move.shard, move.to);
    }
    this.host.nudge(move.to);
  }

  /** Until the target's heartbeat reports the shard serving at an epoch above the dead leader's; rejects if the target dies first. */
  private async awaitLeader(p: ProcedureInfo, move: EpochMove): Promise<void> {
    for (;;) {
      this.assertOpen(p.id);
      const shard = this.meta.shard(move.shard);
      if (shard.leader !== move.to) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is assigned to '${shard.leader}' now, not '${move.to}'`, { shard: move.shard });
      if (shard.epoch > move.epoch && this.serves(move.to, move.shard, shard.epoch)) return;
      if (!this.host.liveNodes().includes(move.to)) {
        throw new RepriseError('UNAVAILABLE', `node '${move.to}' died before it served shard ${move.shard}: placement starts another failover`, { shard: move.shard });
      }
      await this.sleep(this.host.pollMs, p.id);
    }
  }

  // ---- effects: rebalance

  private async planMove(p: ProcedureInfo): Promise<RebalancePlan> {
    // Resumed while moving: wait for that move (its own procedure, resumed too).
    for (const child of this.meta.procedures().filter((q) => q.parent === p.id)) {
      await this.running.get(child.id)?.catch(() => undefined);
    }
    const deadline = Date.now() + this.host.settleTimeoutMs;
    for (;;) {
      this.assertOpen(p.id);
      const plan = this.plan(p.id);
      if (!('wait' in plan)) return plan;
      if (Date.now() >= deadline) return { stop: `the cluster did not settle within ${this.host.settleTimeoutMs} ms: ${plan.wait}` };
      await this.sleep(this.host.pollMs, p.id);
    }
  }

  /**
   * What a rebalance would do now: stop (static topology, a shard unplaced
   * or led by a dead node: failover comes first), wait (a shard not yet
   * serving where meta put it, another procedure running: a failover, a
   * migration, a table being created), nothing (balanced), or one move.
   */
  private plan(self: number): RebalancePlan | { wait: string } {
    if (this.host.topology !== 'dynamic') return { stop: `topology is ${this.host.topology}: shards stay where they are` };
    const live = this.host.liveNodes();
    const shards = this.meta.shards();
    for (const s of shards) {
      if (s.leader === null) return { stop: `shard ${s.id} is not placed` };
      if (!live.includes(s.leader)) return { stop: `shard ${s.id} is led by '${s.leader}', which is not alive (failover first)` };
    }
    const other = this.meta.procedures().find((q) => q.id !== self);
    if (other) return { wait: `${describe(other)} is running` };
    const idle = shards.find((s) => !this.serves(s.leader!, s.id, s.epoch));
    if (idle) return { wait: `shard ${idle.id} is not serving on '${idle.leader}' at epoch ${idle.epoch} yet` };
    const move = planRebalanceMove(shards, live, this.meta.placedByOperator());
    return move ? { move } : { balanced: true };
  }

  /** Whether `node`'s last heartbeat reports it leads `shard`, serving, at `epoch`. */
  private serves(node: string, shard: number, epoch: number): boolean {
    const report = this.host.report(node, shard);
    return report?.epoch === epoch && report.state === 'serving' && report.role !== 'follower';
  }
}

// ---------------------------------------------------------------- create table, driven by the frontend

interface Creation {
  /** The frontend's report: its region_create entry ids (commit), or why it gave up (abort). */
  readonly report: { resolve(createdAt: Record<number, EntryId>): void; reject(err: Error): void };
  /** The machine's end, once its outcome is recorded, with the error of the step that failed, if one did. */
  readonly final: Promise<Final & { cause?: unknown }>;
}

/**
 * Create table procedures. The frontend drives them (Reprise.createTable:
 * begin_create, create_region on each region's shard leader,
 * commit_create or abort_create); meta runs the machine and records each
 * step before its effect. A create_table that a meta restart cut short is
 * resumed by rolling it back (`rollBackIncompleteCreates`, at meta start):
 * the frontend was never told it succeeded, and meta alone cannot create
 * the regions. One the frontend leaves unfinished for `timeoutMs` (it died
 * mid-way) is rolled back too, so that it neither holds its name nor
 * blocks migrations of its shards until the next meta restart.
 */
export class TableCreations extends MachineDriver {
  /** Running creations by table id. */
  private readonly running = new Map<number, Creation>();

  constructor(meta: MetaService, logger: Logger, private readonly timeoutMs: number) {
    super(meta, logger);
  }

  /** Step one: ids and placement fixed, the procedure recorded; the frontend now creates the regions. */
  async begin(schema: TableSchema): Promise<TableInfo> {
    this.assertOpen(null);
    const { table, procedure } = await this.meta.recordTableCreating(schema);
    this.start(procedure, false);
    return table;
  }

  /** Every region has its region_create entry: the table becomes visible (or the procedure ended otherwise, and this says why). */
  async commit(tableId: number, createdAt: Record<number, EntryId>): Promise<void> {
    const creation = this.running.get(tableId);
    if (!creation) {
      const table = this.tableById(tableId);
      if (table?.status === 'active') return; // committed already (a retried request)
      if (table) return this.meta.recordTableCreated(tableId, createdAt); // begun before create_table was a procedure
      throw new RepriseError('UNAVAILABLE', `table #${tableId} was not created: its creation was rolled back (meta restarted, or the frontend took longer than ${this.timeoutMs} ms); create it again`, { tableId });
    }
    creation.report.resolve(createdAt);
    const { value, context, cause } = await creation.final;
    if (value === 'done') return;
    // A failed append keeps its code; a creation rolled back meanwhile (the timeout) is worth retrying.
    throw new RepriseError(isRepriseError(cause) ? cause.code : 'UNAVAILABLE', `table #${tableId} was not created: ${context.error ?? value}`, { tableId }, { cause });
  }

  /** The frontend gave up (a region could not be created): roll the creation back. */
  async abort(tableId: number, reason = 'the frontend gave up'): Promise<void> {
    const creation = this.running.get(tableId);
    if (!creation) {
      // No procedure running (a meta restart or the timeout rolled it back, or
      // it committed and the reply was lost): the frontend dropped the
      // regions, so the table goes too.
      if (this.tableById(tableId)) await this.meta.recordTableCreateAborted(tableId);
      return;
    }
    creation.report.reject(new Error(reason));
    const final = await creation.final;
    if (final.value === 'done') await this.meta.recordTableCreateAborted(tableId);
    if (final.value === 'failed') throw new RepriseError('INTERNAL', `table #${tableId}: ${final.context.error}`, { tableId });
  }

  /**
   * At meta start: roll back every create_table the log has unfinished,
   * and every table still `creating` without one (a log written before
   * create table was a procedure).
   */
  async resume(logger: Logger = this.logger): Promise<void> {
    const interrupted = this.meta.procedures().filter((p) => p.kind === 'create_table' && p.table !== undefined && !this.running.has(p.table));
    for (const p of interrupted) {
      const name = this.tableById(p.table!)?.schema.name;
      logger.warn({ procedure: p.id, table: name, tableId: p.table, step: p.state }, `rolling back the interrupted creation of table '${name ?? `#${p.table}`}' (create_table #${p.id} at step '${p.state}')`);
      const final = await this.start(p, true).final;
      if (final.value === 'failed') throw new RepriseError('INTERNAL', `create_table #${p.id}: ${final.context.error}`);
    }
    const orphans = this.meta.incompleteCreates().filter((t) => !this.meta.procedures().some((p) => p.kind === 'create_table' && p.table === t.id));
    for (const table of orphans) {
      logger.warn({ table: table.schema.name }, `rolling back the interrupted creation of table '${table.schema.name}'`);
      await this.meta.recordTableCreateAborted(table.id);
    }
  }

  private start(p: ProcedureInfo, resumed: boolean): Creation {
    const tableId = p.table!;
    let report!: Creation['report'];
    const reported = new Promise<Record<number, EntryId>>((resolve, reject) => (report = { resolve, reject }));
    reported.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const machine = createTableProcedure.provide({
      actors: {
        regionsCreated: this.step(p, 'creating_regions', () => {
          timer = setTimeout(() => report.reject(new Error(`the frontend did not commit or abort it within ${this.timeoutMs} ms`)), this.timeoutMs);
          timer.unref();
          return reported;
        }),
        commit: this.step(p, 'committing', ({ createdAt }: { id: number; tableId: number; createdAt: Record<number, EntryId> }) => this.meta.recordTableCreated(tableId, createdAt)),
        abort: this.step(p, 'aborting', async () => {
          if (this.tableById(tableId)) await this.meta.recordTableCreateAborted(tableId);
        }),
      },
    });
    const final = (async () => {
      try {
        const end = await this.drive(p, machine, { id: p.id, tableId, resumed });
        const reason = end.context.error;
        if (end.value === 'done') await this.finish(p, 'done');
        else await this.finish(p, end.value === 'aborted' ? 'aborted' : 'failed', reason ?? end.value);
        if (end.value !== 'done') this.logger.warn({ procedure: p.id, tableId, reason }, `create_table #${p.id} (table #${tableId}) ${end.value}: ${reason}`);
        return { ...end, cause: this.errors.get(p.id) };
      } finally {
        clearTimeout(timer);
        this.running.delete(tableId);
        this.errors.delete(p.id);
      }
    })();
    final.catch(() => undefined);
    const creation = { report, final };
    this.running.set(tableId, creation);
    return creation;
  }

  private tableById(tableId: number): TableInfo | undefined {
    return this.meta.tableById(tableId);
  }
}

function describe(p: ProcedureInfo): string {
  if (p.kind === 'migrate') return `migration #${p.id} of shard ${p.shard} from '${p.from}' to '${p.to}'`;
  if (p.kind === 'failover') return `failover #${p.id} of shard ${p.shard} from '${p.from}' to '${p.to}'`;
  if (p.kind === 'create_table') return `create_table #${p.id} (table #${p.table})`;
  return `${p.kind} #${p.id}`;
}
