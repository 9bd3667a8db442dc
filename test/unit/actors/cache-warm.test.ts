import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ActorContext } from '../../../src/actors/context.js';
import { ShardActor } from '../../../src/actors/shard.js';
import { CachedObjectStore } from '../../../src/engine/cached-object-store.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import { tableMutationCodec } from '../../../src/engine/table/codec.js';
import { isSstKey } from '../../../src/engine/table/manifest.js';
import { MetaService } from '../../../src/meta/meta-service.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import { waitUntil } from '../../harness/wait.js';
import { actorContext, SCHEMA } from './parts.js';

/**
 * The local SST cache is warmed when a region opens (issue 17): each node
 * has a CachedObjectStore of its own in front of one shared store (a
 * directory standing in for the bucket). A follower's cache holds the
 * leader's SSTs before it is promoted, and a leader opened on a node with a
 * cold cache fetches them in the background: in both cases the first
 * queries are answered from local copies (no miss).
 */

describe('warming the local SST cache', () => {
  let dir: string;
  let log: LocalLogStore;
  let meta: MetaService;
  let bucket: FsObjectStore;
  const shards: ShardActor[] = [];
  const caches: CachedObjectStore[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-warm-'));
    log = await LocalLogStore.open(join(dir, 'wal'));
    meta = await MetaService.open(log, { topicPrefix: 'u', numShards: 1 });
    bucket = new FsObjectStore(join(dir, 'bucket'));
  });
  afterEach(async () => {
    for (const s of shards.splice(0)) await s.close({ flush: false }).catch(() => undefined);
    for (const c of caches.splice(0)) c.close();
    await meta.close();
    await log.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Node `nodeId`'s cache in front of the shared store, and log lines it writes. */
  async function node(nodeId: string): Promise<{ ctx: ActorContext; cache: CachedObjectStore; lines: { msg: string; level: number }[] }> {
    const cache = await CachedObjectStore.open(bucket, { dir: join(dir, nodeId, 'cache'), maxBytes: 64 * 1024 * 1024, cacheable: isSstKey });
    caches.push(cache);
    const lines: { msg: string; level: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as { msg: string; level: number });
        done();
      },
    });
    return { ctx: actorContext({ meta, log, objects: cache, nodeId, logger: pino({ level: 'debug' }, sink) }), cache, lines };
  }

  async function started(ctx: ActorContext, role: 'leader' | 'follower'): Promise<ShardActor> {
    const shard = new ShardActor(0, ctx, role);
    shards.push(shard);
    if (role === 'leader') expect(await shard.start(), JSON.stringify(shard.status())).toBe('serving');
    else {
      void shard.start();
      await waitUntil(() => shard.state() === 'following', 'the follower follows');
    }
    return shard;
  }

  /** A table of one region on `shard`, with three flushed SSTs and a row in the memtable; returns the region id. */
  async function filled(shard: ShardActor): Promise<number> {
    const begun = await meta.beginCreateTable(SCHEMA);
    const region = begun.regions[0]!;
    await meta.commitCreateTable(begun.id, { [region.id]: await shard.createRegion(region, SCHEMA) });
    for (let i = 0; i < 4; i++) {
      await shard.write(region.id, tableMutationCodec.preparePuts(SCHEMA, [{ host: `h${i}`, v: i, ts: 1 + i }]).parts[0]!.mutation);
      if (i < 3) await shard.flush();
    }
    return region.id;
  }

  const hosts = async (shard: ShardActor, regionId: number) => {
    const result = await shard.query(regionId, { columns: ['host'] });
    return result.kind === 'rows' ? result.rows.data[0] : [];
  };
  const ssts = async () => (await bucket.list('regions/')).filter(isSstKey);

  it("a follower's cache holds the leader's SSTs; promoted, its first queries read only local copies", async () => {
    const n1 = await node('n1');
    const n2 = await node('n2');
    const leader = await started(n1.ctx, 'leader');
    const follower = await started(n2.ctx, 'follower');
    const id = await filled(leader);
    expect(await ssts()).toHaveLength(3);
    // The follower reloads the manifest after each flush, and each reload warms its cache.
    await waitUntil(() => n2.cache.stats().objects === 3, "the follower's cache holds the 3 SSTs");
    expect(n2.cache.stats()).toMatchObject({ misses: 0 });

    await leader.close({ flush: false });
    await meta.assignShard(0, 'n2');
    expect(await follower.promoteToLeader()).toBe('serving');
    expect(await hosts(follower, id)).toEqual(['h0', 'h1', 'h2', 'h3']);
    // Nothing was read from the shared store for the query: the SSTs were local before the promotion.
    expect(n2.cache.stats()).toMatchObject({ objects: 3, misses: 0 });
    expect(n2.cache.stats().hits).toBeGreaterThan(0);
  });

  it('a leader opened with a cold cache fetches its SSTs in the background, logs it, and its first query misses nothing', async () => {
    const n1 = await node('n1');
    const first = await started(n1.ctx, 'leader');
    const id = await filled(first);
    await first.close({ flush: false });

    // Meta moves the shard to a node that never followed it (a failover without a standby, a restart).
    await meta.assignShard(0, 'n3');
    const n3 = await node('n3');
    expect(n3.cache.stats().objects).toBe(0);
    const reopened = await started(n3.ctx, 'leader');
    await waitUntil(() => n3.lines.some((l) => l.msg.includes('SSTs fetched into the local cache')), 'the warm-up is logged');
    const line = n3.lines.find((l) => l.msg.includes('SSTs fetched into the local cache'))!;
    expect(line.msg).toMatch(new RegExp(`^region ${id} opened: 3 of 3 SSTs fetched into the local cache in \\d+ ms \\(0 cached already\\)$`));
    expect(line.level).toBe(30); // info
    expect(n3.cache.stats()).toMatchObject({ objects: 3, misses: 0 });
    expect(await hosts(reopened, id)).toEqual(['h0', 'h1', 'h2', 'h3']);
    expect(n3.cache.stats()).toMatchObject({ objects: 3, misses: 0 });
  });

  it('a warm-up that cannot fetch an SST is a warning, not a failure: the region serves and reads the store', async () => {
    const n1 = await node('n1');
    const first = await started(n1.ctx, 'leader');
    const id = await filled(first);
    await first.close({ flush: false });

    await meta.assignShard(0, 'n3');
    const n3 = await node('n3');
    // The store answers HEADs (the open checks every SST exists) but the warm-up's fetches of one SST fail.
    const [victim] = await ssts();
    const flaky = Object.create(bucket) as FsObjectStore;
    let failing = true;
    flaky.size = async (key: string) => {
      if (failing && key === victim) throw new Error('injected: the store refused');
      return bucket.size(key);
    };
    const cache = await CachedObjectStore.open(flaky, { dir: join(dir, 'n3b', 'cache'), maxBytes: 64 * 1024 * 1024, cacheable: isSstKey });
    caches.push(cache);
    const shard = await started({ ...n3.ctx, objects: cache }, 'leader');
    await waitUntil(() => n3.lines.some((l) => l.msg.includes('could not be fetched')), 'the failed warm-up is logged');
    const line = n3.lines.find((l) => l.msg.includes('could not be fetched'))!;
    expect(line.level).toBe(40); // warn
    expect(line.msg).toContain('2 of 3 SSTs fetched');
    expect(shard.state()).toBe('serving');
    failing = false;
    expect(await hosts(shard, id)).toEqual(['h0', 'h1', 'h2', 'h3']);
  });
});
