/**
 * The ObjectStore contract, one body run against every provider: the local
 * directory, S3 (a real s3rver on a free port), and the local cache in front
 * of S3. Each test gets a store of its own (a fresh directory, or a fresh
 * root prefix in the shared bucket).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CachedObjectStore } from '../../../src/engine/cached-object-store.js';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import type { ObjectStore } from '../../../src/engine/object-store.js';
import { S3ObjectStore } from '../../../src/engine/s3-object-store.js';
import { startS3Server, type TestS3Server } from '../../harness/s3-server.js';
import { expectError, tempDir } from './helpers.js';

let s3: TestS3Server;
let roots = 0;
const opened: ObjectStore[] = [];

beforeAll(async () => {
  s3 = await startS3Server();
});
afterAll(async () => {
  for (const store of opened) store.close?.();
  await s3.stop();
});

/**
 * Small multipart settings so the multipart test stays fast (s3rver does not
 * enforce S3's 5 MiB minimum part), and pages of 100 keys so listing across
 * pages needs a few hundred keys, not thousands (s3rver takes ~7 ms a put;
 * s3-object-store.test.ts lists past S3's real 1,000-key page once).
 */
const SMALL_MULTIPART = { multipartThresholdBytes: 64 * 1024, partBytes: 20 * 1024, listPageSize: 100 };

function s3Store(): S3ObjectStore {
  const store = new S3ObjectStore({ ...s3.storeOptions(`contract-${process.pid}-${roots++}`), ...SMALL_MULTIPART, retryDeadlineMs: 5_000 });
  opened.push(store);
  return store;
}

const providers: [string, () => Promise<ObjectStore>][] = [
  ['FsObjectStore', async () => new FsObjectStore(await tempDir())],
  ['S3ObjectStore', async () => s3Store()],
  ['CachedObjectStore(S3ObjectStore)', async () => CachedObjectStore.open(s3Store(), { dir: join(await tempDir(), 'cache'), maxBytes: 256 * 1024 })],
];

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values);
const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) % 251);

