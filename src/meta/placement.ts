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
