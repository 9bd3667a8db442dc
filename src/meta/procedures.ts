import type { Logger } from 'pino';
import { assign, createActor, fromPromise, setup, type AnyActorRef, type AnyStateMachine } from 'xstate';
import { effectNotProvided, errorReason, reasonOfError } from '../actors/effects.js';
import { asRepriseError, isRepriseError, RepriseError } from '../errors.js';
import { testProcedurePauseMs } from '../testing/faults.js';
import type { MetaService } from './meta-service.js';
import type { ProcedureInfo, ProcedureOutcome, ShardInfo } from './model.js';

/**
 * Meta's procedures: multi-step changes of the cluster whose progress is in
 * the meta log, so that a meta restarted mid-way resumes them. Each is an
 * xstate machine (the specification: steps, and the names of the effects
 * they invoke); ProcedureRunner provides the effects and runs them. Every
 * step is recorded (`procedure_step`) before its effect runs, and a
 * restarted meta starts the machine again at the recorded step, so each
 * step's effect must be safe to run twice:
 *
 *   migrate   (planned hand-off of one shard)
 *     handing_off  ask the leader to stop writing, flush and close the shard
 *                  (a node asked again for a shard it no longer holds says yes);
 *                  if the leader dies meanwhile the procedure fails and
 *                  failover takes the shard over
 *     assigning    assign the shard to the target (`shard_assigned`), which
 *                  opens it with a new epoch; a no-op if already done
 *   rebalance (dynamic topology: one move at a time until leader counts of
 *              live nodes differ by at most one)
 *     planning     wait until the cluster is settled (every shard placed, led by
 *                  a live node that reports it serving, no other procedure),
 *                  then pick a move from the most to the least loaded node
 *     moving       run that move as a migrate procedure of its own (parent:
 *                  the rebalance); resumed at planning, which first waits for
 *                  the move it was making
 *
 * Create table is a procedure of its own kind, kept in the table's status
 * (`table_creating` -> `table_created` | `table_create_aborted`, rolled back
 * at meta start: MetaService.rollBackIncompleteCreates); failover is one
 * step (`shard_assigned` by MetaServer's placement). Neither needs a machine.
 */

// ---------------------------------------------------------------- migrate

export type MigrateStep = 'handing_off' | 'assigning';
export const MIGRATE_STEPS: readonly MigrateStep[] = ['handing_off', 'assigning'];

export interface Move {
  readonly shard: number;
  readonly from: string;
  readonly to: string;
}

export interface MigrateInput extends Move {
  readonly id: number;
  /** The step recorded in the meta log: where the procedure (re)starts. */
  readonly resumeAt: MigrateStep;
}

export interface MigrateContext extends MigrateInput {
  error: string | undefined;
}

const moveOf = ({ context }: { context: MigrateContext }): Move & { id: number } => ({ id: context.id, shard: context.shard, from: context.from, to: context.to });

