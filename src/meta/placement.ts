import type { ShardInfo } from './model.js';

/** Pure placement decisions of meta, tested as functions. */

/** A shard moving from one node to another. */
export interface Move {
  readonly shard: number;
  readonly from: string;
  readonly to: string;
}

/**
 * One rebalancing move, or null when leader counts of the live nodes differ
 * by at most one: a shard of the most loaded node goes to the least loaded
 * one (ties: lowest node id), first a shard the target follows, then the
 * lowest id. Shards in `avoid` (placed by an operator) move last: another
 * node as loaded gives one of its own shards instead, and only a node with
 * nothing else gives an avoided one.
 */
export function planRebalanceMove(shards: readonly (Pick<ShardInfo, 'id' | 'leader'> & { readonly followers?: readonly string[] })[], live: readonly string[], avoid: ReadonlySet<number> = new Set()): Move | null {
  const load = new Map([...live].sort().map((id) => [id, [] as number[]]));
  for (const shard of shards) if (shard.leader !== null) load.get(shard.leader)?.push(shard.id);
  if (load.size < 2) return null;
  const byLoad = [...load.entries()].sort((a, b) => a[1].length - b[1].length || (a[0] < b[0] ? -1 : 1));
  const [to, least] = byLoad[0]!;
  const most = Math.max(...byLoad.map(([, s]) => s.length));
  if (most - least.length <= 1) return null;
  // A shard the target follows moves fastest: it is promoted, not opened.
  const followedByTarget = new Set(shards.filter((s) => s.followers?.includes(to)).map((s) => s.id));
  const preferred = (a: number, b: number) => Number(followedByTarget.has(b)) - Number(followedByTarget.has(a)) || a - b;
  const givers = byLoad.filter(([, held]) => held.length === most);
  // Only when every shard of the most loaded nodes was placed by an operator does the preference give way to balance.
  const [from, held] = givers.find(([, held]) => held.some((id) => !avoid.has(id))) ?? givers[0]!;
  const movable = held.filter((id) => !avoid.has(id));
  const shard = (movable.length > 0 ? movable : [...held]).sort(preferred)[0]!;
  return { shard, from, to };
}

/** The node with the fewest shards among `among` (all of `load` by default) that `load` knows (live), ties by lowest id. */
export function leastLoaded(load: ReadonlyMap<string, number>, among: readonly string[] = [...load.keys()]): string | undefined {
  let best: string | undefined;
  for (const id of among) {
    const n = load.get(id);
    if (n === undefined) continue;
    if (best === undefined || n < load.get(best)! || (n === load.get(best)! && id < best)) best = id;
  }
  return best;
}

/** What placement decided for shards whose leader is not alive. */
export interface LeaderPlan {
  /** Shards nobody led: give them to `target`. */
  readonly place: { readonly shard: number; readonly target: string }[];
  /** Shards of a dead leader: fail them over to `target` (`promoted`: a live follower of it). */
  readonly failovers: { readonly shard: number; readonly from: string; readonly target: string; readonly promoted: boolean }[];
  /** Shards of a dead leader left to the procedure already running on them. */
  readonly waiting: number[];
}

/**
 * Leaders for the shards whose leader is not alive: each goes to a live
 * follower of it first (the least loaded), else to the least loaded live
 * node, counting the shards assigned so far. Unplaced shards wait for
 * `placeNew` (enough nodes up); a dead leader's shards stay with it in the
 * static topology, and wait for a procedure already running on them (`busy`).
 */
export function planLeaders(
  shards: readonly Pick<ShardInfo, 'id' | 'leader' | 'followers'>[],
  alive: readonly string[],
  options: { readonly placeNew: boolean; readonly topology: 'static' | 'dynamic'; readonly busy: (shard: number) => boolean },
): LeaderPlan {
  const plan: LeaderPlan = { place: [], failovers: [], waiting: [] };
  const load = new Map(alive.map((id) => [id, 0]));
  for (const shard of shards) if (shard.leader !== null && load.has(shard.leader)) load.set(shard.leader, load.get(shard.leader)! + 1);
  if (load.size === 0) return plan;
  for (const shard of shards) {
    const from = shard.leader;
    if (from !== null && load.has(from)) continue;
    if (from !== null && options.topology === 'static') continue;
    if (from === null && !options.placeNew) continue;
    if (from !== null && options.busy(shard.id)) {
      plan.waiting.push(shard.id);
      continue;
    }
    const standby = leastLoaded(load, shard.followers);
    const target = standby ?? leastLoaded(load)!;
    load.set(target, load.get(target)! + 1);
    if (from === null) plan.place.push({ shard: shard.id, target });
    else plan.failovers.push({ shard: shard.id, from, target, promoted: standby !== undefined });
  }
  return plan;
}

/**
 * `want` hot standbys per shard led by a live node, on live nodes other
 * than its leader: dead ones replaced, missing ones added on the least
 * loaded nodes (leaders and followers both count), and a follower moved to
 * a node carrying two or more fewer shards (one that rejoined). Returns the
 * shards whose followers change, with the new list.
 */
export function planFollowers(shards: readonly Pick<ShardInfo, 'id' | 'leader' | 'followers'>[], alive: readonly string[], want: number): { readonly shard: number; readonly followers: string[] }[] {
  const live = new Set(alive);
  const load = new Map(alive.map((id) => [id, 0]));
  const count = (id: string, by: number) => load.has(id) && load.set(id, load.get(id)! + by);
  for (const shard of shards) {
    if (shard.leader !== null) count(shard.leader, 1);
    for (const f of shard.followers) count(f, 1);
  }
  const changes: { shard: number; followers: string[] }[] = [];
  for (const shard of shards) {
    if (shard.leader === null || !live.has(shard.leader)) continue;
    const leader = shard.leader;
    const keep = shard.followers.filter((n) => live.has(n) && n !== leader);
    for (const n of keep.splice(want)) count(n, -1);
    const candidates = () => alive.filter((n) => n !== leader && !keep.includes(n));
    while (keep.length < want) {
      const next = leastLoaded(load, candidates());
      if (next === undefined) break;
      keep.push(next);
      count(next, 1);
    }
    const idle = leastLoaded(load, candidates());
    const busiest = keep.slice().sort((a, b) => load.get(b)! - load.get(a)!)[0];
    if (idle !== undefined && busiest !== undefined && load.get(busiest)! - load.get(idle)! >= 2) {
      keep[keep.indexOf(busiest)] = idle;
      count(busiest, -1);
      count(idle, 1);
    }
    if (keep.join(',') !== shard.followers.join(',')) changes.push({ shard: shard.id, followers: keep });
  }
  return changes;
}

/**
 * The shard of each of a new table's `partitions` regions: the shard
 * holding the fewest regions (`regionsPerShard`, which lists every shard a
 * region may go to), ties by lowest id, counting the ones placed so far.
 */
export function planRegions(regionsPerShard: ReadonlyMap<number, number>, partitions: number): number[] {
  const load = new Map(regionsPerShard);
  const shards: number[] = [];
  for (let p = 0; p < partitions; p++) {
    const [shard] = [...load.entries()].sort((a, b) => a[1] - b[1] || a[0] - b[0])[0]!;
    load.set(shard, load.get(shard)! + 1);
    shards.push(shard);
  }
  return shards;
}
