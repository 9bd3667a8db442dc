import { connect } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startNatsCluster, type TestNatsCluster } from '../harness/nats-cluster.js';
import { until, waitUntil } from '../harness/wait.js';
import { Candidates, sleep, strictlyIncreasing, type Candidate } from './election-helpers.js';

/**
 * The meta leader election (src/meta/meta-election.ts) on a real 3-server
 * nats-server JetStream cluster, bucket R3. Leases are short: leaseMs 1000,
 * renewMs 200, margin 200 (the default 20%), so a takeover after a silent
 * leader comes 1200 ms after its last renewal was seen.
 */
const LEASE = 1000;
const MARGIN = 200;

let cluster: TestNatsCluster;
let group: Candidates | undefined;
let buckets = 0;

beforeAll(async () => {
  cluster = await startNatsCluster();
});
afterAll(async () => {
  await cluster?.stop();
});
afterEach(async () => {
  await group?.close();
  group = undefined;
});

function newGroup(): Candidates {
  group = new Candidates(cluster, `elect${++buckets}`);
  return group;
}

async function oneLeader(g: Candidates, timeoutMs = 5000): Promise<Candidate> {
  return until(() => (g.leaders().length === 1 ? g.leaders()[0] : undefined), 'exactly one leader', { timeoutMs, everyMs: 5 });
}

/** Every candidate has observed `leader` at `epoch`. */
async function allAgree(cands: readonly Candidate[], leader: string, epoch: number): Promise<void> {
  await waitUntil(() => cands.every((c) => c.election.leader()?.leaderId === leader && c.election.leader()?.epoch === epoch), `all candidates to see ${leader} at epoch ${epoch}`, { timeoutMs: 3000 });
}

describe('the CAS the election stands on (nats-server JetStream, R3)', () => {
  it('a publish expecting the stream last sequence has one winner among racing writers; kv.update may have several', async () => {
    const ncs = await Promise.all(cluster.urls.map((url) => connect({ servers: url })));
    try {
      const jss = ncs.map((nc) => nc.jetstream({ timeout: 2000 }));
      const kv = await jss[0]!.views.kv('cas-race', { replicas: 3, history: 1 });
      await kv.put('k', 'x');
      const race = async (mode: 'kv.update' | 'stream sequence') => {
        const winners: number[] = [];
        for (let round = 0; round < 60; round++) {
          const revision = (await kv.get('k'))!.revision;
          // One writer per server, all on the same revision.
          const results = await Promise.allSettled(
            jss.map((js, i) =>
              mode === 'kv.update'
                ? js.views.kv('cas-race', { bindOnly: true }).then((b) => b.update('k', `${round}-${i}`, revision))
                : js.publish('$KV.cas-race.k', `${round}-${i}`, { expect: { lastSequence: revision, lastSubjectSequence: revision } }),
            ),
          );
          winners.push(results.filter((r) => r.status === 'fulfilled').length);
        }
        return winners;
      };
      const update = await race('kv.update');
      const stream = await race('stream sequence');
      const several = (ws: number[]) => ws.filter((w) => w > 1).length;
      console.log(`rounds with more than one winner out of 60: kv.update ${several(update)}, stream sequence ${several(stream)}`);
      // What the election relies on; kv.update is only reported (nats-server#4320, fixed in 2.9.21).
      expect(stream.every((w) => w === 1)).toBe(true);
    } finally {
      for (const nc of ncs) await nc.close();
    }
  });
});

