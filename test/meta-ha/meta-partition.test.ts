import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SCHEMA, ProcessGroup } from '../harness/cluster.js';
import { startTestKafka, type TestKafka } from '../harness/kafka-mock.js';
import { awaitMetaLeader, awaitShardsLed, invariantViolations, metaMembers, readMetaLog, startWriters } from '../harness/meta-ha.js';
import { startNatsCluster, type TestNatsCluster } from '../harness/nats-cluster.js';
import { createTestNetwork, type TestNetwork } from '../harness/netns.js';
import { call, type Server } from '../harness/standalone.js';
import { until } from '../harness/wait.js';

/**
 * A real network partition (test/harness/netns.ts): every process in a
 * network namespace of its own (three nats-servers, three metas, three
 * nodes), the Kafka mock in the test's namespace, reachable by all. The
 * meta leader is cut off from the NATS servers, the other metas and the
 * nodes, while it still reaches Kafka (and the test process, which watches
 * it). On the far side it cannot renew its election lease, so by its own
 * clock it stops acting within the lease: it appends nothing to the meta log
 * after the new leader's marker (no split brain); the majority side elects
 * a new leader and the writes go on. Healed, it follows.
 */

const META_IDS = ['m1', 'm2', 'm3'];
const NODE_IDS = ['n1', 'n2', 'n3'];
const NATS_HOSTS = ['nats0', 'nats1', 'nats2'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('meta leader cut off by a real network partition', () => {
  let network: TestNetwork;
  let kafka: TestKafka;
  let nats: TestNatsCluster;
  let group: ProcessGroup;

  beforeAll(async () => {
    network = await createTestNetwork({ hosts: [...NATS_HOSTS, ...META_IDS, ...NODE_IDS], prefix: 'rpmeta' });
    [kafka, nats] = await Promise.all([startTestKafka({ brokers: 3, listenAddress: network.rootIp }), startNatsCluster({ inNetwork: { network, hosts: NATS_HOSTS } })]);
    group = new ProcessGroup(kafka, { url: nats.urls.join(',') }, 'metanet');
  });
  afterAll(async () => {
    await group?.stop();
    await nats?.stop();
    await kafka?.stop();
    await network?.stop();
  });

  /** A reprise process inside its own host, its HTTP on the host's address. */
  const launchIn = (host: string, args: string[], env: Record<string, string>) =>
    group.launch(host, [...args, '--http-addr', `${network.host(host).ip}:0`], env, (command, argv, options) => network.spawn(host, command, argv, options));

  it('the cut-off leader stops leading by its clock and writes nothing more; the majority elects another; healed, it follows', async () => {
    const env = await group.clusterEnv();
    const metas = new Map<string, Server>();
    for (const id of META_IDS) metas.set(id, await launchIn(id, ['meta', '--id', id, '--min-nodes', '3'], env));
    const leader = await awaitMetaLeader(metas);
    const nodes = new Map<string, Server>();
    await Promise.all(NODE_IDS.map(async (id) => nodes.set(id, await launchIn(id, ['node', '--id', id], env))));
    const front = nodes.get('n1')!;
    await awaitShardsLed(front);
    expect((await call(front, 'POST', '/v1/tables', CLUSTER_SCHEMA)).status).toBe(201);
    const writers = startWriters([...nodes.values()]);
    await sleep(1_000);

    const others = [...NATS_HOSTS, ...META_IDS.filter((id) => id !== leader.id), ...NODE_IDS];
    await network.partition([leader.id], others);
    const cutOff = metas.get(leader.id)!;
    // Far side: within its lease (1 s) and a margin it no longer leads, though Kafka and this test still reach it.
    await until(
      async () => {
        const self = (await metaMembers(cutOff)).find((m) => m.id === leader.id);
        return self && self.state !== 'leading' && self.state !== 'taking_over' ? self : undefined;
      },
      `'${leader.id}' to stop leading on the far side`,
      { timeoutMs: 5_000, everyMs: 50, ignoreErrors: true },
    );
    const next = await awaitMetaLeader(metas, { above: leader.epoch, running: (id) => id !== leader.id });
    expect(next.id).not.toBe(leader.id);
    await sleep(1_500);
    // Still cut off: it has not become leader again.
    expect((await metaMembers(cutOff)).find((m) => m.id === leader.id)!.state).not.toBe('leading');

    await network.heal();
    await until(
      async () => {
        const self = (await metaMembers(cutOff)).find((m) => m.id === leader.id);
        return self?.state === 'following' && self.leader?.id === next.id ? self : undefined;
      },
      `'${leader.id}' follows '${next.id}' once healed`,
      { timeoutMs: 20_000, everyMs: 100, ignoreErrors: true },
    );
    const report = await writers.stop();
    expect(report.failures, `${group.tail(leader.id, 20)}\n${group.tail(next.id, 20)}`).toEqual([]);
    expect(await invariantViolations(kafka, env.REPRISE_WAL_TOPIC_PREFIX!, front, report.acked)).toEqual([]);
    // No split brain: the cut-off leader did not even try to append after the new marker.
    expect((await readMetaLog(kafka, env.REPRISE_WAL_TOPIC_PREFIX!)).fenced).toBe(0);
  });
});
