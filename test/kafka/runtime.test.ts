import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open, type Reprise } from '../../src/api/runtime.js';
import { isRepriseError } from '../../src/errors.js';
import { decodeMutation } from '../../src/engine/table/codec.js';
import type { TableSchema } from '../../src/engine/schema.js';
import { KafkaLogStore } from '../../src/wal/kafka/kafka-log-store.js';
import type { KafkaWalOptions } from '../../src/wal/open-log-store.js';
import { readEntries } from '../../src/wal/shard-reader.js';
import { expectAcknowledgedBatches, CRASH_SCHEMA, runAndKill } from '../harness/crash.js';
import { ApiKey, startTestKafka, usingRealKafka, type KafkaMock, type TestKafka } from '../harness/kafka-mock.js';
// @ts-expect-error plain ESM fixture shared with the crash writer
import { batchRows } from '../e2e/fixtures/crash-rows.mjs';

/**
 * The runtime on the Kafka WAL, against a real Kafka-protocol cluster
 * (librdkafka's mock, or KAFKA_BROKERS): replay by shard, pruning, and the
 * faults of issue 3 — broker down, leader change, injected produce errors,
 * SIGKILL, entries lost to retention.
 */

let kafka: TestKafka;
const dirs: string[] = [];
beforeAll(async () => {
  kafka = await startTestKafka({ brokers: 3 });
});
afterAll(async () => {
  await kafka?.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

let seq = 0;
/** A fresh reprise cluster on the shared Kafka cluster: its own topic prefix and data directory. */
async function fresh(label: string): Promise<{ dataDir: string; wal: KafkaWalOptions }> {
  const dataDir = await mkdtemp(join(tmpdir(), `reprise-kafka-${label}-`));
  dirs.push(dataDir);
  const wal: KafkaWalOptions = {
    provider: 'kafka',
    brokerEndpoints: kafka.brokers,
    topicPrefix: `rk_${label}_${process.pid}_${Date.now().toString(36)}_${seq++}`,
    // The mock cluster cannot grant producer ids (see KafkaLogStoreOptions.idempotent).
    idempotent: usingRealKafka(),
    maxBatchBytes: 64 * 1024,
  };
  return { dataDir, wal };
}

/**
 * The mock cluster keeps only about the last 5 MB of a partition: flush (and
 * so prune) well before that, as a deployment sizes retention above its
 * flush policy.
 */
function openOn(dataDir: string, wal: KafkaWalOptions, extra: Partial<Parameters<typeof open>[0]> = {}): Promise<Reprise> {
  return open({ dataDir, wal, shards: 2, logger: false, flush: { memtableBytes: 1 << 20, walBytes: 1 << 20 }, ...extra });
}

/** Writers inserting crash batches until stopped; what each insert did. */
interface Load {
  tried: Set<string>;
  acked: Set<string>;
  errors: Error[];
  stop(): Promise<void>;
}

function startLoad(db: Reprise, tag: string, writers = 4): Load {
  const load = { tried: new Set<string>(), acked: new Set<string>(), errors: [] as Error[] };
  let running = true;
  const loops = Array.from({ length: writers }, async (_, w) => {
    for (let n = 0; running; n++) {
      const id = `${tag}.${w}.${n}`;
      load.tried.add(id);
      try {
        await db.insert(CRASH_SCHEMA.name, batchRows(id));
        load.acked.add(id);
      } catch (err) {
        load.errors.push(err as Error);
        await sleep(50);
      }
    }
  });
  return {
    ...load,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** A crash batch id whose rows go to `host` (a large one: 400 rows, several records). */
function batchOnHost(host: string, prefix: string, large = false): string {
  for (let k = 0; ; k++) {
    const id = `${prefix}.${k}`;
    const rows = batchRows(id) as { host: string }[];
    if (rows[0]!.host === host && (!large || rows.length === 400)) return id;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every failed write failed with a clear WAL error naming its topic. */
function expectClearErrors(errors: Error[], topicPrefix: string): void {
  for (const err of errors) {
    expect(isRepriseError(err) ? err.code : String(err)).toBe('WAL_APPEND_FAILED');
    expect(err.message).toContain(topicPrefix);
  }
}

/** Shard topics of the crash table: the one holding region `partition`. */
function topicOf(db: Reprise, partition: number): string {
  const region = db.describeTable(CRASH_SCHEMA.name).regions[partition]!;
  return db.status().nodes[0]!.shards.find((s) => s.id === region.shard)!.topic;
}

/** Batch ids of every data entry in a topic, in log order (one per entry: a batch is one entry). */
async function batchesInLog(wal: KafkaWalOptions, topic: string): Promise<string[]> {
  const store = await KafkaLogStore.open({ brokers: [...wal.brokerEndpoints], idempotent: wal.idempotent ?? true });
  try {
    const { earliest } = await store.bounds(topic);
    const batches: string[] = [];
    for await (const entry of readEntries(store, topic, earliest)) {
      if (entry.kind !== 'data') continue;
      const mutation = decodeMutation(CRASH_SCHEMA as TableSchema, entry.body);
      if (mutation.op !== 'put') continue;
      const ids = new Set(mutation.rows.map((row) => row[1] as string));
      expect(ids.size, `entry ${entry.id} mixes batches`).toBe(1);
      batches.push([...ids][0]!);
    }
    return batches;
  } finally {
    await store.close();
  }
}

describe('runtime on the Kafka WAL', () => {
  it('writes, replays by shard after a restart without flush, and prunes logically across restarts', async () => {
    const { dataDir, wal } = await fresh('basic');
    let db = await openOn(dataDir, wal);
    try {
      expect(db.status().wal.provider).toBe('kafka');
      await db.createTable(CRASH_SCHEMA);
      const ids = Array.from({ length: 30 }, (_, i) => `basic.${i}`);
      for (const id of ids) await db.insert(CRASH_SCHEMA.name, batchRows(id));
      const before = await db.query(CRASH_SCHEMA.name);
      await db.close({ flush: false });

      db = await openOn(dataDir, wal);
      const shards = db.status().nodes[0]!.shards;
      expect(shards.flatMap((s) => s.regions.map((r) => r.state))).toEqual(['serving', 'serving', 'serving']);
      expect(await db.query(CRASH_SCHEMA.name)).toEqual(before);
      await expectAcknowledgedBatches(db, new Set(ids), new Set(ids));

      // Flush prunes below the flushed ids; the mock has no DeleteRecords,
      // so the mark is logical and must come back after a restart.
      await db.insert(CRASH_SCHEMA.name, batchRows('basic.after'));
      await db.flush();
      const topic = topicOf(db, 0);
      const pruned = db.status().nodes[0]!.shards.find((s) => s.topic === topic)!.flushedEntryId + 1;
      expect(pruned).toBeGreaterThan(1);
      await db.close();

      // Replay after the prune starts above the mark, from the flushed ids in the manifests.
      db = await openOn(dataDir, wal);
      await expectAcknowledgedBatches(db, new Set([...ids, 'basic.after']), new Set([...ids, 'basic.after']));
    } finally {
      await db.close();
    }
  });

  it('fails a region loudly when retention removed entries it needs; the other regions serve', async () => {
    const { dataDir, wal } = await fresh('retention');
    let db = await openOn(dataDir, wal, { flush: { memtableBytes: 1 << 30, walBytes: 1 << 30 } });
    await db.createTable(CRASH_SCHEMA);
    // The mock cluster keeps about the last 5 MB of a partition: write well
    // past that into the region of host "alpha" (partition 0) without flushing.
    const topic = topicOf(db, 0);
    for (let n = 0; n < 60; n++) await db.insert(CRASH_SCHEMA.name, batchRows(batchOnHost('alpha', `ret.${n}`, true)));
    const written = db.status().nodes[0]!.shards.find((s) => s.topic === topic)!.lastEntryId;
    await db.close({ flush: false });
    if (usingRealKafka()) return; // a real broker keeps everything under the compose settings

    db = await openOn(dataDir, wal);
    try {
      const shard = db.status().nodes[0]!.shards.find((s) => s.topic === topic)!;
      const alpha = shard.regions.find((r) => r.partition === 0)!;
      expect(written).toBeGreaterThan(60);
      expect(alpha.state).toBe('failed');
      expect(alpha.error).toMatch(new RegExp(`WAL_TRUNCATED: region ${alpha.id} needs entries from \\d+ of topic '${topic}' but the earliest entry the log holds is \\d+`));
      await expect(db.query(CRASH_SCHEMA.name, { where: { host: 'alpha' } })).rejects.toThrow(/region/);
      // The table's other regions still serve reads and writes.
      // kilo's region (partition 1) is on the other shard.
      expect(topicOf(db, 1)).not.toBe(topic);
      await db.insert(CRASH_SCHEMA.name, batchRows(batchOnHost('kilo', 'ret.after')));
      expect((await db.query(CRASH_SCHEMA.name, { where: { host: 'kilo' } })).length).toBeGreaterThan(0);
    } finally {
      await db.close({ flush: false });
    }
  });

  it('survives SIGKILL mid-write: every acknowledged batch is back after a restart against the same cluster', async () => {
    const { dataDir, wal } = await fresh('crash');
    const tried = new Set<string>();
    const acked = new Set<string>();
    const iterations = Number(process.env.REPRISE_KAFKA_CRASH_ITERATIONS ?? 6);
    for (let run = 0; run < iterations; run++) {
      const result = await runAndKill(dataDir, run, 200 + Math.floor(Math.random() * 800), { ...wal });
      for (const id of result.tried) tried.add(id);
      for (const id of result.acked) acked.add(id);
    }
    expect(acked.size).toBeGreaterThan(iterations * 3);
    const db = await openOn(dataDir, wal);
    try {
      await expectAcknowledgedBatches(db, tried, acked);
    } finally {
      await db.close();
    }
  });
});

describe.skipIf(usingRealKafka())('runtime on the Kafka WAL under faults (librdkafka mock cluster only)', () => {
  const mock = (): KafkaMock => kafka.mock!;

  /** Open a fresh runtime with the crash table and every shard topic led by broker 1. */
  async function setUp(label: string) {
    const { dataDir, wal } = await fresh(label);
    const db = await openOn(dataDir, wal);
    await db.createTable(CRASH_SCHEMA);
    for (const shard of db.status().nodes[0]!.shards) await mock().setLeader(shard.topic, 0, 1);
    return { dataDir, wal, db };
  }

  /** Close, reopen on the same cluster and check every acknowledged batch once. */
  async function reopenAndCheck(db: Reprise, dataDir: string, wal: KafkaWalOptions, load: Load): Promise<void> {
    await db.close({ flush: false });
    const again = await openOn(dataDir, wal);
    try {
      await expectAcknowledgedBatches(again, load.tried, load.acked);
    } finally {
      await again.close();
    }
  }

  it('a broker leading the WAL partitions goes down and comes back during writes', async () => {
    const { dataDir, wal, db } = await setUp('down');
    const load = startLoad(db, 'down');
    await sleep(400);
    await mock().brokerDown(1);
    await sleep(1500);
    await mock().brokerUp(1);
    // After recovery the regions serve writes again.
    const ackedBefore = load.acked.size;
    const deadline = Date.now() + 20_000;
    while (load.acked.size < ackedBefore + 20 && Date.now() < deadline) await sleep(100);
    await load.stop();
    expect(load.acked.size).toBeGreaterThanOrEqual(ackedBefore + 20);
    expectClearErrors(load.errors, wal.topicPrefix!);
    await reopenAndCheck(db, dataDir, wal, load);
  });

  it('the WAL partition changes leader during writes', async () => {
    const { dataDir, wal, db } = await setUp('leader');
    const load = startLoad(db, 'leader');
    const topics = db.status().nodes[0]!.shards.map((s) => s.topic);
    for (const leader of [2, 3, 1, 2]) {
      await sleep(300);
      for (const topic of topics) await mock().setLeader(topic, 0, leader);
    }
    await sleep(300);
    await load.stop();
    expect(load.acked.size).toBeGreaterThan(20);
    expectClearErrors(load.errors, wal.topicPrefix!);
    await reopenAndCheck(db, dataDir, wal, load);
  });

  it('injected produce errors are retried or fail clearly, and no entry is in the log twice', async () => {
    const { dataDir, wal, db } = await setUp('errors');
    const load = startLoad(db, 'errors');
    for (let round = 0; round < 5; round++) {
      await sleep(200);
      await mock().pushErrors(ApiKey.Produce, ['NOT_LEADER_FOR_PARTITION', 'NOT_LEADER_FOR_PARTITION', 'REQUEST_TIMED_OUT', 'NOT_ENOUGH_REPLICAS']);
    }
    await sleep(300);
    await load.stop();
    await mock().clearErrors(ApiKey.Produce);
    expect(load.acked.size).toBeGreaterThan(20);
    expectClearErrors(load.errors, wal.topicPrefix!);
    // NOT_LEADER and NOT_ENOUGH_REPLICAS prove nothing was written: retried.
    // A timeout does not (the record may be in the log): it fails the write.
    for (const err of load.errors) expect(err.message).toMatch(/timed out/);
    // No duplicates applied on replay: each batch is one entry, in the log at most once.
    const topics = db.status().nodes[0]!.shards.map((s) => s.topic);
    await db.close({ flush: false });
    const logged = (await Promise.all(topics.map((t) => batchesInLog(wal, t)))).flat();
    expect(logged.length - new Set(logged).size, 'entries appended twice').toBe(0);
    for (const id of load.acked) expect(logged).toContain(id);
    const again = await openOn(dataDir, wal);
    try {
      await expectAcknowledgedBatches(again, load.tried, load.acked);
    } finally {
      await again.close();
    }
  });
});
