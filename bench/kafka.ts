import { join } from 'node:path';
import { open, type Reprise } from '../src/api/runtime.js';
import { FsObjectStore } from '../src/engine/fs-object-store.js';
import type { Region } from '../src/engine/region-engine.js';
import type { TableSchema } from '../src/engine/schema.js';
import { TableEngine } from '../src/engine/table/table-engine.js';
import { DEFAULT_MAX_BATCH_BYTES, type Entry } from '../src/wal/entry.js';
import { KafkaLogStore } from '../src/wal/kafka/kafka-log-store.js';
import { LocalLogStore } from '../src/wal/local-log-store.js';
import type { LogStore } from '../src/wal/log-store.js';
import { replayShard } from '../src/wal/shard-reader.js';
import { TopicWriter } from '../src/wal/topic-writer.js';
import { startTestKafka, usingRealKafka, type TestKafka } from '../test/harness/kafka-mock.js';
import { drive, ROWS_PER_BATCH } from './insert.js';
import { metricsRows, metricsSchema, putBody, removeDir, settle, tempDir } from './lib/fixtures.js';
import { metric } from './lib/metric.js';
import type { Metric } from './lib/report.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * The Kafka WAL provider, on librdkafka's mock cluster (3 brokers, in this
 * machine's memory; or a real cluster with KAFKA_BROKERS):
 *
 *  - append: durable append throughput of 100-row entries through a
 *    TopicWriter (group commit) on a KafkaLogStore, 1 and 64 writers; next to
 *    it the runtime's insert on the Kafka WAL (1 shard) with the same writers.
 *  - replay: the runtime reopening a shard of 64 regions from an unflushed
 *    Kafka log, next to a bare read + frame decode of the same offsets.
 *  - by shard vs by region (CeresDB's comparison, which reported 44x on
 *    Kafka and 1.59x on RocksDB for 443 tables): 443 regions in one topic,
 *    replayed in one pass routed to every region, against one pass per
 *    region that applies only that region's entries (how a per-table replay
 *    reads a shared topic). Both apply into table-engine regions opened
 *    directly; the same comparison runs on the local LevelDB log.
 *
 * The mock keeps only about the last 5 MB of a partition, so the logs here
 * stay under ~4 MB; it answers each Fetch with one record batch, so reads
 * cost one round trip per append. These are protocol-level numbers on one
 * machine, not a Kafka cluster's.
 */

const CERES_REGIONS = 443;
const CERES_ENTRIES_PER_REGION = 8;
const CERES_ROWS_PER_ENTRY = 10;
const REPLAY_REGIONS = 64;

function storeOptions(kafka: TestKafka) {
  return { brokers: kafka.brokers, idempotent: usingRealKafka(), clientId: 'reprise-bench' };
}

let topicSeq = 0;
const uniqueName = (label: string) => `bench_${label}_${process.pid}_${topicSeq++}`;

async function rawAppend(kafka: TestKafka, writers: number, ms: number): Promise<number> {
  const store = await KafkaLogStore.open(storeOptions(kafka));
  try {
    const topic = uniqueName('append');
    await store.createTopic(topic);
    const schema = metricsSchema(4);
    const bodies = Array.from({ length: writers }, (_, w) => putBody(schema, metricsRows(w % 4, w, 0, ROWS_PER_BATCH)));
    const writer = new TopicWriter(store, topic, { maxBatchBytes: DEFAULT_MAX_BATCH_BYTES });
    await settle();
    const { batches, seconds } = await drive(writers, ms, async (w) => {
      await writer.append({ kind: 'data', region: 1 + (w % 4), epoch: 1, body: bodies[w]! });
    });
    await writer.close();
    return (batches * ROWS_PER_BATCH) / seconds;
  } finally {
    await store.close();
  }
}

