import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaLogStore, type KafkaLogStoreOptions } from '../../src/wal/kafka/kafka-log-store.js';
import type { LogRecord } from '../../src/wal/log-store.js';
import { ApiKey, startTestKafka, usingRealKafka, type KafkaMock, type TestKafka } from '../harness/kafka-mock.js';
import { bytes, collect, expectCode, ids, utf8, waitFor } from '../unit/wal/helpers.js';
import { logStoreContract } from '../unit/wal/logstore-contract.js';

// One cluster for the whole file: every test uses its own topics.
let kafka: TestKafka;
beforeAll(async () => {
  kafka = await startTestKafka();
});
afterAll(async () => {
  await kafka?.stop();
});

/**
 * Store options for the cluster under test. The mock cluster reports no
 * usable controller, so kafkajs cannot start an idempotent producer there
 * (see KafkaLogStoreOptions.idempotent); a real cluster gets the default.
 */
function options(extra: Partial<KafkaLogStoreOptions> = {}): KafkaLogStoreOptions {
  return {
    brokers: kafka.brokers,
    clientId: 'reprise-test',
    idempotent: usingRealKafka(),
    backoffDeadlineMs: 10_000,
    ...extra,
  };
}

let seq = 0;
const topicName = (label: string) => `kafka-${label}-${process.pid}-${Date.now().toString(36)}-${seq++}`;
const records = (n: number, tag = 'r') => Array.from({ length: n }, (_, i) => utf8(`${tag}${i}`));
const text = (r: LogRecord) => new TextDecoder().decode(r.data);

const clusterName = usingRealKafka() ? `KAFKA_BROKERS=${process.env.KAFKA_BROKERS}` : 'librdkafka mock cluster';

logStoreContract(`kafka (${clusterName})`, async () => {
  let store = await KafkaLogStore.open(options());
  return {
    store,
    reopen: async () => {
      await store.close();
      store = await KafkaLogStore.open(options());
      return store;
    },
    cleanup: () => store.close(),
  };
});

