import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TableSchema } from '../../../src/engine/schema.js';
import { MetaReplica } from '../../../src/meta/meta-replica.js';
import { MetaService } from '../../../src/meta/meta-service.js';
import { applyMetaEvent, emptyMetaState } from '../../../src/meta/model.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';

const schema: TableSchema = {
  name: 't',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'm', 's'] },
};

describe('MetaService (event-sourced in the <prefix>_meta topic)', () => {
  let dir: string;
  let log: LocalLogStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-meta-'));
    log = await LocalLogStore.open(dir);
  });
  afterEach(async () => {
    await log.close();
    await rm(dir, { recursive: true, force: true });
  });
  const reopen = () => MetaService.open(log, { topicPrefix: 'wal', numShards: 3 });

  it('creates shard topics with a marker first, once', async () => {
    const meta = await reopen();
    expect(meta.shards().map((s) => s.topic)).toEqual(['wal_0', 'wal_1', 'wal_2']);
    for (const s of meta.shards()) expect(await log.bounds(s.topic)).toEqual({ earliest: 0, next: 1 });
    await meta.close();
    const again = await reopen();
    expect(again.shards()).toHaveLength(3);
    for (const s of again.shards()) expect((await log.bounds(s.topic)).next).toBe(1);
    await again.close();
  });

  it("meta's log is fenced by epochs: each meta appends its marker first, and what an older meta appends after a newer one's marker is never folded", async () => {
    // One meta, no election: each start takes the epoch above the newest marker.
    const first = await reopen();
    expect(first.epoch).toBe(1);
    await first.close();
    const second = await reopen();
    expect(second.epoch).toBe(2);
    await second.close();
    // Two metas that both think they lead (a deposed one paused, then resumed): elected epochs 5 and 6.
    const deposed = await MetaService.open(log, { topicPrefix: 'wal', epoch: 5 });
    const leader = await MetaService.open(log, { topicPrefix: 'wal', epoch: 6 });
    await leader.registerNode('n1');
    await deposed.registerNode('stale');
    const replica = await MetaReplica.open(log, 'wal');
    expect(replica.nodes().map((n) => n.id)).toEqual(['n1']);
    expect(replica.fencedEntries).toBe(1);
    const restarted = await MetaService.open(log, { topicPrefix: 'wal', epoch: 7 });
    expect(restarted.nodes().map((n) => n.id)).toEqual(['n1']);
    // An elected epoch not above the log's newest marker: a newer meta has written.
    await expect(MetaService.open(log, { topicPrefix: 'wal', epoch: 7 })).rejects.toMatchObject({ code: 'NOT_LEADER', message: expect.stringMatching(/not above the newest/) });
    await replica.close();
    await Promise.all([deposed.close(), leader.close(), restarted.close()]);
  });

  it('a replica taking over appends its marker first, then folds what the old leader landed before it; the old one stops writing once it no longer leads', async () => {
    let oldLeads = true;
    const old = await MetaService.open(log, { topicPrefix: 'wal', numShards: 3, epoch: 1, leading: () => oldLeads });
    await old.registerNode('n1');
    const follower = await MetaReplica.open(log, 'wal');
    await follower.waitFor(old.appliedEntryId);
    // In flight at the takeover: lands after the follower's last fold, before the new marker.
    await old.registerNode('in-flight');
    const next = await MetaService.open(log, { topicPrefix: 'wal', epoch: 2 }, follower);
    expect(next.epoch).toBe(2);
    expect(next.nodes().map((n) => n.id)).toEqual(['in-flight', 'n1']);
    expect(next.shards()).toHaveLength(3);
    // The old leader's lease is gone: it refuses before appending anything.
    oldLeads = false;
    await expect(old.registerNode('late')).rejects.toMatchObject({ code: 'NOT_LEADER' });
    // Had it appended anyway, every reader would drop it after the new marker.
    const stale = await MetaService.open(log, { topicPrefix: 'wal', epoch: 1 }, await MetaReplica.open(log, 'wal')).catch((err: unknown) => err);
    expect(stale).toMatchObject({ code: 'NOT_LEADER' });
    await next.registerNode('n2');
    const reader = await MetaReplica.open(log, 'wal');
    expect(reader.nodes().map((n) => n.id)).toEqual(['in-flight', 'n1', 'n2']);
    await reader.close();
    await Promise.all([old.close(), next.close()]);
  });

  it('an append that completes after the lease ran out is not confirmed: its outcome is unknown', async () => {
    // The lease holds when the append starts and has run out when it completes.
    let checks = 0;
    let leaseEndsAtCheck = Infinity;
    const meta = await MetaService.open(log, { topicPrefix: 'wal', numShards: 1, epoch: 1, leading: () => ++checks < leaseEndsAtCheck });
    leaseEndsAtCheck = checks + 2;
    await expect(meta.registerNode('n1')).rejects.toMatchObject({ code: 'NOT_LEADER', message: expect.stringMatching(/may or may not take effect/) });
    // Nothing was applied in memory: this meta acts on nothing it could not confirm.
    expect(meta.nodes()).toEqual([]);
    await meta.close();
  });

  it('spreads regions over the least loaded shards and survives restart', async () => {
    const meta = await reopen();
    const table = await meta.beginCreateTable(schema);
    expect(table.regions.map((r) => r.shard)).toEqual([0, 1, 2, 0]);
    expect(() => meta.table('t')).toThrow(/does not exist/);
    await meta.commitCreateTable(table.id, Object.fromEntries(table.regions.map((r, i) => [r.id, 10 + i])));
    expect(meta.table('t').regions.map((r) => r.createdAt)).toEqual([10, 11, 12, 13]);
    const next = await meta.beginCreateTable({ ...schema, name: 'u', partition: undefined });
    expect(next.regions[0]!.shard).toBe(1);
    await meta.close();
    const again = await reopen();
    expect(again.tables().map((t) => t.schema.name)).toEqual(['t']);
    expect(again.incompleteCreates().map((t) => t.schema.name)).toEqual(['u']);
    expect(again.regionsOfShard(0).map((r) => r.partition)).toEqual([0, 3]);
    await again.close();
  });

  it('grants leadership with increasing epochs, persisted; refuses a second leader', async () => {
    const meta = await reopen();
    expect((await meta.grantLeadership(0, 'n1')).epoch).toBe(1);
    expect((await meta.grantLeadership(0, 'n1')).epoch).toBe(2);
    await expect(meta.grantLeadership(0, 'n2')).rejects.toMatchObject({ code: 'NOT_LEADER' });
    await meta.close();
    const again = await reopen();
    expect(again.shard(0)).toMatchObject({ leader: 'n1', epoch: 2 });
    expect((await again.grantLeadership(0, 'n1')).epoch).toBe(3);
    await again.close();
  });

  it('rejects duplicate names; drop frees the name; ids are never reused', async () => {
    const meta = await reopen();
    const t = await meta.beginCreateTable(schema);
    await meta.commitCreateTable(t.id, {});
    await expect(meta.beginCreateTable(schema)).rejects.toMatchObject({ code: 'TABLE_EXISTS' });
    await meta.dropTable('t');
    await expect(meta.dropTable('t')).rejects.toMatchObject({ code: 'TABLE_NOT_FOUND' });
    const t2 = await meta.beginCreateTable(schema);
    expect(t2.id).toBeGreaterThan(t.id);
    expect(Math.min(...t2.regions.map((r) => r.id))).toBeGreaterThan(Math.max(...t.regions.map((r) => r.id)));
    await meta.close();
  });

  it('concurrent creates of one name: exactly one wins', async () => {
    const meta = await reopen();
    const results = await Promise.allSettled([meta.beginCreateTable(schema), meta.beginCreateTable(schema)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    await meta.close();
  });

  it('the state is the fold of its events (applyMetaEvent is pure over plain data)', () => {
    const state = emptyMetaState();
    applyMetaEvent(state, { type: 'shard_created', shard: 0, topic: 'x_0' });
    applyMetaEvent(state, { type: 'table_creating', tableId: 7, schema, regions: [{ id: 9, partition: 0, shard: 0 }] });
    expect(state.nextTableId).toBe(8);
    expect(state.nextRegionId).toBe(10);
    applyMetaEvent(state, { type: 'table_created', tableId: 7, createdAt: { 9: 4 } });
    expect(state.tables.get('t')).toMatchObject({ status: 'active', regions: [{ id: 9, createdAt: 4 }] });
    applyMetaEvent(state, { type: 'table_dropped', tableId: 7 });
    expect(state.tables.size).toBe(0);
  });

  it('remembers which regions were dropped or rolled back: only their files may be deleted', () => {
    const state = emptyMetaState();
    applyMetaEvent(state, { type: 'shard_created', shard: 0, topic: 'x_0' });
    applyMetaEvent(state, { type: 'table_creating', tableId: 1, schema, regions: [{ id: 1, partition: 0, shard: 0 }] });
    applyMetaEvent(state, { type: 'table_created', tableId: 1, createdAt: { 1: 2 } });
    applyMetaEvent(state, { type: 'table_creating', tableId: 2, schema: { ...schema, name: 'u' }, regions: [{ id: 2, partition: 0, shard: 0 }] });
    applyMetaEvent(state, { type: 'table_create_aborted', tableId: 2 });
    applyMetaEvent(state, { type: 'table_dropped', tableId: 1 });
    applyMetaEvent(state, { type: 'table_dropped', tableId: 99 }); // unknown ids are ignored
    expect([...state.retiredRegions]).toEqual([
      [2, 'aborted'],
      [1, 'dropped'],
    ]);
    expect(state.nextRegionId).toBe(3);
  });
});
