import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeRecord } from '../../../src/wal/codec.js';
import type { Entry } from '../../../src/wal/entry.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import type { EntryId, LogStore } from '../../../src/wal/log-store.js';
import { readEntries } from '../../../src/wal/shard-reader.js';
import { TopicWriter } from '../../../src/wal/topic-writer.js';
import { bytes, collect, expectCode, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * A LogStore wrapper that records each append's size and can fail chosen
 * appends (counted from 1), to watch and break the writer.
 */
class SpyStore implements LogStore {
  /** Records of each successful append. */
  readonly appends: number[] = [];
  /** Bytes of each successful append. */
  readonly appendBytes: number[] = [];
  failOn = new Set<number>();
  /** While set, appends wait for it before writing. */
  hold: Promise<void> | undefined;
  private calls = 0;

  constructor(private readonly inner: LogStore) {}

  get provider() {
    return this.inner.provider;
  }
  createTopic(topic: string) {
    return this.inner.createTopic(topic);
  }
  listTopics() {
    return this.inner.listTopics();
  }
  async append(topic: string, records: readonly Uint8Array[]): Promise<EntryId[]> {
    this.calls++;
    if (this.failOn.has(this.calls)) throw new Error(`injected failure of append #${this.calls}`);
    await this.hold;
    const ids = await this.inner.append(topic, records);
    this.appends.push(records.length);
    this.appendBytes.push(records.reduce((n, r) => n + r.length, 0));
    return ids;
  }
  read(...args: Parameters<LogStore['read']>) {
    return this.inner.read(...args);
  }
  tail(...args: Parameters<LogStore['tail']>) {
    return this.inner.tail(...args);
  }
  bounds(topic: string) {
    return this.inner.bounds(topic);
  }
  prune(topic: string, below: EntryId) {
    return this.inner.prune(topic, below);
  }
  close() {
    return this.inner.close();
  }
}

const data = (n: number, region = 1): Entry => ({ kind: 'data', region, epoch: 1, body: bytes(40 + (n % 50), n + 1) });

describe('TopicWriter', () => {
  let remove: () => Promise<void>;
  let local: LocalLogStore;
  let store: SpyStore;

  beforeEach(async () => {
    const tmp = await tempDir();
    remove = tmp.remove;
    local = await LocalLogStore.open(tmp.dir);
    await local.createTopic('t');
    store = new SpyStore(local);
  });
  afterEach(async () => {
    await local.close();
    await remove();
  });

  it('commits concurrent appends in groups and resolves each with its id', async () => {
    const writer = new TopicWriter(store, 't');
    const entries = Array.from({ length: 200 }, (_, i) => data(i, i % 5));
    const ids = await Promise.all(entries.map((e) => writer.append(e)));
    expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(store.appends.length).toBeLessThan(10);
    expect(writer.stats).toMatchObject({ appends: store.appends.length, records: 200, entries: 200, failedAppends: 0 });

    const back = await collect(readEntries(local, 't', 0));
    expect(back.map((e) => e.id)).toEqual(ids);
    for (const [i, e] of back.entries()) {
      expect(e.region).toBe(entries[i]!.region);
      expect(Array.from(e.body)).toEqual(Array.from(entries[i]!.body));
    }
    await writer.close();
  });

  it('keeps group-committing appends that arrive while one is in flight', async () => {
    const writer = new TopicWriter(store, 't');
    const first = writer.append(data(0));
    await Promise.resolve();
    await Promise.resolve();
    const later = Array.from({ length: 50 }, (_, i) => writer.append(data(i + 1)));
    expect(await first).toBe(0);
    expect(await Promise.all(later)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(store.appends.length).toBeLessThanOrEqual(3);
  });

  it('bounds each store append by maxBatchBytes', async () => {
    const writer = new TopicWriter(store, 't', { maxBatchBytes: 1000 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => writer.append(data(i))));
    expect(store.appends.length).toBeGreaterThan(5);
    for (const n of store.appendBytes) expect(n).toBeLessThanOrEqual(1000);
    expect(writer.stats.bytes).toBe(store.appendBytes.reduce((a, b) => a + b, 0));
  });

  it('rejects the entries of a failed append and carries on', async () => {
    const writer = new TopicWriter(store, 't');
    expect(await writer.append(data(0))).toBe(0);
    store.failOn.add(2);
    const failing = Array.from({ length: 5 }, (_, i) => writer.append(data(i + 1)));
    for (const p of failing) {
      const err = await expectCode(p, 'WAL_APPEND_FAILED');
      expect(err.message).toContain('"t"');
    }
    expect(writer.stats.failedAppends).toBe(1);
    const after = await Promise.all([writer.append(data(10)), writer.append(data(11))]);
    expect(after).toEqual([1, 2]);
    const back = await collect(readEntries(local, 't', 0));
    expect(back.map((e) => e.id)).toEqual([0, 1, 2]);
  });

  it('splits an entry larger than maxBatchBytes over consecutive appends and reassembles it', async () => {
    const writer = new TopicWriter(store, 't', { maxBatchBytes: MiB });
    const big: Entry = { kind: 'data', region: 9, epoch: 3, body: bytes(3 * MiB, 77) };
    const ids = await Promise.all([writer.append(data(1)), writer.append(big), writer.append(data(2))]);
    expect(store.appends.length).toBeGreaterThanOrEqual(4);
    expect(ids[0]).toBe(0);
    expect(ids[2]).toBe(ids[1]! + 1);

    // Its records are consecutive in the log, nothing in between.
    const records = await collect(local.read('t', 0));
    expect(records.length).toBe(ids[2]! + 1);
    const parts = records.slice(1, -1).map((r) => decodeRecord(r, 't'));
    expect(parts.map((p) => p.part)).toEqual(parts.map((_, i) => i));
    expect(parts.every((p) => p.region === 9 && p.parts === parts.length)).toBe(true);
    for (const r of records) expect(r.data.length).toBeLessThanOrEqual(MiB);

    const back = await collect(readEntries(local, 't', 0));
    expect(back.map((e) => e.id)).toEqual(ids);
    expect(back[1]!.firstId).toBe(1);
    expect(Buffer.from(back[1]!.body).equals(Buffer.from(big.body))).toBe(true);
  });

  it('does not send the rest of a split entry after a failed append (the head stays a torn entry)', async () => {
    const writer = new TopicWriter(store, 't', { maxBatchBytes: 64 * 1024 });
    store.failOn.add(2);
    const big = writer.append({ kind: 'data', region: 1, epoch: 1, body: bytes(200 * 1024) });
    await expectCode(big, 'WAL_APPEND_FAILED');
    expect(await writer.append(data(5, 2))).toBe(1);
    const assembled = await collect(readEntries(local, 't', 0));
    expect(assembled.map((e) => e.region)).toEqual([2]);
  });

  it('calls onDurable in id order before each append resolves', async () => {
    const seen: [EntryId, number][] = [];
    const writer = new TopicWriter(store, 't', {
      onDurable: (entry, id) => {
        seen.push([id, entry.region]);
        if (entry.region === 3) throw new Error('apply failed');
      },
    });
    const results = await Promise.allSettled([1, 2, 3, 4].map((r) => writer.append(data(r, r))));
    expect(seen).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
  });

  it('appendMany returns ids in order and queues nothing if one entry cannot be encoded', async () => {
    const writer = new TopicWriter(store, 't');
    expect(await writer.appendMany([data(1), data(2), data(3)])).toEqual([0, 1, 2]);
    await expectCode(writer.appendMany([data(4), { ...data(5), region: -1 }]), 'INVALID_ARGUMENT');
    expect((await local.bounds('t')).next).toBe(3);
  });

  it('throws ENTRY_TOO_LARGE when maxBatchBytes cannot hold a record', async () => {
    const writer = new TopicWriter(store, 't', { maxBatchBytes: 16 });
    await expectCode(writer.append(data(1)), 'ENTRY_TOO_LARGE');
    expect(() => new TopicWriter(store, 't', { maxBatchBytes: 0 })).toThrow(/maxBatchBytes/);
  });

  it('close waits for the append in flight and rejects the queued ones with CLOSED', async () => {
    const writer = new TopicWriter(store, 't');
    const first = writer.append(data(0));
    await Promise.resolve();
    await Promise.resolve(); // the first append is now in flight
    const queued = expectCode(writer.append(data(1)), 'CLOSED');
    await writer.close();
    expect(await first).toBe(0);
    await queued;
    await expectCode(writer.append(data(2)), 'CLOSED');
    expect((await local.bounds('t')).next).toBe(1);
  });

  it('drops entries whose deadline passes while they queue, before their append starts, and writes the rest', async () => {
    const writer = new TopicWriter(store, 't');
    let release!: () => void;
    store.hold = new Promise((r) => (release = r));
    const inFlight = writer.append(data(0), { at: Date.now() + 10 });
    await Promise.resolve();
    await Promise.resolve(); // in flight: its deadline no longer matters
    const gone = new AbortController();
    const timedOut = expectCode(writer.append(data(1), { at: Date.now() + 20 }), 'DEADLINE_EXCEEDED');
    const abandoned = expectCode(writer.append(data(2), { signal: gone.signal }), 'DEADLINE_EXCEEDED');
    const waiting = writer.append(data(3), { at: Date.now() + 60_000 });
    const plain = writer.append(data(4));
    await new Promise((r) => setTimeout(r, 40));
    gone.abort();
    release();
    expect(await inFlight).toBe(0);
    expect((await timedOut).message).toMatch(/WAL topic "t".*deadline passed \d+ ms ago.*nothing was written/);
    expect((await abandoned).message).toMatch(/client went away/);
    expect(await Promise.all([waiting, plain])).toEqual([1, 2]);
    expect(writer.stats.expired).toBe(2);
    const back = await collect(readEntries(local, 't', 0));
    expect(back.map((e) => Array.from(e.body))).toEqual([0, 3, 4].map((n) => Array.from(data(n).body)));
    await expectCode(writer.append(data(5), { at: Date.now() - 1 }), 'DEADLINE_EXCEEDED');
  });
});
