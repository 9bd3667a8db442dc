/**
 * Test hooks, injected (ActorContext.testHooks, the runtime's `testHooks`
 * option), never read from a global: deliberate bugs and an observation
 * hook. Production passes none.
 *
 * The faults exist only to prove that the simulation and the tests can
 * fail: each switches on a known bug at one exact place in the runtime, and
 * test/sim/faults.test.ts switches it on and asserts that a check catches
 * it. (TigerBeetle's replica declares its simulator hooks as fields the same
 * way.)
 */
export interface TestFaults {
  /** shard.ts `write`: acknowledge a write as soon as it is queued, before its WAL append is durable. */
  readonly ackBeforeDurable?: boolean;
  /** shard-reader.ts `EpochFence`: deliver entries of a lower epoch that follow a higher epoch marker. */
  readonly skipEpochCheck?: boolean;
  /** shard.ts `replay`: start replay at the lowest flushed entry id + 2 instead of + 1. */
  readonly replayFromWrongId?: boolean;
  /** lease.ts `check` and shard.ts `assertLease`: ignore an expired lease (no LEASE_LOST, writes acknowledged anyway). */
  readonly skipLeaseFencing?: boolean;
  /** manifest.ts `writeManifest`: every version replaces the one object (the last writer wins, whatever its epoch), as before manifests were fenced. */
  readonly unfencedManifests?: boolean;
  /** meta-service.ts `appendMarker`: a new meta leader appends no epoch marker, so nothing fences what a deposed leader appends after it took over. */
  readonly skipMetaEpochMarker?: boolean;
  /** meta-server.ts `start`: a new meta leader gives the nodes no failure timeout to check in, so it fails over the shards of every node it has not heard from yet, whose leases from its predecessor may still hold. */
  readonly skipMetaLeaseWait?: boolean;
}

export type TestFault = keyof TestFaults;

/** What a shard acknowledged: for the simulation's checker (who acknowledged which entry in which epoch). */
export interface AckObservation {
  readonly node: string;
  readonly shard: number;
  readonly epoch: number;
  readonly region: number;
  readonly entryId: number;
}

/**
 * A pause in meta's procedures: how long a procedure of `kind` waits after
 * `step`'s effect succeeded and before its next step is recorded (0: none).
 * A window in which a test kills meta mid-procedure, knowing what is in the
 * meta log (the step) and what is done (its effect).
 */
export type ProcedurePause = (kind: string, step: string) => number;

/**
 * A meta replica's election made it leader at an epoch, or deposed it: for
 * the simulation's checker (one leader per meta epoch, leases that never
 * overlap). Times are the process's monotonic clock (performance.now()).
 */
export interface MetaElectionObservation {
  readonly kind: 'elected' | 'deposed';
  readonly epoch: number;
  readonly at: number;
  /** Where its lease ends (deposed: where it would have ended; it ended at `at` if that is earlier). */
  readonly leaseEnd: number;
}

export interface TestHooks {
  /** Deliberate bugs switched on (none unless a test says so). */
  readonly faults?: TestFaults;
  /** Called each time a shard acknowledges a write. */
  readonly onAck?: (ack: AckObservation) => void;
  /** Meta only: pauses in its procedures. */
  readonly procedurePause?: ProcedurePause;
  /** Meta only: called as the replica's election makes it leader and deposes it. */
  readonly onMetaElection?: (observation: MetaElectionObservation) => void;
}

/**
 * A procedure pause from its spec, `<kind>.<step>:<ms>` (e.g.
 * `migrate.handing_off:60000`): how a test asks a meta *process* for one,
 * through REPRISE_TEST_PROCEDURE_PAUSE, which the CLI reads.
 */
export function procedurePauseOf(spec: string): ProcedurePause {
  const match = /^([a-z_]+)\.([a-z_]+):(\d+)$/.exec(spec);
  if (!match) throw new Error(`REPRISE_TEST_PROCEDURE_PAUSE must be <kind>.<step>:<ms>, got '${spec}'`);
  const [, kind, step, ms] = match;
  return (k, s) => (k === kind && s === step ? Number(ms) : 0);
}
