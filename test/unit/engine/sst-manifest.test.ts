import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import { crc32, crc32Js } from '../../../src/engine/table/checksum.js';
import { layoutOf, rowFromKey, toValues } from '../../../src/engine/table/keys.js';
import { decodeManifest, encodeManifest, manifestKey, readManifest, sstKey, writeManifest, type Manifest } from '../../../src/engine/table/manifest.js';
import { planScan, type Entry } from '../../../src/engine/table/scan.js';
import { decodeSst, encodeSst, readSst, scanSst, sstEntries, writeSst } from '../../../src/engine/table/sst.js';
import { expectError, metrics, tempDir } from './helpers.js';

const layout = layoutOf(metrics);

/** 3000 rows (several blocks), every 7th a tombstone, in key order. */
function sampleEntries(): Entry[] {
  const entries: Entry[] = [];
  for (let h = 0; h < 30; h++) {
    for (let t = 0; t < 100; t++) {
      const host = `host-${String(h).padStart(2, '0')}`;
      const i = h * 100 + t;
      entries.push(
        i % 7 === 0
          ? [rowFromKey(layout, [host, 'dc1', 1000 + t]), true]
          : [toValues(layout, { host, idc: 'dc1', cpu: i / 3, mem: i * 2 ** 33, up: i % 2 === 0, ts: 1000 + t }), false],
      );
    }
  }
  return entries;
}

describe('crc32', () => {
  it('matches the standard check value', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array())).toBe(0);
    expect(crc32Js(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });

  it('is the same natively and in JavaScript', () => {
    const data = Uint8Array.from({ length: 100_003 }, (_, i) => (i * 2654435761) >>> 24);
    for (const n of [0, 1, 7, 64, 4096, data.length]) expect(crc32(data.subarray(0, n))).toBe(crc32Js(data.subarray(0, n)));
  });
});

describe('SST', () => {
  it('round-trips rows, tombstones and metadata', () => {
    const entries = sampleEntries();
    const encoded = encodeSst(layout, entries);
    if (encoded === undefined) throw new Error('expected an SST');
    const decoded = decodeSst(layout, encoded.bytes, 7, 'regions/7/sst/1.sst');
    expect([...sstEntries(decoded)]).toEqual(entries);
    expect(decoded.meta).toEqual({
      rows: 3000,
      bytes: encoded.bytes.length,
      minTime: 1000,
      maxTime: 1099,
      minKey: ['host-00', 'dc1', 1000],
      maxKey: ['host-29', 'dc1', 1099],
    });
    expect(encoded.data.meta).toEqual(decoded.meta);
    // The data of an SST just encoded decodes its rows from its bytes when read.
    expect([...sstEntries(encoded.data)]).toEqual(entries);
    expect(encoded.data.rows).toBe(encoded.data.rows);
    expect(encodeSst(layout, [])).toBeUndefined();
  });

  it('encodes a one-shot stream of entries, as a flush hands it over', () => {
    function* entries(): Generator<Entry> {
      yield* sampleEntries();
    }
    const encoded = encodeSst(layout, entries());
    if (encoded === undefined) throw new Error('expected an SST');
    expect([...sstEntries(decodeSst(layout, encoded.bytes, 1, 'f'))]).toEqual(sampleEntries());
    expect([...sstEntries(encoded.data)]).toEqual(sampleEntries());
    expect(encoded.data.meta.rows).toBe(3000);
  });

  it('scans a key range with seek and stop', () => {
    const encoded = encodeSst(layout, sampleEntries());
    if (encoded === undefined) throw new Error('expected an SST');
    const rows = [...scanSst(encoded.data, layout, planScan(layout, { where: { host: 'host-12', ts: { gte: 1097 } } }))];
    expect(rows.map(([row, deleted]) => [row[0], row[5], deleted])).toEqual([
      ['host-12', 1097, false],
      ['host-12', 1098, false],
      ['host-12', 1099, false],
    ]);
  });

  it('detects any flipped bit with SST_CORRUPT naming region and file', async () => {
    const encoded = encodeSst(layout, sampleEntries().slice(0, 50));
    if (encoded === undefined) throw new Error('expected an SST');
    const { bytes } = encoded;
    for (let at = 0; at < bytes.length; at += Math.max(1, Math.floor(bytes.length / 97))) {
      for (const bit of [0, 7]) {
        const damaged = bytes.slice();
        damaged[at] ^= 1 << bit;
        await expectError(() => decodeSst(layout, damaged, 3, 'regions/3/sst/000000000001.sst'), 'SST_CORRUPT', 'region 3', 'regions/3/sst/000000000001.sst');
      }
    }
    await expectError(() => decodeSst(layout, bytes.subarray(0, bytes.length - 1), 3, 'f'), 'SST_CORRUPT');
    await expectError(() => decodeSst(layout, new Uint8Array(5), 3, 'f'), 'SST_CORRUPT', /only 5 bytes/);
  });

  it('rejects an SST written for other columns', async () => {
    const other = layoutOf({ ...metrics, columns: metrics.columns.map((c) => (c.name === 'cpu' ? { ...c, name: 'load' } : c)) });
    const encoded = encodeSst(other, [[['a', 'x', 1, 1, true, 1], false]]);
    if (encoded === undefined) throw new Error('expected an SST');
    await expectError(() => decodeSst(layout, encoded.bytes, 1, 'f.sst'), 'SST_CORRUPT', /columns/, 'system_metrics');
  });

  it('is written through the object store and read back; missing -> SST_MISSING', async () => {
    const store = new FsObjectStore(await tempDir());
    const key = sstKey(4, 12);
    expect(key).toBe('regions/4/sst/000000000012.sst');
    const entries = sampleEntries().slice(0, 10);
    const written = await writeSst(store, key, layout, entries);
    expect(written?.meta.rows).toBe(10);
    expect([...sstEntries(await readSst(store, key, layout, 4))]).toEqual(entries);
    expect(await writeSst(store, sstKey(4, 13), layout, [])).toBeUndefined();
    expect(await store.exists(sstKey(4, 13))).toBe(false);
    await expectError(() => readSst(store, sstKey(4, 14), layout, 4), 'SST_MISSING', 'region 4', 'regions/4/sst/000000000014.sst');
  });
});

