import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { prng } from '../../../bench/lib/cpu-lines.js';
import { isRepriseError } from '../../../src/errors.js';
import { MemoryElectionStore, type CompareAndSetOutcome, type ElectionStore, type StoredValue } from '../../../src/meta/election-store.js';
import { ElectionTestHooks, MetaElection, type DeposedEvent, type ElectedEvent, type MetaElectionBaseOptions } from '../../../src/meta/meta-election.js';
import { until, waitUntil } from '../../harness/wait.js';

/**
 * The meta leader election (src/meta/meta-election.ts) on the in-process
 * MemoryElectionStore: the same election logic as on NATS KV, with short
 * timings (lease 200 ms, renew 50 ms, margin 50 ms: the default), under
 * seeded random faults of the candidates (freeze, paused renewals) and of the
 * store (unavailable, slow, lost write answers, stalled or ended watches).
 */
const LEASE = 200;
const RENEW = 50;
const quiet = { info() {}, warn() {}, error() {} };
const encode = (text: string) => new TextEncoder().encode(text);
const decode = (stored: StoredValue | undefined) => (stored?.value ? new TextDecoder().decode(stored.value) : undefined);

interface Member {
  readonly id: string;
  readonly election: MetaElection;
  readonly hooks: ElectionTestHooks;
}

/**
 * What must hold whatever the faults, watched while they happen: a sample
 * every 5 ms (never two candidates with isLeader() at once; no candidate sees
 * the epoch go back), each elected event as it comes (one winner per epoch,
 * epochs won in increasing order), and at the end the deposed events (a
 * deposed leader's lease ended before the next epoch's winner sent its
 * takeover: the overlap check without the sampling's gaps).
 */
class ElectionChecker {
  readonly violations: string[] = [];
  readonly elected: (ElectedEvent & { id: string })[] = [];
  readonly deposed: (DeposedEvent & { id: string })[] = [];
  readonly members: Member[] = [];
  samples = 0;
  private finished = false;
  private readonly winnerOf = new Map<number, string>();
  private readonly epochSeenBy = new Map<string, number>();
  private readonly sampler = setInterval(() => this.sample(), 5);

  /** Listeners for `start`, so no event is missed. */
  listenersFor(id: string): MetaElectionBaseOptions['on'] {
    return {
      elected: (e) => this.onElected(id, e),
      deposed: (e) => this.deposed.push({ ...e, id }),
    };
  }

  leaders(): Member[] {
    return this.members.filter((m) => m.election.isLeader());
  }

  /** Stop sampling; the violations, the end-of-run checks included. */
  finish(): string[] {
    if (this.finished) return this.violations;
    this.finished = true;
    clearInterval(this.sampler);
    for (const down of this.deposed) {
      const next = this.elected.find((e) => e.epoch > down.epoch);
      if (!next) continue;
      const what = `epoch ${down.epoch} (${down.id}, ${down.reason}) then ${next.epoch} (${next.id})`;
      if (down.reason === 'resigned' ? down.at >= next.at : down.leaseEnd >= next.sentAt) this.violations.push(`${what}: the leases overlap`);
    }
    return this.violations;
  }

  private onElected(id: string, e: ElectedEvent): void {
    const before = this.winnerOf.get(e.epoch);
    if (before !== undefined) this.violations.push(`${e.at.toFixed(1)}: epoch ${e.epoch} won twice, by ${before} and by ${id}`);
    const highest = Math.max(0, ...this.winnerOf.keys());
    if (e.epoch < highest) this.violations.push(`${e.at.toFixed(1)}: ${id} won epoch ${e.epoch} after epoch ${highest} was won`);
    this.winnerOf.set(e.epoch, id);
    this.elected.push({ ...e, id });
  }

  private sample(): void {
    this.samples++;
    const leading = this.leaders();
    if (leading.length > 1) this.violations.push(`${performance.now().toFixed(1)}: two leaders at once: ${leading.map((m) => `${m.id}@${m.election.epoch()}`).join(', ')}`);
    for (const m of this.members) {
      const epoch = m.election.leader()?.epoch;
      if (epoch === undefined) continue;
      const before = this.epochSeenBy.get(m.id) ?? 0;
      if (epoch < before) this.violations.push(`${performance.now().toFixed(1)}: ${m.id} saw epoch ${epoch} after ${before}`);
      else this.epochSeenBy.set(m.id, epoch);
    }
  }
}

