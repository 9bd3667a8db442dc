import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { S3ObjectStore } from '../../src/engine/s3-object-store.js';
import { isSstKey } from '../../src/engine/table/manifest.js';
import { CLUSTER_HOSTS, CLUSTER_SCHEMA, ProcessGroup } from '../harness/cluster.js';
import { startTestKafka, type TestKafka } from '../harness/kafka-mock.js';
import { startNatsServer, type TestNatsServer } from '../harness/nats-server.js';
import { S3RVER_CREDENTIALS, startS3Server, type TestS3Server } from '../harness/s3-server.js';
import { BIN, call, type Server } from '../harness/standalone.js';

/**
 * Issue 17, part 4: nothing shared but Kafka, NATS and the bucket. A real
 * nats-server, the Kafka-protocol cluster, one s3rver bucket, `reprise meta`
 * and three `reprise node` processes, each node with a data directory of
 * its own (its SST cache only: storage s3 through REPRISE_STORAGE_*). Under
 * continuous writes (and flushes, so SSTs keep landing in the bucket):
 * - SIGKILL of a shard's leader: its hot-standby follower takes it over;
 * - a planned migration with `reprise migrate`;
 * - the killed node restarted on its own (now stale) data dir, and a shard
 *   migrated to it: it opens from the bucket, never from another node's disk.
 * At the end every acknowledged row is readable exactly once through every
 * node, and no node's data dir holds an SST outside its cache. A fourth
 * node started on another's data dir is refused (it would empty that
 * node's cache).
 */

const HOSTS = CLUSTER_HOSTS;
const TS0 = 1_700_000_000_000;
const NODE_IDS = ['n1', 'n2', 'n3'];
const WRITERS = 3;