describe('manifest', () => {
  const manifest: Manifest = {
    version: 3,
    regionId: 9,
    flushedEntryId: 41,
    nextSeq: 3,
    ssts: [
      { file: sstKey(9, 1), seq: 1, rows: 10, bytes: 500, minTime: 0, maxTime: 9, minKey: ['a', 'x', 0], maxKey: ['b', 'x', 9] },
      { file: sstKey(9, 2), seq: 2, rows: 1, bytes: 90, minTime: 5, maxTime: 5, minKey: ['c', 'y', 5], maxKey: ['c', 'y', 5] },
    ],
  };

  it('round-trips and is written atomically through the store', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    expect(await readManifest(store, 9)).toBeUndefined();
    await writeManifest(store, manifest);
    expect(await readManifest(store, 9)).toEqual(manifest);
    await writeManifest(store, { ...manifest, version: 4, ssts: [] });
    expect((await readManifest(store, 9))?.version).toBe(4);
    // Only the manifest itself remains: the temp file was renamed over it.
    expect(await readdir(join(dir, 'regions', '9'))).toEqual(['manifest']);
    expect(await readFile(join(dir, 'regions', '9', 'manifest'), 'utf8')).toMatch(/^reprise-manifest 1 [0-9a-f]{8}\n\{/);
  });

  it('detects damage with MANIFEST_CORRUPT naming region and key', async () => {
    const bytes = encodeManifest(manifest);
    for (let at = 0; at < bytes.length; at++) {
      const damaged = bytes.slice();
      damaged[at] ^= 0x04;
      await expectError(() => decodeManifest(9, damaged), 'MANIFEST_CORRUPT', 'region 9', 'regions/9/manifest');
    }
    await expectError(() => decodeManifest(9, bytes.subarray(0, bytes.length - 2)), 'MANIFEST_CORRUPT');
    await expectError(() => decodeManifest(9, new Uint8Array()), 'MANIFEST_CORRUPT', /header/);
  });

  it('rejects a well-formed manifest of another region or with a bad SST list', async () => {
    await expectError(() => decodeManifest(8, encodeManifest(manifest)), 'MANIFEST_CORRUPT', 'region 8', /belongs to region 9/);
    const unordered = { ...manifest, ssts: [...manifest.ssts].reverse() };
    await expectError(() => decodeManifest(9, encodeManifest(unordered)), 'MANIFEST_CORRUPT', /SST entry 1/);
    const beyond = { ...manifest, nextSeq: 2 };
    await expectError(() => decodeManifest(9, encodeManifest(beyond)), 'MANIFEST_CORRUPT', /SST entry 1/);
  });

  it('a corrupt manifest in the store fails readManifest', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    await writeManifest(store, manifest);
    const path = join(dir, manifestKey(9));
    await writeFile(path, (await readFile(path, 'utf8')).replace('"flushedEntryId":41', '"flushedEntryId":42'));
    await expectError(() => readManifest(store, 9), 'MANIFEST_CORRUPT', /checksum mismatch/);
  });
});
