import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestKafka, usingRealKafka, type TestKafka } from '../harness/kafka-mock.js';
import { CLUSTER_HOSTS, CLUSTER_SCHEMA } from '../harness/cluster.js';
import { startNatsServer, type TestNatsServer } from '../harness/nats-server.js';
import { launchChromium } from '../e2e/browser.js';
import { BIN, call, startReprise, type Server } from '../harness/standalone.js';

/**
 * GreptimeDB's failover validation, automated with real processes: a real
 * nats-server, the Kafka-protocol cluster, `reprise meta` and three
 * `reprise node` processes sharing one SST directory. Create a table of
 * three regions, insert through one node, SIGKILL the node leading one of
 * the regions, keep writing: writes and queries succeed again after
 * failover and every acknowledged row is there.
 */

const SCHEMA = CLUSTER_SCHEMA;
const HOSTS = CLUSTER_HOSTS;

describe('cluster of real processes: meta + 3 nodes over NATS, Kafka WAL', () => {
  let kafka: TestKafka;
  let nats: TestNatsServer;
  let objects: string;
  const processes: Server[] = [];
  let env: Record<string, string>;

  beforeAll(async () => {
    kafka = await startTestKafka({ brokers: 3 });
    nats = await startNatsServer({ jetstream: true });
    objects = await mkdtemp(join(tmpdir(), 'reprise-cluster-objects-'));
    env = {
      REPRISE_WAL_PROVIDER: 'kafka',
      REPRISE_WAL_BROKER_ENDPOINTS: kafka.brokers.join(','),
      REPRISE_WAL_IDEMPOTENT: String(usingRealKafka()),
      REPRISE_WAL_TOPIC_PREFIX: `proc_${process.pid}_${Date.now().toString(36)}`,
      REPRISE_NATS_SERVERS: nats.url,
      REPRISE_CLUSTER_NAME: `t${process.pid}`,
      REPRISE_SHARDS: '3',
      REPRISE_DATA_DIR: objects,
    };
  });
  afterAll(async () => {
    for (const p of processes) p.child.kill('SIGKILL');
    await nats?.stop();
    await kafka?.stop();
    await rm(objects, { recursive: true, force: true });
  });

  const startNode = async (id: string) => {
    const node = await startReprise(['node', '--id', id, '--http-addr', '127.0.0.1:0'], env, (log) => log.url as string | undefined);
    processes.push(node);
    return node;
  };

  it('fails over a SIGKILLed node: writes and queries succeed again, every acknowledged row is there', async () => {
    const meta = await startReprise(['meta', '--min-nodes', '3', '--http-addr', '127.0.0.1:0'], env, (log) => log.url as string | undefined);
    processes.push(meta);
    const nodes = new Map<string, Server>();
    for (const [id, node] of await Promise.all(['n1', 'n2', 'n3'].map(async (id) => [id, await startNode(id)] as const))) nodes.set(id, node);
    const front = nodes.get('n1')!;

    // Wait for placement: every shard led, one per node.
    let status: { meta: { shards: { id: number; leader: string | null; epoch: number }[] } } | undefined;
    for (let i = 0; i < 200; i++) {
      status = (await call(front, 'GET', '/v1/cluster/status')).body;
      if (status!.meta.shards.every((s) => s.leader !== null && s.epoch > 0)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(new Set(status!.meta.shards.map((s) => s.leader))).toEqual(new Set(['n1', 'n2', 'n3']));

    const created = await call(front, 'POST', '/v1/tables', SCHEMA);
    expect(created.status).toBe(201);
    const acked: string[] = [];
    const insert = async (via: Server, i: number) => {
      const rows = HOSTS.map((host) => ({ host, cpu_util: i, ts: 1_700_000_000_000 + i }));
      const response = await call(via, 'POST', '/v1/tables/system_metrics/rows', rows);
      if (response.status === 200) acked.push(...rows.map((r) => `${r.host}@${r.ts}`));
      return response;
    };
    for (let i = 0; i < 20; i++) expect((await insert(front, i)).status).toBe(200);

    // The victim: a node other than the front that leads a shard holding a region.
    const regionShards = new Set((created.body.regions as { shard: number }[]).map((r) => r.shard));
    const victimShard = status!.meta.shards.find((s) => s.leader !== 'n1' && regionShards.has(s.id))!;
    const victim = nodes.get(victimShard.leader!)!;
    victim.child.kill('SIGKILL');
    await victim.exited;
    const killedAt = Date.now();

    // Writes through the front touch every region, the failed-over one included.
    let firstOkAfterKill: number | undefined;
    for (let i = 20; i < 40; i++) {
      const response = await insert(front, i);
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      firstOkAfterKill ??= Date.now() - killedAt;
    }
    const after = (await call(front, 'GET', '/v1/cluster/status')).body as typeof status & { meta: { nodes: { id: string; alive: boolean }[] } };
    const moved = after!.meta.shards.find((s) => s.id === victimShard.id)!;
    expect(moved.leader).not.toBe(victimShard.leader);
    expect(moved.epoch).toBeGreaterThan(victimShard.epoch);
    expect(after!.meta.nodes.find((n) => n.id === victimShard.leader)!.alive).toBe(false);

    // Every acknowledged row, through a surviving node other than the front too.
    const other = [...nodes.entries()].find(([id]) => id !== 'n1' && id !== victimShard.leader)![1];
    const rows = (await call(other, 'POST', '/v1/tables/system_metrics/query', {})).body.rows as { host: string; ts: number }[];
    expect(rows.map((r) => `${r.host}@${r.ts}`).sort()).toEqual([...acked].sort());
    expect(rows).toHaveLength(40 * HOSTS.length);

    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'cluster', 'status', '--server', front.url]);
    expect(stdout).toContain(`${victimShard.leader}`);
    expect(stdout).toMatch(/NO/);
    console.log(`failover: first write acknowledged ${firstOkAfterKill} ms after SIGKILL`);

    // Planned migration from the command line: the failed-over shard moves to the other survivor.
    const target = [...nodes.keys()].find((id) => id !== victimShard.leader && id !== moved.leader)!;
    const migrated = await promisify(execFile)(process.execPath, [BIN, 'migrate', '--shard', String(victimShard.id), '--to', target, '--server', front.url]);
    expect(migrated.stdout).toMatch(new RegExp(`shard ${victimShard.id}: ${moved.leader} -> ${target} in \\d+ ms`));
    for (let i = 40; i < 45; i++) expect((await insert(front, i)).status).toBe(200);
    const final = (await call(nodes.get(target)!, 'POST', '/v1/tables/system_metrics/query', {})).body.rows as { host: string; ts: number }[];
    expect(final.map((r) => `${r.host}@${r.ts}`).sort()).toEqual([...acked].sort());

    // The dashboard of a surviving node shows meta's view: the dead node, and the shard's new leader.
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(front.url);
      await page.locator(`#cluster-nodes tr[data-node="${victimShard.leader}"][data-alive="false"]`).waitFor({ timeout: 10_000 });
      await page.locator(`#cluster-shards tr[data-shard="${victimShard.id}"][data-leader="${target}"]`).waitFor({ timeout: 10_000 });
      // Its hot-standby follower (the other survivor), with the lag that follower's node reported.
      const follower = page.locator(`#cluster-shards tr[data-shard="${victimShard.id}"] [data-follower][data-lag-entries]`).first();
      await follower.waitFor({ timeout: 10_000 });
      expect([victimShard.leader, target]).not.toContain(await follower.getAttribute('data-follower'));
      expect(await follower.getAttribute('data-lag-entries')).toMatch(/^\d+$/);
      expect(await follower.textContent()).toMatch(/\d+ entr(y|ies) · \d+ ms/);
      expect(await page.locator('#cluster-summary').textContent()).toMatch(/[1-9]\d* failovers · 1 migrations/);
    } finally {
      await browser.close();
    }

    // Meta's own metrics count what its scheduler did.
    const metrics = await (await fetch(new URL('/metrics', meta.url))).text();
    expect(metrics).toMatch(/^reprise_meta_failovers_total [1-9]/m);
    expect(metrics).toMatch(/^reprise_meta_migrations_total 1$/m);
    expect(metrics).toMatch(/^reprise_meta_nodes\{state="dead"\} 1$/m);
    const promtool = await promisify(execFile)('promtool', ['--version']).then(() => true, () => false);
    if (promtool) {
      const checked = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
        child.stdin!.end(metrics);
      });
      expect(checked.out).toBe('');
      expect(checked.code).toBe(0);
    }

    // The killed node comes back with the same id: it rejoins as a hot-standby follower.
    const rejoined = await startNode(victimShard.leader!);
    type Reported = { meta: { nodes: { id: string; alive: boolean; shards: { id: number; role?: string; state: string }[] }[] } };
    let back: Reported['meta']['nodes'][number] | undefined;
    for (let i = 0; i < 200 && !back?.shards.some((s) => s.role === 'follower' && s.state === 'following'); i++) {
      await new Promise((r) => setTimeout(r, 50));
      back = ((await call(front, 'GET', '/v1/cluster/status')).body as Reported).meta.nodes.find((n) => n.id === victimShard.leader);
    }
    expect(back?.alive).toBe(true);
    expect(back?.shards.some((s) => s.role === 'follower' && s.state === 'following'), JSON.stringify(back)).toBe(true);
    const throughRejoined = (await call(rejoined, 'POST', '/v1/tables/system_metrics/query', {})).body.rows as { host: string; ts: number }[];
    expect(throughRejoined.map((r) => `${r.host}@${r.ts}`).sort()).toEqual([...acked].sort());
  });
});
