import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeta } from '../src/api/meta-process.js';
import { MemoryElectionStore } from '../src/meta/election-store.js';
import { Reprise } from '../src/api/runtime.js';
import { InProcessNetwork } from '../src/transport/in-process.js';
import type { KafkaWalOptions } from '../src/wal/open-log-store.js';
import { startTestKafka, usingRealKafka, type TestKafka } from '../test/harness/kafka-mock.js';
import { CLUSTER_HOSTS, CLUSTER_SCHEMA, ProcessGroup } from '../test/harness/cluster.js';
import { awaitMetaLeader, startMetas, startNodes, startWriters } from '../test/harness/meta-ha.js';
import { startNatsCluster } from '../test/harness/nats-cluster.js';
import type { TestNatsServer } from '../test/harness/nats-server.js';
import { call, type Server } from '../test/harness/standalone.js';
import { removeDir } from './lib/fixtures.js';
import { metric } from './lib/metric.js';
import type { Metric } from './lib/report.js';
import { median, quantile } from './lib/stats.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * The cluster's headline numbers (distributed issue), on this machine: a
 * real nats-server, librdkafka's mock Kafka cluster (3 brokers), and
 *
 *  - failover: `reprise meta` and three `reprise node` processes; the node
 *    leading a shard that holds ~2 MB of unflushed rows is SIGKILLed, and a
 *    client writes a row to that shard through another node until one is
 *    acknowledged: SIGKILL to that acknowledgement. With one hot-standby
 *    follower per shard (promoted: it applies only the last few entries) and
 *    with none (the new leader replays the topic from the flushed offset).
 *    A fresh cluster per run; the defaults (heartbeat 200 ms, lease 800 ms,
 *    failure timeout 1000 ms), so about 1 s of it is failure detection.
 *  - follower lag: meta and three nodes in one process (in-process
 *    transport, the same Kafka), a steady write load; for every entry a
 *    follower applies, the time from the leader's append (the Kafka record
 *    timestamp its producer set) to the apply. p50 and p99.
 *  - migration pause: the same in-process cluster, one writer inserting into
 *    the shard being migrated back to back; the longest write during the
 *    migration, and the hand-off itself as meta timed it.
 *  - meta failover: three `reprise meta` replicas and three nodes, six
 *    writers writing one row at a time through every node; a migration is
 *    requested and the meta leader SIGKILLed at once. Time to a new leader
 *    (until a replica reports leading at the next epoch), the writes from
 *    the kill on that failed or took over 500 ms, and the time until the
 *    migration completed (the target serves the shard). The election's
 *    lease is 1000 ms (renewals every 250 ms; a successor waits 1200 ms
 *    after the last renewal it saw).
 * NATS is a real 3-server nats-server cluster with JetStream (the meta
 * election's KV bucket is replicated on it).
 *
 * Targets (the issues'): failover with a follower p50 < 1.5 s, migration
 * pause < 200 ms, follower lag p99 < 100 ms; meta failover: new leader p50
 * < 2 s, no failed write, none slower than 1 s.
 */

const SCHEMA = CLUSTER_SCHEMA;
/** One host per region, in partition order. */
const HOSTS = CLUSTER_HOSTS;
const TABLE = SCHEMA.name;
/** Unflushed rows in the failed-over shard: ~2 MB of WAL (the mock keeps ~5 MB per partition). */
const PRELOAD_BATCHES = 80;
const PRELOAD_ROWS = 1000;

const rowsOf = (host: string, from: number, n: number) => Array.from({ length: n }, (_, i) => ({ host, cpu_util: from + i, ts: 1_700_000_000_000 + from + i }));

let runSeq = 0;

interface ProcessCluster {
  readonly nodes: Map<string, Server>;
  stop(): Promise<void>;
}

/** `reprise meta` (--min-nodes 3, --followers N) and nodes n1..n3, as in the real-process cluster tests. */
async function startProcessCluster(kafka: TestKafka, nats: Pick<TestNatsServer, 'url'>, followers: number): Promise<ProcessCluster> {
  const group = new ProcessGroup(kafka, nats, 'bench');
  try {
    const env = { ...(await group.clusterEnv()), REPRISE_CLUSTER_FOLLOWERS: String(followers) };
    await group.launch('meta', ['meta', '--min-nodes', '3', '--http-addr', '127.0.0.1:0'], env);
    const nodes = new Map<string, Server>();
    for (const id of ['n1', 'n2', 'n3']) nodes.set(id, await group.launch(id, ['node', '--id', id, '--http-addr', '127.0.0.1:0'], env));
    return { nodes, stop: () => group.stop() };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`cluster bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface LagRun {
  readonly lagMs: number[];
  /** Longest write to the moving shard during its migration. */
  readonly pauseMs: number;
  /** The migration as meta timed it (hand-off and assignment). */
  readonly handOffMs: number;
}

interface MetaShard {
  id: number;
  leader: string | null;
  epoch: number;
  followers: string[];
}

/** One failover: SIGKILL to the first acknowledged write to the killed node's shard, ms. */
async function failoverOnce(kafka: TestKafka, nats: Pick<TestNatsServer, 'url'>, followers: number, ctx: SuiteContext): Promise<number> {
  const cluster = await startProcessCluster(kafka, nats, followers);
  try {
    const front = cluster.nodes.get('n1')!;
    const shards = await until('placement', async () => {
      const status = (await call(front, 'GET', '/v1/cluster/status')).body as { meta: { shards: MetaShard[] } };
      const all = status.meta.shards;
      return all.every((s) => s.leader !== null && s.epoch > 0 && s.followers.length === followers) ? all : undefined;
    });
    const created = await call(front, 'POST', '/v1/tables', SCHEMA);
    if (created.status !== 201) throw new Error(`create table: ${JSON.stringify(created.body)}`);
    const regions = created.body.regions as { shard: number; partition: number }[];
    const victim = shards.find((s) => s.leader !== 'n1' && regions.some((r) => r.shard === s.id))!;
    const host = HOSTS[regions.find((r) => r.shard === victim.id)!.partition]!;
    for (let b = 0; b < PRELOAD_BATCHES; b++) {
      const response = await call(front, 'POST', `/v1/tables/${TABLE}/rows`, rowsOf(host, b * PRELOAD_ROWS, PRELOAD_ROWS));
      if (response.status !== 200) throw new Error(`preload: ${JSON.stringify(response.body)}`);
    }
    if (followers > 0) {
      // The standby has applied everything before the kill (as it would under a steady load).
      await until('the follower to catch up', async () => {
        const status = (await call(front, 'GET', '/v1/cluster/status')).body as { meta: { nodes: { id: string; shards: { id: number; role?: string; lag?: { entries: number } }[] }[] } };
        const standby = status.meta.nodes.find((n) => n.id === victim.followers[0])?.shards.find((s) => s.id === victim.id);
        return standby?.role === 'follower' && standby.lag?.entries === 0 ? true : undefined;
      });
    }
    const killed = cluster.nodes.get(victim.leader!)!;
    killed.child.kill('SIGKILL');
    const killedAt = performance.now();
    await killed.exited;
    let seq = 10_000_000;
    for (;;) {
      const response = await call(front, 'POST', `/v1/tables/${TABLE}/rows`, rowsOf(host, seq++, 1));
      if (response.status === 200) break;
      if (performance.now() - killedAt > 60_000) throw new Error(`no write acknowledged 60 s after the kill: ${JSON.stringify(response.body)}`);
    }
    const ms = performance.now() - killedAt;
    ctx.log(`  failover (${followers} follower${followers === 1 ? '' : 's'}): ${ms.toFixed(0)} ms`);
    return ms;
  } finally {
    await cluster.stop();
  }
}

interface MetaFailoverRun {
  /** SIGKILL of the meta leader to a replica reporting it leads the next epoch. */
  readonly newLeaderMs: number;
  /** Writes sent from the kill on (until 2 s after the migration completed), and how they fared. */
  readonly writes: number;
  readonly failed: number;
  readonly slower500: number;
  readonly maxWriteMs: number;
  /** The migration requested at the kill: request to the target serving the shard. */
  readonly migrationMs: number;
}

/** One meta failover under writes, with a migration requested at the kill. */
async function metaFailoverOnce(kafka: TestKafka, nats: Pick<TestNatsServer, 'url'>, ctx: SuiteContext): Promise<MetaFailoverRun> {
  const group = new ProcessGroup(kafka, nats, 'benchmeta');
  try {
    const env = await group.clusterEnv();
    const metas = await startMetas(group, env, ['m1', 'm2', 'm3'], ['--min-nodes', '3']);
    const leader = await awaitMetaLeader(metas);
    const nodes = await startNodes(group, env, ['n1', 'n2', 'n3']);
    const front = nodes.get('n1')!;
    const shards = await until('placement', async () => {
      const all = ((await call(front, 'GET', '/v1/cluster/status')).body as { meta: { shards: MetaShard[] } }).meta.shards;
      return all.every((s) => s.leader !== null && s.epoch > 0 && s.followers.length === 1) ? all : undefined;
    });
    const created = await call(front, 'POST', '/v1/tables', SCHEMA);
    if (created.status !== 201) throw new Error(`create table: ${JSON.stringify(created.body)}`);
    const writers = startWriters([...nodes.values()]);
    await new Promise((r) => setTimeout(r, 1_500));
    const moving = shards.find((s) => s.leader !== 'n1')!;
    const to = moving.followers[0]!;
    const killedAt = Date.now();
    const migration = call(front, 'POST', `/v1/shards/${moving.id}/migrate`, { to }).then((r) => ({ ...r, at: Date.now() }));
    metas.get(leader.id)!.child.kill('SIGKILL');
    const next = await awaitMetaLeader(metas, { above: leader.epoch, timeoutMs: 60_000 });
    const newLeaderMs = Date.now() - killedAt;
    const migrated = await migration;
    if (migrated.status !== 200) throw new Error(`migration requested at the meta kill failed: ${JSON.stringify(migrated.body)}`);
    await new Promise((r) => setTimeout(r, 2_000));
    const report = await writers.stop();
    const during = report.since(killedAt);
    const run: MetaFailoverRun = { newLeaderMs, writes: during.sent, failed: during.failed, slower500: during.slowerThan(500), maxWriteMs: during.max, migrationMs: migrated.at - killedAt };
    ctx.log(`  meta failover: ${leader.id} -> ${next.id} in ${newLeaderMs} ms; ${run.writes} writes, ${run.failed} failed, ${run.slower500} over 500 ms (max ${run.maxWriteMs} ms); migration ${run.migrationMs} ms`);
    return run;
  } finally {
    await group.stop();
  }
}

/** Follower lag under a steady load, and the write pause of a migration, in one in-process cluster. */
async function lagAndMigration(kafka: TestKafka, ctx: SuiteContext, loadMs: number, fetchWaitMs: number): Promise<LagRun> {
  const network = new InProcessNetwork();
  const objectStoreDir = await mkdtemp(join(tmpdir(), 'reprise-bench-lag-'));
  const wal: KafkaWalOptions = { provider: 'kafka', brokerEndpoints: kafka.brokers, idempotent: usingRealKafka(), topicPrefix: `bench_lag_${process.pid}_${runSeq++}`, consumerWaitTimeoutMs: fetchWaitMs };
  const metaTransport = network.transport({ cluster: 'bench', name: 'meta' });
  const meta = await startMeta({ transport: metaTransport, wal, shards: 3, logger: false, minNodes: 3, followers: 1, election: { store: new MemoryElectionStore() } });
  await meta.leading();
  const lagMs: number[] = [];
  let measuring = false;
  const members: Reprise[] = [];
  try {
    for (const nodeId of ['n1', 'n2', 'n3']) {
      const transport = network.transport({ cluster: 'bench', name: nodeId });
      members.push(await Reprise.join({ nodeId, transport, wal, objectStoreDir, logger: false, onFollowerApply: (a) => measuring && lagMs.push(a.lagMs) }));
    }
    const front = members[0]!;
    await until('followers', async () => (meta.server.status().shards.every((s) => s.epoch > 0 && s.followers.length === 1) ? true : undefined));
    const table = await front.createTable(SCHEMA);

    // Steady load: each host written every 10 ms, 100 rows at a time (~300 entries/s over the three shards).
    measuring = true;
    let seq = 0;
    const loadEnd = Date.now() + loadMs;
    while (Date.now() < loadEnd) {
      const tick = Date.now();
      await Promise.all(HOSTS.map((host) => front.insert(TABLE, rowsOf(host, seq, 100))));
      seq += 100;
      await new Promise((r) => setTimeout(r, Math.max(0, 10 - (Date.now() - tick))));
    }
    measuring = false;

    // Migration pause: back-to-back writes into the moving shard while it
    // moves to its follower (the target a rebalance prefers: promoted, not opened).
    const region = table.regions.find((r) => r.partition === 2)!;
    const moving = meta.server.status().shards.find((s) => s.id === region.shard)!;
    const to = moving.followers[0]!;
    let writing = true;
    const latencies: { start: number; end: number }[] = [];
    const writer = (async () => {
      while (writing) {
        const start = performance.now();
        await front.insert(TABLE, rowsOf(HOSTS[2]!, seq++, 1));
        latencies.push({ start, end: performance.now() });
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    const migrationStart = performance.now();
    const moved = await front.migrateShard(region.shard, to);
    const migrationEnd = performance.now();
    await new Promise((r) => setTimeout(r, 200));
    writing = false;
    await writer;
    const during = latencies.filter((l) => l.end >= migrationStart && l.start <= migrationEnd);
    const pauseMs = Math.max(0, ...during.map((l) => l.end - l.start));
    ctx.log(`  follower lag (fetch wait ${fetchWaitMs} ms): ${lagMs.length} applies, p50 ${median(lagMs).toFixed(1)} ms, p99 ${quantile(lagMs, 0.99).toFixed(1)} ms; migration: hand-off ${moved.ms} ms, longest write ${pauseMs.toFixed(0)} ms`);
    return { lagMs, pauseMs, handOffMs: moved.ms };
  } finally {
    for (const member of members) await member.close({ flush: false }).catch(() => undefined);
    await meta.close().catch(() => undefined);
    await metaTransport.close().catch(() => undefined);
    await removeDir(objectStoreDir);
  }
}

export const clusterSuite: Suite = {
  name: 'cluster',
  description: 'failover (SIGKILL to first acknowledged write) with and without a hot-standby follower, follower lag, migration pause, meta leader failover under writes',
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    const runs = ctx.options.quick ? 1 : Math.max(ctx.options.runs, 5);
    const kafka = await startTestKafka({ brokers: 3 });
    const natsCluster = await startNatsCluster();
    const nats = { url: natsCluster.urls.join(',') };
    try {
      const withFollower: number[] = [];
      const withoutFollower: number[] = [];
      const metaRuns: MetaFailoverRun[] = [];
      // Alternate, so a noisy stretch of the machine does not land on one side only.
      for (let i = 0; i < runs; i++) {
        withFollower.push(await failoverOnce(kafka, nats, 1, ctx));
        withoutFollower.push(await failoverOnce(kafka, nats, 0, ctx));
      }
      // Follower lag with the default wal.consumerWaitTimeoutMs (100 ms) and with 10 ms: the mock
      // answers a Fetch at the end of the log only after its MaxWait, even when records arrive
      // meanwhile (a real broker answers once minBytes = 1 is there), so on the mock a tail's
      // lag is bounded below by that wait.
      const lagRuns: LagRun[] = [];
      const shortWaitRuns: LagRun[] = [];
      const loadMs = ctx.options.quick ? 1_000 : 3_000;
      for (let i = 0; i < Math.min(runs, 3); i++) {
        lagRuns.push(await lagAndMigration(kafka, ctx, loadMs, 100));
        shortWaitRuns.push(await lagAndMigration(kafka, ctx, loadMs, 10));
      }
      // After the in-process runs, which the many topics and processes the meta failovers leave on the mock would slow.
      // The issue asks for p50 and p99 over at least 5 runs, also in a quick run.
      for (let i = 0; i < Math.max(runs, 5); i++) metaRuns.push(await metaFailoverOnce(kafka, nats, ctx));
      const newLeader = metaRuns.map((r) => r.newLeaderMs);
      const lagP50 = lagRuns.map((r) => median(r.lagMs));
      const lagP99 = lagRuns.map((r) => quantile(r.lagMs, 0.99));
      const shortP50 = shortWaitRuns.map((r) => median(r.lagMs));
      const shortP99 = shortWaitRuns.map((r) => quantile(r.lagMs, 0.99));
      const metrics: Metric[] = [
        metric({
          id: 'cluster.failover.follower.ms',
          suite: 'cluster',
          name: 'failover, 1 follower: SIGKILL -> first write acked (p50)',
          unit: 'ms',
          samples: withFollower,
          note: `target p50 < 1500 ms: ${median(withFollower) < 1500 ? 'met' : 'NOT met'}; ~1 s is failure detection`,
        }),
        metric({
          id: 'cluster.failover.no_follower.ms',
          suite: 'cluster',
          name: 'failover, no follower (replay ~2 MB): SIGKILL -> first write acked (p50)',
          unit: 'ms',
          samples: withoutFollower,
          versus: { of: 'with a follower', samples: withFollower },
        }),
        metric({
          id: 'cluster.follower_lag.p50.ms',
          suite: 'cluster',
          name: 'follower lag, steady writes, p50 (append -> apply; fetch wait 100 ms)',
          unit: 'ms',
          samples: lagP50,
        }),
        metric({
          id: 'cluster.follower_lag.p99.ms',
          suite: 'cluster',
          name: 'follower lag, steady writes, p99 (fetch wait 100 ms, the default)',
          unit: 'ms',
          samples: lagP99,
          note: `target p99 < 100 ms: ${median(lagP99) < 100 ? 'met' : 'NOT met'}; the mock holds a Fetch its whole MaxWait`,
        }),
        metric({
          id: 'cluster.follower_lag_wait10.p50.ms',
          suite: 'cluster',
          name: 'follower lag, steady writes, p50 (wal.consumerWaitTimeoutMs 10)',
          unit: 'ms',
          samples: shortP50,
        }),
        metric({
          id: 'cluster.follower_lag_wait10.p99.ms',
          suite: 'cluster',
          name: 'follower lag, steady writes, p99 (wal.consumerWaitTimeoutMs 10)',
          unit: 'ms',
          samples: shortP99,
          note: `target p99 < 100 ms: ${median(shortP99) < 100 ? 'met' : 'NOT met'}`,
        }),
        metric({
          id: 'cluster.migration.pause.ms',
          suite: 'cluster',
          name: 'migration to the follower: longest write to the moving shard',
          unit: 'ms',
          samples: lagRuns.map((r) => r.pauseMs),
          note: `target < 200 ms: ${median(lagRuns.map((r) => r.pauseMs)) < 200 ? 'met' : 'NOT met'}`,
        }),
        metric({
          id: 'cluster.migration.hand_off.ms',
          suite: 'cluster',
          name: 'migration: hand-off as meta timed it',
          unit: 'ms',
          samples: lagRuns.map((r) => r.handOffMs),
        }),
        metric({
          id: 'cluster.meta_failover.new_leader.ms',
          suite: 'cluster',
          name: 'meta leader SIGKILLed: -> new leader (p50)',
          unit: 'ms',
          samples: newLeader,
          note: `p99 ${quantile(newLeader, 0.99).toFixed(0)} ms over ${newLeader.length} runs; target p50 < 2000 ms: ${median(newLeader) < 2000 ? 'met' : 'NOT met'}`,
        }),
        metric({
          id: 'cluster.meta_failover.new_leader.p99.ms',
          suite: 'cluster',
          name: 'meta leader SIGKILLed: -> new leader (p99)',
          unit: 'ms',
          samples: [quantile(newLeader, 0.99)],
        }),
        metric({
          id: 'cluster.meta_failover.failed_writes',
          suite: 'cluster',
          name: 'meta failover: writes failed (per run, from the kill)',
          unit: 'writes',
          samples: metaRuns.map((r) => r.failed),
          note: `target 0: ${metaRuns.every((r) => r.failed === 0) ? 'met' : 'NOT met'}; of ${metaRuns.map((r) => r.writes).join(', ')} writes`,
        }),
        metric({
          id: 'cluster.meta_failover.slow_writes',
          suite: 'cluster',
          name: 'meta failover: writes over 500 ms (per run)',
          unit: 'writes',
          samples: metaRuns.map((r) => r.slower500),
        }),
        metric({
          id: 'cluster.meta_failover.max_write.ms',
          suite: 'cluster',
          name: 'meta failover: slowest write (per run)',
          unit: 'ms',
          samples: metaRuns.map((r) => r.maxWriteMs),
          note: `target < 1000 ms: ${metaRuns.every((r) => r.maxWriteMs < 1000) ? 'met' : 'NOT met'}`,
        }),
        metric({
          id: 'cluster.meta_failover.migration.ms',
          suite: 'cluster',
          name: 'meta failover: migration requested at the kill -> done',
          unit: 'ms',
          samples: metaRuns.map((r) => r.migrationMs),
        }),
      ];
      const lagDetails = (r: LagRun) => ({ applies: r.lagMs.length, p50: median(r.lagMs), p99: quantile(r.lagMs, 0.99), pauseMs: r.pauseMs, handOffMs: r.handOffMs });
      return { metrics, details: { withFollower, withoutFollower, metaFailover: metaRuns, lagWait100: lagRuns.map(lagDetails), lagWait10: shortWaitRuns.map(lagDetails) } };
    } finally {
      await natsCluster.stop();
      await kafka.stop();
    }
  },
};
