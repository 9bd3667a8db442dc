import { describe, expect, it } from 'vitest';
import { leastLoaded, planFollowers, planLeaders, planRegions } from '../../../src/meta/placement.js';

const shard = (id: number, leader: string | null, followers: string[] = []) => ({ id, leader, followers });
const idle = { placeNew: true, topology: 'dynamic' as const, busy: () => false };

describe('placement (pure functions)', () => {
  it('leastLoaded: fewest shards among the live nodes asked about, ties by lowest id', () => {
    const load = new Map([['n2', 1], ['n1', 1], ['n3', 0]]);
    expect(leastLoaded(load)).toBe('n3');
    expect(leastLoaded(load, ['n2', 'n1'])).toBe('n1');
    expect(leastLoaded(load, ['dead'])).toBeUndefined();
  });

  it('planLeaders: unplaced shards spread over the live nodes, counting what it assigns', () => {
    const plan = planLeaders([shard(0, null), shard(1, null), shard(2, null), shard(3, 'n1')], ['n1', 'n2'], idle);
    expect(plan.place).toEqual([
      { shard: 0, target: 'n2' },
      { shard: 1, target: 'n1' },
      { shard: 2, target: 'n2' },
    ]);
    expect(plan.failovers).toEqual([]);
    // Too few nodes up: nothing new is placed.
    expect(planLeaders([shard(0, null)], ['n1'], { ...idle, placeNew: false }).place).toEqual([]);
  });

  it("planLeaders: a dead leader's shard goes to its live follower first, else the least loaded node; static topology and running procedures wait", () => {
    const shards = [shard(0, 'dead', ['n2']), shard(1, 'dead'), shard(2, 'n1'), shard(3, 'n2')];
    expect(planLeaders(shards, ['n1', 'n2', 'n3'], idle).failovers).toEqual([
      { shard: 0, from: 'dead', target: 'n2', promoted: true },
      { shard: 1, from: 'dead', target: 'n3', promoted: false },
    ]);
    expect(planLeaders(shards, ['n1', 'n2', 'n3'], { ...idle, topology: 'static' }).failovers).toEqual([]);
    const busy = planLeaders(shards, ['n1', 'n2', 'n3'], { ...idle, busy: (id) => id === 1 });
    expect(busy.waiting).toEqual([1]);
    expect(busy.failovers.map((f) => f.shard)).toEqual([0]);
    expect(planLeaders(shards, [], idle)).toEqual({ place: [], failovers: [], waiting: [] });
  });

  it('planFollowers: replaces dead followers, adds missing ones on the least loaded nodes, never the leader, and moves one to a node two lighter', () => {
    const changes = planFollowers([shard(0, 'n1', ['dead']), shard(1, 'n2', []), shard(2, 'n3', ['n1'])], ['n1', 'n2', 'n3'], 1);
    expect(changes).toEqual([
      { shard: 0, followers: ['n2'] },
      { shard: 1, followers: ['n3'] },
    ]);
    // n4 joined empty (n1 carries 3, n2 2, n3 1): shard 0's follower moves to n4, then shard 1's from n1 to n3; shard 2's stays (n1 is then only one heavier).
    const rejoined = planFollowers([shard(0, 'n1', ['n2']), shard(1, 'n2', ['n1']), shard(2, 'n3', ['n1'])], ['n1', 'n2', 'n3', 'n4'], 1);
    expect(rejoined).toEqual([
      { shard: 0, followers: ['n4'] },
      { shard: 1, followers: ['n3'] },
    ]);
    // Fewer followers wanted than held: the extra ones go.
    expect(planFollowers([shard(0, 'n1', ['n2', 'n3'])], ['n1', 'n2', 'n3'], 1)).toEqual([{ shard: 0, followers: ['n2'] }]);
    // A shard whose leader is dead is failover's business, not this.
    expect(planFollowers([shard(0, 'dead', ['n2'])], ['n1', 'n2'], 1)).toEqual([]);
  });

  it('planRegions: each region on the shard holding the fewest, ties by lowest id', () => {
    expect(planRegions(new Map([[0, 2], [1, 0], [2, 1]]), 4)).toEqual([1, 1, 2, 0]);
    expect(planRegions(new Map([[3, 0]]), 2)).toEqual([3, 3]);
  });
});
