import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SCHEMA, ProcessGroup } from '../harness/cluster.js';
import { startTestKafka, type TestKafka } from '../harness/kafka-mock.js';
import { awaitMetaLeader, awaitShardsLed, invariantViolations, metaMembers, startMetas, startNodes, startWriters } from '../harness/meta-ha.js';
import { startNatsCluster, type TestNatsCluster } from '../harness/nats-cluster.js';
import { BIN, call, type Server } from '../harness/standalone.js';
import { until } from '../harness/wait.js';

/**
 * Meta high availability with real processes: three `reprise meta`
 * replicas and three `reprise node`s on a real 3-server nats-server
 * JetStream cluster (the election's KV bucket is replicated on it) and the
 * Kafka-protocol cluster. Writers write all along through every node; each
 * test ends with the checks of test/harness/meta-ha.ts (acknowledged rows
 * readable exactly once, one meta leader per meta epoch, one node per shard
 * epoch). A meta leader change must cost no write: a node whose lease
 * lapses while no meta answers holds its writes until the new leader renews
 * it (src/api/lease.ts).
 */

const META_IDS = ['m1', 'm2', 'm3'];
const NODE_IDS = ['n1', 'n2', 'n3'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('meta replicas: one leads, a follower takes over, no write is lost or refused', () => {
  let kafka: TestKafka;
  let nats: TestNatsCluster;
  let group: ProcessGroup;

  beforeAll(async () => {
    [kafka, nats] = await Promise.all([startTestKafka({ brokers: 3 }), startNatsCluster()]);
    group = new ProcessGroup(kafka, { url: nats.urls.join(',') }, 'metaha');
  });
  afterEach(async () => {
    await group.stop();
  });
  afterAll(async () => {
    await nats?.stop();
    await kafka?.stop();
  });

  /**
   * Three metas, three nodes, every shard led, the table created; writers
   * not started. `firstLeaderEnv`: for m1 only, started first so that it
   * leads (e.g. a procedure pause, which its successors must not have).
   */
  async function startCluster(firstLeaderEnv: Record<string, string> = {}, options: { createTable?: boolean } = {}) {
    const env = await group.clusterEnv();
    const metas = await startMetas(group, { ...env, ...firstLeaderEnv }, META_IDS.slice(0, 1), ['--min-nodes', '3']);
    await awaitMetaLeader(metas);
    for (const [id, server] of await startMetas(group, env, META_IDS.slice(1), ['--min-nodes', '3'])) metas.set(id, server);
    const leader = await awaitMetaLeader(metas);
    const nodes = await startNodes(group, env, NODE_IDS);
    const front = nodes.get('n1')!;
    await awaitShardsLed(front);
    if (options.createTable !== false) {
      const created = await call(front, 'POST', '/v1/tables', CLUSTER_SCHEMA);
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
    return { env, metas, nodes, front, leader };
  }

  const logsOf = (ids: readonly string[]) => ids.map((id) => `--- ${id}\n${group.tail(id, 15)}`).join('\n');

  async function expectInvariants(env: Record<string, string>, via: Server, acked: ReadonlySet<string>) {
    expect(await invariantViolations(kafka, env.REPRISE_WAL_TOPIC_PREFIX!, via, acked)).toEqual([]);
  }

  it('SIGKILL of the meta leader under writes through every node, with a migration asked at the kill: a follower leads at the next epoch, the migration completes, and no write fails', async () => {
    const { env, metas, nodes, front, leader } = await startCluster();
    const writers = startWriters([...nodes.values()]);
    await sleep(1_500);
    // A migration asked at the kill: the dying leader recorded it (its successor resumes it) or not (the request goes to the successor).
    const shards = ((await call(front, 'GET', '/v1/cluster/status')).body as { meta: { shards: { id: number; leader: string; followers: string[] }[] } }).meta.shards;
    const moving = shards.find((s) => s.leader !== 'n1')!;
    const target = moving.followers[0] ?? NODE_IDS.find((id) => id !== moving.leader)!;
    const killedAt = Date.now();
    const migration = call(front, 'POST', `/v1/shards/${moving.id}/migrate`, { to: target });
    metas.get(leader.id)!.child.kill('SIGKILL');
    const next = await awaitMetaLeader(metas, { above: leader.epoch });
    const electedMs = Date.now() - killedAt;
    expect(next.id).not.toBe(leader.id);
    const migrated = await migration;
    expect(migrated.status, JSON.stringify(migrated.body)).toBe(200);
    expect(migrated.body).toMatchObject({ from: moving.leader, to: target });
    await sleep(1_500);
    const report = await writers.stop();
    const during = report.since(killedAt);
    expect(report.failures, logsOf([...NODE_IDS, next.id])).toEqual([]);
    expect(during.sent).toBeGreaterThan(20);
    // Timing is the benchmark's (bench --only cluster); here only that no write waited out a whole attempt.
    expect(during.max, `slowest write after the kill (new leader after ${electedMs} ms)`).toBeLessThan(3_000);
    await expectInvariants(env, front, report.acked);
    // What an operator sees: the new leader's metrics, and the replicas through any node and the CLI.
    const metrics = await (await fetch(new URL('/metrics', metas.get(next.id)!.url))).text();
    expect(metrics).toMatch(/^reprise_meta_leader 1$/m);
    expect(metrics).toMatch(/^reprise_meta_takeovers_total 1$/m);
    expect(metrics).toMatch(/^reprise_meta_leader_changes_total [1-9]/m);
    expect(metrics).toMatch(/^reprise_meta_election_seconds [0-9.]+$/m);
    const follower = META_IDS.find((id) => id !== leader.id && id !== next.id)!;
    expect(await (await fetch(new URL('/metrics', metas.get(follower)!.url))).text()).toMatch(/^reprise_meta_leader 0$/m);
    const viaNode = (await call(front, 'GET', '/v1/cluster/status')).body as { meta: { members: { id: string; state: string; epoch: number | null }[] } };
    expect(viaNode.meta.members.find((m) => m.id === next.id)).toMatchObject({ state: 'leading', epoch: next.epoch });
    expect(viaNode.meta.members.find((m) => m.id === follower)).toMatchObject({ state: 'following' });
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'cluster', 'status', '--server', front.url]);
    expect(stdout).toMatch(new RegExp(`${next.id}\\s+leading\\s+${next.epoch}`));
  });

  it('the leader SIGSTOPped past its election lease is replaced; after SIGCONT it steps down and changes nothing', async () => {
    const { env, metas, nodes, front, leader } = await startCluster();
    const writers = startWriters([...nodes.values()]);
    await sleep(1_000);
    const stopped = metas.get(leader.id)!;
    stopped.child.kill('SIGSTOP');
    const next = await awaitMetaLeader(metas, { above: leader.epoch, running: (id) => id !== leader.id });
    await sleep(1_000);
    stopped.child.kill('SIGCONT');
    // It notices by its clock that its lease is gone, steps down and follows the new leader.
    await until(
      async () => {
        const self = (await metaMembers(stopped)).find((m) => m.id === leader.id);
        return self?.state === 'following' && self.leader?.id === next.id ? self : undefined;
      },
      `'${leader.id}' follows '${next.id}' after SIGCONT`,
      { timeoutMs: 15_000, everyMs: 50, ignoreErrors: true },
    );
    expect((await awaitMetaLeader(metas)).id).toBe(next.id);
    await sleep(500);
    const report = await writers.stop();
    expect(report.failures, logsOf([leader.id, next.id])).toEqual([]);
    await expectInvariants(env, front, report.acked);
  });

  it('two of three metas killed: the last one leads; both restarted, they follow it', async () => {
    const { env, metas, nodes, front, leader } = await startCluster();
    const writers = startWriters([...nodes.values()]);
    await sleep(1_000);
    const survivor = META_IDS.find((id) => id !== leader.id)!;
    const killed = META_IDS.filter((id) => id !== survivor);
    for (const id of killed) metas.get(id)!.child.kill('SIGKILL');
    const alone = await awaitMetaLeader(metas, { running: (id) => id === survivor });
    expect(alone.id).toBe(survivor);
    await sleep(1_000);
    // Back with the same names: they follow the one that leads.
    const restarted = await startMetas(group, env, killed, ['--min-nodes', '3']);
    for (const [id, server] of restarted) metas.set(id, server);
    const after = await awaitMetaLeader(metas);
    expect(after).toEqual(alone);
    const report = await writers.stop();
    expect(report.failures, logsOf([survivor, ...NODE_IDS])).toEqual([]);
    await expectInvariants(env, front, report.acked);
  });

  it('one nats-server restarted: the election and the writes go on', async () => {
    const { env, metas, nodes, front } = await startCluster();
    const writers = startWriters([...nodes.values()]);
    await sleep(1_000);
    await nats.kill(0);
    await sleep(2_000);
    await nats.start(0);
    await nats.waitForJetStream();
    await sleep(1_000);
    await awaitMetaLeader(metas);
    const report = await writers.stop();
    // Processes connected to the killed server reconnect to another. If it
    // held the election bucket's stream leader, JetStream elects another in
    // a few seconds; meanwhile no meta can renew its lease, node leases
    // lapse, and writes wait (and are retried), slow but not failed.
    expect(report.failures, logsOf([...META_IDS, ...NODE_IDS])).toEqual([]);
    await expectInvariants(env, front, report.acked);
  });

  it('the meta leader SIGKILLed mid-migration: the next leader resumes the procedure from the log and the target serves the shard', async () => {
    // The first leader pauses the migration after the hand-off: the window to kill it in.
    const { env, metas, nodes, front, leader } = await startCluster({ REPRISE_TEST_PROCEDURE_PAUSE: 'migrate.handing_off:120000' });
    const writers = startWriters([...nodes.values()]);
    const status = (await call(front, 'GET', '/v1/cluster/status')).body as { meta: { shards: { id: number; leader: string }[] } };
    const shard = status.meta.shards.find((s) => s.leader !== 'n1')!;
    const target = NODE_IDS.find((id) => id !== shard.leader)!;
    const cli = promisify(execFile)(process.execPath, [BIN, 'migrate', '--shard', String(shard.id), '--to', target, '--server', front.url]).then(
      (r) => ({ ok: true as const, out: r.stdout }),
      (err: { stderr?: string }) => ({ ok: false as const, out: err.stderr ?? '' }),
    );
    await until(
      async () => {
        const s = (await call(metas.get(leader.id)!, 'GET', '/v1/cluster/status')).body as { meta: { procedures: { shard: number; state: string }[] } | null };
        return s.meta?.procedures.some((p) => p.shard === shard.id && p.state === 'handing_off') || undefined;
      },
      'the migration at handing_off',
      { timeoutMs: 20_000, everyMs: 50, ignoreErrors: true },
    );
    metas.get(leader.id)!.child.kill('SIGKILL');
    const next = await awaitMetaLeader(metas, { above: leader.epoch });
    await until(
      async () => {
        const s = (await call(metas.get(next.id)!, 'GET', '/v1/cluster/status')).body as {
          meta: { procedures: unknown[]; shards: { id: number; leader: string }[]; nodes: { id: string; shards: { id: number; state: string; role: string }[] }[] };
        };
        const served = s.meta.nodes.find((n) => n.id === target)?.shards.some((x) => x.id === shard.id && x.state === 'serving' && x.role === 'leader');
        return s.meta.procedures.length === 0 && s.meta.shards.find((x) => x.id === shard.id)!.leader === target && served ? s : undefined;
      },
      `shard ${shard.id} led and served by '${target}' with no procedure left`,
      { timeoutMs: 30_000, everyMs: 100, ignoreErrors: true },
    );
    // The CLI's request died with the old leader; it follows the outcome in the log (RemoteMeta.migrate).
    const outcome = await cli;
    expect(outcome.ok, outcome.out).toBe(true);
    const report = await writers.stop();
    expect(report.failures, logsOf([next.id, ...NODE_IDS])).toEqual([]);
    await expectInvariants(env, front, report.acked);
  });

  it('the meta leader SIGKILLed mid create table: the next leader rolls it back, and the table can be created again', async () => {
    // The first leader pauses the create table before its commit: the window to kill it in.
    const { env, metas, front, leader } = await startCluster({ REPRISE_TEST_PROCEDURE_PAUSE: 'create_table.creating_regions:60000' }, { createTable: false });
    const schema = CLUSTER_SCHEMA;
    const creating = call(front, 'POST', '/v1/tables', schema).catch((err: unknown) => ({ status: 0, body: { error: String(err) } }));
    await until(
      async () => {
        const s = (await call(metas.get(leader.id)!, 'GET', '/v1/cluster/status')).body as { meta: { procedures: { kind: string }[] } | null };
        return s.meta?.procedures.some((p) => p.kind === 'create_table') || undefined;
      },
      'the create_table procedure running',
      { timeoutMs: 20_000, everyMs: 50, ignoreErrors: true },
    );
    metas.get(leader.id)!.child.kill('SIGKILL');
    const next = await awaitMetaLeader(metas, { above: leader.epoch });
    const first = await creating;
    // Either the frontend's commit reached the new leader (201), or the create was rolled back and the client told so.
    if (first.status !== 201) {
      expect(first.status, JSON.stringify(first.body)).toBeGreaterThanOrEqual(400);
      await until(
        async () => {
          const s = (await call(metas.get(next.id)!, 'GET', '/v1/cluster/status')).body as { meta: { procedures: unknown[] } };
          return s.meta.procedures.length === 0 || undefined;
        },
        'the create rolled back',
        { timeoutMs: 30_000, everyMs: 100, ignoreErrors: true },
      );
      const again = await call(front, 'POST', '/v1/tables', schema);
      expect(again.status, JSON.stringify(again.body)).toBe(201);
    }
    const written = await call(front, 'POST', `/v1/tables/${schema.name}/rows`, [{ host: 'alpha', ts: 1, cpu_util: 1 }]);
    expect(written.status, JSON.stringify(written.body)).toBe(200);
    await expectInvariants(env, front, new Set(['alpha@1']));
  });
});