let running: ElectionChecker | undefined;
afterEach(async () => {
  const checker = running;
  running = undefined;
  if (!checker) return;
  checker.finish();
  for (const m of checker.members) {
    m.hooks.thaw();
    await m.election.close({ resign: false });
  }
});

/** Candidates `ids`, each on the store `storeOf` gives it, watched by a new checker. */
async function startGroup(ids: readonly string[], storeOf: (id: string) => ElectionStore): Promise<ElectionChecker> {
  const checker = new ElectionChecker();
  running = checker;
  for (const id of ids) {
    const hooks = new ElectionTestHooks();
    const election = await MetaElection.start({ store: storeOf(id), candidateId: id, leaseMs: LEASE, renewMs: RENEW, logger: quiet, testHooks: hooks, on: checker.listenersFor(id) });
    checker.members.push({ id, election, hooks });
  }
  return checker;
}

function oneLeader(checker: ElectionChecker, timeoutMs = 2000): Promise<Member> {
  return until(() => (checker.leaders().length === 1 ? checker.leaders()[0] : undefined), 'exactly one leader', { timeoutMs, everyMs: 5 });
}

/**
 * Seeded random faults, one every 20-100 ms, each undone after a while:
 * freeze a candidate (SIGSTOP-like), pause the leader's renewals, cut one
 * candidate off the store (a partition: its calls fail at once or time out),
 * make the whole store unavailable, slow the answers (one connection or all,
 * up to 150 ms of the 200 ms lease), lose the leader's next write answers
 * (the writes take effect), stall or end watches, have the leader resign.
 * Freezes, partitions and delays hit the leader half the time, and after a
 * delay or lost answers it may go quiet: faults of the leader are the ones
 * that test the lease.
 */