export const migrateProcedure = setup({
  types: {
    context: {} as MigrateContext,
    input: {} as MigrateInput,
  },
  actors: {
    /** Ask the leader to hand the shard off (stop writes, flush, close); rejects if it dies meanwhile. */
    handOff: fromPromise<void, Move & { id: number }>(effectNotProvided('handOff')),
    /** Assign the shard to the target, which opens it with a new epoch (nothing to replay). */
    assignTarget: fromPromise<void, Move & { id: number }>(effectNotProvided('assignTarget')),
  },
  guards: {
    handedOff: ({ context }) => context.resumeAt === 'assigning',
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
      always: [{ guard: 'handedOff', target: 'assigning' }, { target: 'handing_off' }],
    },
    handing_off: {
      invoke: {
        src: 'handOff',
        input: moveOf,
        onDone: 'assigning',
        onError: { target: 'failed', actions: { type: 'recordFailure', params: reasonOfError } },
      },
    },
    assigning: {
      invoke: {
        src: 'assignTarget',
        input: moveOf,
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

/** The machines, by procedure kind (for documentation and tests). */
export const PROCEDURE_MACHINES: Record<string, AnyStateMachine> = {
  migrate: migrateProcedure,
  rebalance: rebalanceProcedure,
};

/**
 * One rebalancing move, or null when leader counts of the live nodes differ
 * by at most one: the lowest shard id of the most loaded node goes to the
 * least loaded one (ties: lowest node id). Shards in `avoid` (e.g. moved
 * there on purpose by an operator) move only if the node has no other.
 */
export function planRebalanceMove(shards: readonly (Pick<ShardInfo, 'id' | 'leader'> & { readonly followers?: readonly string[] })[], live: readonly string[], avoid: ReadonlySet<number> = new Set()): Move | null {
  const load = new Map([...live].sort().map((id) => [id, [] as number[]]));
  for (const shard of shards) if (shard.leader !== null) load.get(shard.leader)?.push(shard.id);
  if (load.size < 2) return null;
  const byLoad = [...load.entries()].sort((a, b) => a[1].length - b[1].length || (a[0] < b[0] ? -1 : 1));
  const [to, least] = byLoad[0]!;
  const most = Math.max(...byLoad.map(([, s]) => s.length));
  const [from, held] = byLoad.find(([, s]) => s.length === most)!;
  if (held.length - least.length <= 1) return null;
  // A shard the target follows moves fastest: it is promoted, not opened.
  const followedByTarget = new Set(shards.filter((s) => s.followers?.includes(to)).map((s) => s.id));
  const candidates = [...held].sort((a, b) => Number(followedByTarget.has(b)) - Number(followedByTarget.has(a)) || a - b);
  const shard = candidates.find((id) => !avoid.has(id)) ?? candidates[0]!;
  return { shard, from, to };
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
  /** How long a rebalance waits for the cluster to settle, and a hand-off for its shard to serve, before giving up. */
  readonly settleTimeoutMs: number;
  /** After a rebalance that did not finish balanced, wait this long before starting another (doubling while they keep failing, up to 5 min). */
  readonly rebalanceBackoffMs: number;
  /** Ask `from` to hand the shard off; rejects (UNAVAILABLE) once `from` is declared dead. */
  handOff(shard: number, from: string, to: string): Promise<void>;
  /** Tell a node its assignment changed (best effort). */
  nudge(node: string): void;
  /** Ids of the nodes meta considers alive. */
  liveNodes(): string[];
  /** Whether `node`'s last heartbeat reports it serves `shard` at `epoch`. */
  serves(node: string, shard: number, epoch: number): boolean;
}

export interface MigrateResult extends Move {
  readonly id: number;
  readonly ms: number;
}

/** The longest wait between rebalances that keep not finishing (e.g. a hand-off that fails every time). */
const MAX_REBALANCE_BACKOFF_MS = 5 * 60_000;

/** A meta shutting down: the procedure stops where it is; the next meta resumes it from the log. */
class Closing extends RepriseError {
  constructor(id: number | null) {
    super('UNAVAILABLE', id === null ? 'meta is shutting down' : `meta is shutting down: procedure #${id} resumes from its last step when meta starts again`);
  }
}

/**
 * Runs procedures for meta's server: starts them (recorded in the meta
 * log), drives their machines with the effects below, records each step
 * before its effect and the outcome at the end, resumes unfinished ones at
 * start, and starts a rebalance when the cluster is unbalanced. Closing
 * stops every machine where it is, recording nothing more.
 */
export class ProcedureRunner {
  private readonly running = new Map<number, Promise<unknown>>();
  /** Running machines and pending sleeps, each with how to reject its waiter when meta closes. */
  private readonly actors = new Map<AnyActorRef, () => void>();
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  /** The error behind a failed step, by procedure id, so the caller gets its code (not just its text). */
  private readonly errors = new Map<number, unknown>();
  /** Shards an operator migrated: a rebalance moves others first (in memory: a preference, not a rule). */
  private readonly placedOnPurpose = new Set<number>();
  private rebalancing = false;
  private rebalanceNotBefore = 0;
  /** Rebalances in a row that did not end balanced: each doubles the wait before the next (the log is never pruned). */
  private rebalancesUnfinished = 0;
  private closed = false;

  constructor(private readonly host: ProcedureHost) {}

  /** Start a migration (recorded before anything moves) and run it to its end. */
  async migrate(move: Move, parent: number | null = null): Promise<MigrateResult> {
    this.assertOpen(null);
    const p = await this.host.meta.startProcedure({ kind: 'migrate', shard: move.shard, from: move.from, to: move.to, parent, state: 'handing_off' });
    if (parent === null) this.placedOnPurpose.add(move.shard);
    return (await this.run(p)) as MigrateResult;
  }

  /** At meta start: resume every procedure the log has unfinished, migrations first (a rebalance waits for its move). */
  resume(): void {
    const unfinished = this.host.meta.procedures();
    for (const p of [...unfinished.filter((q) => q.kind !== 'rebalance'), ...unfinished.filter((q) => q.kind === 'rebalance')]) {
      this.host.logger.warn({ procedure: p.id, kind: p.kind, shard: p.shard, from: p.from, to: p.to, step: p.state }, `resuming ${describe(p)} at step '${p.state}'`);
      if (p.kind !== 'rebalance') {
        if (p.parent === null && p.shard !== null) this.placedOnPurpose.add(p.shard);
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
        const p = await this.host.meta.startProcedure({ kind: 'rebalance', shard: null, from: null, to: null, parent: null, state: 'planning' });
        this.host.logger.info({ procedure: p.id }, `rebalance #${p.id}: leader counts of live nodes differ by more than one`);
        await this.run(p);
      } catch (err) {
        if (!(err instanceof Closing)) this.host.logger.warn({ err }, `rebalance did not start or failed: ${errorReason(err)}`);
      } finally {
        this.rebalancing = false;
      }
    })();
  }

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

  // ---- running a procedure

  private run(p: ProcedureInfo): Promise<unknown> {
    const existing = this.running.get(p.id);
    if (existing) return existing;
    const promise = p.kind === 'migrate' ? this.runMigrate(p) : this.runRebalance(p);
    this.running.set(p.id, promise);
    promise.then(
      () => this.running.delete(p.id),
      () => this.running.delete(p.id),
    );
    return promise;
  }

  private async runMigrate(p: ProcedureInfo): Promise<MigrateResult> {
    const move: Move = { shard: p.shard!, from: p.from!, to: p.to! };
    if (!MIGRATE_STEPS.includes(p.state as MigrateStep)) {
      await this.finish(p, 'failed', `unknown step '${p.state}'`);
      throw new RepriseError('META_CORRUPT', `procedure #${p.id} (migrate) is at unknown step '${p.state}'`);
    }
    const machine = migrateProcedure.provide({
      actors: {
        handOff: this.step(p, 'handing_off', () => this.handOff(p, move)),
        assignTarget: this.step(p, 'assigning', () => this.assignTarget(move)),
      },
    });
    const final = await this.drive(p, machine, { id: p.id, ...move, resumeAt: p.state as MigrateStep });
    const ms = Date.now() - p.startedAt;
    if (final.value === 'done') {
      await this.finish(p, 'done');
      this.host.counters.migrations++;
      this.host.counters.migrationMs += ms;
      if (p.parent !== null) this.host.counters.rebalanceMoves++;
      this.host.logger.info({ procedure: p.id, ...move, ms }, `shard ${move.shard} handed off from '${move.from}' to '${move.to}' in ${ms} ms`);
      return { id: p.id, ...move, ms };
    }
    const reason = final.context.error ?? String(final.value);
    await this.finish(p, 'failed', reason);
    this.host.logger.warn({ procedure: p.id, ...move, reason }, `migration of shard ${move.shard} from '${move.from}' to '${move.to}' failed: ${reason}`);
    throw this.failure(p, reason);
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
      this.host.logger.info({ procedure: p.id, moves }, `rebalance #${p.id} done: ${moves} shard(s) moved`);
      return;
    }
    const reason = final.context.error ?? String(final.value);
    this.rebalanceNotBefore = Date.now() + Math.min(MAX_REBALANCE_BACKOFF_MS, this.host.rebalanceBackoffMs * 2 ** this.rebalancesUnfinished++);
    await this.finish(p, final.value === 'stopped' ? 'stopped' : 'failed', reason);
    this.host.logger.warn({ procedure: p.id, moves, reason }, `rebalance #${p.id} ${final.value} after ${moves} move(s): ${reason}`);
  }

  /** Run a machine to a final state; rejects with Closing if meta closes first. */
  private drive(p: ProcedureInfo, machine: AnyStateMachine, input: unknown): Promise<{ value: string; context: { error?: string; [key: string]: unknown } }> {
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
  private step<I, O>(p: ProcedureInfo, state: string, effect: (input: I) => Promise<O>) {
    return fromPromise<O, I>(async ({ input }) => {
      try {
        this.assertOpen(p.id);
        const recorded = this.host.meta.procedures().find((q) => q.id === p.id);
        if (recorded && recorded.state !== state) await this.host.meta.recordProcedureStep(p.id, state);
        const output = await effect(input);
        const pause = testProcedurePauseMs(p.kind, state);
        if (pause > 0) {
          this.host.logger.warn({ procedure: p.id, step: state, ms: pause }, `test pause: ${p.kind} #${p.id} waits ${pause} ms after step '${state}'`);
          await this.sleep(pause, p.id);
        }
        return output;
      } catch (err) {
        this.errors.set(p.id, err);
        throw err;
      }
    });
  }

  private async finish(p: ProcedureInfo, outcome: ProcedureOutcome, reason?: string): Promise<void> {
    this.assertOpen(p.id);
    await this.host.meta.finishProcedure(p.id, outcome, reason);
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
      const leader = this.host.meta.shard(move.shard).leader;
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
    const leader = this.host.meta.shard(move.shard).leader;
    if (leader === move.to) return;
    if (leader !== move.from) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is led by '${leader}' now, not '${move.from}' (failover moved it)`, { shard: move.shard });
    await this.host.meta.assignShard(move.shard, move.to);
    this.host.nudge(move.to);
  }

  // ---- effects: rebalance

  private async planMove(p: ProcedureInfo): Promise<RebalancePlan> {
    // Resumed while moving: wait for that move (its own procedure, resumed too).
    for (const child of this.host.meta.procedures().filter((q) => q.parent === p.id)) {
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
   * serving where meta put it, another procedure running), nothing
   * (balanced), or one move.
   */
  private plan(self: number): RebalancePlan | { wait: string } {
    if (this.host.topology !== 'dynamic') return { stop: `topology is ${this.host.topology}: shards stay where they are` };
    const live = this.host.liveNodes();
    const shards = this.host.meta.shards();
    for (const s of shards) {
      if (s.leader === null) return { stop: `shard ${s.id} is not placed` };
      if (!live.includes(s.leader)) return { stop: `shard ${s.id} is led by '${s.leader}', which is not alive (failover first)` };
    }
    const other = this.host.meta.procedures().find((q) => q.id !== self);
    if (other) return { wait: `${describe(other)} is running` };
    const idle = shards.find((s) => !this.host.serves(s.leader!, s.id, s.epoch));
    if (idle) return { wait: `shard ${idle.id} is not serving on '${idle.leader}' at epoch ${idle.epoch} yet` };
    const move = planRebalanceMove(shards, live, this.placedOnPurpose);
    return move ? { move } : { balanced: true };
  }

  // ---- helpers

  private assertOpen(id: number | null): void {
    if (this.closed) throw new Closing(id);
  }

  /** Sleep; rejects with Closing if meta closes meanwhile. */
  private sleep(ms: number, id: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.set(timer, () => reject(new Closing(id)));
    });
  }
}

function describe(p: ProcedureInfo): string {
  return p.kind === 'migrate' ? `migration #${p.id} of shard ${p.shard} from '${p.from}' to '${p.to}'` : `${p.kind} #${p.id}`;
}