describe('MetaElection on a 3-server JetStream cluster', () => {
  it('three candidates: exactly one leader, and all agree on its id and epoch', async () => {
    const g = newGroup();
    g.startMonitor();
    await Promise.all(['a', 'b', 'c'].map((id) => g.add(id)));
    const leader = await oneLeader(g);
    const epoch = leader.election.epoch()!;
    expect(epoch).toBe(1);
    await allAgree(g.all, leader.id, epoch);
    // It stays: renewals keep the same leader and epoch.
    await sleep(LEASE * 1.5);
    expect(g.leaders().map((c) => c.id)).toEqual([leader.id]);
    expect(leader.election.epoch()).toBe(epoch);
    expect(leader.election.stats().renewals).toBeGreaterThanOrEqual(5);
    expect(leader.election.leaseValidFor()).toBeGreaterThan(LEASE - 400);
    expect(g.all.filter((c) => c !== leader).every((c) => !c.election.isLeader() && c.election.epoch() === undefined && c.election.leaseValidFor() === 0)).toBe(true);
    expect(g.all.reduce((n, c) => n + c.election.stats().electionsWon, 0)).toBe(1);
    expect(g.overlaps).toEqual([]);
  });

  it('a leader that closes its connection (no resign) is replaced within lease + margin, at epoch + 1, after its lease ended', async () => {
    const g = newGroup();
    g.startMonitor();
    await Promise.all(['a', 'b', 'c'].map((id) => g.add(id)));
    const old = await oneLeader(g);
    const epoch = old.election.epoch()!;
    await allAgree(g.all, old.id, epoch);
    await sleep(300);

    const closedAt = performance.now();
    await old.nc.close();
    expect(old.election.isLeader()).toBe(false);
    const next = await oneLeader(g, LEASE + MARGIN + 2000);
    const won = next.elected.at(-1)!;
    const took = won.at - closedAt;
    console.log(`abrupt close -> new leader in ${took.toFixed(0)} ms (election time seen by the winner: ${next.election.stats().lastElectionMs?.toFixed(0)} ms)`);
    expect(next).not.toBe(old);
    expect(won.epoch).toBe(epoch + 1);
    expect(took).toBeLessThan(LEASE + MARGIN + 500);
    // The old leader stepped down before the new one was elected, and its
    // lease (from its last renewal's send time) ended before the takeover.
    const down = old.deposed.at(-1)!;
    expect(down.reason).toBe('connection-closed');
    expect(down.at).toBeLessThan(won.at);
    expect(down.leaseEnd).toBeLessThan(won.sentAt);
    // The winner waited at least leaseMs + margin from the last renewal it saw.
    expect(next.election.stats().lastElectionMs!).toBeGreaterThanOrEqual(LEASE + MARGIN);
    await allAgree(g.all.filter((c) => c !== old), next.id, epoch + 1);
    expect(g.overlaps).toEqual([]);
    expect(strictlyIncreasing(g.electedEpochs())).toBe(true);
  });

  it('a leader whose renewals stop is deposed by its own lease; resumed, its CAS fails and it never leads at the old epoch', async () => {
    const g = newGroup();
    g.startMonitor();
    await Promise.all(['a', 'b', 'c'].map((id) => g.add(id)));
    const old = await oneLeader(g);
    const epoch = old.election.epoch()!;
    await sleep(300);

    old.hooks.pauseRenewals();
    const pausedAt = performance.now();
    await waitUntil(() => old.deposed.length > 0, 'the paused leader to depose itself', { timeoutMs: LEASE + 500 });
    const down = old.deposed[0]!;
    expect(down.reason).toBe('lease-expired');
    expect(down.at - pausedAt).toBeLessThanOrEqual(LEASE + 50);
    expect(old.election.isLeader()).toBe(false);

    const next = await oneLeader(g, LEASE + MARGIN + 2000);
    const won = next.elected.at(-1)!;
    expect(next).not.toBe(old);
    expect(won.epoch).toBe(epoch + 1);
    expect(down.at).toBeLessThan(won.at);
    expect(down.leaseEnd).toBeLessThan(won.sentAt);

    // Resumed: a renewal at the old epoch on the old revision is refused by the KV.
    old.hooks.resumeRenewals();
    expect(await old.hooks.forceRenewal()).toBe('conflict');
    await sleep(LEASE);
    expect(old.election.isLeader()).toBe(false);
    expect(old.elected.filter((e) => e.epoch <= epoch + 1).map((e) => e.epoch)).toEqual([epoch]);
    expect(g.leaders()).toEqual([next]);
    expect(g.overlaps).toEqual([]);
  });

  it('resign hands over well under leaseMs', async () => {
    const g = newGroup();
    g.startMonitor();
    await Promise.all(['a', 'b', 'c'].map((id) => g.add(id)));
    const old = await oneLeader(g);
    const epoch = old.election.epoch()!;
    await allAgree(g.all, old.id, epoch);
    // A fresh bucket's first watch can take a few tries; without it a
    // candidate sees the tombstone at its next poll instead (pollMs 500).
    await waitUntil(() => g.all.every((c) => c.election.watching()), 'every candidate to watch the key');

    const resignAt = performance.now();
    await old.election.resign();
    expect(old.election.isLeader()).toBe(false);
    expect(old.deposed.at(-1)!.reason).toBe('resigned');
    const next = await oneLeader(g, LEASE);
    const took = next.elected.at(-1)!.at - resignAt;
    console.log(`resign -> new leader in ${took.toFixed(0)} ms`);
    expect(next).not.toBe(old);
    expect(next.election.epoch()).toBe(epoch + 1);
    expect(took).toBeLessThan(LEASE / 3);
    await allAgree(g.all, next.id, epoch + 1);
    expect(g.overlaps).toEqual([]);
  });

  for (const which of ['a server that does not lead the KV stream', 'the KV stream leader'] as const) {
    it(`SIGKILL and restart of ${which}: one leader at a time, at most one leader change`, async () => {
      const g = newGroup();
      g.startMonitor();
      await Promise.all(['a', 'b', 'c'].map((id) => g.add(id)));
      const first = await oneLeader(g);
      await allAgree(g.all, first.id, first.election.epoch()!);
      const streamLeader = await until(() => cluster.streamLeader(`KV_${g.bucket}`), 'the KV stream to have a leader');
      const victim = which === 'the KV stream leader' ? cluster.servers.findIndex((s) => s.name === streamLeader) : cluster.servers.findIndex((s) => s.name !== streamLeader);
      const epochsBefore = g.log.elected.length;

      const killedAt = performance.now();
      await cluster.kill(victim);
      await sleep(1500);
      await cluster.start(victim);
      await cluster.waitForJetStream();
      const leader = await oneLeader(g, 10_000);
      // Settle, then look: still one leader.
      await sleep(LEASE);
      const changes = g.log.elected.slice(epochsBefore);
      console.log(
        `SIGKILL ${cluster.servers[victim]!.name} (${which}; stream leader was ${streamLeader}): ${changes.length} leader change(s)` +
          (changes.length ? `, new leader ${changes.map((e) => `${e.id}@${e.epoch} after ${(e.at - killedAt).toFixed(0)} ms`).join(', ')}` : '') +
          `; renewal errors: ${g.all.map((c) => c.election.stats().renewalErrors).join('/')}`,
      );
      expect(changes.length).toBeLessThanOrEqual(1);
      expect(g.leaders()).toEqual([leader]);
      expect(g.overlaps).toEqual([]);
      expect(strictlyIncreasing(g.electedEpochs())).toBe(true);
      await allAgree(g.all, leader.id, leader.election.epoch()!);
    });
  }

  it('without a JetStream quorum the leader loses its lease at the deadline, nobody is elected, and one leader returns with the quorum', async () => {
    const g = newGroup();
    g.startMonitor();
    await Promise.all(['a', 'b', 'c'].map((id) => g.add(id)));
    const old = await oneLeader(g);
    const epoch = old.election.epoch()!;
    await allAgree(g.all, old.id, epoch);
    const electedBefore = g.log.elected.length;

    const lostAt = performance.now();
    await Promise.all([cluster.kill(1), cluster.kill(2)]);
    await waitUntil(() => old.deposed.length > 0, 'the leader to lose its lease', { timeoutMs: LEASE + 500 });
    const down = old.deposed[0]!;
    expect(down.reason).toBe('lease-expired');
    expect(down.at - lostAt).toBeLessThanOrEqual(LEASE + 50);
    // Nobody can win while the KV has no quorum.
    await sleep(1.5 * LEASE);
    expect(g.leaders()).toEqual([]);
    expect(g.log.elected.length).toBe(electedBefore);
    expect(old.election.stats().renewalErrors).toBeGreaterThan(0);

    const backAt = performance.now();
    await Promise.all([cluster.start(1), cluster.start(2)]);
    await cluster.waitForJetStream();
    const next = await oneLeader(g, 15_000);
    const won = next.elected.at(-1)!;
    console.log(`quorum lost: leader deposed after ${(down.at - lostAt).toFixed(0)} ms; quorum back -> ${next.id}@${won.epoch} after ${(won.at - backAt).toFixed(0)} ms`);
    expect(won.epoch).toBe(epoch + 1);
    expect(g.log.elected.length).toBe(electedBefore + 1);
    await allAgree(g.all, next.id, epoch + 1);
    expect(g.overlaps).toEqual([]);
  });

  it('property: under random pauses, freezes, closes and resignations, never two valid leases at once and epochs strictly increase', async () => {
    const { runSchedule } = await import('./election-schedule.js');
    const g = newGroup();
    g.startMonitor(1);
    const report = await runSchedule(g, { seed: Number(process.env['ELECTION_SEED'] ?? 16), durationMs: 10_000 });
    console.log(`schedule seed ${report.seed}: ${report.steps.length} steps, ${g.log.elected.length} elections, ${g.samples} samples`);
    expect(g.overlaps).toEqual([]);
    const epochs = g.electedEpochs();
    expect(strictlyIncreasing(epochs)).toBe(true);
    expect(new Set(epochs).size).toBe(epochs.length);
    expect(g.log.elected.length).toBeGreaterThanOrEqual(4);
    // Every deposed leader's lease ended before the next epoch was won (a
    // resigned one stepped down before it).
    for (const down of g.log.deposed) {
      const nextWin = g.log.elected.find((e) => e.epoch > down.epoch);
      if (!nextWin) continue;
      const what = `epoch ${down.epoch} (${down.id}, ${down.reason}) vs ${nextWin.epoch} (${nextWin.id})`;
      if (down.reason === 'resigned') expect(down.at, what).toBeLessThan(nextWin.at);
      else expect(down.leaseEnd, what).toBeLessThan(nextWin.sentAt);
    }
    // Left alone, it converges on one leader.
    await oneLeader(g, 5000);
  });
});
