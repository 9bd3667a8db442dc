import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import type { LogRecord, LogStore } from '../../../src/wal/log-store.js';
import { bytes, collect, expectCode, ids, tempDir, utf8, waitFor } from './helpers.js';
import { logStoreContract } from './logstore-contract.js';

logStoreContract('local (LevelDB)', async () => {
  const { dir, remove } = await tempDir();
  let store = await LocalLogStore.open(dir);
  return {
    store,
    reopen: async () => {
      await store.close();
      store = await LocalLogStore.open(dir);
      return store;
    },
    cleanup: async () => {
      await store.close();
      await remove();
    },
  };
});

describe('LocalLogStore', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let store: LocalLogStore;

  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
    store = await LocalLogStore.open(dir);
  });
  afterEach(async () => {
    await store.close();
    await remove();
  });

  const records = (n: number, tag = 'r') => Array.from({ length: n }, (_, i) => utf8(`${tag}${i}`));

  it('is the local provider', () => {
    expect(store.provider).toBe('local');
  });

  it('rejects every call with CLOSED after close()', async () => {
    await store.createTopic('t');
    await store.append('t', records(2));
    await store.close();
    await store.close(); // idempotent
    await expectCode(store.createTopic('u'), 'CLOSED');
    await expectCode(store.listTopics(), 'CLOSED');
    await expectCode(store.append('t', records(1)), 'CLOSED');
    await expectCode(collect(store.read('t', 0)), 'CLOSED');
    await expectCode(
      store.tail('t', 0, () => undefined),
      'CLOSED',
    );
    await expectCode(store.bounds('t'), 'CLOSED');
    await expectCode(store.prune('t', 1), 'CLOSED');
  });

  it('finishes the appends accepted before close() and rejects later ones', async () => {
    await store.createTopic('t');
    const first = store.append('t', records(1));
    const second = store.append('t', records(2));
    const closing = store.close();
    await expectCode(store.append('t', records(1)), 'CLOSED');
    expect(await first).toEqual([0]);
    expect(await second).toEqual([1, 2]);
    await closing;
    store = await LocalLogStore.open(dir);
    expect(await store.bounds('t')).toEqual({ earliest: 0, next: 3 });
  });

  it('rejects NOT_FOUND for appends, reads, tails and prunes of unknown topics', async () => {
    await expectCode(store.append('nope', records(1)), 'NOT_FOUND');
    await expectCode(collect(store.read('nope', 0)), 'NOT_FOUND');
    await expectCode(
      store.tail('nope', 0, () => undefined),
      'NOT_FOUND',
    );
    await expectCode(store.prune('nope', 0), 'NOT_FOUND');
  });

  it('rejects invalid topic names and ids', async () => {
    await expectCode(store.createTopic(''), 'INVALID_ARGUMENT');
    await store.createTopic('t');
    await expectCode(collect(store.read('t', -1)), 'INVALID_ARGUMENT');
    await expectCode(store.prune('t', 1.5), 'INVALID_ARGUMENT');
  });

  it('persists the earliest id after prune and reopen', async () => {
    await store.createTopic('a');
    await store.createTopic('b');
    await store.append('a', records(10));
    await store.append('b', records(3));
    await store.prune('a', 7);
    await store.prune('a', 4); // never moves back
    await store.close();
    store = await LocalLogStore.open(dir);
    expect(await store.bounds('a')).toEqual({ earliest: 7, next: 10 });
    expect(await store.bounds('b')).toEqual({ earliest: 0, next: 3 });
    await expectCode(collect(store.read('a', 6)), 'WAL_TRUNCATED');
    expect(ids(await collect(store.read('a', 7)))).toEqual([7, 8, 9]);
  });

  it('keeps the next id of a topic pruned empty across reopen', async () => {
    await store.createTopic('t');
    await store.append('t', records(5));
    await store.prune('t', 100); // clamped to next
    expect(await store.bounds('t')).toEqual({ earliest: 5, next: 5 });
    await store.close();
    store = await LocalLogStore.open(dir);
    expect(await store.bounds('t')).toEqual({ earliest: 5, next: 5 });
    expect(await store.append('t', records(2))).toEqual([5, 6]);
    expect(ids(await collect(store.read('t', 5)))).toEqual([5, 6]);
  });

  it('gives the disk of pruned records back (compacts the pruned range)', async () => {
    await store.createTopic('t');
    // 12 MB of incompressible records: several LevelDB write buffers, so most reach .ldb tables.
    for (let i = 0; i < 48; i++) await store.append('t', Array.from({ length: 4 }, (_, k) => bytes(64 * 1024, i * 4 + k + 1)));
    await store.prune('t', 192);
    await store.close();
    // What is left: the live metadata, LevelDB's small files, the high-water mark.
    expect(await directoryBytes(dir)).toBeLessThan(2 * 1024 * 1024);
    store = await LocalLogStore.open(dir);
    expect(await store.bounds('t')).toEqual({ earliest: 192, next: 192 });
  });

  it('stores empty records and reads across many iterator batches', async () => {
    await store.createTopic('t');
    expect(await store.append('t', [new Uint8Array(0)])).toEqual([0]);
    for (let i = 0; i < 5; i++) await store.append('t', records(1000, `b${i}-`));
    const all = await collect(store.read('t', 0));
    expect(all.length).toBe(5001);
    expect(all[0]!.data.length).toBe(0);
    expect(ids(all)).toEqual(Array.from({ length: 5001 }, (_, i) => i));
    expect(new TextDecoder().decode(all[5000]!.data)).toBe('b4-999');
  });

  it('can stop a read early and still close cleanly', async () => {
    await store.createTopic('t');
    await store.append('t', records(2500));
    let seen = 0;
    for await (const r of store.read('t', 0)) {
      seen = r.id;
      if (r.id === 1200) break;
    }
    expect(seen).toBe(1200);
  });

  it('finishes a read that started before a prune (reads see a snapshot)', async () => {
    await store.createTopic('t');
    await store.append('t', records(3000));
    const iterator = store.read('t', 0)[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.value).toMatchObject({ id: 0 });
    await store.prune('t', 2500);
    let count = 1;
    for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
      expect(r.value.id).toBe(count);
      count++;
    }
    expect(count).toBe(3000);
  });

  it('fails an append with WAL_APPEND_FAILED without using up ids', async () => {
    await store.createTopic('t');
    await store.append('t', records(2));
    const db = (store as unknown as { db: { batch: () => unknown } }).db;
    const spy = vi.spyOn(db, 'batch').mockReturnValueOnce({
      put: () => undefined,
      write: () => Promise.reject(new Error('disk full')),
      close: () => Promise.resolve(),
    });
    const err = await expectCode(store.append('t', records(3)), 'WAL_APPEND_FAILED');
    expect(err.message).toContain('"t"');
    expect(err.message).toContain('2..4');
    spy.mockRestore();
    expect(await store.append('t', records(1, 'after'))).toEqual([2]);
    expect(await store.bounds('t')).toEqual({ earliest: 0, next: 3 });
  });

  it('a lagging tail falls back to reading the store and still misses nothing', async () => {
    await store.createTopic('t');
    const received: LogRecord[] = [];
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const sub = await store.tail('t', 0, async (r) => {
      received.push(r);
      if (r.id === 0) await gate;
    });
    await store.append('t', [bytes(10, 1)]);
    await waitFor(() => received.length === 1, 10_000, 'first record');
    // While the subscriber is stuck, append more than its in-memory buffer holds.
    for (let i = 0; i < 20; i++) await store.append('t', [bytes(1024 * 1024, i + 2)]);
    release();
    await waitFor(() => received.length === 21, 20_000, 'all records');
    await sub.close();
    expect(ids(received)).toEqual(Array.from({ length: 21 }, (_, i) => i));
    expect(Array.from(received[20]!.data.subarray(0, 8))).toEqual(Array.from(bytes(8, 21)));
  });

  it('ends tails when the store closes, and reports a callback error through onError', async () => {
    await store.createTopic('t');
    await store.append('t', records(3));
    const errors: Error[] = [];
    const seen: number[] = [];
    await store.tail(
      't',
      0,
      (r) => {
        seen.push(r.id);
        if (r.id === 1) throw new Error('consumer broke');
      },
      (e) => errors.push(e),
    );
    await waitFor(() => errors.length === 1, 10_000, 'callback error');
    expect(seen).toEqual([0, 1]);
    expect(errors[0]!.message).toBe('consumer broke');

    const live: number[] = [];
    await store.tail('t', 3, (r) => {
      live.push(r.id);
    });
    await store.close();
    expect(live).toEqual([]);
  });

  it('recovers topics and bounds written by an earlier process', async () => {
    const other: LogStore = store;
    await other.createTopic('x');
    await other.createTopic('y');
    await other.append('y', records(4));
    await other.close();
    store = await LocalLogStore.open(dir);
    expect(await store.listTopics()).toEqual(['x', 'y']);
    await store.createTopic('z');
    expect(await store.append('z', records(1))).toEqual([0]);
    expect(await store.bounds('y')).toEqual({ earliest: 0, next: 4 });
    expect(await collect(store.read('x', 0))).toEqual([]);
  });
});

describe('LocalLogStore.open', () => {
  it('refuses a directory another store holds open, saying so', async () => {
    const { dir, remove } = await tempDir();
    const first = await LocalLogStore.open(dir);
    try {
      const err = await expectCode(LocalLogStore.open(dir), 'INTERNAL');
      expect(err.message).toContain(dir);
      expect(err.message).toMatch(/in use by another process/);
    } finally {
      await first.close();
      await remove();
    }
  });
});

async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(join(dir, name))).size;
  return total;
}
