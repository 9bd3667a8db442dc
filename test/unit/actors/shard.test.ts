import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ActorContext } from '../../../src/actors/context.js';
import { ShardActor } from '../../../src/actors/shard.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import { tableMutationCodec } from '../../../src/engine/table/codec.js';
import { isRepriseError } from '../../../src/errors.js';
import { MetaService } from '../../../src/meta/meta-service.js';
import type { TableInfo } from '../../../src/meta/model.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import { withOverrides } from '../../harness/tamper.js';
import { waitUntil } from '../../harness/wait.js';
import { actorContext, SCHEMA } from './parts.js';

/**
 * ShardActor on its own, over real parts (a local WAL, meta's service, the
 * table engine, a directory): what reaches its regions, its role and epoch
 * as its machine says, and what it admits in which state.
 */


describe('ShardActor', () => {
  let dir: string;
  let log: LocalLogStore;
  let meta: MetaService;
  let objects: FsObjectStore;
  const shards: ShardActor[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-shard-'));
    log = await LocalLogStore.open(join(dir, 'wal'));
    meta = await MetaService.open(log, { topicPrefix: 'u', numShards: 1 });
    objects = new FsObjectStore(join(dir, 'objects'));
  });
  afterEach(async () => {
    for (const s of shards.splice(0)) await s.close({ flush: false }).catch(() => undefined);
    await meta.close();
    await log.close();
    await rm(dir, { recursive: true, force: true });
  });

  const context = (overrides: Partial<ActorContext> = {}): ActorContext => actorContext({ meta, log, objects, ...overrides });

  /** A leader once it serves; a follower once it follows. */
  async function started(ctx = context(), role: 'leader' | 'follower' = 'leader'): Promise<ShardActor> {
    const shard = new ShardActor(0, ctx, role);
    shards.push(shard);
    if (role === 'leader') await shard.start();
    else {
      void shard.start();
      await waitUntil(() => shard.state() === 'following', 'the follower follows');
    }
    return shard;
  }

  /** The table, its one region created on `shard` and committed. */
  async function table(shard: ShardActor): Promise<TableInfo> {
    const begun = await meta.beginCreateTable(SCHEMA);
    const region = begun.regions[0]!;
    const createdAt = await shard.createRegion(region, SCHEMA);
    await meta.commitCreateTable(begun.id, { [region.id]: createdAt });
    return meta.table('m');
  }

  const write = (shard: ShardActor, regionId: number, rows: object[], deadline?: { at?: number; signal?: AbortSignal }) =>
    shard.write(regionId, tableMutationCodec.preparePuts(SCHEMA, rows).parts[0]!.mutation, deadline);

  const hosts = async (shard: ShardActor, regionId: number) => {
    const result = await shard.query(regionId, { columns: ['host'] });
    return result.kind === 'rows' ? result.rows.data[0] : [];
  };

  it('applies what it writes, and what it replays after a restart, through the same path; its epoch is the one meta granted', async () => {
    const first = await started();
    const { regions } = await table(first);
    const id = regions[0]!.id;
    await write(first, id, [{ host: 'a', v: 1, ts: 1 }]);
    await write(first, id, [{ host: 'b', v: 2, ts: 1 }]);
    expect(await hosts(first, id)).toEqual(['a', 'b']);
    const before = first.status();
    expect(before).toMatchObject({ state: 'serving', role: 'leader', epoch: 1 });
    await first.close({ flush: false });

    const second = await started();
    expect(second.status()).toMatchObject({ state: 'serving', role: 'leader', epoch: 2, lastEntryId: expect.any(Number) });
    // Its marker follows the entries it replayed.
    expect(second.status().lastEntryId).toBeGreaterThan(before.lastEntryId);
    expect(await hosts(second, id)).toEqual(['a', 'b']);
  });

  it('drops a write whose deadline passed before its append (DEADLINE_EXCEEDED) and writes nothing of it', async () => {
    const shard = await started();
    const id = (await table(shard)).regions[0]!.id;
    const gone = new AbortController();
    gone.abort();
    await expect(write(shard, id, [{ host: 'late', v: 1, ts: 1 }], { at: Date.now() - 1 })).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await expect(write(shard, id, [{ host: 'gone', v: 1, ts: 1 }], { signal: gone.signal })).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await write(shard, id, [{ host: 'kept', v: 1, ts: 1 }], { at: Date.now() + 60_000 });
    expect(await hosts(shard, id)).toEqual(['kept']);
  });

  it('a follower refuses reads; promoted, it answers only once it serves, never from its standby regions while it catches up', async () => {
    const leader = await started();
    const id = (await table(leader)).regions[0]!.id;
    await write(leader, id, [{ host: 'a', v: 1, ts: 1 }]);
    await leader.close({ flush: false });
    // Meta hands the shard to n2 (as a failover would).
    await meta.assignShard(0, 'n2');

    // The follower's log: its reads of the topic's bounds wait while `hold` is set (promotion reads them before catching up).
    let release: (() => void) | undefined;
    let held: Promise<void> | undefined;
    const gated = withOverrides(log, {
      bounds: async (topic: string) => {
        await held;
        return log.bounds(topic);
      },
    });
    const follower = await started(context({ nodeId: 'n2', log: gated }), 'follower');
    expect(follower.state()).toBe('following');
    await expect(follower.query(id, {})).rejects.toMatchObject({ code: 'NOT_LEADER' });

    held = new Promise((r) => (release = r));
    const promoted = follower.promoteToLeader();
    await new Promise((r) => setTimeout(r, 50));
    expect(follower.state()).toBe('promoting');
    const refused = await follower.query(id, {}).catch((err: unknown) => err);
    expect(isRepriseError(refused, 'SHARD_NOT_SERVING'), String(refused)).toBe(true);
    release!();
    expect(await promoted).toBe('serving');
    expect(follower.status()).toMatchObject({ role: 'leader', epoch: 2 });
    expect(await hosts(follower, id)).toEqual(['a']);
  });
});
