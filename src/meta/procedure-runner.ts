import type { Logger } from 'pino';
import { errorReason } from '../machine-effects.js';
import { codeOfReason, isRepriseError, RepriseError } from '../errors.js';
import type { ProcedurePause } from '../testing/faults.js';
import type { MetaService } from './meta-service.js';
import type { ProcedureInfo, ShardReport } from './model.js';
import { Closing, MachineDriver } from './procedure-driver.js';
import { planRebalanceMove, type Move } from './placement.js';
import { createActor, fromPromise, type Actor } from 'xstate';
import {
  FAILOVER_STEPS,
  failoverProcedure,
  MIGRATE_STEPS,
  migrateProcedure,
  rebalanceProcedure,
  rebalanceScheduler,
  type EpochMove,
  type FailoverStep,
  type MigrateStep,
  type Poll,
  type RebalancePlan,
} from './procedure-machines.js';

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
  /** Tests only: pauses after steps. */
  readonly procedurePause?: ProcedurePause;
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
export class ProcedureRunner extends MachineDriver<MetaService> {
  private readonly running = new Map<number, Promise<unknown>>();
  /** Failovers being started: resolved once the shard is assigned (placement waits for that, not for the new leader). */
  private readonly assigned = new Map<number, () => void>();
  /** When to start a rebalance (one at a time, backing off after unfinished ones): see rebalanceScheduler. */
  private readonly rebalances: Actor<typeof rebalanceScheduler>;

  constructor(private readonly host: ProcedureHost) {
    super(host.meta, host.logger, host.procedurePause);
    const scheduler = rebalanceScheduler.provide({
      actors: {
        unbalanced: fromPromise(async () => !this.closed && 'move' in this.plan(-1)),
        rebalance: fromPromise(({ input }: { input: { resume: number | undefined } }) => this.rebalance(input.resume)),
      },
    });
    this.rebalances = createActor(scheduler, { input: { backoffMs: host.rebalanceBackoffMs, maxBackoffMs: MAX_REBALANCE_BACKOFF_MS } });
    this.rebalances.start();
  }

