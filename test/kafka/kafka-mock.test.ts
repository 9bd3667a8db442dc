import { Kafka, logLevel, type Admin, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKey, startKafkaMock, type KafkaMock } from '../harness/kafka-mock.js';

/**
 * The test harness itself: librdkafka's mock cluster behind the C helper,
 * driven with plain kafkajs. Mock only by nature (it tests the mock's fault
 * injection), so it runs whether or not KAFKA_BROKERS is set.
 */
describe('Kafka mock cluster harness (librdkafka mock cluster only)', () => {
  let mock: KafkaMock;
  let kafka: Kafka;
  let admin: Admin;
  let producer: Producer;
  let seq = 0;
  const topicName = (label: string) => `harness-${label}-${process.pid}-${seq++}`;

  beforeAll(async () => {
    mock = await startKafkaMock({ brokers: 3 });
    kafka = new Kafka({ brokers: mock.brokers, clientId: 'harness-test', logLevel: logLevel.NOTHING });
    admin = kafka.admin();
    await admin.connect();
    // Not idempotent: kafkajs asks the controller for a producer id, and the
    // mock cluster reports controller id 0, which is none of its brokers.
    producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: () => () => 0 });
    await producer.connect();
  });
  afterAll(async () => {
    await producer?.disconnect();
    await admin?.disconnect();
    await mock?.stop();
  });

  async function leaderOf(topic: string): Promise<number> {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    return topics[0]!.partitions.find((p) => p.partitionId === 0)!.leader;
  }

  async function send(p: Producer, topic: string, value: string): Promise<number> {
    const [meta] = await p.send({ topic, acks: -1, messages: [{ partition: 0, value }] });
    return Number(meta!.baseOffset);
  }

  it('starts the brokers and reports them as the cluster', async () => {
    expect(mock.brokers).toHaveLength(3);
    for (const b of mock.brokers) expect(b).toMatch(/^127\.0\.0\.1:\d+$/);
    const cluster = await admin.describeCluster();
    expect(cluster.brokers.map((b) => b.nodeId).sort()).toEqual([1, 2, 3]);
    expect(cluster.controller).toBe(0); // the mock's quirk the WAL provider works around
  });

  it('creates topics, and produces and consumes through a consumer group', async () => {
    const topic = topicName('roundtrip');
    await mock.createTopic(topic, 2, 3);
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    expect(topics[0]!.partitions).toHaveLength(2);
    expect(await send(producer, topic, 'a')).toBe(0);
    expect(await send(producer, topic, 'b')).toBe(1);

    const consumer = kafka.consumer({ groupId: `harness-${process.pid}`, maxWaitTimeInMs: 100 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      const got: string[] = [];
      const done = new Promise<void>((resolve) => {
        void consumer.run({
          eachMessage: async ({ message }) => {
            got.push(message.value!.toString());
            if (got.length === 2) resolve();
          },
        });
      });
      await done;
      expect(got).toEqual(['a', 'b']);
    } finally {
      await consumer.disconnect();
    }
  });

  it('moves a partition leader', async () => {
    const topic = topicName('leader');
    await mock.createTopic(topic, 1, 3);
    await mock.setLeader(topic, 0, 1);
    expect(await leaderOf(topic)).toBe(1);
    expect(await send(producer, topic, 'x')).toBe(0);
    await mock.setLeader(topic, 0, 3);
    expect(await leaderOf(topic)).toBe(3);
    // The producer's cached leader is stale: NOT_LEADER, refresh, retry.
    expect(await send(producer, topic, 'y')).toBe(1);
  });

  it('takes a broker down and up', async () => {
    const topic = topicName('down');
    await mock.createTopic(topic, 1, 3);
    await mock.setLeader(topic, 0, 2);
    const once = kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 0 }, createPartitioner: () => () => 0 });
    await once.connect();
    try {
      expect(await send(once, topic, 'before')).toBe(0);
      await mock.brokerDown(2);
      await expect(send(once, topic, 'during')).rejects.toThrow();
      await mock.brokerUp(2);
      // The first attempt after an outage may still meet the dead connection.
      let offset: number | undefined;
      for (let i = 0; i < 20 && offset === undefined; i++) {
        offset = await send(once, topic, 'after').catch(() => undefined);
        if (offset === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      expect(offset).toBe(1);
    } finally {
      await once.disconnect();
    }
  });

  it('injects request errors: a retrying producer gets through, a non-retrying one fails', async () => {
    const topic = topicName('errors');
    await mock.createTopic(topic, 1, 3);
    await mock.pushErrors(ApiKey.Produce, ['NOT_LEADER_FOR_PARTITION', 6]);
    expect(await send(producer, topic, 'retried')).toBe(0);

    const once = kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 0 }, createPartitioner: () => () => 0 });
    await once.connect();
    try {
      await mock.pushErrors(ApiKey.Produce, ['NOT_ENOUGH_REPLICAS']);
      await expect(send(once, topic, 'refused')).rejects.toMatchObject({ cause: { type: 'NOT_ENOUGH_REPLICAS' } });
      await mock.pushErrors(ApiKey.Produce, ['NOT_ENOUGH_REPLICAS', 'NOT_ENOUGH_REPLICAS']);
      await mock.clearErrors(ApiKey.Produce);
      expect(await send(once, topic, 'clear')).toBe(1);
    } finally {
      await once.disconnect();
    }
  });

  it('sets a topic error for metadata requests', async () => {
    const topic = topicName('topic-error');
    await mock.createTopic(topic, 1, 3);
    await mock.topicError(topic, 'TOPIC_AUTHORIZATION_FAILED');
    const strict = kafka.admin({ retry: { retries: 0 } });
    await strict.connect();
    try {
      await expect(strict.fetchTopicMetadata({ topics: [topic] })).rejects.toThrow();
      await mock.topicError(topic, 0);
      const { topics } = await strict.fetchTopicMetadata({ topics: [topic] });
      expect(topics[0]!.name).toBe(topic);
    } finally {
      await strict.disconnect();
    }
  });

  it('delays a broker by its RTT', async () => {
    const topic = topicName('rtt');
    await mock.createTopic(topic, 1, 3);
    await mock.setLeader(topic, 0, 1);
    await send(producer, topic, 'warm');
    await mock.setRtt(1, 300);
    const start = performance.now();
    await send(producer, topic, 'slow');
    expect(performance.now() - start).toBeGreaterThanOrEqual(250);
    await mock.setRtt(1, 0);
  });

  it("rejects a bad command with the helper's reason, and every command once stopped", async () => {
    await expect(mock.setLeader('no-such-topic', 0, 9)).rejects.toThrow(/leader: BROKER_NOT_AVAILABLE/);
    await expect(mock.pushErrors(ApiKey.Produce, ['NO_SUCH_ERROR'])).rejects.toThrow(/unknown error code NO_SUCH_ERROR/);
    await expect(mock.createTopic('has space')).rejects.toThrow(/invalid name/);

    const other = await startKafkaMock({ brokers: 1 });
    expect(other.brokers).toHaveLength(1);
    await other.stop();
    await other.stop(); // idempotent
    await expect(other.brokerDown(1)).rejects.toThrow(/stopped/);
  });
});