async function runFaultSchedule(store: MemoryElectionStore, connections: ReadonlyMap<string, MemoryElectionStore>, checker: ElectionChecker, seed: number, durationMs: number): Promise<string[]> {
  const random = prng(seed);
  const between = (lo: number, hi: number) => Math.round(lo + random() * (hi - lo));
  const pick = <T>(xs: readonly T[]): T | undefined => (xs.length ? xs[Math.floor(random() * xs.length)] : undefined);
  const someone = (leader: Member | undefined, among = checker.members) => (leader && random() < 0.5 ? leader : pick(among));
  const link = (leader: Member | undefined) => (random() < 0.3 ? store : connections.get(someone(leader)!.id)!);
  const undos: Promise<void>[] = [];
  const undoAfter = (ms: number, undo: () => void) => undos.push(sleep(ms).then(undo));
  const steps: string[] = [];
  // A lease computed wrongly (from a late answer, say) only shows if the
  // leader then goes quiet: no renewal after it puts the lease right again.
  const thenQuiet = (leader: Member) => {
    if (random() < 0.5) return '';
    const afterMs = between(60, 200);
    const ms = between(250, 400);
    undoAfter(afterMs, () => {
      leader.hooks.pauseRenewals();
      undoAfter(ms, () => leader.hooks.resumeRenewals());
    });
    return `, then ${leader.id} quiet after ${afterMs} for ${ms}`;
  };
  const start = performance.now();
  while (performance.now() - start < durationMs) {
    await sleep(between(20, 100));
    const r = random();
    const leader = checker.leaders()[0];
    if (r < 0.15) {
      const m = someone(leader, checker.members.filter((x) => !x.hooks.frozen));
      if (!m || m.hooks.frozen) continue;
      const ms = between(50, 500);
      steps.push(`freeze ${m.id} ${ms}`);
      m.hooks.freeze();
      undoAfter(ms, () => m.hooks.thaw());
    } else if (r < 0.25 && leader && !leader.hooks.renewalsPaused) {
      const ms = between(100, 400);
      steps.push(`pause ${leader.id} ${ms}`);
      leader.hooks.pauseRenewals();
      undoAfter(ms, () => leader.hooks.resumeRenewals());
    } else if (r < 0.37) {
      const m = someone(leader)!;
      const failAfterMs = random() < 0.5 ? 0 : between(50, 150);
      const ms = between(50, 500);
      steps.push(`partition ${m.id} ${ms} (fail after ${failAfterMs})`);
      connections.get(m.id)!.makeUnavailable(failAfterMs);
      undoAfter(ms, () => connections.get(m.id)!.makeAvailable());
    } else if (r < 0.45) {
      const failAfterMs = random() < 0.5 ? 0 : between(50, 150);
      const ms = between(50, 300);
      steps.push(`store unavailable ${ms} (fail after ${failAfterMs})`);
      store.makeUnavailable(failAfterMs);
      undoAfter(ms, () => store.makeAvailable());
    } else if (r < 0.57) {
      const l = link(leader);
      const delayMs = between(5, 150);
      const ms = between(100, 600);
      steps.push(`delay ${l.name} by ${delayMs} for ${ms}${leader ? thenQuiet(leader) : ''}`);
      l.delayAnswers(delayMs);
      undoAfter(ms, () => l.delayAnswers(0));
    } else if (r < 0.72 && leader) {
      const count = between(1, 2);
      const afterMs = between(0, 100);
      steps.push(`lose ${leader.id}'s next ${count} write answers (after ${afterMs})${thenQuiet(leader)}`);
      connections.get(leader.id)!.loseWriteAnswers(count, afterMs);
    } else if (r < 0.8) {
      const l = link(leader);
      const ms = between(100, 800);
      steps.push(`stall ${l.name}'s watches ${ms}`);
      l.stallWatches();
      undoAfter(ms, () => l.stallWatches(false));
    } else if (r < 0.85) {
      const l = link(leader);
      steps.push(`end ${l.name}'s watches`);
      l.endWatches();
    } else if (r < 0.92 && leader) {
      steps.push(`resign ${leader.id}`);
      await leader.election.resign();
    } else {
      steps.push('nothing');
    }
  }
  while (undos.length) await Promise.all(undos.splice(0)); // an undo may schedule another
  for (const l of [store, ...connections.values()]) l.heal();
  for (const m of checker.members) m.hooks.resumeRenewals();
  return steps;
}

