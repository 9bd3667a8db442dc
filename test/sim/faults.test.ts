import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EpochFence } from '../../src/wal/shard-reader.js';
import { LocalLogStore } from '../../src/wal/local-log-store.js';
import { encodeEntry } from '../../src/wal/codec.js';
import { replayShard } from '../../src/wal/shard-reader.js';
import type { TestFaults } from '../../src/testing/faults.js';
import { report, runSchedule, type SimOptions, type SimResult, type Step } from './cluster-sim.js';

/**
 * Prove the simulation fails when the runtime has a known bug: each test
 * switches one deliberate bug on (SimOptions.faults, given to every node), runs a short schedule that exposes it,
 * and asserts the checker reports it. The same schedule passes with the flag
 * off. (b) also has a direct test of the reader.
 */

async function caught(steps: Step[], expected: RegExp, options: SimOptions = {}, tries = 3): Promise<SimResult> {
  let last: SimResult | undefined;
  // Real time: give a timing-dependent exposure a few chances.
  for (let i = 0; i < tries; i++) {
    last = await runSchedule(100 + i, steps, options);
    if (last.violations.some((v) => expected.test(v))) return last;
  }
  throw new Error(`the checker did not catch the deliberate bug (expected ${expected}):\n${report(last!)}`);
}

async function clean(steps: Step[], options: SimOptions = {}): Promise<void> {
  const result = await runSchedule(100, steps, options);
  expect(result.violations, report(result)).toEqual([]);
}

/** `steps` fail the checks as `expected` with `faults` on, and pass with them off. */
async function provesBug(label: string, steps: Step[], expected: RegExp, faults: TestFaults, options: SimOptions = {}): Promise<void> {
  const result = await caught(steps, expected, { ...options, faults });
  console.log(`${label} caught: ${result.violations.join(' | ')}`);
  await clean(steps, options);
}

/** Two writes through different nodes: every shard has entries before what follows. */
const TWO_WRITES: Step[] = [
  { kind: 'write', pick: 0 },
  { kind: 'write', pick: 0.5 },
];

/**
 * Writes, then a node crashes and its shard fails over. Every write touches
 * every shard; the crash right after an acknowledgement beats the
 * (simulated) sync of the crashed node's append.
 */
const CRASH_AFTER_WRITES: Step[] = [
  { kind: 'write', pick: 0 },
  { kind: 'write', pick: 0.5 },
  { kind: 'crash', pick: 0.9 },
  { kind: 'sleep', ms: 600 },
  { kind: 'write', pick: 0 },
];

/**
 * A leader stalls (its appends held 2 s, cut off from meta) just as a write
 * reaches it: that write's append lands after the next leader's marker,
 * with the old epoch, after a newer acknowledged write.
 */
const STALL_OF_A_LEADER: Step[] = [
  { kind: 'write', pick: 0 },
  { kind: 'stall', pick: 0.9, ms: 2_000 },
  { kind: 'sleep', ms: 1_000 },
  { kind: 'write', pick: 0 },
  { kind: 'sleep', ms: 1_500 },
];

/**
 * A leader's flush stalls in the object store while meta moves its shards
 * (cut off as long): the new leaders take writes and flush them, pruning
 * the log below; then the stalled flush lands.
 */
const STALE_FLUSH: Step[] = [
  { kind: 'write', pick: 0 },
  { kind: 'write', pick: 0.5 },
  { kind: 'stale_flush', pick: 0.9, ms: 1_500 },
  { kind: 'sleep', ms: 700 },
  { kind: 'write', pick: 0 },
  { kind: 'write', pick: 0.5 },
  { kind: 'sleep', ms: 1_200 },
];

