import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RegionActor } from '../../../src/actors/region.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import { tableMutationCodec } from '../../../src/engine/table/codec.js';
import { RepriseError } from '../../../src/errors.js';
import type { LogStore } from '../../../src/wal/log-store.js';
import { damageColumnChunks, withOverrides } from '../../harness/tamper.js';
import { actorContext, SCHEMA } from './parts.js';

/**
 * RegionActor on its own, over the table engine and a directory: what its
 * machine admits in which state, a flush that cannot write, and damage that
 * fails it.
 */

const INFO = { id: 1, tableId: 1, table: 'm', partition: 0, shard: 0, createdAt: 0 };

describe('RegionActor', () => {
  let dir: string;
  let objects: FsObjectStore;
  /** When set, every put fails with it (a full disk). */
  let putFailure: Error | undefined;
  const regions: RegionActor[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-region-'));
    objects = new FsObjectStore(dir);
    putFailure = undefined;
  });
  afterEach(async () => {
    for (const r of regions.splice(0)) await r.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** The object store, with puts that fail while `putFailure` is set. */
  const store = () =>
    withOverrides(objects, {
      put: async (key: string, data: Uint8Array) => {
        if (putFailure) throw putFailure;
        return objects.put(key, data);
      },
    });

  let applied = 0;
  async function serving(): Promise<RegionActor> {
    // A region reads neither meta nor the log.
    const ctx = actorContext({ meta: undefined as never, log: undefined as unknown as LogStore, objects: store() });
    const region = new RegionActor(INFO, SCHEMA, ctx, { appliedEntryId: () => applied, fenceEpochAt: () => 1 }, 1).start();
    regions.push(region);
    expect(await region.opened()).toBe('replaying');
    expect(region.acceptsWrites()).toBe(false);
    await expect(region.query({})).rejects.toMatchObject({ code: 'REGION_NOT_SERVING' });
    region.actor.send({ type: 'REPLAYED', appliedEntryId: applied });
    expect(region.state()).toBe('serving');
    return region;
  }

  const apply = (region: RegionActor, rows: object[]) => region.apply(++applied, tableMutationCodec.preparePuts(SCHEMA, rows).parts[0]!.mutation.body);
  const hosts = async (region: RegionActor) => {
    const result = await region.query({ columns: ['host'] });
    return result.kind === 'rows' ? result.rows.data[0] : [];
  };

  it('admits writes and reads only in the states its machine tags writable and readable', async () => {
    const region = await serving();
    expect(region.acceptsWrites()).toBe(true);
    apply(region, [{ host: 'a', v: 1, ts: 1 }]);
    expect(await hosts(region)).toEqual(['a']);
    region.actor.send({ type: 'FAIL', reason: 'fault' });
    expect(region.acceptsWrites()).toBe(false);
    await expect(region.query({})).rejects.toMatchObject({ code: 'REGION_FAILED', message: expect.stringMatching(/fault/) });
  });

  it('a flush that cannot write its SST reports FLUSH_FAILED and keeps serving its rows; the next one flushes', async () => {
    const region = await serving();
    apply(region, [{ host: 'a', v: 1, ts: 1 }]);
    const flushedBefore = region.status().flushedEntryId;
    putFailure = new RepriseError('STORE_WRITE_FAILED', 'object store: cannot write "x": ENOSPC: no space left on device');
    const reason = await region.flush(applied);
    expect(reason).toMatch(/^FLUSH_FAILED: region 1 of table 'm': flush failed: STORE_WRITE_FAILED: .*ENOSPC/);
    expect(region.state()).toBe('serving');
    expect(region.status().flushedEntryId).toBe(flushedBefore);
    expect(await hosts(region)).toEqual(['a']);
    putFailure = undefined;
    expect(await region.flush(applied)).toBeUndefined();
    expect(region.status()).toMatchObject({ state: 'serving', flushedEntryId: applied });
  });

  it('an SST found damaged by a query fails it (the leader owns the files)', async () => {
    const region = await serving();
    apply(region, [{ host: 'a', v: 1, ts: 1 }]);
    expect(await region.flush(applied)).toBeUndefined();
    await region.close();
    const sstDir = join(dir, 'regions', '1', 'sst');
    const [file] = await readdir(sstDir);
    await damageColumnChunks(join(sstDir, file!));

    const reopened = await serving();
    await expect(reopened.query({})).rejects.toMatchObject({ code: 'SST_CORRUPT' });
    expect(reopened.state()).toBe('failed');
    expect(reopened.status().error).toMatch(/^SST_CORRUPT: /);
  });
});