describe('KafkaLogStore', () => {
  let store: KafkaLogStore;
  beforeAll(async () => {
    store = await KafkaLogStore.open(options());
  });
  afterAll(async () => {
    await store?.close();
  });

  it('is the kafka provider', () => {
    expect(store.provider).toBe('kafka');
  });

  it('rejects NOT_FOUND for appends, reads, tails and prunes of unknown topics, and creates none of them', async () => {
    const topic = topicName('nope');
    await expectCode(store.append(topic, records(1)), 'NOT_FOUND');
    await expectCode(collect(store.read(topic, 0)), 'NOT_FOUND');
    await expectCode(
      store.tail(topic, 0, () => undefined),
      'NOT_FOUND',
    );
    await expectCode(store.prune(topic, 0), 'NOT_FOUND');
    await expectCode(store.bounds(topic), 'NOT_FOUND');
    expect(await store.listTopics()).not.toContain(topic);
  });

  it('rejects invalid topic names and ids', async () => {
    await expectCode(store.createTopic(''), 'INVALID_ARGUMENT');
    await expectCode(store.createTopic('has space'), 'INVALID_ARGUMENT');
    await expectCode(store.createTopic('x'.repeat(250)), 'INVALID_ARGUMENT');
    const topic = topicName('ids');
    await store.createTopic(topic);
    await expectCode(collect(store.read(topic, -1)), 'INVALID_ARGUMENT');
    await expectCode(collect(store.read(topic, 0, { to: 1.5 })), 'INVALID_ARGUMENT');
    await expectCode(store.prune(topic, 1.5), 'INVALID_ARGUMENT');
    await expectCode(
      store.tail(topic, -2, () => undefined),
      'INVALID_ARGUMENT',
    );
  });

  it('stores empty records and reads across many fetches', async () => {
    const small = await KafkaLogStore.open(options({ fetchMaxBytes: 4096 }));
    try {
      const topic = topicName('fetches');
      await small.createTopic(topic);
      expect(await small.append(topic, [new Uint8Array(0)])).toEqual([0]);
      for (let i = 0; i < 5; i++) await small.append(topic, records(400, `b${i}-`));
      const all = await collect(small.read(topic, 0));
      expect(all.length).toBe(2001);
      expect(all[0]!.data.length).toBe(0);
      expect(ids(all)).toEqual(Array.from({ length: 2001 }, (_, i) => i));
      expect(text(all[2000]!)).toBe('b4-399');
      // A read from the middle of a record batch starts at the asked id.
      expect(ids(await collect(small.read(topic, 150, { to: 153 })))).toEqual([150, 151, 152]);
    } finally {
      await small.close();
    }
  });

  it('can stop a read early and still close cleanly', async () => {
    const topic = topicName('early');
    await store.createTopic(topic);
    await store.append(topic, records(2500));
    let seen = -1;
    for await (const r of store.read(topic, 0)) {
      seen = r.id;
      if (r.id === 1200) break;
    }
    expect(seen).toBe(1200);
  });

  it('reports a callback error through onError and stops the tail', async () => {
    const topic = topicName('tail-throw');
    await store.createTopic(topic);
    await store.append(topic, records(3));
    const errors: Error[] = [];
    const seen: number[] = [];
    await store.tail(
      topic,
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
  });

  it('a tail from beyond the end waits for the log to reach it', async () => {
    const topic = topicName('tail-ahead');
    await store.createTopic(topic);
    await store.append(topic, records(2));
    const seen: number[] = [];
    const sub = await store.tail(topic, 4, (r) => {
      seen.push(r.id);
    });
    await store.append(topic, records(3)); // ids 2..4
    await waitFor(() => seen.length === 1, 10_000, 'record 4');
    await store.append(topic, records(1)); // id 5
    await waitFor(() => seen.length === 2, 10_000, 'record 5');
    await sub.close();
    expect(seen).toEqual([4, 5]);
  });

  it('ends tails and rejects every call with CLOSED after close()', async () => {
    const own = await KafkaLogStore.open(options());
    const topic = topicName('closed');
    await own.createTopic(topic);
    await own.append(topic, records(2));
    const live: number[] = [];
    await own.tail(topic, 2, (r) => {
      live.push(r.id);
    });
    await own.close();
    await own.close(); // idempotent
    expect(live).toEqual([]);
    await expectCode(own.createTopic(topicName('u')), 'CLOSED');
    await expectCode(own.listTopics(), 'CLOSED');
    await expectCode(own.append(topic, records(1)), 'CLOSED');
    await expectCode(collect(own.read(topic, 0)), 'CLOSED');
    await expectCode(
      own.tail(topic, 0, () => undefined),
      'CLOSED',
    );
    await expectCode(own.bounds(topic), 'CLOSED');
    await expectCode(own.prune(topic, 1), 'CLOSED');
  });

  it('finishes the appends accepted before close()', async () => {
    const own = await KafkaLogStore.open(options());
    const topic = topicName('close-appends');
    await own.createTopic(topic);
    const first = own.append(topic, records(1));
    const second = own.append(topic, records(2));
    const closing = own.close();
    await expectCode(own.append(topic, records(1)), 'CLOSED');
    expect(await first).toEqual([0]);
    expect(await second).toEqual([1, 2]);
    await closing;
    expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 3 });
  });

  it('a read and a tail reach their first record without joining a consumer group', async () => {
    const topic = topicName('latency');
    await store.createTopic(topic);
    await store.append(topic, records(100));
    const readStart = performance.now();
    const iterator = store.read(topic, 10)[Symbol.asyncIterator]();
    const first = await iterator.next();
    const readMs = performance.now() - readStart;
    await iterator.return?.();
    expect(first.done ? undefined : first.value.id).toBe(10);

    let tailMs = 0;
    const tailStart = performance.now();
    const sub = await store.tail(topic, 50, () => {
      tailMs ||= performance.now() - tailStart;
    });
    await waitFor(() => tailMs > 0, 10_000, 'first tailed record');
    await sub.close();

    // Cold: a store just opened, which has not seen the topic yet.
    const coldStart = performance.now();
    const cold = await KafkaLogStore.open(options());
    const openMs = performance.now() - coldStart;
    let coldMs: number;
    try {
      const coldIterator = cold.read(topic, 10)[Symbol.asyncIterator]();
      expect((await coldIterator.next()).value).toMatchObject({ id: 10 });
      coldMs = performance.now() - coldStart;
      await coldIterator.return?.();
    } finally {
      await cold.close();
    }
    console.info(
      `time to first record: read ${readMs.toFixed(1)} ms, tail ${tailMs.toFixed(1)} ms; ` +
        `new store: open ${openMs.toFixed(1)} ms, open + first record ${coldMs.toFixed(1)} ms`,
    );
    // A consumer group's first join alone takes 3 s on the mock cluster.
    expect(readMs).toBeLessThan(1000);
    expect(tailMs).toBeLessThan(1000);
    expect(coldMs).toBeLessThan(1000);
  });
});

