/**
 * Deliberate bugs, for tests only.
 *
 * This module exists only to prove that the simulation and the tests can
 * fail: each flag switches on a known bug at one exact place in the runtime,
 * and test/sim/faults.test.ts switches it on and asserts that a check catches
 * it. Every flag is false by default and nothing outside tests sets them.
 * Never set one in production code.
 */
export const TEST_FAULTS = {
  /** shard.ts `write`: acknowledge a write as soon as it is queued, before its WAL append is durable. */
  ackBeforeDurable: false,
  /** shard-reader.ts `replayShard`: deliver entries of a lower epoch that follow a higher epoch marker. */
  skipEpochCheck: false,
  /** shard.ts `replay`: start replay at the lowest flushed entry id + 2 instead of + 1. */
  replayFromWrongId: false,
  /** lease.ts `check` and shard.ts `assertLease`: ignore an expired lease (no LEASE_LOST, writes acknowledged anyway). */
  skipLeaseFencing: false,
};

export type TestFault = keyof typeof TEST_FAULTS;

/** What a shard acknowledged: for the simulation's checker (who acknowledged which entry in which epoch). */
export interface AckObservation {
  readonly node: string;
  readonly shard: number;
  readonly epoch: number;
  readonly region: number;
  readonly entryId: number;
}

/**
 * Test-only observation hook: when set, a shard calls `onAck` each time it
 * acknowledges a write. Unset (the default) it costs one property read.
 */
export const TEST_OBSERVER: { onAck?: ((ack: AckObservation) => void) | undefined } = {};

/** Switch every deliberate bug off and drop the observer (tests call this in afterEach). */
export function resetTestFaults(): void {
  for (const key of Object.keys(TEST_FAULTS) as TestFault[]) TEST_FAULTS[key] = false;
  TEST_OBSERVER.onAck = undefined;
}

/**
 * Test-only pause in meta's procedures, from the environment of a meta
 * process: REPRISE_TEST_PROCEDURE_PAUSE=<kind>.<step>:<ms> (e.g.
 * `migrate.handing_off:60000`) makes the procedure wait `ms` after that
 * step's effect succeeded and before its next step is recorded: a window in
 * which a test kills meta mid-procedure, knowing what is in the meta log
 * (the step) and what is done (its effect). Unset (always, outside tests):
 * 0, no pause.
 */
export function testProcedurePauseMs(kind: string, step: string): number {
  const spec = process.env.REPRISE_TEST_PROCEDURE_PAUSE;
  if (!spec) return 0;
  const match = /^([a-z_]+)\.([a-z_]+):(\d+)$/.exec(spec);
  if (!match) throw new Error(`REPRISE_TEST_PROCEDURE_PAUSE must be <kind>.<step>:<ms>, got '${spec}'`);
  return match[1] === kind && match[2] === step ? Number(match[3]) : 0;
}
