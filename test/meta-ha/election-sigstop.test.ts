import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNatsCluster, type TestNatsCluster } from '../harness/nats-cluster.js';
import { until, waitUntil } from '../harness/wait.js';
import { Candidates, sleep } from './election-helpers.js';

/**
 * A real SIGSTOP: a candidate in its own process (test/harness/election-candidate.ts)
 * leads, is stopped past its lease while an in-process candidate takes over,
 * then continues. It must report that it was deposed and never act at its old
 * epoch after it resumed.
 */
const LEASE = 1000;
const RENEW = 200;
const LOADER = fileURLToPath(new URL('../harness/ts-loader.mjs', import.meta.url));
const CHILD = fileURLToPath(new URL('../harness/election-candidate.ts', import.meta.url));

interface Line {
  type: string;
  t: number;
  epoch?: number;
  reason?: string;
  leaderId?: string | null;
  [k: string]: unknown;
}

class ChildCandidate {
  readonly lines: Line[] = [];
  stderr = '';
  readonly exited: Promise<void>;
  constructor(readonly proc: ChildProcessWithoutNullStreams) {
    createInterface({ input: proc.stdout }).on('line', (l) => this.lines.push(JSON.parse(l) as Line));
    proc.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
  }
  of(type: string): Line[] {
    return this.lines.filter((l) => l.type === type);
  }
}

function startChild(options: object): ChildCandidate {
  const proc = spawn(process.execPath, ['--import', LOADER, CHILD, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'] });
  return new ChildCandidate(proc);
}

let cluster: TestNatsCluster;
beforeAll(async () => {
  cluster = await startNatsCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

describe('MetaElection under a real SIGSTOP', () => {
  it('a leader stopped past its lease is deposed on resume, never acts at its old epoch, and another candidate was elected meanwhile', async () => {
    const bucket = 'sigstop';
    const child = startChild({ servers: cluster.urls, bucket, candidateId: 'stopped', leaseMs: LEASE, renewMs: RENEW });
    const others = new Candidates(cluster, bucket);
    try {
      const elected = await until(() => child.of('elected')[0], 'the child to be elected', { timeoutMs: 15_000 });
      const oldEpoch = elected.epoch!;
      await Promise.all(['b', 'c'].map((id) => others.add(id, { leaseMs: LEASE, renewMs: RENEW })));
      await waitUntil(() => others.all.every((c) => c.election.leader()?.leaderId === 'stopped'), 'the others to see the child lead');
      await waitUntil(() => child.of('act').length > 5, 'the child to act as leader');

      child.proc.kill('SIGSTOP');
      const stoppedAt = performance.timeOrigin + performance.now();
      const next = await until(() => others.leaders()[0], 'another candidate to be elected', { timeoutMs: 5000 });
      const won = next.elected.at(-1)!;
      const wonAt = performance.timeOrigin + won.at;
      console.log(`SIGSTOP -> ${next.id} elected at epoch ${won.epoch} after ${(wonAt - stoppedAt).toFixed(0)} ms`);
      expect(won.epoch).toBe(oldEpoch + 1);
      // Stopped well past its lease.
      await sleep(LEASE);
      child.proc.kill('SIGCONT');
      const resumedAt = performance.timeOrigin + performance.now();
      const deposed = await until(() => child.of('deposed')[0], 'the child to report it was deposed', { timeoutMs: 3000 });
      await sleep(LEASE);

      console.log(`child after SIGCONT: deposed (${deposed.reason}) ${(deposed.t - resumedAt).toFixed(1)} ms after resuming`);
      expect(deposed.epoch).toBe(oldEpoch);
      expect(['lease-expired', 'superseded']).toContain(deposed.reason);
      // Its lease ended before the other candidate sent its winning CAS
      // (wall clock of one machine; the child's lease end is on its own
      // monotonic clock, moved to wall time by its line's t - mono).
      const childLeaseEnd = deposed.t - (deposed['mono'] as number) + (deposed['leaseEnd'] as number);
      expect(childLeaseEnd).toBeLessThan(performance.timeOrigin + won.sentAt);
      expect(childLeaseEnd).toBeLessThan(resumedAt);
      // Its last act was before it was stopped; none after it resumed, at any epoch (it does not lead).
      const acts = child.of('act');
      expect(acts.at(-1)!.t).toBeLessThan(stoppedAt);
      expect(acts.filter((a) => a.t >= resumedAt)).toEqual([]);
      expect(acts.every((a) => a.epoch === oldEpoch)).toBe(true);
      // It was not elected again, and it follows the new leader.
      expect(child.of('elected').map((e) => e.epoch)).toEqual([oldEpoch]);
      expect(child.of('leaderChanged').at(-1)).toMatchObject({ leaderId: next.id, epoch: oldEpoch + 1 });
      expect(others.leaders()).toEqual([next]);
    } finally {
      child.proc.kill('SIGCONT');
      child.proc.stdin.end();
      await Promise.race([child.exited, sleep(3000)]);
      child.proc.kill('SIGKILL');
      await others.close();
      if (child.stderr) console.log(`child stderr: ${child.stderr}`);
    }
  });
});
