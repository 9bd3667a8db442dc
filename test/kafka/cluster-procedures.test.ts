import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decode } from '@msgpack/msgpack';
import { FsObjectStore } from '../../src/engine/fs-object-store.js';
import { manifestKeys } from '../../src/engine/table/manifest.js';
import { metaTopicOf } from '../../src/meta/meta-view.js';
import type { MetaEvent } from '../../src/meta/model.js';
import { KafkaLogStore } from '../../src/wal/kafka/kafka-log-store.js';
import { readEntries } from '../../src/wal/shard-reader.js';
import { startTestKafka, usingRealKafka, type TestKafka } from '../harness/kafka-mock.js';
import { CLUSTER_HOSTS, CLUSTER_SCHEMA, ProcessGroup } from '../harness/cluster.js';
import { startNatsServer, type TestNatsServer } from '../harness/nats-server.js';
import { BIN, call, type Server } from '../harness/standalone.js';
import { until as untilValue } from '../harness/wait.js';

/**
 * Meta's procedures with real processes (a real nats-server, the
 * Kafka-protocol cluster, `reprise meta` and `reprise node` processes
 * sharing one SST directory):
 * - meta SIGKILLed in the middle of a migration, after the source handed
 *   the shard off and before meta assigned it to the target (a window held
 *   open by REPRISE_TEST_PROCEDURE_PAUSE, see src/testing/faults.ts): the
 *   restarted meta resumes the procedure from the meta log and finishes it;
 * - an operator's migration unbalances the cluster and meta is SIGKILLed
 *   once the rebalance planned its move: the next meta moves another shard
 *   (the operator's placement is in the meta log);
 * - `reprise migrate` to a SIGSTOPped target answers only after the target
 *   resumed and serves the shard; to a target that cannot open it (its
 *   manifest damaged after the hand-off) it fails, and the shard goes back;
 * - a node joining a running cluster gets a shard by rebalancing while a
 *   writer keeps writing; SIGKILLed, its shard fails over, and the meta
 *   log holds the failover procedure from start to finish.
 * Each test runs its own cluster (own NATS subjects, Kafka topics and SST
 * directory) on the same nats-server and Kafka.
 */

const SCHEMA = CLUSTER_SCHEMA;
const HOSTS = CLUSTER_HOSTS;
const TS0 = 1_700_000_000_000;