describe('MemoryElectionStore', () => {
  it('compare-and-set on the last revision (0: never written), revisions one per write, a watch gets the current value then each write, later', async () => {
    const store = new MemoryElectionStore();
    expect(await store.read()).toBeUndefined();
    const cas = (text: string, expected: number): Promise<CompareAndSetOutcome> => store.compareAndSet(encode(text), expected);
    expect(await cas('a', 0)).toEqual({ kind: 'written', revision: 1 });
    expect(await cas('b', 0)).toEqual({ kind: 'conflict' });
    expect(await cas('b', 1)).toEqual({ kind: 'written', revision: 2 });
    expect(await cas('c', 1)).toEqual({ kind: 'conflict' });
    expect(decode(await store.read())).toBe('b');

    const watch = await store.watch();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const stored of watch) seen.push(`${stored.revision}:${decode(stored)}`);
    })();
    const writing = cas('c', 2);
    expect(seen).toEqual([]); // not during the write
    await writing;
    await waitUntil(() => seen.length === 2, 'the watch to deliver');
    expect(seen).toEqual(['2:b', '3:c']);
    watch.stop();
    await reading;
  });

  it('faults: a connection cut off while others work, a hang that times out, a lost answer of a write that took effect, slow answers, stalled, cut off and ended watches', async () => {
    const store = new MemoryElectionStore();
    const [a, b] = [store.connect('a'), store.connect('b')];
    a.makeUnavailable();
    await expect(a.read()).rejects.toSatisfy((err: unknown) => isRepriseError(err, 'UNAVAILABLE'));
    expect(await b.compareAndSet(encode('b1'), 0)).toEqual({ kind: 'written', revision: 1 });
    a.makeUnavailable(50);
    let t = performance.now();
    await expect(a.compareAndSet(encode('a1'), 1)).rejects.toSatisfy((err: unknown) => isRepriseError(err, 'TIMEOUT'));
    expect(performance.now() - t).toBeGreaterThanOrEqual(45);
    expect(decode(await b.read())).toBe('b1');
    a.makeAvailable();

    a.loseWriteAnswers(1);
    await expect(a.compareAndSet(encode('a2'), 1)).rejects.toSatisfy((err: unknown) => isRepriseError(err, 'TIMEOUT'));
    expect(await b.read()).toMatchObject({ revision: 2 });
    expect(await a.compareAndSet(encode('a3'), 2)).toEqual({ kind: 'written', revision: 3 }); // one answer lost, not more

    store.delayAnswers(30);
    t = performance.now();
    await b.read();
    expect(performance.now() - t).toBeGreaterThanOrEqual(25);
    store.heal();

    const watchA = await a.watch();
    const watchB = await b.watch();
    const seenBy = { a: [] as number[], b: [] as number[] };
    const ended = [watchA, watchB].map(async (w, i) => {
      for await (const stored of w) seenBy[i === 0 ? 'a' : 'b'].push(stored.revision);
    });
    await waitUntil(() => seenBy.a.length === 1 && seenBy.b.length === 1, 'both watches to see the current value');
    a.stallWatches();
    await b.compareAndSet(encode('b4'), 3);
    a.stallWatches(false);
    a.makeUnavailable(); // cut off: its watch gets nothing either
    await b.compareAndSet(encode('b5'), 4);
    await waitUntil(() => seenBy.b.length === 3, 'b to see the writes');
    await sleep(20);
    expect(seenBy).toEqual({ a: [3], b: [3, 4, 5] });
    a.endWatches();
    await ended[0];
    expect(seenBy.b).toEqual([3, 4, 5]); // b's watch still open
    watchB.stop();
    await ended[1];
  });
});