describe.skipIf(usingRealKafka())('KafkaLogStore on the librdkafka mock cluster only (faults, mock limits)', () => {
  let mock: KafkaMock;
  let store: KafkaLogStore;
  beforeAll(async () => {
    mock = kafka.mock!;
    store = await KafkaLogStore.open(options());
  });
  afterAll(async () => {
    await store?.close();
  });

  it('explains why an idempotent producer cannot start on the mock cluster', async () => {
    const err = await expectCode(KafkaLogStore.open(options({ idempotent: true })), 'INTERNAL');
    expect(err.message).toMatch(/controller id 0/);
    expect(err.message).toMatch(/idempotent: false/);
  });

  it('creates topics by metadata auto-creation when CreateTopics has no controller, and uses partition 0', async () => {
    const topic = topicName('autocreate');
    await store.createTopic(topic);
    await store.createTopic(topic);
    expect(await store.listTopics()).toContain(topic);
    expect(await store.append(topic, records(3))).toEqual([0, 1, 2]);
    expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 3 });
  });

  it('uses a topic the cluster already has (created with several partitions)', async () => {
    const topic = topicName('precreated');
    await mock.createTopic(topic, 3, 3);
    await store.createTopic(topic);
    expect(await store.append(topic, records(2))).toEqual([0, 1]);
    expect((await collect(store.read(topic, 0))).map(text)).toEqual(['r0', 'r1']);
  });

  it('prunes logically where DeleteRecords is unsupported, and takes the mark back on reopen', async () => {
    const topic = topicName('logical');
    await store.createTopic(topic);
    await store.append(topic, records(10));
    await store.prune(topic, 4);
    await store.prune(topic, 2); // never moves back
    expect(store.logicalEarliest(topic)).toBe(4);
    expect(await store.bounds(topic)).toEqual({ earliest: 4, next: 10 });
    await expectCode(collect(store.read(topic, 3)), 'WAL_TRUNCATED');
    expect(ids(await collect(store.read(topic, 4)))).toEqual([4, 5, 6, 7, 8, 9]);
    await store.prune(topic, 100); // clamped to next
    expect(await store.bounds(topic)).toEqual({ earliest: 10, next: 10 });

    const reopened = await KafkaLogStore.open(options({ logicalEarliest: { [topic]: store.logicalEarliest(topic) } }));
    try {
      expect(await reopened.bounds(topic)).toEqual({ earliest: 10, next: 10 });
      expect(await reopened.append(topic, records(1))).toEqual([10]);
      expect(ids(await collect(reopened.read(topic, 10)))).toEqual([10]);
    } finally {
      await reopened.close();
    }

    const strict = await KafkaLogStore.open(options({ logicalPrune: false }));
    try {
      const err = await expectCode(strict.prune(topic, 11), 'INTERNAL');
      expect(err.message).toMatch(/DeleteRecords/);
    } finally {
      await strict.close();
    }
  });

  it('reports offsets the mock cluster dropped (it keeps ~5 MB per partition) as WAL_TRUNCATED', async () => {
    const topic = topicName('retention');
    await store.createTopic(topic);
    const payload = bytes(100_000, 3);
    for (let i = 0; i < 70; i++) await store.append(topic, [payload]);
    const { earliest, next } = await store.bounds(topic);
    expect(next).toBe(70);
    expect(earliest).toBeGreaterThan(0);
    const err = await expectCode(collect(store.read(topic, 0)), 'WAL_TRUNCATED');
    expect(err.message).toContain(`earliest available id is ${earliest}`);
    const rest = await collect(store.read(topic, earliest));
    expect(ids(rest)).toEqual(Array.from({ length: 70 - earliest }, (_, i) => earliest + i));

    const errors: Error[] = [];
    const sub = await store.tail(
      topic,
      earliest - 1,
      () => undefined,
      (e) => errors.push(e),
    );
    await waitFor(() => errors.length === 1, 10_000, 'tail error');
    await sub.close();
    await expectCode(Promise.reject(errors[0]), 'WAL_TRUNCATED');
  });

  it('fails a read with WAL_TRUNCATED when its next records vanish under it, never skipping them', async () => {
    const small = await KafkaLogStore.open(options({ fetchMaxBytes: 32 * 1024 }));
    try {
      const topic = topicName('vanish');
      await small.createTopic(topic);
      // One append per record: the mock answers a Fetch with one record batch.
      for (let i = 0; i < 30; i++) await small.append(topic, [bytes(10_000, i + 1)]);
      const seen: number[] = [];
      const reading = (async () => {
        for await (const r of small.read(topic, 0)) {
          seen.push(r.id);
          if (r.id === 0) {
            // While the reader holds record 0, ~6 MB more push the start of
            // the log past everything it has not fetched yet.
            for (let i = 0; i < 60; i++) await small.append(topic, [bytes(100_000, i)]);
          }
        }
      })();
      const err = await expectCode(reading, 'WAL_TRUNCATED');
      expect(err.message).toContain(topic);
      expect(seen).toEqual(Array.from({ length: seen.length }, (_, i) => i));
      expect(seen.length).toBeLessThan(30);

      // A tail stuck in a callback meets the same fate when it goes on.
      const errors: Error[] = [];
      const tailed: number[] = [];
      let release!: () => void;
      const gate = new Promise<void>((res) => (release = res));
      const { earliest } = await small.bounds(topic);
      const sub = await small.tail(
        topic,
        earliest,
        async (r) => {
          tailed.push(r.id);
          if (tailed.length === 1) await gate;
        },
        (e) => errors.push(e),
      );
      await waitFor(() => tailed.length === 1, 10_000, 'first tailed record');
      for (let i = 0; i < 60; i++) await small.append(topic, [bytes(100_000, i)]);
      release();
      await waitFor(() => errors.length === 1, 10_000, 'tail error');
      await sub.close();
      await expectCode(Promise.reject(errors[0]), 'WAL_TRUNCATED');
      expect(tailed).toEqual(Array.from({ length: tailed.length }, (_, i) => earliest + i));
    } finally {
      await small.close();
    }
  });

  it('retries appends the broker refused, keeping ids contiguous', async () => {
    const topic = topicName('refused');
    await store.createTopic(topic);
    await store.append(topic, records(2));
    await mock.pushErrors(ApiKey.Produce, ['NOT_LEADER_FOR_PARTITION', 'NOT_ENOUGH_REPLICAS']);
    expect(await store.append(topic, records(3))).toEqual([2, 3, 4]);
    expect(await store.bounds(topic)).toEqual({ earliest: 0, next: 5 });
  });

  it('fails an append whose outcome is unknown with WAL_APPEND_FAILED, and goes on after it', async () => {
    const topic = topicName('append-fails');
    await store.createTopic(topic);
    await store.append(topic, records(2));
    await mock.pushErrors(ApiKey.Produce, ['REQUEST_TIMED_OUT']);
    const err = await expectCode(store.append(topic, records(3)), 'WAL_APPEND_FAILED');
    expect(err.message).toContain(`"${topic}"`);
    expect(err.message).toMatch(/timed out/i);
    // The mock broker refused it, so nothing was written.
    expect(await store.append(topic, records(1, 'after'))).toEqual([2]);
    expect((await collect(store.read(topic, 0))).map(text)).toEqual(['r0', 'r1', 'after0']);
  });

  it('appends, reads and tails through a leader move and a leader outage', async () => {
    const topic = topicName('leader');
    await mock.createTopic(topic, 1, 3);
    await mock.setLeader(topic, 0, 1);
    await store.createTopic(topic);
    await store.append(topic, records(5));
    const tailed: number[] = [];
    const sub = await store.tail(topic, 0, (r) => {
      tailed.push(r.id);
    });
    await waitFor(() => tailed.length === 5, 10_000, 'backlog');

    await mock.setLeader(topic, 0, 2);
    expect(await store.append(topic, records(5, 'moved'))).toEqual([5, 6, 7, 8, 9]);
    expect(ids(await collect(store.read(topic, 0)))).toEqual(Array.from({ length: 10 }, (_, i) => i));
    await waitFor(() => tailed.length === 10, 10_000, 'records after the move');

    // The leader goes away for a while (the mock does not move leaders on
    // its own): the tail retries until it is back, then goes on.
    await mock.brokerDown(2);
    await new Promise((res) => setTimeout(res, 500));
    await mock.brokerUp(2);
    expect(await store.append(topic, records(2, 'back'))).toEqual([10, 11]);
    await waitFor(() => tailed.length === 12, 15_000, 'records after the outage');
    await sub.close();
    expect(tailed).toEqual(Array.from({ length: 12 }, (_, i) => i));
  });
});
