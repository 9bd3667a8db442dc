import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reprise } from '../../../src/api/runtime.js';
import { S3ObjectStore } from '../../../src/engine/s3-object-store.js';
import { startS3Server, type TestS3Server } from '../../harness/s3-server.js';

const TABLE = {
  name: 'cpu',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'v', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['m'] },
};

describe('Reprise.open with storage s3', () => {
  let s3: TestS3Server;
  let dataDir: string;
  beforeAll(async () => {
    s3 = await startS3Server();
    dataDir = await mkdtemp(join(tmpdir(), 'reprise-storage-'));
  });
  afterAll(async () => {
    await s3.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('flushes into the bucket, caches SSTs under <dataDir>/cache, reports the cache, and reads back from S3 after a reopen', async () => {
    const storage = { type: 's3' as const, ...s3.storeOptions('unit') };
    let db = await Reprise.open({ dataDir, logger: false, storage });
    await db.createTable(TABLE);
    const rows = [
      { host: 'a', v: 1, ts: 1 },
      { host: 'z', v: 2, ts: 2 },
    ];
    await db.insert('cpu', rows);
    await db.flush();
    const bucket = new S3ObjectStore(s3.storeOptions('unit'));
    const keys = await bucket.list('');
    bucket.close();
    expect(keys.filter((k) => k.endsWith('.sst'))).toHaveLength(2);
    // Two regions, each with the version its open wrote and the one its flush wrote.
    expect(keys.filter((k) => k.includes('/manifests/'))).toHaveLength(4);
    expect(existsSync(join(dataDir, 'objects'))).toBe(false);
    expect((await readdir(join(dataDir, 'cache'), { recursive: true })).filter((p) => p.endsWith('.sst'))).toHaveLength(2);
    expect(await db.query('cpu')).toEqual(rows);
    expect(db.status().objectStore).toMatchObject({ type: 's3', where: `s3://${s3.bucket}/unit`, cache: { objects: 2, misses: 0 } });
    expect(db.status().objectStore!.cache!.hits).toBeGreaterThan(0);
    expect(await db.observer.registry.metrics()).toMatch(/reprise_object_store_failing\{type="s3"\} 0/);
    await db.close();

    // The cache starts empty; the opens fetch both SSTs back from S3 in the background (warm-up), so the query misses nothing.
    db = await Reprise.open({ dataDir, logger: false, storage });
    const warmed = Date.now() + 10_000;
    while (db.status().objectStore!.cache!.objects < 2 && Date.now() < warmed) await new Promise((r) => setTimeout(r, 20));
    expect(await db.query('cpu')).toEqual(rows);
    expect(db.status().objectStore!.cache).toMatchObject({ objects: 2, misses: 0 });
    expect(db.status().objectStore!.cache!.fetchedBytes).toBeGreaterThan(0);
    await db.close();
  });

  it('keeps local storage as it was: <dataDir>/objects, no cache', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-storage-local-'));
    try {
      const db = await Reprise.open({ dataDir: dir, logger: false });
      await db.createTable(TABLE);
      await db.insert('cpu', [{ host: 'a', v: 1, ts: 1 }]);
      await db.flush();
      expect(db.status().objectStore).toEqual({ type: 'local', where: join(dir, 'objects') });
      expect(existsSync(join(dir, 'cache'))).toBe(false);
      await db.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