describe('MetaElection on a MemoryElectionStore', () => {
  it('three candidates: one leader at epoch 1, all agree, and it stays', async () => {
    const store = new MemoryElectionStore();
    const checker = await startGroup(['a', 'b', 'c'], (id) => store.connect(id));
    const leader = await oneLeader(checker);
    expect(leader.election.epoch()).toBe(1);
    await waitUntil(() => checker.members.every((m) => m.election.leader()?.leaderId === leader.id && m.election.leader()?.epoch === 1), 'all to agree');
    await sleep(LEASE * 3);
    expect(checker.leaders()).toEqual([leader]);
    expect(leader.election.epoch()).toBe(1);
    expect(leader.election.stats().renewals).toBeGreaterThanOrEqual(8);
    expect(checker.elected).toHaveLength(1);
    expect(checker.finish()).toEqual([]);
  });

  it("a lost answer is the election's to recognise: a takeover and a renewal whose answers were lost still count (nonce), so nobody is elected again", async () => {
    const store = new MemoryElectionStore();
    store.loseWriteAnswers(1, 20);
    const checker = await startGroup(['a'], () => store);
    const leader = await oneLeader(checker);
    // The lost takeover was adopted, not tried again (that would be epoch 2).
    expect(leader.election.epoch()).toBe(1);
    expect(JSON.parse(decode(await store.read())!)).toMatchObject({ leader: 'a', epoch: 1 });

    const renewals = leader.election.stats().renewals;
    store.loseWriteAnswers(2, 20);
    await waitUntil(() => leader.election.stats().renewals >= renewals + 3, 'renewals to go on');
    expect(leader.election.stats().renewalErrors).toBeGreaterThanOrEqual(2);
    expect(leader.election.epoch()).toBe(1);
    expect(checker.deposed).toEqual([]);
    expect(checker.finish()).toEqual([]);
  });

  it('a renewal answered late leases from when it was sent: the slow leader, gone quiet, has lost its lease before another is elected', async () => {
    const store = new MemoryElectionStore();
    const connections = new Map(['a', 'b', 'c'].map((id) => [id, store.connect(id)]));
    const checker = await startGroup([...connections.keys()], (id) => connections.get(id)!);
    const slow = await oneLeader(checker);
    // The others see its renewals at once. Renewals go one at a time, each
    // confirmed one delay after it was sent: under half the lease, it holds.
    connections.get(slow.id)!.delayAnswers(80);
    await sleep(300);
    expect(slow.election.isLeader()).toBe(true);
    slow.hooks.pauseRenewals();
    const next = await until(() => checker.leaders().find((m) => m !== slow), 'another leader', { timeoutMs: 2000 });
    expect(slow.election.isLeader(), 'the slow leader still leads').toBe(false);
    expect(checker.finish()).toEqual([]);
    const down = checker.deposed.find((d) => d.id === slow.id)!;
    expect(down.reason).toBe('lease-expired');
    expect(down.leaseEnd).toBeLessThan(checker.elected.find((e) => e.id === next.id)!.sentAt);
  });

  const seeds = process.env['ELECTION_SEED'] ? [Number(process.env['ELECTION_SEED'])] : [16, 17];
  for (const seed of seeds) {
    it(`property, seed ${seed}: under random freezes, partitions, an unavailable or slow store, lost answers and stalled watches, one leader at a time and epochs only grow`, async () => {
      const store = new MemoryElectionStore();
      const connections = new Map(['a', 'b', 'c'].map((id) => [id, store.connect(id)]));
      const checker = await startGroup([...connections.keys()], (id) => connections.get(id)!);
      await oneLeader(checker);
      const steps = await runFaultSchedule(store, connections, checker, seed, 4000);
      // Faults undone, it converges on one leader that all agree on.
      const leader = await oneLeader(checker, 3000);
      const epoch = leader.election.epoch();
      await waitUntil(() => checker.members.every((m) => m.election.leader()?.leaderId === leader.id && m.election.leader()?.epoch === epoch), 'all to agree on the leader');
      const violations = checker.finish();
      const kinds = new Map<string, number>();
      for (const s of steps) kinds.set(s.split(' ')[0]!, (kinds.get(s.split(' ')[0]!) ?? 0) + 1);
      console.log(`seed ${seed}: ${steps.length} steps (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}), ${checker.elected.length} elections, ${checker.samples} samples`);
      expect(violations).toEqual([]);
      expect(checker.elected.length).toBeGreaterThanOrEqual(3);
      expect(checker.samples).toBeGreaterThan(300);
    });
  }

  it('the checker catches a store whose compare-and-set ignores the expected revision: two leaders at once, two winners of one epoch', async () => {
    const store = new MemoryElectionStore();
    // Watches stalled, so no candidate learns of the others' writes: the
    // leaders the broken CAS lets in stay, long enough for the 5 ms sampler.
    // (Watching, they would depose each other within a turn of the event
    // loop; the one-winner-per-epoch check catches that alone.)
    store.stallWatches();
    const blind = new BlindWriteStore(store);
    const checker = await startGroup(['a', 'b', 'c'], () => blind);
    await waitUntil(() => checker.violations.some((v) => v.includes('two leaders at once')), 'the checker to see two leaders', { timeoutMs: 2000 });
    const violations = checker.finish();
    expect(violations.some((v) => v.includes('two leaders at once'))).toBe(true);
    expect(violations.some((v) => /epoch \d+ won twice/.test(v))).toBe(true);
  });
});

/** A broken store for the checker's own test: its compare-and-set writes over whatever revision is there. */
class BlindWriteStore implements ElectionStore {
  readonly name: string;
  readonly closed = undefined;
  constructor(private readonly inner: MemoryElectionStore) {
    this.name = `blind-write:${inner.name}`;
  }
  read(): Promise<StoredValue | undefined> {
    return this.inner.read();
  }
  watch() {
    return this.inner.watch();
  }
  async compareAndSet(value: Uint8Array): Promise<CompareAndSetOutcome> {
    for (;;) {
      const outcome = await this.inner.compareAndSet(value, (await this.inner.read())?.revision ?? 0);
      if (outcome.kind === 'written') return outcome;
    }
  }
}
