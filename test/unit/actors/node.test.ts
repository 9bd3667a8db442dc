import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeActor } from '../../../src/actors/node.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import type { TableSchema } from '../../../src/engine/schema.js';
import { tableMutationCodec } from '../../../src/engine/table/codec.js';
import { codeOfReason, RepriseError } from '../../../src/errors.js';
import { MetaService } from '../../../src/meta/meta-service.js';
import { LocalLogStore } from '../../../src/wal/local-log-store.js';
import { withOverrides } from '../../harness/tamper.js';
import { actorContext, SCHEMA as ONE_REGION } from './parts.js';

/**
 * NodeActor on its own, over real parts: it opens the shards meta gives it,
 * and its close says whether it was clean.
 */

/** Two regions, one per shard. */
const SCHEMA: TableSchema = { ...ONE_REGION, partition: { column: 'host', bounds: ['m'] } };

describe('NodeActor', () => {
  let dir: string;
  let log: LocalLogStore;
  let meta: MetaService;
  let putFailure: Error | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-node-'));
    log = await LocalLogStore.open(join(dir, 'wal'));
    meta = await MetaService.open(log, { topicPrefix: 'u', numShards: 2 });
    putFailure = undefined;
  });
  afterEach(async () => {
    await meta.close();
    await log.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function node(): Promise<NodeActor> {
    const objects = new FsObjectStore(join(dir, 'objects'));
    const failing = withOverrides(objects, {
      put: async (key: string, data: Uint8Array) => {
        if (putFailure) throw putFailure;
        return objects.put(key, data);
      },
    });
    const n = new NodeActor(actorContext({ meta, log, objects: failing }));
    await n.start();
    return n;
  }

  /** The two-region table, created on the node's shards, with a row in each region. */
  async function tableWithRows(n: NodeActor): Promise<void> {
    const begun = await meta.beginCreateTable(SCHEMA);
    const createdAt: Record<number, number> = {};
    for (const r of begun.regions) createdAt[r.id] = await n.shard(r.shard).createRegion(r, SCHEMA);
    await meta.commitCreateTable(begun.id, createdAt);
    const prepared = tableMutationCodec.preparePuts(SCHEMA, [{ host: 'a', v: 1, ts: 1 }, { host: 'z', v: 2, ts: 1 }]);
    for (const { partition, mutation } of prepared.parts) {
      const region = begun.regions[partition]!;
      await n.shard(region.shard).write(region.id, mutation);
    }
  }

  it('opens every shard meta gives it and serves; a clean close resolves and flushes', async () => {
    const n = await node();
    expect(n.status()).toMatchObject({ state: 'serving', shards: [{ id: 0, state: 'serving' }, { id: 1, state: 'serving' }] });
    await tableWithRows(n);
    await n.close();
    expect(n.status().state).toBe('closed');
    expect(n.status().shards.every((s) => s.state === 'closed' && s.regions.every((r) => r.flushedEntryId > 0))).toBe(true);
  });

  it('a close whose flush cannot write rejects FLUSH_FAILED naming the shards, and the node ends failed', async () => {
    const n = await node();
    await tableWithRows(n);
    putFailure = new RepriseError('STORE_WRITE_FAILED', 'object store: cannot write: ENOSPC: no space left on device');
    const closing = n.close();
    await expect(closing).rejects.toMatchObject({ code: 'FLUSH_FAILED', message: expect.stringMatching(/shard 0: FLUSH_FAILED.*shard 1: FLUSH_FAILED.*next start replays/s) });
    expect(n.status().state).toBe('failed');
  });

  it('a shard that failed before the close does not make the close fail', async () => {
    const n = await node();
    n.shard(1).actor.send({ type: 'FAIL', reason: 'fault before the close' });
    await n.close();
    expect(n.status().state).toBe('closed');
  });
});

describe('codeOfReason', () => {
  it('reads the code a failure kept as text starts with, if it is a code of ours', () => {
    expect(codeOfReason('FLUSH_FAILED: shard 0: 1 region not flushed')).toBe('FLUSH_FAILED');
    expect(codeOfReason('ENOSPC: no space left on device')).toBe('INTERNAL');
    expect(codeOfReason('lease lost', 'SHARD_NOT_SERVING')).toBe('SHARD_NOT_SERVING');
    expect(codeOfReason(undefined)).toBe('INTERNAL');
  });
});
