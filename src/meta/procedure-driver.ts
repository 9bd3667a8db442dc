import type { Logger } from 'pino';
import { createActor, fromPromise, type AnyActorRef, type AnyStateMachine } from 'xstate';
import { RepriseError } from '../errors.js';
import type { ProcedurePause } from '../testing/faults.js';
import type { ProcedureInfo, ProcedureOutcome } from './model.js';

/** What driving a procedure needs of meta's log: the procedures it holds, and appends of steps and outcomes. */
export interface ProcedureLog {
  procedures(): ProcedureInfo[];
  recordProcedureStep(id: number, state: string): Promise<void>;
  finishProcedure(id: number, outcome: ProcedureOutcome, reason?: string): Promise<void>;
}

// ---------------------------------------------------------------- running machines

/** A meta shutting down: the procedure stops where it is; the next meta resumes it from the log. */
export class Closing extends RepriseError {
  constructor(id: number | null) {
    super('UNAVAILABLE', id === null ? 'meta is shutting down' : `meta is shutting down: procedure #${id} resumes from its last step when meta starts again`);
  }
}

/** Whether an error is a procedure stopped by meta's shutdown (nothing went wrong: the next meta resumes it). */
export function isClosing(err: unknown): boolean {
  return err instanceof Closing;
}

export type Final = { value: string; context: { error?: string; [key: string]: unknown } };

/**
 * What drives a procedure's machine, whoever provides its effects: runs it
 * to a final state, records each step before its effect, records the
 * outcome, and on close stops every machine where it is (recording nothing
 * more: the next meta resumes them).
 */
export abstract class MachineDriver<Log extends ProcedureLog = ProcedureLog> {
  /** Running machines and pending sleeps, each with how to reject its waiter when meta closes. */
  private readonly actors = new Map<AnyActorRef, () => void>();
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  /** The error behind a failed step, by procedure id, so the caller gets its code (not just its text). */
  protected readonly errors = new Map<number, unknown>();
  protected closed = false;

  constructor(
    protected readonly meta: Log,
    protected readonly logger: Logger,
    /** Tests only: pauses after steps (none in production). */
    private readonly pause: ProcedurePause = () => 0,
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
        // A step the machine ran again (it waited, then looked) keeps only the error of its last run.
        this.errors.delete(p.id);
        const pause = this.pause(p.kind, state);
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
