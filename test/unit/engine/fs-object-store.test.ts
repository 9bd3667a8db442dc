import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import { expectError, tempDir } from './helpers.js';

describe('FsObjectStore', () => {
  it('puts, gets, overwrites and reports existence', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    expect(await store.exists('a/b/c')).toBe(false);
    await store.put('a/b/c', new Uint8Array([1, 2, 3]));
    expect(await store.exists('a/b/c')).toBe(true);
    expect(await store.exists('a/b')).toBe(false); // a directory is not an object
    expect([...(await store.get('a/b/c'))]).toEqual([1, 2, 3]);
    await store.put('a/b/c', new Uint8Array([9]));
    expect([...(await store.get('a/b/c'))]).toEqual([9]);
    expect(await readFile(join(dir, 'a', 'b', 'c'))).toEqual(Buffer.from([9]));
  });

  it('leaves no temp files behind', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put('x/obj', new Uint8Array([i]))));
    expect(await readdir(join(dir, 'x'))).toEqual(['obj']);
    expect((await store.get('x/obj')).length).toBe(1);
  });

  it('rejects get of a missing object with NOT_FOUND naming the key', async () => {
    const store = new FsObjectStore(await tempDir());
    await expectError(() => store.get('regions/1/manifest'), 'NOT_FOUND', 'regions/1/manifest');
  });

  it('deletes idempotently', async () => {
    const store = new FsObjectStore(await tempDir());
    await store.put('k', new Uint8Array([1]));
    await store.delete('k');
    await store.delete('k');
    await store.delete('never/was');
    expect(await store.exists('k')).toBe(false);
  });

  it('lists keys under a prefix, sorted, matching the prefix as a string', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    for (const key of ['regions/10/manifest', 'regions/1/sst/002.sst', 'regions/1/manifest', 'regions/1/sst/001.sst', 'regions/2/manifest', 'top']) {
      await store.put(key, new Uint8Array([0]));
    }
    // A stray temp file (as left by a crash mid-put) is not an object.
    await writeFile(join(dir, 'regions', '1', '.manifest.tmp-abc'), 'x');
    expect(await store.list('regions/1/')).toEqual(['regions/1/manifest', 'regions/1/sst/001.sst', 'regions/1/sst/002.sst']);
    expect(await store.list('regions/1')).toEqual([
      'regions/1/manifest',
      'regions/1/sst/001.sst',
      'regions/1/sst/002.sst',
      'regions/10/manifest',
    ]);
    expect(await store.list('regions/1/sst/00')).toEqual(['regions/1/sst/001.sst', 'regions/1/sst/002.sst']);
    expect(await store.list('')).toHaveLength(6);
    expect(await store.list('nothing/here/')).toEqual([]);
  });

  it('deletes everything under a prefix, recursively', async () => {
    const store = new FsObjectStore(await tempDir());
    for (const key of ['regions/1/manifest', 'regions/1/sst/001.sst', 'regions/10/manifest', 'regions/2/manifest']) {
      await store.put(key, new Uint8Array([0]));
    }
    await store.deletePrefix('regions/1/');
    expect(await store.list('')).toEqual(['regions/10/manifest', 'regions/2/manifest']);
    await store.deletePrefix('regions/');
    expect(await store.list('')).toEqual([]);
    await store.deletePrefix('regions/');
  });

  it('rejects absolute, empty and dot-dot keys with INVALID_ARGUMENT', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'inner'));
    const store = new FsObjectStore(join(dir, 'inner'));
    for (const key of ['/etc/passwd', '../escape', 'a/../../escape', 'a//b', '', 'a/', 'a/./b']) {
      await expectError(() => store.put(key, new Uint8Array([1])), 'INVALID_ARGUMENT', key === '' ? /invalid key/ : key);
    }
    await expectError(() => store.get('../x'), 'INVALID_ARGUMENT', '../x');
    await expectError(() => store.list('../'), 'INVALID_ARGUMENT');
    await expectError(() => store.deletePrefix('a/../..'), 'INVALID_ARGUMENT');
    expect(await readdir(dir)).toEqual(['inner']);
  });
});