async function runtimeInsert(kafka: TestKafka, writers: number, ms: number): Promise<number> {
  const dir = await tempDir('kafka-insert');
  let db: Reprise | undefined;
  try {
    db = await open({
      dataDir: dir,
      shards: 1,
      logger: false,
      wal: { provider: 'kafka', brokerEndpoints: kafka.brokers, idempotent: usingRealKafka(), topicPrefix: uniqueName('insert') },
    });
    const schema = metricsSchema(4);
    await db.createTable(schema);
    const runtime = db;
    await settle();
    const { batches, seconds } = await drive(writers, ms, async (w, seq) => {
      await runtime.insert(schema.name, metricsRows(w % 4, w, seq, ROWS_PER_BATCH));
    });
    return (batches * ROWS_PER_BATCH) / seconds;
  } finally {
    await db?.close({ flush: false });
    await removeDir(dir);
  }
}

/** A topic with `perRegion` data entries of `rows` rows for each of `regions` regions, round-robin. */
async function buildTopic(store: LogStore, topic: string, schema: TableSchema, regions: number, perRegion: number, rows: number): Promise<{ bytes: number; entries: number }> {
  await store.createTopic(topic);
  const writer = new TopicWriter(store, topic, { maxBatchBytes: DEFAULT_MAX_BATCH_BYTES });
  let bytes = 0;
  const batch: Entry[] = [];
  for (let n = 0; n < perRegion; n++) {
    for (let r = 0; r < regions; r++) {
      const body = putBody(schema, metricsRows(r, 0, n, rows));
      bytes += body.byteLength;
      batch.push({ kind: 'data', region: 1 + r, epoch: 1, body });
    }
  }
  await writer.appendMany(batch);
  await writer.close();
  return { bytes, entries: batch.length };
}

/** Table-engine regions 1..n of `schema`, opened directly in a fresh object store. */
async function openRegions(schema: TableSchema, n: number): Promise<{ regions: Map<number, Region>; close: () => Promise<void> }> {
  const dir = await tempDir('kafka-regions');
  const engine = new TableEngine();
  const objects = new FsObjectStore(dir);
  const regions = new Map<number, Region>();
  for (let r = 0; r < n; r++) regions.set(1 + r, await engine.openRegion({ regionId: 1 + r, table: schema, partition: r, createdAt: -1 }, objects, { writer: { epoch: 1, mayDelete: () => true } }));
  return {
    regions,
    close: async () => {
      for (const region of regions.values()) await region.close();
      await removeDir(dir);
    },
  };
}

/** One pass over the topic, every entry routed to its region. Returns ms. */
async function replayByShard(store: LogStore, topic: string, schema: TableSchema, n: number): Promise<number> {
  const { regions, close } = await openRegions(schema, n);
  try {
    const { earliest, next } = await store.bounds(topic);
    await settle();
    const t0 = performance.now();
    await replayShard(store, topic, {
      from: earliest,
      to: next,
      onEntry: (entry) => {
        if (entry.kind === 'data') regions.get(entry.region)?.apply(entry.id, entry.body);
      },
    });
    return performance.now() - t0;
  } finally {
    await close();
  }
}

/** One pass over the topic per region, each applying only its own entries. Returns ms. */
async function replayByRegion(store: LogStore, topic: string, schema: TableSchema, n: number): Promise<number> {
  const { regions, close } = await openRegions(schema, n);
  try {
    const { earliest, next } = await store.bounds(topic);
    await settle();
    const t0 = performance.now();
    for (const [id, region] of regions) {
      await replayShard(store, topic, {
        from: earliest,
        to: next,
        onEntry: (entry) => {
          if (entry.kind === 'data' && entry.region === id) region.apply(entry.id, entry.body);
        },
      });
    }
    return performance.now() - t0;
  } finally {
    await close();
  }
}

