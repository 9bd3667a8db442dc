import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LogRecord, LogStore } from '../../../src/wal/log-store.js';
import { bytes, collect, expectCode, ids, utf8, waitFor } from './helpers.js';

export interface LogStoreFixture {
  readonly store: LogStore;
  /** Close the current store and open a new one over the same data. */
  readonly reopen?: () => Promise<LogStore>;
  /** Close whichever store is open and remove its data. */
  readonly cleanup: () => Promise<void>;
}

/**
 * The behaviour every LogStore provider must have, using nothing but the
 * interface. Topic names are unique per test so that providers backed by a
 * shared cluster can reuse one.
 */
export function logStoreContract(name: string, factory: () => Promise<LogStoreFixture>): void {
  describe(`LogStore contract: ${name}`, () => {
    let fixture: LogStoreFixture;
    let store: LogStore;
    let seq = 0;
    const topicName = (label: string) => `contract-${label}-${process.pid}-${Date.now().toString(36)}-${seq++}`;

    beforeEach(async () => {
      fixture = await factory();
      store = fixture.store;
    });
    afterEach(async () => {
      await fixture.cleanup();
    });

    async function newTopic(label: string): Promise<string> {
      const topic = topicName(label);
      await store.createTopic(topic);
      return topic;
    }

    const rec = (s: string) => utf8(s);
    const text = (r: LogRecord) => new TextDecoder().decode(r.data);

    it('assigns contiguous ids from 0 across appends', async () => {
      const topic = await newTopic('ids');
      expect(await store.append(topic, [rec('a'), rec('b'), rec('c')])).toEqual([0, 1, 2]);
      expect(await store.append(topic, [rec('d'), rec('e')])).toEqual([3, 4]);
      expect(await store.append(topic, [rec('f')])).toEqual([5]);
      expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 6 });
      const all = await collect(store.read(topic, 0));
      expect(ids(all)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(all.map(text)).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    });

    it('reads ranges, honouring from and to', async () => {
      const topic = await newTopic('ranges');
      await store.append(
        topic,
        Array.from({ length: 10 }, (_, i) => rec(`r${i}`)),
      );
      expect(ids(await collect(store.read(topic, 4)))).toEqual([4, 5, 6, 7, 8, 9]);
      const middle = await collect(store.read(topic, 2, { to: 5 }));
      expect(ids(middle)).toEqual([2, 3, 4]);
      expect(middle.map(text)).toEqual(['r2', 'r3', 'r4']);
      expect(await collect(store.read(topic, 10))).toEqual([]);
      expect(await collect(store.read(topic, 3, { to: 3 }))).toEqual([]);
      expect(ids(await collect(store.read(topic, 8, { to: 100 })))).toEqual([8, 9]);
    });

    it('does not chase records appended while a read runs', async () => {
      const topic = await newTopic('read-end');
      await store.append(topic, [rec('a'), rec('b')]);
      const iterator = store.read(topic, 0)[Symbol.asyncIterator]();
      const first = await iterator.next();
      expect(first.done ? undefined : first.value.id).toBe(0);
      await store.append(topic, [rec('c')]);
      const rest: number[] = [];
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) rest.push(r.value.id);
      expect(rest).toEqual([1]);
    });

    it('reports bounds of an empty topic and creates topics idempotently', async () => {
      const topic = await newTopic('empty');
      expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 0 });
      expect(await collect(store.read(topic, 0))).toEqual([]);
      await store.append(topic, [rec('x')]);
      await store.createTopic(topic);
      expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 1 });
      expect(await store.listTopics()).toContain(topic);
    });

    it('rejects NOT_FOUND for an unknown topic', async () => {
      const err = await expectCode(store.bounds(topicName('missing')), 'NOT_FOUND');
      expect(err.message).toContain('contract-missing');
    });

    it('applies concurrent appends in call order', async () => {
      const topic = await newTopic('concurrent');
      const calls = Array.from({ length: 40 }, (_, i) =>
        store.append(
          topic,
          Array.from({ length: (i % 3) + 1 }, (_, j) => rec(`${i}.${j}`)),
        ),
      );
      const results = await Promise.all(calls);
      let next = 0;
      for (const [i, got] of results.entries()) {
        const expected = Array.from({ length: (i % 3) + 1 }, (_, j) => next + j);
        expect(got).toEqual(expected);
        next += expected.length;
      }
      const all = await collect(store.read(topic, 0));
      expect(all.map(text)).toEqual(results.flatMap((got, i) => got.map((_, j) => `${i}.${j}`)));
    });

    it('tails the backlog then live appends, without gaps or duplicates while appends race', async () => {
      const topic = await newTopic('tail');
      for (let i = 0; i < 5; i++) await store.append(topic, Array.from({ length: 20 }, (_, j) => rec(`${i * 20 + j}`)));
      const received: LogRecord[] = [];
      let slow = 0;
      const sub = await store.tail(topic, 10, async (r) => {
        received.push(r);
        // Some slow callbacks, so that appends land while one is running.
        if (r.id % 7 === 0) {
          slow++;
          await new Promise((res) => setTimeout(res, 1));
        }
      });
      const writes: Promise<number[]>[] = [];
      for (let i = 0; i < 60; i++) {
        writes.push(store.append(topic, [rec(`${100 + 2 * i}`), rec(`${101 + 2 * i}`)]));
        if (i % 10 === 0) await new Promise((res) => setImmediate(res));
      }
      await Promise.all(writes);
      await waitFor(() => received.length >= 210, 20_000, 'tail to deliver 210 records');
      await new Promise((res) => setTimeout(res, 20));
      await sub.close();
      expect(ids(received)).toEqual(Array.from({ length: 210 }, (_, i) => 10 + i));
      expect(received.map(text)).toEqual(Array.from({ length: 210 }, (_, i) => `${10 + i}`));
      expect(slow).toBeGreaterThan(0);
    });

    it('tails from the current end, then delivers each new record once', async () => {
      const topic = await newTopic('tail-end');
      await store.append(topic, [rec('old')]);
      const received: number[] = [];
      const sub = await store.tail(topic, 1, (r) => {
        received.push(r.id);
      });
      for (let i = 0; i < 5; i++) {
        await store.append(topic, [rec(`n${i}`)]);
        await waitFor(() => received.length === i + 1, 10_000, `record ${i + 1}`);
      }
      await sub.close();
      expect(received).toEqual([1, 2, 3, 4, 5]);
    });

    it('stops delivering after a tail is closed, and close waits for a running callback', async () => {
      const topic = await newTopic('tail-close');
      await store.append(topic, [rec('a'), rec('b')]);
      const received: number[] = [];
      let running = false;
      let release!: () => void;
      const gate = new Promise<void>((res) => (release = res));
      const sub = await store.tail(topic, 0, async (r) => {
        running = true;
        received.push(r.id);
        if (r.id === 0) await gate;
        running = false;
      });
      await waitFor(() => received.length === 1, 10_000, 'first record');
      let closed = false;
      const closing = sub.close().then(() => (closed = true));
      await new Promise((res) => setTimeout(res, 20));
      expect(closed).toBe(false);
      release();
      await closing;
      expect(running).toBe(false);
      await store.append(topic, [rec('c')]);
      await new Promise((res) => setTimeout(res, 50));
      expect(received).toEqual([0]);
    });

    it('prunes: reading or tailing below the earliest id fails with WAL_TRUNCATED', async () => {
      const topic = await newTopic('prune');
      await store.append(
        topic,
        Array.from({ length: 10 }, (_, i) => rec(`p${i}`)),
      );
      await store.prune(topic, 6);
      const { earliest, next } = await store.bounds(topic);
      expect(next).toBe(10);
      expect(earliest).toBe(6);
      const err = await expectCode(collect(store.read(topic, 2)), 'WAL_TRUNCATED');
      expect(err.message).toContain(topic);
      expect(err.message).toContain('2');
      expect(err.message).toContain('6');
      expect(ids(await collect(store.read(topic, 6)))).toEqual([6, 7, 8, 9]);

      const errors: Error[] = [];
      const delivered: number[] = [];
      const sub = await store.tail(
        topic,
        0,
        (r) => {
          delivered.push(r.id);
        },
        (e) => errors.push(e),
      );
      await waitFor(() => errors.length === 1, 10_000, 'tail error');
      await sub.close();
      expect(delivered).toEqual([]);
      await expectCode(Promise.reject(errors[0]), 'WAL_TRUNCATED');
    });

    it('keeps data and the next id across a reopen', async ({ skip }) => {
      if (!fixture.reopen) skip();
      const topic = await newTopic('reopen');
      await store.append(topic, [rec('a'), rec('b'), rec('c')]);
      store = await fixture.reopen!();
      expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 3 });
      expect(await store.listTopics()).toContain(topic);
      expect(await store.append(topic, [rec('d')])).toEqual([3]);
      expect((await collect(store.read(topic, 0))).map(text)).toEqual(['a', 'b', 'c', 'd']);
    });

    it('round-trips binary data exactly', async () => {
      const topic = await newTopic('binary');
      const every = Uint8Array.from({ length: 256 }, (_, i) => i);
      const payloads = [Uint8Array.of(0), every, every.slice().reverse(), bytes(100_000, 7), bytes(3, 9)];
      await store.append(topic, payloads);
      const back = await collect(store.read(topic, 0));
      expect(back.map((r) => Array.from(r.data))).toEqual(payloads.map((p) => Array.from(p)));
    });

    it('keeps many topics independent', async () => {
      const topics = await Promise.all(Array.from({ length: 8 }, (_, i) => newTopic(`many${i}`)));
      for (let round = 0; round < 3; round++) {
        await Promise.all(topics.map((t, i) => store.append(t, Array.from({ length: i + 1 }, (_, j) => rec(`${t}:${round}:${j}`)))));
      }
      await store.prune(topics[0]!, 1);
      for (const [i, t] of topics.entries()) {
        const bounds = await store.bounds(t);
        expect(bounds.next).toBe(3 * (i + 1));
        const records = await collect(store.read(t, bounds.earliest));
        expect(records.every((r) => text(r).startsWith(`${t}:`))).toBe(true);
        expect(records.length).toBe(bounds.next - bounds.earliest);
      }
      const listed = await store.listTopics();
      expect(listed.filter((t) => topics.includes(t))).toEqual([...topics].sort());
      expect([...listed].sort()).toEqual(listed);
    });
  });
}
