import { prng, sleep, type Candidates } from './election-helpers.js';

export interface ScheduleReport {
  readonly seed: number;
  readonly steps: string[];
}

/**
 * A randomized fault schedule over a group of candidates (four live at a
 * time), from a seed: every 100-500 ms one of
 * - pause the leader's renewals for 0.3-2 s (it must depose itself),
 * - freeze a random candidate (SIGSTOP-like: its loop, lease timer and watch
 *   handling stop) for 0.3-2 s,
 * - close a random candidate's connection abruptly, and start a new one,
 * - the leader resigns,
 * - nothing.
 * The caller checks the group's monitor and logs afterwards.
 */
export async function runSchedule(group: Candidates, options: { seed: number; durationMs: number }): Promise<ScheduleReport> {
  const random = prng(options.seed);
  const pick = <T>(xs: readonly T[]): T | undefined => (xs.length ? xs[Math.floor(random() * xs.length)] : undefined);
  const steps: string[] = [];
  let next = 0;
  const live = () => group.all.filter((c) => !c.nc.isClosed());
  for (let i = 0; i < 4; i++) await group.add(`p${next++}`);
  const start = performance.now();
  const timers: Promise<void>[] = [];
  while (performance.now() - start < options.durationMs) {
    await sleep(100 + random() * 400);
    const r = random();
    const leader = group.leaders()[0];
    if (r < 0.25 && leader && !leader.hooks.renewalsPaused) {
      const ms = 300 + random() * 1700;
      steps.push(`pause ${leader.id} ${ms.toFixed(0)}`);
      leader.hooks.pauseRenewals();
      timers.push(sleep(ms).then(() => leader.hooks.resumeRenewals()));
    } else if (r < 0.5) {
      const c = pick(live().filter((x) => !x.hooks.frozen));
      if (!c) continue;
      const ms = 300 + random() * 1700;
      steps.push(`freeze ${c.id} ${ms.toFixed(0)}`);
      c.hooks.freeze();
      timers.push(sleep(ms).then(() => c.hooks.thaw()));
    } else if (r < 0.7) {
      const c = pick(live());
      if (!c) continue;
      steps.push(`close ${c.id}`);
      await c.nc.close();
      await group.add(`p${next++}`);
    } else if (r < 0.8 && leader) {
      steps.push(`resign ${leader.id}`);
      await leader.election.resign();
    } else {
      steps.push('nothing');
    }
  }
  await Promise.all(timers);
  return { seed: options.seed, steps };
}