/** Reopen a runtime whose single shard holds an unflushed log of 64 regions; replay rate from its own clock. */
async function runtimeReplay(kafka: TestKafka, entries: number): Promise<{ runtime: { entriesPerSec: number; mbPerSec: number }; ceiling: { entriesPerSec: number }; entries: number; bytes: number }> {
  const dir = await tempDir('kafka-replay');
  const wal = { provider: 'kafka' as const, brokerEndpoints: kafka.brokers, idempotent: usingRealKafka(), topicPrefix: uniqueName('replay') };
  try {
    const schema = metricsSchema(REPLAY_REGIONS);
    let db = await open({ dataDir: dir, shards: 1, logger: false, wal });
    const table = await db.createTable(schema);
    const perRegion = Math.max(1, Math.floor(entries / REPLAY_REGIONS));
    for (let n = 0; n < perRegion; n++) {
      await Promise.all(table.regions.map((r, i) => db.insert(schema.name, metricsRows(i, 0, n, ROWS_PER_BATCH)).then(() => r)));
    }
    const topic = db.status().nodes[0]!.shards[0]!.topic;
    await db.close({ flush: false });
    await settle(500);
    let stats: { entries: number; bytes: number; elapsedMs: number } | undefined;
    db = await open({
      dataDir: dir,
      shards: 1,
      logger: false,
      wal,
      onReplayProgress: (p) => {
        stats = p;
      },
    });
    await db.close({ flush: false });
    if (!stats) throw new Error('no replay progress reported');
    const store = await KafkaLogStore.open(storeOptions(kafka));
    let ceilingMs: number;
    let ceilingEntries = 0;
    try {
      const { earliest, next } = await store.bounds(topic);
      await settle();
      const t0 = performance.now();
      const s = await replayShard(store, topic, { from: earliest, to: next, onEntry: () => undefined });
      ceilingMs = performance.now() - t0;
      ceilingEntries = s.entries;
    } finally {
      await store.close();
    }
    return {
      runtime: { entriesPerSec: stats.entries / (stats.elapsedMs / 1000), mbPerSec: stats.bytes / 1e6 / (stats.elapsedMs / 1000) },
      ceiling: { entriesPerSec: ceilingEntries / (ceilingMs / 1000) },
      entries: stats.entries,
      bytes: stats.bytes,
    };
  } finally {
    await removeDir(dir);
  }
}

/**
 * Open latency: `open()` of a runtime on Kafka whose 4 shards have nothing
 * to replay (closed with a flush): meta's log read, 4 shard opens (a read of
 * each topic's tail, an epoch marker append each), region manifests.
 */
async function openLatency(kafka: TestKafka, samples: number): Promise<number[]> {
  const dir = await tempDir('kafka-open');
  const wal = { provider: 'kafka' as const, brokerEndpoints: kafka.brokers, idempotent: usingRealKafka(), topicPrefix: uniqueName('open') };
  try {
    const first = await open({ dataDir: dir, shards: 4, logger: false, wal });
    await first.createTable(metricsSchema(4));
    await first.close();
    const times: number[] = [];
    for (let i = 0; i < samples; i++) {
      await settle();
      const t0 = performance.now();
      const db = await open({ dataDir: dir, shards: 4, logger: false, wal });
      times.push(performance.now() - t0);
      await db.close();
    }
    return times;
  } finally {
    await removeDir(dir);
  }
}