describe('deliberate bugs are caught', () => {
  it('(a) acknowledging a write before its WAL append is durable: a crash loses acknowledged rows', async () => {
    await provesBug('(a)', CRASH_AFTER_WRITES, /acknowledged row\(s\) (not readable|missing)/, { ackBeforeDurable: true });
  });

  it('(c) replaying from the wrong entry id (flushed + 2): the first entry after the flush is lost on failover', async () => {
    // The bug is in replay, which a failover runs where no hot standby holds the shard.
    await provesBug('(c)', CRASH_AFTER_WRITES, /acknowledged row\(s\) (not readable|missing)/, { replayFromWrongId: true }, { followers: 0 });
  });

  it('(d) not fencing on lease loss: a node cut off from meta acknowledges a late write after its shard moved', async () => {
    // The partitioned node's inbound writes arrive 800 ms late, after meta
    // moved its shard (failure timeout 300 ms) and the new leader's marker.
    const steps: Step[] = [
      { kind: 'write', pick: 0 },
      { kind: 'partition', pick: 0.9, ms: 1_000 },
      { kind: 'write', pick: 0 },
      { kind: 'write', pick: 0 },
      { kind: 'sleep', ms: 300 },
    ];
    await provesBug('(d)', steps, /acknowledged row\(s\) (not readable|missing)|acknowledged writes but meta granted|it is fenced, never applied/, { skipLeaseFencing: true });
  });

  it('(b) skipping the epoch check: a deposed leader\'s late entry, applied by a standby after a newer write, shows a stale value', async () => {
    // n3 (pick 0.9 of three nodes; each leads one shard) stalls: a write
    // sent through it as the stall begins passes the lease check and its
    // append to n3's shard is held for 2 s, while n3 is cut off from meta as
    // long. Its lease lapses, meta promotes the shard's follower (a new
    // epoch marker), the stalled write is retried there and acknowledged,
    // and so is the next write (1 s in). Then the held append lands after
    // both, with the old epoch. The new leader never reads it; the shard's
    // new follower tails it. At the end every shard is handed to its
    // standby, which serves what it applied: with the epoch check the late
    // entry is dropped; without it, it is applied after the newer write and
    // the registers read the older write's value.
    await provesBug('(b)', STALL_OF_A_LEADER, /a stale value, an older entry applied after a newer one/, { skipEpochCheck: true });
  });

  it('a deposed leader\'s late entries stay fenced once the log below them, markers included, is pruned (found by the simulation, seed 2026)', async () => {
    // As (b), without standbys: the stalled leader's entry lands after the
    // new marker; a migration then flushes (recording the fence at the
    // flushed id in the manifests) and prunes below, markers included, and
    // its target replays from after the flushed id. Before manifests kept
    // the fence, that replay saw no marker and applied the late entry.
    const steps: Step[] = [...STALL_OF_A_LEADER, { kind: 'migrate', pick: 0, shard: 0.9, to: 0 }, { kind: 'sleep', ms: 1_000 }];
    await clean(steps, { followers: 0 });
  });

  it('(b) skipping the epoch check: a deposed leader\'s entry after the new marker is replayed (direct test of the reader)', async () => {
    // The same fence, checked directly on the reader with the log a deposed
    // leader leaves: its entry lands after the new leader's marker.
    const dir = await mkdtemp(join(tmpdir(), 'reprise-fence-'));
    const store = await LocalLogStore.open(dir);
    try {
      await store.createTopic('t');
      const body = new Uint8Array([1]);
      const put = (kind: 'epoch' | 'data', epoch: number) => store.append('t', encodeEntry({ kind, region: kind === 'data' ? 7 : 0, epoch, body }, 1 << 20));
      await put('epoch', 1);
      await put('data', 1); // acknowledged by the leader of epoch 1
      await put('epoch', 2); // the new leader's marker
      const [zombie] = await put('data', 1); // the deposed leader's late append (never acknowledged)
      await put('data', 2);
      const replayedIds = async (fence: EpochFence) => {
        const ids: number[] = [];
        await replayShard(store, 't', { from: 0, fence, onEntry: (e) => void (e.kind === 'data' && ids.push(e.id)) });
        return ids;
      };
      // The check: no entry of a lower epoch after a higher marker is delivered.
      expect(await replayedIds(new EpochFence())).not.toContain(zombie);
      expect(await replayedIds(new EpochFence({ skipEpochCheck: true }))).toContain(zombie);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("(e) manifests unfenced: a deposed leader's stalled flush replaces the new leader's manifest, whose log is pruned", async () => {
    const result = await caught(STALE_FLUSH, /acknowledged row\(s\) (not readable|missing)|final query failed/, { faults: { unfencedManifests: true } });
    expect(result.violations.length).toBeGreaterThan(0);
    await clean(STALE_FLUSH);
  });

  it("(f) a new meta leader that appends no epoch marker: the deposed leader's late entry takes effect on every reader but the new leader", async () => {
    // n3 crashes; 230 ms later the meta leader stalls for 1.2 s (paused:
    // election frozen, appends and messages held). At 300 ms it declares n3
    // dead, its lease still holding (it ends 150-200 ms into the stall), and
    // starts a failover: that first append is held. Another replica takes
    // over (~250 ms into the stall), gives n3 a full failure timeout, then
    // fails its shard over itself, under the same procedure id, to the end.
    // The held append lands when the stall ends, after all of that, with the
    // old epoch. With the marker it is fenced; without it every reader folds
    // it (the failover, finished, is running again) except the new leader,
    // which appended after it anyway (the hand-over to the standbys).
    const steps: Step[] = [
      ...TWO_WRITES,
      { kind: 'crash', pick: 0.9 },
      { kind: 'sleep', ms: 230 },
      { kind: 'meta_stall', pick: 0, ms: 1_200 },
      { kind: 'sleep', ms: 1_500 },
      { kind: 'write', pick: 0 },
    ];
    await provesBug('(f)', steps, /a deposed meta leader's entry that no reader fences|disagrees with the meta log/, { skipMetaEpochMarker: true });
  });

  it("(g) a new meta leader that does not wait out its predecessor's leases: a node whose lease still holds acknowledges a write after its shard moved", async () => {
    // Longer leases than the other runs (600 ms, failure timeout 800 ms),
    // so the window is wide whatever the machine's speed: n3 is cut off
    // from meta for 300 ms and a write reaches it 240 ms late. Meanwhile the
    // meta leader stops cleanly: it resigns, and a successor takes over at
    // once, while the lease it granted n3 still holds; n3 misses the
    // successor's nudge to renew. The successor should give n3 a failure
    // timeout to check in, which it does once the cut heals; with the bug it
    // fails n3's shard over at its first tick, and n3, its lease still
    // valid, acknowledges the late write after the new leader's epoch marker.
    const steps: Step[] = [
      ...TWO_WRITES,
      { kind: 'partition', pick: 0.9, ms: 300 },
      { kind: 'meta_shutdown', pick: 0 },
      { kind: 'write', pick: 0 },
      { kind: 'sleep', ms: 900 },
    ];
    await provesBug('(g)', steps, /acknowledged row\(s\) (not readable|missing)|it is fenced, never applied/, { skipMetaLeaseWait: true }, { heartbeatMs: 100, leaseMs: 600, failureTimeoutMs: 800 });
  });
});