describe.each(providers)('ObjectStore contract: %s', (_name, open) => {
  it('puts, gets, overwrites and reports existence and size', async () => {
    const store = await open();
    expect(await store.exists('a/b/c')).toBe(false);
    await store.put('a/b/c', bytes(1, 2, 3));
    expect(await store.exists('a/b/c')).toBe(true);
    expect(await store.exists('a/b')).toBe(false);
    expect([...(await store.get('a/b/c'))]).toEqual([1, 2, 3]);
    expect(await store.size('a/b/c')).toBe(3);
    await store.put('a/b/c', bytes(9));
    expect([...(await store.get('a/b/c'))]).toEqual([9]);
    expect(await store.size('a/b/c')).toBe(1);
    await store.put('empty', bytes());
    expect((await store.get('empty')).length).toBe(0);
    expect(await store.size('empty')).toBe(0);
  });

  it('reads ranges, including ranges at and past the end', async () => {
    const store = await open();
    const data = pattern(1000);
    await store.put('sst/1.sst', data);
    expect([...(await store.getRange('sst/1.sst', 0, 5))]).toEqual([...data.subarray(0, 5)]);
    expect([...(await store.getRange('sst/1.sst', 500, 520))]).toEqual([...data.subarray(500, 520)]);
    expect([...(await store.getRange('sst/1.sst', 990, 1000))]).toEqual([...data.subarray(990, 1000)]);
    // Past the end: what there is, then nothing.
    expect([...(await store.getRange('sst/1.sst', 995, 2000))]).toEqual([...data.subarray(995)]);
    expect((await store.getRange('sst/1.sst', 1000, 1010)).length).toBe(0);
    expect((await store.getRange('sst/1.sst', 10, 10)).length).toBe(0);
    // An overwrite is what later ranges read.
    await store.put('sst/1.sst', bytes(4, 5, 6));
    expect([...(await store.getRange('sst/1.sst', 1, 3))]).toEqual([5, 6]);
  });

  it('answers NOT_FOUND for a missing key, naming it, on get, getRange and size', async () => {
    const store = await open();
    await expectError(() => store.get('regions/1/manifest'), 'NOT_FOUND', 'regions/1/manifest');
    await expectError(() => store.getRange('regions/1/sst/1.sst', 0, 10), 'NOT_FOUND', 'regions/1/sst/1.sst');
    await expectError(() => store.size('regions/1/sst/2.sst'), 'NOT_FOUND', 'regions/1/sst/2.sst');
  });

  it('deletes idempotently, and a deleted key is gone for every read', async () => {
    const store = await open();
    await store.put('k/v', bytes(1));
    expect([...(await store.get('k/v'))]).toEqual([1]);
    await store.delete('k/v');
    await store.delete('k/v');
    await store.delete('never/was');
    expect(await store.exists('k/v')).toBe(false);
    await expectError(() => store.get('k/v'), 'NOT_FOUND');
    await expectError(() => store.getRange('k/v', 0, 1), 'NOT_FOUND');
  });

  it('lists keys under a prefix, sorted, matching the prefix as a string', async () => {
    const store = await open();
    for (const key of ['regions/2/b', 'regions/10/a', 'regions/1/z', 'regions/1/sst/x', 'other/q']) await store.put(key, bytes(0));
    expect(await store.list('regions/1')).toEqual(['regions/1/sst/x', 'regions/1/z', 'regions/10/a']);
    expect(await store.list('regions/1/')).toEqual(['regions/1/sst/x', 'regions/1/z']);
    expect(await store.list('')).toEqual(['other/q', 'regions/1/sst/x', 'regions/1/z', 'regions/10/a', 'regions/2/b']);
    expect(await store.list('nothing/')).toEqual([]);
  });

  it('lists across pages', async () => {
    const store = await open();
    const keys = Array.from({ length: 250 }, (_, i) => `many/${String(i).padStart(5, '0')}`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < keys.length) await store.put(keys[next++]!, bytes(1));
      }),
    );
    await store.put('manyx', bytes(1));
    expect(await store.list('many/')).toEqual(keys);
    await store.deletePrefix('many/');
    expect(await store.list('many')).toEqual(['manyx']);
  });

  it('deletes everything under a prefix and nothing else', async () => {
    const store = await open();
    for (const key of ['regions/1/manifest', 'regions/1/sst/a.sst', 'regions/10/manifest', 'regions/2/manifest']) await store.put(key, bytes(1));
    expect([...(await store.get('regions/1/sst/a.sst'))]).toEqual([1]);
    await store.deletePrefix('regions/1/');
    expect(await store.list('')).toEqual(['regions/10/manifest', 'regions/2/manifest']);
    await expectError(() => store.get('regions/1/sst/a.sst'), 'NOT_FOUND');
    await store.deletePrefix('regions/1/');
    await store.deletePrefix('');
    expect(await store.list('')).toEqual([]);
  });

  it('stores large objects whole (multipart on S3) and reads any range of them', async () => {
    const store = await open();
    const data = pattern(150 * 1024 + 17);
    await store.put('big/obj.sst', data);
    expect(await store.size('big/obj.sst')).toBe(data.length);
    expect(Buffer.from(await store.get('big/obj.sst')).equals(Buffer.from(data))).toBe(true);
    const from = 20 * 1024 - 5;
    expect(Buffer.from(await store.getRange('big/obj.sst', from, from + 50_000)).equals(Buffer.from(data.subarray(from, from + 50_000)))).toBe(true);
  });

  it('rejects empty, absolute and dot-dot keys with INVALID_ARGUMENT', async () => {
    const store = await open();
    for (const key of ['', '/abs', 'a//b', 'a/../b', 'dir/']) await expectError(() => store.put(key, bytes(1)), 'INVALID_ARGUMENT');
  });
});