interface ShardView {
  id: number;
  leader: string | null;
  epoch: number;
}
interface ProcedureView {
  id: number;
  kind: string;
  shard: number | null;
  from: string | null;
  to: string | null;
  parent: number | null;
  state: string;
  startedAt: number;
}
interface MetaStatus {
  meta: {
    shards: ShardView[];
    procedures: ProcedureView[];
    nodes: { id: string; alive: boolean; shards: { id: number; epoch: number; state: string; role?: string }[] }[];
    counters: Record<string, number>;
  };
}
interface NodeStatusBody {
  nodes: { id: string; shards: { id: number; state: string; role: string; epoch: number }[] }[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll a probe of the processes (which may be restarting: a failed probe means "not yet"). */
function until<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  return untilValue(probe, what, { timeoutMs: 30_000, everyMs: 50, ignoreErrors: true });
}

describe('procedures of a cluster of real processes: meta + nodes over NATS, Kafka WAL', () => {
  let kafka: TestKafka;
  let nats: TestNatsServer;
  let group: ProcessGroup;

  beforeAll(async () => {
    kafka = await startTestKafka({ brokers: 3 });
    nats = await startNatsServer({ jetstream: true });
    group = new ProcessGroup(kafka, nats, 'procs');
  });
  afterEach(async () => {
    await group.stop();
  });
  afterAll(async () => {
    await nats?.stop();
    await kafka?.stop();
  });

  const tail = (name: string, n = 30) => group.tail(name, n);
  const launch = (name: string, args: string[], env: Record<string, string>) => group.launch(name, args, env);
  const clusterEnv = () => group.clusterEnv();

  const startMeta = (env: Record<string, string>, minNodes: number, name = 'meta') => launch(name, ['meta', '--min-nodes', String(minNodes), '--http-addr', '127.0.0.1:0'], env);
  const startNode = (env: Record<string, string>, id: string) => launch(id, ['node', '--id', id, '--http-addr', '127.0.0.1:0'], env);
  /** Meta's own view, from meta's HTTP endpoint. */
  const metaStatus = async (meta: Server) => (await call(meta, 'GET', '/v1/cluster/status')).body as MetaStatus;
  const nodeShards = async (node: Server) => ((await call(node, 'GET', '/v1/status')).body as NodeStatusBody).nodes[0]!.shards;

  /** Writes one row per host (so one per region) with index i; records what was acknowledged. */
  function writer() {
    const acked = new Set<string>();
    const insertAll = async (via: Server, i: number) => {
      const rows = HOSTS.map((host) => ({ host, cpu_util: i, ts: TS0 + i }));
      const response = await call(via, 'POST', '/v1/tables/system_metrics/rows', rows);
      if (response.status === 200) for (const r of rows) acked.add(`${r.host}@${r.ts}`);
      return response;
    };
    return { acked, insertAll };
  }

  /** `reprise migrate` as an operator runs it; `at`: when it answered. */
  function migrateCli(via: Server, shard: number, to: string) {
    return promisify(execFile)(process.execPath, [BIN, 'migrate', '--shard', String(shard), '--to', to, '--server', via.url]).then(
      (r) => ({ ok: true as const, out: r.stdout, at: Date.now() }),
      (err: { code?: number; stderr?: string }) => ({ ok: false as const, code: err.code, out: err.stderr ?? '', at: Date.now() }),
    );
  }

  async function queryKeys(via: Server): Promise<string[]> {
    const response = await call(via, 'POST', '/v1/tables/system_metrics/query', {});
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return (response.body.rows as { host: string; ts: number }[]).map((r) => `${r.host}@${r.ts}`).sort();
  }

  it('meta SIGKILLed mid-migration (shard handed off, not yet assigned): the restarted meta resumes the procedure and the target serves it', async () => {
    const env = await clusterEnv();
    // The first meta holds the procedure open after the hand-off: the window to kill it in.
    const meta = await startMeta({ ...env, REPRISE_TEST_PROCEDURE_PAUSE: 'migrate.handing_off:120000' }, 3);
    const nodes = new Map<string, Server>();
    await Promise.all(['n1', 'n2', 'n3'].map(async (id) => nodes.set(id, await startNode(env, id))));
    const front = nodes.get('n1')!;
    const placed = await until(async () => {
      const s = await metaStatus(meta);
      return s.meta.shards.every((x) => x.leader !== null && x.epoch > 0) ? s.meta.shards : undefined;
    }, 'every shard led and opened');
    expect(new Set(placed.map((s) => s.leader))).toEqual(new Set(['n1', 'n2', 'n3']));
    const created = await call(front, 'POST', '/v1/tables', SCHEMA);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const { acked, insertAll } = writer();
    for (let i = 0; i < 20; i++) expect((await insertAll(front, i)).status).toBe(200);

    // Migrate a shard holding a region from a node other than the front to the third node.
    const regionShards = new Set((created.body.regions as { shard: number }[]).map((r) => r.shard));
    const before = placed.find((s) => s.leader !== 'n1' && regionShards.has(s.id))!;
    const source = before.leader!;
    const target = ['n2', 'n3'].find((id) => id !== source)!;
    const cli = migrateCli(front, before.id, target);

    // In the log: the procedure at handing_off. Done: the source no longer holds the shard.
    const running = await until(async () => {
      const p = (await metaStatus(meta)).meta.procedures.find((q) => q.shard === before.id);
      if (p?.state !== 'handing_off') return undefined;
      const held = (await nodeShards(nodes.get(source)!)).some((s) => s.id === before.id && s.role !== 'follower');
      return held ? undefined : p;
    }, `shard ${before.id} handed off by '${source}' with the procedure at handing_off`);
    expect(running).toMatchObject({ kind: 'migrate', from: source, to: target, parent: null });
    expect(running.startedAt).toBeLessThanOrEqual(Date.now());
    meta.child.kill('SIGKILL');
    await meta.exited;
    // The shard is still meta's (the log's) for the source: assigned nowhere else yet.
    const killedAt = Date.now();

    const restarted = await startMeta(env, 3, 'meta#2');
    const after = await until(
      async () => {
        const s = await metaStatus(restarted);
        const shard = s.meta.shards.find((x) => x.id === before.id)!;
        return s.meta.procedures.length === 0 && shard.leader === target && shard.epoch > before.epoch ? s : undefined;
      },
      `the resumed migration of shard ${before.id} to '${target}' finished (meta log: ${tail('meta#2', 10)})`,
    );
    const resumedMs = Date.now() - killedAt;
    expect(after.meta.counters.migrations).toBeGreaterThanOrEqual(1);

    // The target serves the shard; writes through the front succeed again, every region included.
    await until(async () => ((await nodeShards(nodes.get(target)!)).some((s) => s.id === before.id && s.state === 'serving') ? true : undefined), `'${target}' serves shard ${before.id}`);
    for (let i = 20; i < 40; i++) {
      const response = await insertAll(front, i);
      expect(response.status, JSON.stringify(response.body)).toBe(200);
    }
    // Every acknowledged row, exactly once, through the new leader and through the front.
    for (const via of [nodes.get(target)!, front]) expect(await queryKeys(via)).toEqual([...acked].sort());
    expect(acked.size).toBe(40 * HOSTS.length);

    // The client that asked lost its meta mid-way: it read the outcome from meta's log.
    const asked = await cli;
    expect(asked.ok, asked.out).toBe(true);
    expect(asked.out).toContain(`shard ${before.id}: ${source} -> ${target}`);

    // The move left the source with no shard and the target with two: the
    // restarted meta rebalances, moving one of the target's other shards
    // (the operator's shard stays where it was sent, across the restart too).
    const balanced = await until(async () => {
      const s = await metaStatus(restarted);
      const counts = ['n1', 'n2', 'n3'].map((id) => s.meta.shards.filter((x) => x.leader === id).length).join();
      return counts === '1,1,1' && s.meta.procedures.length === 0 ? s : undefined;
    }, 'one shard per node again');
    expect(balanced.meta.shards.find((x) => x.id === before.id)!.leader).toBe(target);
    expect(balanced.meta.counters).toMatchObject({ migrations: 2, rebalanceMoves: 1 });
    const metrics = await (await fetch(new URL('/metrics', restarted.url))).text();
    expect(metrics).toMatch(/^reprise_meta_migrations_total 2$/m);
    expect(metrics).toMatch(/^reprise_meta_rebalance_moves_total 1$/m);
    expect(metrics).toMatch(/^reprise_meta_procedures\{kind="migrate"\} 0$/m);
    for (let i = 40; i < 45; i++) expect((await insertAll(front, i)).status).toBe(200);
    expect(await queryKeys(front)).toEqual([...acked].sort());
    console.log(`meta SIGKILLed mid-migration: the restarted meta finished it ${resumedMs} ms after the kill; shard ${before.id} ${source} -> ${target}, epoch ${before.epoch} -> ${after.meta.shards.find((x) => x.id === before.id)!.epoch}`);
  });

  /** Meta (with `metaEnv` on top of `env`) and nodes n1..n3, every shard led and opened, and the three-region table created through n1. */
  async function threeNodeCluster(env: Record<string, string>, metaEnv: Record<string, string> = {}) {
    const meta = await startMeta({ ...env, ...metaEnv }, 3);
    const nodes = new Map<string, Server>();
    await Promise.all(['n1', 'n2', 'n3'].map(async (id) => nodes.set(id, await startNode(env, id))));
    const placed = await until(async () => {
      const s = await metaStatus(meta);
      return s.meta.shards.every((x) => x.leader !== null && x.epoch > 0) ? s.meta.shards : undefined;
    }, 'every shard led and opened');
    expect(new Set(placed.map((s) => s.leader))).toEqual(new Set(['n1', 'n2', 'n3']));
    const created = await call(nodes.get('n1')!, 'POST', '/v1/tables', SCHEMA);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const regions = created.body.regions as { id: number; shard: number }[];
    return { meta, nodes, placed, regions };
  }

  it("an operator's migration stays where it was sent: the rebalance it causes moves another shard, also when meta restarts before the move", async () => {
    // No followers: the planner's only preference among a node's shards is the operator's (then the lowest id).
    const env = { ...(await clusterEnv()), REPRISE_CLUSTER_FOLLOWERS: '0' };
    // The first meta holds each rebalance after it planned its move, before recording it: the window to kill it in.
    const { meta, nodes, placed } = await threeNodeCluster(env, { REPRISE_TEST_PROCEDURE_PAUSE: 'rebalance.planning:120000' });
    const leaderOf = (shard: number) => placed.find((s) => s.id === shard)!.leader!;
    // Shard 0 goes to shard 1's node: the source is left with none, the target with shards 0 and 1.
    const [source, target] = [leaderOf(0), leaderOf(1)];
    const front = nodes.get(leaderOf(2))!;
    const { acked, insertAll } = writer();
    for (let i = 0; i < 10; i++) expect((await insertAll(front, i)).status).toBe(200);
    const asked = await migrateCli(front, 0, target);
    expect(asked.ok, asked.out).toBe(true);

    // The rebalance that follows planned its move; meta dies before making it.
    const rebalance = await until(async () => {
      const p = (await metaStatus(meta)).meta.procedures.find((q) => q.kind === 'rebalance');
      return p && tail('meta', 200).includes(`test pause: rebalance #${p.id} waits`) ? p : undefined;
    }, `a rebalance planned (meta log: ${tail('meta', 10)})`);
    meta.child.kill('SIGKILL');
    await meta.exited;

    // The next meta resumes it at planning and plans again, knowing (from the log) what the operator moved.
    const restarted = await startMeta(env, 3, 'meta#2');
    const balanced = await until(
      async () => {
        const s = await metaStatus(restarted);
        const counts = ['n1', 'n2', 'n3'].map((id) => s.meta.shards.filter((x) => x.leader === id).length).join();
        return counts === '1,1,1' && s.meta.procedures.length === 0 ? s : undefined;
      },
      `one shard per node again (meta log: ${tail('meta#2', 10)})`,
    );
    expect(balanced.meta.shards.find((x) => x.id === 0)!.leader).toBe(target);
    expect(balanced.meta.shards.find((x) => x.id === 1)!.leader).toBe(source);
    expect(balanced.meta.counters).toMatchObject({ rebalanceMoves: 1 });
    // The same rebalance, resumed: it made the one move.
    expect(tail('meta#2', 2000)).toContain(`rebalance #${rebalance.id} done: 1 shard(s) moved`);
    for (let i = 10; i < 20; i++) expect((await insertAll(front, i)).status).toBe(200);
    expect(await queryKeys(front)).toEqual([...acked].sort());
  });

  it('`reprise migrate` answers once the target serves the shard: a target paused through its assignment makes the command wait', async () => {
    // Failure detection slower than the pause below, so that the paused target stays alive to meta.
    const env = { ...(await clusterEnv()), REPRISE_CLUSTER_LEASE_MS: '4000', REPRISE_CLUSTER_FAILURE_TIMEOUT_MS: '5000' };
    const { meta, nodes, placed } = await threeNodeCluster(env);
    const front = nodes.get('n1')!;
    const { acked, insertAll } = writer();
    for (let i = 0; i < 10; i++) expect((await insertAll(front, i)).status).toBe(200);
    const shard = placed.find((s) => s.leader === 'n2')!;
    const target = nodes.get('n3')!;

    target.child.kill('SIGSTOP');
    const asked = migrateCli(front, shard.id, 'n3');
    // Meta assigns the shard to n3 while n3 cannot open it.
    await until(async () => ((await metaStatus(meta)).meta.shards.find((s) => s.id === shard.id)!.leader === 'n3' ? true : undefined), `shard ${shard.id} assigned to n3`);
    await sleep(1_000);
    const resumedAt = Date.now();
    target.child.kill('SIGCONT');
    const answered = await asked;
    expect(answered.ok, answered.out).toBe(true);
    expect(answered.out).toContain(`shard ${shard.id}: n2 -> n3`);
    expect(answered.at).toBeGreaterThan(resumedAt);

    // Served by n3 when the command answered: its leader at meta's epoch, reads and writes through it.
    const epoch = (await metaStatus(meta)).meta.shards.find((s) => s.id === shard.id)!.epoch;
    expect(epoch).toBeGreaterThan(shard.epoch);
    expect((await nodeShards(target)).find((s) => s.id === shard.id)).toMatchObject({ state: 'serving', role: 'leader', epoch });
    expect(await queryKeys(target)).toEqual([...acked].sort());
    for (let i = 10; i < 20; i++) expect((await insertAll(target, i)).status).toBe(200);
    expect(await queryKeys(front)).toEqual([...acked].sort());
    console.log(`migrate with the target paused: answered ${answered.at - resumedAt} ms after the target resumed`);
  });

  it('a target that fails to open the shard (its manifest damaged after the hand-off): the migration fails, naming shard and target, and the shard goes back to its source', async () => {
    // No followers: the target opens the shard from the manifests. Failure
    // detection slower than the source's pause below, so that it stays alive to meta.
    const env: Record<string, string> = { ...(await clusterEnv()), REPRISE_CLUSTER_FOLLOWERS: '0', REPRISE_CLUSTER_LEASE_MS: '15000', REPRISE_CLUSTER_FAILURE_TIMEOUT_MS: '20000' };
    // Meta waits after the hand-off: the window in which the test damages the manifest.
    const { meta, nodes, placed, regions } = await threeNodeCluster(env, { REPRISE_TEST_PROCEDURE_PAUSE: 'migrate.handing_off:2000' });
    const front = nodes.get('n1')!;
    const { acked, insertAll } = writer();
    for (let i = 0; i < 10; i++) expect((await insertAll(front, i)).status).toBe(200);
    const shard = placed.find((s) => s.leader === 'n2')!;
    const source = nodes.get('n2')!;
    const asked = migrateCli(front, shard.id, 'n3');
    await until(async () => {
      const p = (await metaStatus(meta)).meta.procedures.find((q) => q.shard === shard.id);
      return p?.state === 'handing_off' && !(await nodeShards(source)).some((s) => s.id === shard.id) ? true : undefined;
    }, `shard ${shard.id} handed off by n2`);

    // The hand-off flushed: the target will open the shard from its regions' manifests. Damage them.
    const store = new FsObjectStore(env.REPRISE_DATA_DIR!);
    const newest = await Promise.all(regions.filter((r) => r.shard === shard.id).map(async (r) => (await manifestKeys(store, r.id)).at(-1)!));
    const manifests = newest.map((key) => join(env.REPRISE_DATA_DIR!, key));
    expect(manifests.length).toBeGreaterThan(0);
    const originals = await Promise.all(manifests.map((file) => readFile(file)));
    for (const [i, file] of manifests.entries()) {
      const damaged = Buffer.from(originals[i]!);
      damaged[damaged.length - 2] ^= 0x01;
      await writeFile(file, damaged);
    }
    // The source, given the shard back, would find the damage too: paused until it is repaired.
    source.child.kill('SIGSTOP');

    const answered = await asked;
    expect(answered.ok ? 0 : answered.code, answered.out).toBe(1);
    expect(answered.out).toMatch(new RegExp(`^reprise: SHARD_NOT_SERVING: migration of shard ${shard.id} from 'n2' to 'n3' failed: .*'n3'.*MANIFEST_CORRUPT`, 'm'));
    expect(answered.out).toContain(`shard ${shard.id} was given back to 'n2'`);
    console.log(`migrate to a target that cannot open the shard: ${answered.out.trim()}`);
    const after = await metaStatus(meta);
    expect(after.meta.shards.find((s) => s.id === shard.id)!.leader).toBe('n2');
    expect(after.meta.procedures.filter((p) => p.shard === shard.id)).toEqual([]);
    expect(tail('meta', 100)).toMatch(new RegExp(`migration of shard ${shard.id} from 'n2' to 'n3' rolled back`));

    // Repaired, the source serves the shard again: every acknowledged row, and writes go on.
    for (const [i, file] of manifests.entries()) await writeFile(file, originals[i]!);
    source.child.kill('SIGCONT');
    await until(async () => ((await nodeShards(source)).some((s) => s.id === shard.id && s.state === 'serving' && s.role === 'leader') ? true : undefined), `n2 serves shard ${shard.id} again`);
    for (let i = 10; i < 20; i++) {
      const response = await insertAll(front, i);
      expect(response.status, JSON.stringify(response.body)).toBe(200);
    }
    expect(await queryKeys(front)).toEqual([...acked].sort());
  });

  it('rebalance: a node joining a cluster of two gets a shard, moved while a writer keeps writing; nothing acknowledged is lost', async () => {
    const env = await clusterEnv();
    const meta = await startMeta(env, 2);
    const nodes = new Map<string, Server>();
    await Promise.all(['n1', 'n2'].map(async (id) => nodes.set(id, await startNode(env, id))));
    const front = nodes.get('n1')!;
    const placed = await until(async () => {
      const s = await metaStatus(meta);
      return s.meta.shards.every((x) => x.leader !== null && x.epoch > 0) ? s.meta.shards : undefined;
    }, 'every shard led and opened');
    const counts = (shards: ShardView[]) => ['n1', 'n2', 'n3'].map((id) => shards.filter((s) => s.leader === id).length);
    expect(counts(placed).slice(0, 2).sort()).toEqual([1, 2]);
    const created = await call(front, 'POST', '/v1/tables', SCHEMA);
    expect(created.status, JSON.stringify(created.body)).toBe(201);

    const { acked, insertAll } = writer();
    const failures: string[] = [];
    const latencies: { at: number; ms: number }[] = [];
    let writing = true;
    const loop = (async () => {
      for (let i = 0; writing; i++) {
        const t0 = Date.now();
        const response = await insertAll(front, i);
        latencies.push({ at: t0, ms: Date.now() - t0 });
        if (response.status !== 200) failures.push(JSON.stringify(response.body));
      }
    })();
    await sleep(500);

    const joinedAt = Date.now();
    nodes.set('n3', await startNode(env, 'n3'));
    const balanced = await until(
      async () => {
        const s = await metaStatus(meta);
        const n3 = s.meta.nodes.find((n) => n.id === 'n3');
        const served = s.meta.shards.every((x) => s.meta.nodes.find((n) => n.id === x.leader)?.shards.some((r) => r.id === x.id && r.epoch === x.epoch && r.state === 'serving'));
        return counts(s.meta.shards).join() === '1,1,1' && s.meta.procedures.length === 0 && n3?.alive && served ? s : undefined;
      },
      `one shard per node (meta log: ${tail('meta', 10)})`,
    );
    const rebalancedMs = Date.now() - joinedAt;
    await sleep(500);
    writing = false;
    await loop;

    expect(failures).toEqual([]);
    expect(latencies.filter((l) => l.at < joinedAt).length).toBeGreaterThan(0);
    expect(latencies.filter((l) => l.at > joinedAt + rebalancedMs).length).toBeGreaterThan(0);
    const moved = balanced.meta.shards.find((s) => s.leader === 'n3')!;
    expect(moved.epoch).toBeGreaterThan(placed.find((s) => s.id === moved.id)!.epoch);
    expect(balanced.meta.counters).toMatchObject({ rebalanceMoves: 1, migrations: 1 });
    for (const via of [nodes.get('n3')!, front]) expect(await queryKeys(via)).toEqual([...acked].sort());

    const metrics = await (await fetch(new URL('/metrics', meta.url))).text();
    expect(metrics).toMatch(/^reprise_meta_rebalance_moves_total 1$/m);
    expect(metrics).toMatch(/^reprise_meta_procedures\{kind="rebalance"\} 0$/m);
    const during = latencies.filter((l) => l.at + l.ms >= joinedAt && l.at <= joinedAt + rebalancedMs);
    console.log(
      `rebalance: shard ${moved.id} moved to n3 ${rebalancedMs} ms after n3 started; ${latencies.length} writes, ` +
        `${during.length} during it, slowest ${Math.max(...during.map((l) => l.ms))} ms`,
    );

    // n3 SIGKILLed: its shard fails over, a procedure of its own, recorded
    // in the meta log from its start to its end (read from Kafka, as the
    // simulation's checker reads its log).
    nodes.get('n3')!.child.kill('SIGKILL');
    await nodes.get('n3')!.exited;
    await until(
      async () => {
        const s = await metaStatus(meta);
        const shard = s.meta.shards.find((x) => x.id === moved.id)!;
        const served = s.meta.nodes.find((n) => n.id === shard.leader)?.shards.some((r) => r.id === shard.id && r.epoch === shard.epoch && r.state === 'serving' && r.role !== 'follower');
        return shard.leader !== 'n3' && served && s.meta.procedures.length === 0 ? s : undefined;
      },
      `shard ${moved.id} failed over from n3 (meta log: ${tail('meta', 10)})`,
    );
    for (let i = 1_000_000; i < 1_000_005; i++) expect((await insertAll(front, i)).status).toBe(200);
    const store = await KafkaLogStore.open({ brokers: kafka.brokers, clientId: 'reprise-test', idempotent: usingRealKafka() });
    const events: MetaEvent[] = [];
    try {
      for await (const entry of readEntries(store, metaTopicOf(env.REPRISE_WAL_TOPIC_PREFIX!), 0)) if (entry.kind === 'data') events.push(decode(entry.body) as MetaEvent);
    } finally {
      await store.close();
    }
    type Started = Extract<MetaEvent, { type: 'procedure_started' }>;
    const started = events.filter((e): e is Started => e.type === 'procedure_started');
    const failover = started.find((e) => e.kind === 'failover' && e.shard === moved.id)!;
    expect(failover, JSON.stringify(started)).toMatchObject({ from: 'n3', state: 'assigning', epoch: moved.epoch });
    const steps = (id: number) =>
      events.flatMap((e) => (e.type === 'procedure_step' && e.id === id ? [e.state] : e.type === 'procedure_finished' && e.id === id ? [`finished ${e.outcome}`] : []));
    expect(steps(failover.id)).toEqual(['awaiting_leader', 'finished done']);
    // The table's creation too: a create_table procedure, committed.
    const creation = started.find((e) => e.kind === 'create_table')!;
    expect(creation).toMatchObject({ shard: null, table: created.body.id, state: 'creating_regions' });
    expect(steps(creation.id)).toEqual(['committing', 'finished done']);
    const after = await (await fetch(new URL('/metrics', meta.url))).text();
    expect(after).toMatch(/^reprise_meta_failovers_total 1$/m);
    for (const kind of ['failover', 'create_table']) expect(after).toMatch(new RegExp(`^reprise_meta_procedures\\{kind="${kind}"\\} 0$`, 'm'));
  });
});