  override close(): void {
    this.rebalances.stop();
    super.close();
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
      if (p.kind === 'rebalance') this.rebalances.send({ type: 'RESUME', procedure: p.id });
      else this.run(p).catch(() => undefined);
    }
  }

  /**
   * Called by meta's scheduler each tick: in the dynamic topology, when no
   * procedure runs and the settled cluster's leader counts differ by more
   * than one, start a rebalance (in the background), unless one runs or
   * the last ones did not finish (rebalanceScheduler backs off).
   */
  rebalanceIfNeeded(): void {
    if (this.closed || this.host.topology !== 'dynamic') return;
    this.rebalances.send({ type: 'TICK' });
  }

  /** Start a rebalance (or resume the log's), run it to its end; whether it ended balanced. */
  private async rebalance(resume: number | undefined): Promise<boolean> {
    try {
      let p = resume === undefined ? undefined : this.meta.procedures().find((q) => q.id === resume);
      if (!p) {
        p = await this.meta.startProcedure({ kind: 'rebalance', shard: null, from: null, to: null, parent: null, state: 'planning' });
        this.logger.info({ procedure: p.id }, `rebalance #${p.id}: leader counts of live nodes differ by more than one`);
      }
      return await this.runRebalance(p);
    } catch (err) {
      if (!(err instanceof Closing)) this.logger.warn({ err }, `rebalance did not start or failed: ${errorReason(err)}`);
      return false;
    }
  }

  // ---- running a procedure

  private run(p: ProcedureInfo): Promise<unknown> {
    const existing = this.running.get(p.id);
    if (existing) return existing;
    // A rebalance runs through rebalanceScheduler (one at a time), not here.
    const promise = p.kind === 'migrate' ? this.runMigrate(p) : this.runFailover(p);
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
        handOff: this.step(p, 'handing_off', () => this.handOff(move)),
        assignTarget: this.step(p, 'assigning', () => this.assignTarget(move)),
        checkTarget: this.step(p, 'awaiting_target', async () => this.checkTarget(move)),
        rollBack: this.step(p, 'rolling_back', () => this.rollBack(move)),
      },
    });
    const final = await this.drive(p, machine, { id: p.id, ...move, resumeAt: p.state as MigrateStep, pollMs: this.host.pollMs, settleTimeoutMs: this.host.settleTimeoutMs });
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
        checkLeader: this.step(p, 'awaiting_leader', async () => this.checkLeader(move)),
      },
    });
    const final = await this.drive(p, machine, { id: p.id, ...move, resumeAt: p.state as FailoverStep, pollMs: this.host.pollMs });
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

  /** Run a rebalance procedure to its end; whether it ended balanced. */
  private async runRebalance(p: ProcedureInfo): Promise<boolean> {
    const machine = rebalanceProcedure.provide({
      actors: {
        planMove: this.step(p, 'planning', () => this.planMove(p)),
        moveShard: this.step(p, 'moving', async ({ move }: { id: number; move: Move }) => {
          await this.migrate(move, p.id);
        }),
      },
    });
    const final = await this.drive(p, machine, { id: p.id, pollMs: this.host.pollMs, settleTimeoutMs: this.host.settleTimeoutMs });
    const moves = final.context.moves as number;
    if (final.value === 'balanced') {
      await this.finish(p, 'done');
      this.logger.info({ procedure: p.id, moves }, `rebalance #${p.id} done: ${moves} shard(s) moved`);
      return true;
    }
    const reason = final.context.error ?? String(final.value);
    await this.finish(p, final.value === 'stopped' ? 'stopped' : 'failed', reason);
    this.logger.warn({ procedure: p.id, moves, reason }, `rebalance #${p.id} ${final.value} after ${moves} move(s): ${reason}`);
    return false;
  }

  /** The error to give the caller: the failed step's own (its code), prefixed with what failed. */
  private failure(p: ProcedureInfo, reason: string): RepriseError {
    const cause = this.errors.get(p.id);
    this.errors.delete(p.id);
    // A step that gave up waiting failed no effect: its code is in the reason.
    const code = isRepriseError(cause) ? cause.code : codeOfReason(reason);
    return new RepriseError(code, `migration of shard ${p.shard} from '${p.from}' to '${p.to}' failed: ${reason}`, { shard: p.shard, procedure: p.id }, { cause });
  }

  // ---- effects: migrate

  /** One request to the source; SHARD_NOT_SERVING while it (re)opens the shard (the machine asks again). */
  private async handOff(move: Move): Promise<void> {
    const leader = this.meta.shard(move.shard).leader;
    if (leader === move.to) return; // a resumed procedure whose assignment was done
    if (leader !== move.from) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is led by '${leader}' now, not '${move.from}' (failover moved it)`, { shard: move.shard });
    await this.host.handOff(move.shard, move.from, move.to);
  }

  private async assignTarget(move: Move): Promise<void> {
    const leader = this.meta.shard(move.shard).leader;
    if (leader === move.to) return;
    if (leader !== move.from) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is led by '${leader}' now, not '${move.from}' (failover moved it)`, { shard: move.shard });
    await this.meta.assignShard(move.shard, move.to);
    this.host.nudge(move.to);
  }

  /**
   * Whether the target's heartbeat reports the shard serving, every region
   * included, as its leader at meta's epoch, above the one the migration
   * started at. Rejects when the target reports the shard (or a region of
   * it) failed at such an epoch: its node would open it again, but the
   * source had it serving. Rejects too when the target has died.
   */
  private checkTarget(move: EpochMove): Poll {
    const details = { shard: move.shard, node: move.to };
    const shard = this.meta.shard(move.shard);
    if (shard.leader !== move.to) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is assigned to '${shard.leader}' now, not '${move.to}'`, { shard: move.shard });
    const report = this.host.report(move.to, move.shard);
    const opened = report !== undefined && report.epoch > move.epoch ? report : undefined;
    if (opened?.epoch === shard.epoch && opened.state === 'serving' && opened.role !== 'follower' && !opened.failedRegions?.length) return { done: true };
    const failure = opened?.state === 'failed' ? (opened.error ?? 'failed') : opened?.failedRegions?.map((r) => `region ${r.id}: ${r.error}`).join('; ');
    if (failure) throw new RepriseError('SHARD_NOT_SERVING', `'${move.to}' failed to open shard ${move.shard}: ${failure}`, details);
    if (!this.host.liveNodes().includes(move.to)) throw new RepriseError('UNAVAILABLE', `node '${move.to}' died before it served shard ${move.shard}`, details);
    return { waiting: `it reports it ${report ? `${report.state} at epoch ${report.epoch}` : 'not at all'}` };
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

  /** Whether the target's heartbeat reports the shard serving at an epoch above the dead leader's; rejects if the target has died. */
  private checkLeader(move: EpochMove): Poll {
    const shard = this.meta.shard(move.shard);
    if (shard.leader !== move.to) throw new RepriseError('NOT_LEADER', `shard ${move.shard} is assigned to '${shard.leader}' now, not '${move.to}'`, { shard: move.shard });
    if (shard.epoch > move.epoch && this.serves(move.to, move.shard, shard.epoch)) return { done: true };
    if (!this.host.liveNodes().includes(move.to)) {
      throw new RepriseError('UNAVAILABLE', `node '${move.to}' died before it served shard ${move.shard}: placement starts another failover`, { shard: move.shard });
    }
    return { waiting: `'${move.to}' does not serve it at an epoch above ${move.epoch} yet` };
  }

  // ---- effects: rebalance

  private async planMove(p: ProcedureInfo): Promise<RebalancePlan> {
    // Resumed while moving: wait for that move (its own procedure, resumed too).
    for (const child of this.meta.procedures().filter((q) => q.parent === p.id)) {
      await this.running.get(child.id)?.catch(() => undefined);
    }
    this.assertOpen(p.id);
    return this.plan(p.id);
  }

  /**
   * What a rebalance would do now: stop (static topology, a shard unplaced
   * or led by a dead node: failover comes first), wait (a shard not yet
   * serving where meta put it, another procedure running: a failover, a
   * migration, a table being created), nothing (balanced), or one move.
   */
  private plan(self: number): RebalancePlan {
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

function describe(p: ProcedureInfo): string {
  if (p.kind === 'migrate') return `migration #${p.id} of shard ${p.shard} from '${p.from}' to '${p.to}'`;
  if (p.kind === 'failover') return `failover #${p.id} of shard ${p.shard} from '${p.from}' to '${p.to}'`;
  if (p.kind === 'create_table') return `create_table #${p.id} (table #${p.table})`;
  return `${p.kind} #${p.id}`;
}
