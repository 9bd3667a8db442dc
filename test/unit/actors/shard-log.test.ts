import { describe, expect, it } from 'vitest';
import type { RegionActor } from '../../../src/actors/region.js';
import { ShardLog, type ShardLogHost } from '../../../src/actors/shard-log.js';
import type { Entry } from '../../../src/wal/entry.js';

/** A region that records what it is given and reports a memtable size. */
function region(id: number) {
  const applied: number[] = [];
  let bytes = 0;
  const actor = {
    id,
    apply: (entryId: number, body: Uint8Array) => {
      applied.push(entryId);
      bytes += body.byteLength;
    },
    memtableBytes: () => bytes,
  } as unknown as RegionActor;
  return { actor, applied };
}

function host(regions: Map<number, RegionActor>) {
  const calls: string[] = [];
  const h: ShardLogHost = {
    region: (id) => regions.get(id),
    flushDue: (entryId, source) => void calls.push(`flush ${source} ${entryId}`),
    followRegionCreate: (id, at) => void calls.push(`create ${id} at ${at}`),
    followRegionDrop: (id) => void calls.push(`drop ${id}`),
    followFlush: (at) => void calls.push(`reload at ${at}`),
    followEpoch: (epoch) => void calls.push(`epoch ${epoch}`),
    followedAt: (entryId) => void calls.push(`lag ${entryId}`),
  };
  return { h, calls };
}

const data = (regionId: number, bytes: number): Entry => ({ kind: 'data', region: regionId, epoch: 1, body: new Uint8Array(bytes) });
const marker = (kind: Entry['kind'], regionId = 0): Entry => ({ kind, region: regionId, epoch: 3, body: new Uint8Array() });

describe('ShardLog: the one apply path of a shard', () => {
  it('applies data from every source to its region and keeps the position; reapplied entries move nothing', () => {
    const r1 = region(1);
    const { h } = host(new Map([[1, r1.actor]]));
    const log = new ShardLog(h, { memtableBytes: 1e9, walBytes: 1e9, nodeMemtableBytes: 1e9 });
    log.apply(data(1, 10), 0, 'replayed');
    log.apply(data(1, 10), 1, 'written');
    log.apply(data(1, 10), 2, 'followed');
    log.apply(data(2, 10), 3, 'written'); // a region it does not host: position only
    expect(r1.applied).toEqual([0, 1, 2]);
    expect(log.appliedEntryId).toBe(3);
    log.reapply(data(1, 10), 1, new Map([[1, r1.actor]]));
    expect(r1.applied).toEqual([0, 1, 2, 1]);
    expect(log.appliedEntryId).toBe(3);
    log.advanceTo(2);
    expect(log.appliedEntryId).toBe(3);
  });

  it('asks for a flush past the policy for written and replayed data, never for a follower; a flush resets the WAL bytes', () => {
    const r1 = region(1);
    const { h, calls } = host(new Map([[1, r1.actor]]));
    const log = new ShardLog(h, { memtableBytes: 1e9, walBytes: 25, nodeMemtableBytes: 1e9 });
    log.apply(data(1, 10), 0, 'written');
    log.apply(data(1, 10), 1, 'followed');
    log.apply(data(1, 10), 2, 'written');
    expect(calls).toEqual([]);
    log.apply(data(1, 10), 3, 'replayed');
    expect(calls).toEqual(['flush replayed 3']);
    log.flushStarted();
    log.apply(data(1, 10), 4, 'written');
    expect(calls).toEqual(['flush replayed 3']);
  });

  it("hands a follower the leader's creates, drops, flushes and epochs; a leader's own are position only", () => {
    const { h, calls } = host(new Map([[1, region(1).actor]]));
    const log = new ShardLog(h, { memtableBytes: 1e9, walBytes: 1e9, nodeMemtableBytes: 1e9 });
    for (const [source, base] of [['written', 0], ['replayed', 10], ['followed', 20]] as const) {
      log.apply(marker('region_create', 7), base, source);
      log.apply(marker('region_drop', 7), base + 1, source);
      log.apply(marker('flushed'), base + 2, source);
      log.apply(marker('epoch'), base + 3, source);
    }
    expect(calls).toEqual(['create 7 at 20', 'drop 7', 'reload at 22', 'epoch 3']);
    expect(log.appliedEntryId).toBe(23);
    log.apply(data(1, 1), 24, 'followed', Date.now());
    expect(calls.at(-1)).toBe('lag 24');
  });
});