interface ShardView {
  id: number;
  leader: string | null;
  epoch: number;
  followers: string[];
}
interface MetaStatus {
  meta: { shards: ShardView[]; nodes: { id: string; alive: boolean }[] };
}
interface CacheStats {
  objects: number;
  hits: number;
  misses: number;
  fetchedBytes: number;
}
interface NodeStatusBody {
  objectStore?: { type: string; where: string; cache?: CacheStats };
  nodes: { id: string; shards: { id: number; state: string; role: string; epoch: number }[] }[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const keyOf = (r: { host: string; ts: number }) => `${r.host}@${r.ts}`;

/** Every file under `dir`, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

describe('a cluster on S3 storage: three nodes with their own data dirs, one bucket', () => {
  let kafka: TestKafka;
  let nats: TestNatsServer;
  let s3: TestS3Server;
  let group: ProcessGroup;

  beforeAll(async () => {
    [kafka, nats, s3] = await Promise.all([startTestKafka({ brokers: 3 }), startNatsServer({ jetstream: true }), startS3Server({ bucket: 'reprise-cluster' })]);
    group = new ProcessGroup(kafka, nats, 's3c');
  });
  afterEach(async () => {
    await group.stop();
  });
  afterAll(async () => {
    await s3?.stop();
    await nats?.stop();
    await kafka?.stop();
  });

  it('fails over a SIGKILLed leader to its standby, migrates, restarts the killed node: every acknowledged row once, SSTs only in the bucket and the caches', async () => {
    const testStart = Date.now();
    const root = `cluster-${process.pid}-${Date.now().toString(36)}`;
    const { REPRISE_DATA_DIR: sharedDir, ...clusterEnv } = await group.clusterEnv();
    const env: Record<string, string> = {
      ...clusterEnv,
      REPRISE_STORAGE_TYPE: 's3',
      REPRISE_STORAGE_BUCKET: s3.bucket,
      REPRISE_STORAGE_ROOT: root,
      REPRISE_STORAGE_ENDPOINT: s3.endpoint,
      REPRISE_STORAGE_REGION: 'us-east-1',
      REPRISE_STORAGE_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      REPRISE_STORAGE_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      REPRISE_STORAGE_FORCE_PATH_STYLE: 'true',
    };
    const dataDirs = new Map<string, string>();
    for (const id of NODE_IDS) dataDirs.set(id, await group.tempDir(id));
    const nodes = new Map<string, Server>();
    const startNode = async (id: string) => {
      const node = await group.launch(id, ['node', '--id', id, '--data-dir', dataDirs.get(id)!, '--http-addr', '127.0.0.1:0'], env);
      nodes.set(id, node);
      return node;
    };
    const meta = await group.launch('meta', ['meta', '--min-nodes', '3', '--http-addr', '127.0.0.1:0'], env);
    await Promise.all(NODE_IDS.map(startNode));
    const front = nodes.get('n1')!;
    /** Meta's view, from meta itself (a node's answer would wait for a dead node's). */
    const metaShards = async () => ((await (await fetch(new URL('/v1/cluster/status', meta.url))).json()) as MetaStatus).meta;
    const nodeStatus = async (id: string) => (await call(nodes.get(id)!, 'GET', '/v1/status')).body as NodeStatusBody;
    const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = await probe().catch(() => undefined);
        if (value !== undefined) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(50);
      }
    };

    // Every shard led, one per node, each with its hot-standby follower.
    let shards = await waitFor('every shard led and followed', async () => {
      const m = await metaShards();
      return m.shards.every((s) => s.leader !== null && s.epoch > 0 && s.followers.length === 1) ? m.shards : undefined;
    });
    expect(new Set(shards.map((s) => s.leader))).toEqual(new Set(NODE_IDS));
    // A fourth node started on n1's data dir is refused: it would empty n1's cache under it.
    const intruder = await group.launch('n4', ['node', '--id', 'n4', '--data-dir', dataDirs.get('n1')!, '--http-addr', '127.0.0.1:0'], env).then(
      () => 'started',
      (err: Error) => err.message,
    );
    expect(intruder).toMatch(/exited \(1\).*SST cache .* is in use by process \d+/s);
    const created = await call(front, 'POST', '/v1/tables', CLUSTER_SCHEMA);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const regions = created.body.regions as { id: number; partition: number; shard: number }[];
    const regionShards = new Set(regions.map((r) => r.shard));

    // Writers through the front, and a flush of every leader now and then (SSTs keep landing in the bucket).
    const acked = new Set<string>();
    const attempted = new Set<string>();
    const failures: string[] = [];
    let writing = true;
    const writes: { at: number; ok: boolean }[] = [];
    const loops = Array.from({ length: WRITERS }, async (_, w) => {
      for (let n = 0; writing; n++) {
        const rows = HOSTS.map((host) => ({ host, ts: TS0 + w * 1_000_000 + n, cpu_util: n }));
        for (const r of rows) attempted.add(keyOf(r));
        const at = Date.now();
        const response = await call(front, 'POST', '/v1/tables/system_metrics/rows', rows).catch((err: unknown) => ({ status: 0, body: { error: { code: String(err) } } }));
        writes.push({ at, ok: response.status === 200 });
        if (response.status === 200) for (const r of rows) acked.add(keyOf(r));
        else failures.push(`${response.status} ${response.body?.error?.code ?? ''}`);
      }
    });
    const flusher = (async () => {
      while (writing) {
        await fetch(new URL('/v1/flush', front.url), { method: 'POST', signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
        await sleep(700);
      }
    })();
    const ackedSince = async (what: string, since: number, n = 3) => waitFor(what, async () => (writes.filter((x) => x.ok && x.at >= since).length >= n ? true : undefined));

    const bucket = new S3ObjectStore(s3.storeOptions(root));
    try {
      await sleep(1_500);
      await waitFor('SSTs in the bucket', async () => ((await bucket.list('regions/')).some(isSstKey) ? true : undefined));

      // 1. SIGKILL the leader of a shard holding a region (not the front): its follower takes it over.
      const before = shards.find((s) => s.leader !== 'n1' && regionShards.has(s.id))!;
      const victimId = before.leader!;
      const standby = before.followers[0]!;
      nodes.get(victimId)!.child.kill('SIGKILL');
      await nodes.get(victimId)!.exited;
      const killedAt = Date.now();
      const moved = await waitFor(`shard ${before.id} failed over`, async () => {
        const s = (await metaShards()).shards.find((x) => x.id === before.id)!;
        return s.leader !== null && s.leader !== victimId && s.epoch > before.epoch ? s : undefined;
      });
      expect(moved.leader, `shard ${before.id} was to go to its hot standby`).toBe(standby);
      await waitFor(`'${standby}' serving shard ${before.id}`, async () =>
        (await nodeStatus(standby)).nodes[0]!.shards.some((s) => s.id === before.id && s.role === 'leader' && s.state === 'serving') ? true : undefined,
      );
      const failedOverMs = Date.now() - killedAt;
      const promotedCache = (await nodeStatus(standby)).objectStore!.cache!;
      const firstQuery = await call(nodes.get(standby)!, 'POST', '/v1/tables/system_metrics/query', {});
      expect(firstQuery.status, JSON.stringify(firstQuery.body)).toBe(200);
      const afterFirstQuery = (await nodeStatus(standby)).objectStore!.cache!;
      await ackedSince('writes acknowledged after the failover', Date.now());

      // 2. A planned migration with the CLI: the failed-over shard to the other survivor.
      const survivor = NODE_IDS.find((id) => id !== victimId && id !== standby)!;
      const migrated = await promisify(execFile)(process.execPath, [BIN, 'migrate', '--shard', String(before.id), '--to', survivor, '--server', front.url]);
      expect(migrated.stdout).toMatch(new RegExp(`shard ${before.id}: ${standby} -> ${survivor} in \\d+ ms`));
      await ackedSince('writes acknowledged after the migration', Date.now());

      // 3. The killed node again, on its own data dir (the cache it left is stale: emptied at start).
      const stale = (await filesUnder(dataDirs.get(victimId)!)).filter((f) => f.endsWith('.sst'));
      await startNode(victimId);
      await waitFor(`'${victimId}' back and following`, async () =>
        (await nodeStatus(victimId)).nodes[0]!.shards.some((s) => s.role === 'follower' && s.state === 'following') ? true : undefined,
      );
      // And a shard moves to it: it opens the shard from the bucket.
      shards = (await metaShards()).shards;
      const toRestarted = shards.find((s) => s.leader !== victimId && regionShards.has(s.id))!;
      const second = await promisify(execFile)(process.execPath, [BIN, 'migrate', '--shard', String(toRestarted.id), '--to', victimId, '--server', front.url]);
      expect(second.stdout).toMatch(new RegExp(`shard ${toRestarted.id}: ${toRestarted.leader} -> ${victimId} in \\d+ ms`));
      await ackedSince('writes acknowledged after the second migration', Date.now());

      writing = false;
      await Promise.all([...loops, flusher]);
      // Whatever failed did so while a shard moved; nothing acknowledged may be missing below.
      const final = await waitFor('a final flush', async () => ((await call(front, 'POST', '/v1/flush')).status === 200 ? true : undefined));
      expect(final).toBe(true);

      // Every acknowledged row exactly once, through every node; nothing nobody wrote.
      for (const id of NODE_IDS) {
        const response = await call(nodes.get(id)!, 'POST', '/v1/tables/system_metrics/query', {});
        expect(response.status, JSON.stringify(response.body)).toBe(200);
        const keys = (response.body.rows as { host: string; ts: number }[]).map(keyOf);
        const visible = new Set(keys);
        expect(keys.length - visible.size, `rows read more than once through ${id}`).toBe(0);
        expect([...acked].filter((k) => !visible.has(k)), `acknowledged rows missing through ${id}\n${group.tail(id)}`).toEqual([]);
        expect([...visible].filter((k) => !attempted.has(k)), `rows nobody wrote, through ${id}`).toEqual([]);
      }

      // Shared nothing: SSTs and manifests are in the bucket; a node's data dir holds SSTs only in its cache.
      const keys = await bucket.list('regions/');
      for (const r of regions) {
        expect(keys.some((k) => k.startsWith(`regions/${r.id}/manifests/`)), `region ${r.id}'s manifest in the bucket`).toBe(true);
        expect(keys.some((k) => k.startsWith(`regions/${r.id}/`) && isSstKey(k)), `region ${r.id}'s SSTs in the bucket`).toBe(true);
      }
      const cached = new Map<string, number>();
      for (const id of NODE_IDS) {
        const files = await filesUnder(dataDirs.get(id)!);
        expect(files.filter((f) => !f.startsWith(`cache${sep}`)), `files of '${id}' outside its cache`).toEqual([]);
        const status = await nodeStatus(id);
        expect(status.objectStore).toMatchObject({ type: 's3', where: `s3://${s3.bucket}/${root}` });
        cached.set(id, files.filter((f) => f.endsWith('.sst')).length);
        expect(cached.get(id), `'${id}' caches SSTs`).toBeGreaterThan(0);
      }
      // Nothing in the directory clusterEnv would have shared (meta writes nothing to disk).
      expect(await filesUnder(sharedDir!)).toEqual([]);

      const ok = writes.filter((w) => w.ok).length;
      console.log(
        `s3 cluster (${Date.now() - testStart} ms): ${ok} writes acknowledged (${acked.size} rows), ${failures.length} failed (${[...new Set(failures)].join(', ') || 'none'}); ` +
          `shard ${before.id}: '${victimId}' SIGKILLed, its standby '${standby}' served it in ${failedOverMs} ms ` +
          `(its cache then: ${promotedCache.objects} SSTs, first query ${afterFirstQuery.misses - promotedCache.misses} misses, ${afterFirstQuery.hits - promotedCache.hits} hits), ` +
          `migrated to '${survivor}' (${migrated.stdout.trim()}); '${victimId}' restarted (its ${stale.length} stale cached SSTs dropped), ${second.stdout.trim()}; ` +
          `${keys.filter(isSstKey).length} SSTs in the bucket, cached: ${[...cached].map(([id, n]) => `${id} ${n}`).join(', ')}`,
      );
    } finally {
      writing = false;
      await Promise.all([...loops, flusher]).catch(() => undefined);
      bucket.close();
    }
  });
});
