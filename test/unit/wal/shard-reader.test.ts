import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeEntry } from '../../../src/wal/codec.js';
import type { Entry, EntryKind, LoggedEntry } from '../../../src/wal/entry.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import { EpochFence, readEntries, replayShard, type ReplayProgress } from '../../../src/wal/shard-reader.js';
import { TopicWriter } from '../../../src/wal/topic-writer.js';
import { bytes, collect, expectCode, tempDir } from './helpers.js';

const e = (kind: EntryKind, epoch: number, region = 0, body: Uint8Array = new Uint8Array(0)): Entry => ({ kind, region, epoch, body });
const text = (s: string) => new TextEncoder().encode(s);

describe('shard reader', () => {
  let remove: () => Promise<void>;
  let store: LocalLogStore;

  beforeEach(async () => {
    const tmp = await tempDir();
    remove = tmp.remove;
    store = await LocalLogStore.open(tmp.dir);
    await store.createTopic('shard_1');
  });
  afterEach(async () => {
    await store.close();
    await remove();
  });

  async function write(entries: Entry[], maxBatchBytes?: number): Promise<number[]> {
    const writer = new TopicWriter(store, 'shard_1', maxBatchBytes ? { maxBatchBytes } : {});
    const ids = await writer.appendMany(entries);
    await writer.close();
    return ids;
  }

  it('fences entries of a lower epoch that follow a higher epoch marker', async () => {
    await write([
      e('topic_marker', 0),
      e('epoch', 1),
      e('data', 1, 1, text('a')), // kept: no higher marker yet
      e('data', 2, 1, text('b')), // kept: a higher epoch is not fenced
      e('data', 1, 2, text('c')), // kept
      e('epoch', 2),
      e('data', 1, 1, text('zombie-1')), // fenced
      e('data', 2, 2, text('d')),
      e('region_create', 1, 3), // fenced: every non-marker kind is fenced
      e('epoch', 1), // a stale marker is delivered but lowers nothing
      e('data', 1, 1, text('zombie-2')), // fenced
      e('data', 3, 1, text('e')),
    ]);
    const delivered: LoggedEntry[] = [];
    const stats = await replayShard(store, 'shard_1', { from: 0, onEntry: (x) => void delivered.push(x) });
    const bodies = delivered.filter((x) => x.kind === 'data').map((x) => new TextDecoder().decode(x.body));
    expect(bodies).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(delivered.map((x) => x.kind)).toEqual([
      'topic_marker',
      'epoch',
      'data',
      'data',
      'data',
      'epoch',
      'data',
      'epoch',
      'data',
    ]);
    expect(stats).toMatchObject({ entries: 9, records: 12, fencedEntries: 3, tornEntries: 0, lastId: 11 });
    expect(stats.bytes).toBeGreaterThan(0);
  });

  it('a fence seeded with a pruned marker drops what a deposed leader appended after it, and reports the epoch at an id', () => {
    const fence = new EpochFence();
    const entry = (id: number, kind: 'data' | 'epoch', epoch: number) => ({ id, firstId: id, bytes: 1, kind, region: kind === 'data' ? 1 : 0, epoch, body: new Uint8Array() });
    fence.seed(14, 3); // a manifest: flushed up to 14 under the fence of epoch 3 (its marker pruned)
    expect(fence.admit(entry(15, 'data', 1))).toBe(false);
    expect(fence.admit(entry(16, 'data', 3))).toBe(true);
    expect(fence.admit(entry(13, 'data', 1))).toBe(true); // before the marker: the old leader's, legitimately
    expect(fence.admit(entry(18, 'epoch', 4))).toBe(true);
    fence.seed(10, 2); // out of order, lower: kept in id order
    expect(fence.admit(entry(12, 'data', 1))).toBe(false);
    expect([fence.epochAt(9), fence.epochAt(10), fence.epochAt(17), fence.epochAt(18)]).toEqual([0, 2, 3, 4]);
  });

  it('reports progress while replaying and once at the end', async () => {
    const entries = Array.from({ length: 3000 }, (_, i) => e('data', 1, i % 4, bytes(100, i + 1)));
    const ids = await write(entries);
    const progress: ReplayProgress[] = [];
    let seen = 0;
    const stats = await replayShard(store, 'shard_1', {
      from: 0,
      progressEveryMs: 0,
      onEntry: async (x) => {
        seen++;
        // Slow down a little now and then so that time passes between checks.
        if (x.id % 500 === 0) await new Promise((r) => setTimeout(r, 2));
      },
      onProgress: (p) => progress.push(p),
    });
    expect(seen).toBe(3000);
    expect(progress.length).toBeGreaterThan(2);
    const last = progress[progress.length - 1]!;
    expect(last).toMatchObject({ entries: 3000, lastId: ids[2999], targetId: ids[2999], bytes: stats.bytes });
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i]!.entries).toBeGreaterThanOrEqual(progress[i - 1]!.entries);
      expect(progress[i]!.lastId).toBeGreaterThanOrEqual(progress[i - 1]!.lastId);
    }
    expect(stats.elapsedMs).toBeGreaterThanOrEqual(last.elapsedMs);
  });

  it('rejects WAL_TRUNCATED when the log no longer holds `from`', async () => {
    await write(Array.from({ length: 10 }, (_, i) => e('data', 1, 1, text(`${i}`))));
    await store.prune('shard_1', 5);
    const err = await expectCode(
      replayShard(store, 'shard_1', { from: 2, onEntry: () => undefined }),
      'WAL_TRUNCATED',
    );
    expect(err.message).toContain('shard_1');
    await expectCode(collect(readEntries(store, 'shard_1', 0)), 'WAL_TRUNCATED');
    const rest = await collect(readEntries(store, 'shard_1', 5));
    expect(rest.map((x) => x.id)).toEqual([5, 6, 7, 8, 9]);
  });

  it('stops at `to`, defaulting to the end at the start of the replay', async () => {
    await write(Array.from({ length: 5 }, (_, i) => e('data', 1, 1, text(`${i}`))));
    const upTo3 = await collect(readEntries(store, 'shard_1', 0, { to: 3 }));
    expect(upTo3.map((x) => x.id)).toEqual([0, 1, 2]);

    const writer = new TopicWriter(store, 'shard_1');
    const seen: number[] = [];
    const stats = await replayShard(store, 'shard_1', {
      from: 1,
      onEntry: async (x) => {
        seen.push(x.id);
        if (x.id === 1) await writer.append(e('data', 1, 1, text('late')));
      },
    });
    await writer.close();
    expect(seen).toEqual([1, 2, 3, 4]);
    expect(stats.lastId).toBe(4);
    expect((await store.bounds('shard_1')).next).toBe(6);
  });

  it('reassembles split entries, leaves out one cut by `to` and counts torn ones', async () => {
    const big = e('data', 1, 7, bytes(5000, 3));
    const ids = await write([e('data', 1, 1, text('x')), big, e('data', 1, 2, text('y'))], 1024);
    expect(ids[1]! - ids[0]!).toBeGreaterThan(2);

    const cut = await collect(readEntries(store, 'shard_1', 0, { to: ids[1]! }));
    expect(cut.map((x) => x.region)).toEqual([1]);

    // A writer that crashed after writing the first two parts of an entry.
    const torn = encodeEntry(e('data', 1, 8, bytes(5000, 4)), 1024);
    await store.append('shard_1', torn.slice(0, 2));
    await write([e('data', 1, 9, text('z'))]);

    const delivered: LoggedEntry[] = [];
    const stats = await replayShard(store, 'shard_1', { from: 0, onEntry: (x) => void delivered.push(x) });
    expect(delivered.map((x) => x.region)).toEqual([1, 7, 2, 9]);
    expect(Buffer.from(delivered[1]!.body).equals(Buffer.from(big.body))).toBe(true);
    expect(delivered[1]!.firstId).toBe(ids[0]! + 1);
    expect(stats.tornEntries).toBe(1);
  });
});
