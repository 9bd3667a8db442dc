/**
 * CachedObjectStore in front of a real S3 (s3rver) behind the fault proxy:
 * what the cache answers locally keeps working with the store down, which
 * is how these tests tell a hit from a trip to S3.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CachedObjectStore } from '../../../src/engine/cached-object-store.js';
import { isRepriseError } from '../../../src/errors.js';
import { S3ObjectStore } from '../../../src/engine/s3-object-store.js';
import { isSstKey } from '../../../src/engine/table/manifest.js';
import { startFaultProxy, type FaultProxy } from '../../harness/fault-proxy.js';
import { startS3Server, type TestS3Server } from '../../harness/s3-server.js';
import { expectError, tempDir } from './helpers.js';

let s3: TestS3Server;
let proxy: FaultProxy;
let roots = 0;
const opened: CachedObjectStore[] = [];

beforeAll(async () => {
  s3 = await startS3Server();
  proxy = await startFaultProxy(s3.endpoint);
});
afterEach(async () => {
  await proxy.up();
});
afterAll(async () => {
  for (const store of opened) store.close();
  await proxy.stop();
  await s3.stop();
});

async function cached(options: { maxBytes?: number; cacheable?: (key: string) => boolean; dir?: string } = {}): Promise<{ cache: CachedObjectStore; remote: S3ObjectStore; dir: string }> {
  const remote = new S3ObjectStore({ ...s3.storeOptions(`cache-${process.pid}-${roots++}`, proxy.endpoint), retryDeadlineMs: 300, backoffInitMs: 20, requestTimeoutMs: 300 });
  const dir = options.dir ?? join(await tempDir(), 'cache');
  const cache = await CachedObjectStore.open(remote, { dir, maxBytes: options.maxBytes ?? 10_000, ...(options.cacheable ? { cacheable: options.cacheable } : {}) });
  opened.push(cache);
  return { cache, remote, dir };
}

const data = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256);
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

describe('CachedObjectStore', () => {
  it('writes through: what this node put is read locally, even with the store down', async () => {
    const { cache } = await cached();
    await cache.put('regions/1/sst/000000000001.sst', data(1000));
    await proxy.down();
    expect(same(await cache.get('regions/1/sst/000000000001.sst'), data(1000))).toBe(true);
    expect(same(await cache.getRange('regions/1/sst/000000000001.sst', 990, 2000), data(1000).subarray(990))).toBe(true);
    expect(await cache.size('regions/1/sst/000000000001.sst')).toBe(1000);
    expect(await cache.exists('regions/1/sst/000000000001.sst')).toBe(true);
    expect(cache.stats()).toMatchObject({ hits: 4, misses: 0, bytes: 1000, objects: 1 });
  });

  it('fetches a whole object on its first read, then serves every range from the local copy', async () => {
    const { cache, remote } = await cached();
    await remote.put('sst/a.sst', data(4000));
    expect(same(await cache.getRange('sst/a.sst', 0, 5), data(4000).subarray(0, 5))).toBe(true);
    expect(cache.stats()).toMatchObject({ misses: 1, hits: 0, fetchedBytes: 4000, bytes: 4000 });
    await proxy.down();
    expect(same(await cache.getRange('sst/a.sst', 3000, 3100), data(4000).subarray(3000, 3100))).toBe(true);
    expect(same(await cache.get('sst/a.sst'), data(4000))).toBe(true);
    expect(cache.stats()).toMatchObject({ misses: 1, hits: 2 });
  });

  it('shares one fetch between concurrent first reads of a key', async () => {
    const { cache, remote } = await cached();
    await remote.put('sst/b.sst', data(3000));
    const before = proxy.requests;
    const reads = await Promise.all(Array.from({ length: 8 }, (_, i) => cache.getRange('sst/b.sst', i * 100, i * 100 + 10)));
    reads.forEach((r, i) => expect(same(r, data(3000).subarray(i * 100, i * 100 + 10))).toBe(true));
    // One HEAD (is it small enough to cache?) and one GET.
    expect(proxy.requests - before).toBe(2);
  });

  it('evicts the least recently used past its budget, and counts evictions', async () => {
    const { cache } = await cached({ maxBytes: 2500 });
    await cache.put('a.sst', data(1000, 1));
    await cache.put('b.sst', data(1000, 2));
    await cache.get('a.sst'); // a is now the most recent
    await cache.put('c.sst', data(1000, 3)); // evicts b
    expect(cache.stats()).toMatchObject({ bytes: 2000, objects: 2, evictions: 1 });
    await proxy.down();
    expect(same(await cache.get('a.sst'), data(1000, 1))).toBe(true);
    expect(same(await cache.get('c.sst'), data(1000, 3))).toBe(true);
    await expectError(() => cache.get('b.sst'), 'STORE_UNAVAILABLE', 'b.sst');
    await proxy.up();
    expect(same(await cache.get('b.sst'), data(1000, 2))).toBe(true);
  });

  it('never caches an object larger than its budget, and reads only the range asked of one', async () => {
    const { cache, remote } = await cached({ maxBytes: 1000 });
    await cache.put('huge.sst', data(5000));
    expect(cache.stats()).toMatchObject({ bytes: 0, objects: 0 });
    expect(same(await cache.getRange('huge.sst', 10, 20), data(5000).subarray(10, 20))).toBe(true);
    expect(cache.stats()).toMatchObject({ fetchedBytes: 0, objects: 0 });
    expect(same(await remote.get('huge.sst'), data(5000))).toBe(true);
  });

  it('drops local copies on delete and deletePrefix', async () => {
    const { cache, dir } = await cached();
    await cache.put('regions/1/sst/1.sst', data(10));
    await cache.put('regions/1/sst/2.sst', data(10));
    await cache.put('regions/12/sst/1.sst', data(10));
    await cache.delete('regions/1/sst/1.sst');
    await expectError(() => cache.get('regions/1/sst/1.sst'), 'NOT_FOUND');
    await cache.deletePrefix('regions/1/');
    await expectError(() => cache.getRange('regions/1/sst/2.sst', 0, 1), 'NOT_FOUND');
    expect(await cache.exists('regions/1/sst/2.sst')).toBe(false);
    expect(cache.stats()).toMatchObject({ objects: 1, bytes: 10 });
    const files = (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile() && e.name !== 'LOCK').map((e) => e.name);
    expect(files).toEqual(['1.sst']); // regions/12/sst/1.sst
  });

  it('keeps keys that are not cacheable (manifests) out of the cache: they are always read from the store', async () => {
    const { cache, remote } = await cached({ cacheable: isSstKey });
    await cache.put('regions/1/manifest', data(10, 1));
    await cache.put('regions/1/sst/000000000001.sst', data(10, 2));
    // Another node rewrites the manifest: this node must see the new one.
    await remote.put('regions/1/manifest', data(10, 3));
    expect(same(await cache.get('regions/1/manifest'), data(10, 3))).toBe(true);
    expect(cache.stats()).toMatchObject({ objects: 1, hits: 0 });
    await proxy.down();
    await expectError(() => cache.get('regions/1/manifest'), 'STORE_UNAVAILABLE');
    expect(same(await cache.get('regions/1/sst/000000000001.sst'), data(10, 2))).toBe(true);
  });

  it('warms keys ahead of their first read, skipping what is gone', async () => {
    const { cache, remote } = await cached();
    await remote.put('regions/1/sst/1.sst', data(100, 1));
    await remote.put('regions/1/sst/2.sst', data(100, 2));
    expect(await cache.warm(['regions/1/sst/1.sst', 'regions/1/sst/2.sst', 'regions/1/sst/3.sst'])).toEqual({ fetched: 2, skipped: 0, failed: 1 });
    expect(cache.stats()).toMatchObject({ objects: 2, misses: 0, fetchedBytes: 200 });
    await proxy.down();
    // Asked again with the store down: nothing to fetch, no request made.
    expect(await cache.warm(['regions/1/sst/1.sst', 'regions/1/sst/1.sst'])).toEqual({ fetched: 0, skipped: 1, failed: 0 });
    expect(same(await cache.get('regions/1/sst/2.sst'), data(100, 2))).toBe(true);
  });

  it('starts empty: a restart clears what an earlier run left in its directory', async () => {
    const dir = join(await tempDir(), 'cache');
    await mkdir(join(dir, 'regions', '1'), { recursive: true });
    await writeFile(join(dir, 'regions', '1', 'stale.sst'), 'left by an earlier run');
    const { cache, remote } = await cached({ dir });
    expect(await readdir(dir)).toEqual(['LOCK']);
    await remote.put('regions/1/stale.sst', data(5));
    expect(same(await cache.get('regions/1/stale.sst'), data(5))).toBe(true);
    expect(cache.stats()).toMatchObject({ misses: 1 });
  });

  it("refuses a directory another live process holds (two nodes on one data dir), takes over a dead one's, and frees it at close", async () => {
    const dir = join(await tempDir(), 'cache');
    // A live process that is not this one holds it.
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)'], { stdio: 'ignore' });
    try {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'LOCK'), `${other.pid}\n`);
      await writeFile(join(dir, 'kept.sst'), 'the other process is using this');
      const refused = await cached({ dir }).catch((err: unknown) => err);
      expect(isRepriseError(refused, 'INVALID_ARGUMENT'), String(refused)).toBe(true);
      expect((refused as Error).message).toContain(`in use by process ${other.pid}`);
      expect((await readdir(dir)).sort()).toEqual(['LOCK', 'kept.sst']);
    } finally {
      other.kill('SIGKILL');
      await new Promise((r) => other.once('exit', r));
    }
    // Gone now (as after a SIGKILL): its lock is taken over and the directory emptied.
    const { cache } = await cached({ dir });
    expect(await readdir(dir)).toEqual(['LOCK']);
    expect((await readFile(join(dir, 'LOCK'), 'utf8')).trim()).toBe(String(process.pid));
    cache.close();
    expect(await readdir(dir)).toEqual([]);
    const again = await cached({ dir });
    expect(await readdir(dir)).toEqual(['LOCK']);
    again.cache.close();
  });

  it('reports the remote store\'s failure', async () => {
    const { cache } = await cached();
    expect(cache.failure()).toBeUndefined();
    await proxy.down();
    await expectError(() => cache.put('x.sst', data(1)), 'STORE_UNAVAILABLE');
    expect(cache.failure()).toMatch(/STORE_UNAVAILABLE/);
  });
});