async function run(ctx: SuiteContext): Promise<SuiteResult> {
  const { options, log } = ctx;
  const kafka = await startTestKafka({ brokers: 3 });
  const metrics: Metric[] = [];
  const details: Record<string, unknown> = { cluster: usingRealKafka() ? `KAFKA_BROKERS=${process.env.KAFKA_BROKERS}` : 'librdkafka mock cluster, 3 brokers' };
  try {
    // ---- append ----
    const ms = options.insertMs;
    for (const writers of [1, 64]) {
      const raw: number[] = [];
      const runtime: number[] = [];
      for (let i = 0; i < options.runs; i++) {
        // Rotate the order so neither side always runs on a warmer cluster.
        if (i % 2 === 0) {
          raw.push(await rawAppend(kafka, writers, ms));
          runtime.push(await runtimeInsert(kafka, writers, ms));
        } else {
          runtime.push(await runtimeInsert(kafka, writers, ms));
          raw.push(await rawAppend(kafka, writers, ms));
        }
        log(`kafka append ${writers} writers run ${i + 1}: raw ${Math.round(raw.at(-1)!)} rows/s, runtime ${Math.round(runtime.at(-1)!)} rows/s`);
      }
      metrics.push(metric({ id: `kafka.append.raw.w${writers}`, suite: 'kafka', name: `kafka append, ${writers} writer(s), 100-row entries (TopicWriter)`, unit: 'rows/s', samples: raw }));
      metrics.push(
        metric({
          id: `kafka.insert.runtime.w${writers}`,
          suite: 'kafka',
          name: `kafka runtime insert, ${writers} writer(s), 1 shard`,
          unit: 'rows/s',
          samples: runtime,
          versus: { of: 'kafka append', samples: raw },
        }),
      );
    }

    // ---- open ----
    const opens = await openLatency(kafka, Math.max(3, options.runs));
    log(`kafka open: ${opens.map((t) => t.toFixed(0)).join(', ')} ms`);
    metrics.push(metric({ id: 'kafka.open.ms', suite: 'kafka', name: 'kafka runtime open, 4 shards, nothing to replay', unit: 'ms', samples: opens }));

    // ---- replay by the runtime ----
    const replayEntries = options.quick ? 128 : 640; // ~3.7 MB of 100-row bodies: under the mock's ~5 MB
    const replays = [];
    for (let i = 0; i < options.runs; i++) {
      replays.push(await runtimeReplay(kafka, replayEntries));
      log(`kafka replay run ${i + 1}: ${Math.round(replays.at(-1)!.runtime.entriesPerSec)} entries/s (read+decode ${Math.round(replays.at(-1)!.ceiling.entriesPerSec)})`);
    }
    details.replay = replays;
    metrics.push(
      metric({
        id: 'kafka.replay.runtime',
        suite: 'kafka',
        name: `kafka replay by shard, ${REPLAY_REGIONS} regions, 100-row entries`,
        unit: 'entries/s',
        samples: replays.map((r) => r.runtime.entriesPerSec),
        versus: { of: 'kafka read + frame decode', samples: replays.map((r) => r.ceiling.entriesPerSec) },
        note: `${(replays[0]!.bytes / 1e6).toFixed(1)} MB, MB/s ${replays.map((r) => r.runtime.mbPerSec.toFixed(1)).join('/')}`,
      }),
    );

    // ---- CeresDB's comparison: by shard vs by region, Kafka and local ----
    const schema = metricsSchema(CERES_REGIONS, 'ceres');
    const perRegion = options.quick ? 2 : CERES_ENTRIES_PER_REGION;
    const kafkaStore = await KafkaLogStore.open(storeOptions(kafka));
    const localDir = await tempDir('ceres-local');
    const localStore = await LocalLogStore.open(join(localDir, 'wal'));
    try {
      for (const [name, store] of [['kafka', kafkaStore], ['local', localStore]] as const) {
        const topic = uniqueName(`ceres_${name}`);
        const built = await buildTopic(store, topic, schema, CERES_REGIONS, perRegion, CERES_ROWS_PER_ENTRY);
        const byShard: number[] = [];
        const byRegion: number[] = [];
        // The per-region replay is the slow one (443 passes): fewer runs.
        const runs = Math.min(options.runs, 2);
        for (let i = 0; i < runs; i++) {
          byShard.push(await replayByShard(store, topic, schema, CERES_REGIONS));
          byRegion.push(await replayByRegion(store, topic, schema, CERES_REGIONS));
          log(`${name} ${CERES_REGIONS} regions run ${i + 1}: by shard ${Math.round(byShard.at(-1)!)} ms, by region ${Math.round(byRegion.at(-1)!)} ms`);
        }
        details[`ceres_${name}`] = { ...built, byShardMs: byShard, byRegionMs: byRegion };
        metrics.push(
          metric({
            id: `kafka.ceres.${name}`,
            suite: 'kafka',
            name: `${name}: replay ${CERES_REGIONS} regions of one topic by shard (ms; ratio = by-region time / by-shard time)`,
            unit: 'ms',
            samples: byShard,
            versus: { of: 'one pass per region', samples: byRegion, lowerIsBetter: true },
            note: `${built.entries} entries, ${(built.bytes / 1e6).toFixed(1)} MB; CeresDB: 44x Kafka, 1.59x RocksDB`,
          }),
        );
      }
    } finally {
      await kafkaStore.close();
      await localStore.close();
      await removeDir(localDir);
    }
  } finally {
    await kafka.stop();
  }
  return { metrics, details };
}

export const kafkaSuite: Suite = {
  name: 'kafka',
  description: 'Kafka WAL on the mock cluster: append, replay, and replay by shard vs by region (443 regions)',
  run,
};
