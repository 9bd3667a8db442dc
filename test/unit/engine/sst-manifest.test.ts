import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../src/engine/fs-object-store.js';
import { crc32, crc32Js } from '../../../src/engine/table/checksum.js';
import { layoutOf, rowFromKey, toValues } from '../../../src/engine/table/keys.js';
import { decodeManifest, encodeManifest, legacyManifestKey, manifestKey, manifestKeys, readManifest, sstKey, writeManifest, type Manifest } from '../../../src/engine/table/manifest.js';
import type { Entry } from '../../../src/engine/table/scan.js';
import { DELETED_COLUMN, MIN_GROUP_ROWS, ROW_GROUP_ROWS, SstReader, SstWriter } from '../../../src/engine/table/sst.js';
import type { Value } from '../../../src/engine/schema.js';
import { isRepriseError } from '../../../src/errors.js';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { gunzipSync } from 'node:zlib';
import { expectError, metrics, tempDir } from './helpers.js';

const layout = layoutOf(metrics);

/** Sorted entries as one SST, through the SstWriter a flush feeds; undefined when there are none. */
function encodeSst(of: ReturnType<typeof layoutOf>, regionId: number, entries: Iterable<readonly [Value[], boolean]>) {
  const writer = new SstWriter(of, regionId);
  for (const [row, deleted] of entries) writer.add(row, deleted);
  return writer.finish();
}

/** 9000 rows (several row groups), every 7th a tombstone, in key order. */
function sampleEntries(): Entry[] {
  const entries: Entry[] = [];
  for (let h = 0; h < 90; h++) {
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

describe('SST (Parquet)', () => {
  const KEY = 'regions/7/sst/000000000001.sst';

  async function stored(entries: Entry[], regionId = 7, key = KEY) {
    const store = new FsObjectStore(await tempDir());
    const encoded = encodeSst(layout, regionId, entries);
    if (encoded === undefined) throw new Error('expected an SST');
    await store.put(key, encoded.bytes);
    return { store, encoded };
  }

  /** Every entry of the SST, read group by group with all columns. */
  async function readAll(reader: SstReader): Promise<Entry[]> {
    const out: Entry[] = [];
    for (let g = 0; g < reader.groups.length; g++) {
      const cols = await reader.readGroup(g, [...layout.names, DELETED_COLUMN]);
      for (let i = 0; i < reader.groups[g].rows; i++) {
        out.push([layout.names.map((n) => (cols.get(n) as ArrayLike<Value>)[i]), Boolean(cols.get(DELETED_COLUMN)![i])]);
      }
    }
    return out;
  }

  it('gives, from the index its writer holds, the reader that opening the file gives', async () => {
    const { store, encoded } = await stored(sampleEntries());
    const opened = await SstReader.open(store, KEY, layout, 7, encoded.meta);
    const written = SstReader.ofIndex(store, KEY, layout, 7, encoded.index);
    expect(written.groups).toEqual(opened.groups);
    expect(written.indexBytes).toBe(opened.indexBytes);
    expect(await readAll(written)).toEqual(await readAll(opened));
  });

  it('round-trips rows and tombstones in row groups that record their key and time ranges', async () => {
    const entries = sampleEntries();
    const { store, encoded } = await stored(entries);
    expect(encoded.meta).toMatchObject({ rows: 9000, bytes: encoded.bytes.length, minTime: 1000, maxTime: 1099, minKey: ['host-00', 'dc1', 1000], maxKey: ['host-89', 'dc1', 1099] });
    const reader = await SstReader.open(store, KEY, layout, 7, encoded.meta);
    // 100 rows per host: a group ends at the first series change past MIN_GROUP_ROWS.
    const size = Math.ceil(MIN_GROUP_ROWS / 100) * 100;
    expect(reader.groups.map((g) => g.rows)).toEqual(new Array(9000 / size).fill(size));
    expect(reader.groups[1].firstKey).toEqual(entries[size][0].filter((_, c) => layout.isKey[c]));
    expect(reader.groups[0].mins).toEqual(['host-00', 'dc1', 1000]);
    expect(await readAll(reader)).toEqual(entries);
    // Projection: only the columns asked for are decoded.
    expect([...(await reader.readGroup(1, ['cpu'])).keys()]).toEqual(['cpu']);
    expect(encodeSst(layout, 7, [])).toBeUndefined();
    // One host's rows fill whole groups of ROW_GROUP_ROWS.
    const one = Array.from({ length: 5000 }, (_, t): Entry => [toValues(layout, { host: 'h', idc: 'dc1', cpu: t, mem: null, up: null, ts: t }), false]);
    const big = await stored(one, 7, sstKey(7, 1, 9));
    const bigReader = await SstReader.open(big.store, sstKey(7, 1, 9), layout, 7);
    expect(bigReader.groups.map((g) => g.rows)).toEqual([ROW_GROUP_ROWS, ROW_GROUP_ROWS, 5000 - 2 * ROW_GROUP_ROWS]);
    // A change of any tag ends a group: one host, series of 600 rows told apart by idc.
    const perSeries = MIN_GROUP_ROWS + 88;
    const idcs = Array.from({ length: 4 }, (_, d) =>
      Array.from({ length: perSeries }, (_, t): Entry => [toValues(layout, { host: 'h', idc: `dc${d}`, cpu: t, mem: null, up: null, ts: t }), false]),
    ).flat();
    const split = await stored(idcs, 7, sstKey(7, 1, 10));
    const splitReader = await SstReader.open(split.store, sstKey(7, 1, 10), layout, 7);
    expect(splitReader.groups.map((g) => g.rows)).toEqual([perSeries, perSeries, perSeries, perSeries]);
    expect(splitReader.groups.map((g) => g.mins[1])).toEqual(['dc0', 'dc1', 'dc2', 'dc3']);
  });

  it('round-trips int64 tags and timestamps exactly, negative and up to 2^53 - 1 (decoded from their 32-bit halves)', async () => {
    const counters = layoutOf({
      name: 'counters',
      columns: [
        { name: 'k', type: 'int64', role: 'tag' },
        { name: 'n', type: 'int64', role: 'field' },
        { name: 'ts', type: 'timestamp', role: 'time' },
      ],
    });
    const ks = [-(2 ** 53 - 1), -(2 ** 32) - 1, -1, 0, 1, 2 ** 32, 2 ** 40 + 5, 2 ** 53 - 1];
    const entries: Entry[] = ks.flatMap((k, i) => [0, 2 ** 31, 2 ** 53 - 2].map((ts, j): Entry => [toValues(counters, { k, n: j === 1 ? null : k - i, ts }), false]));
    const encoded = encodeSst(counters, 3, entries)!;
    const store = new FsObjectStore(await tempDir());
    await store.put(sstKey(3, 1, 1), encoded.bytes);
    const reader = await SstReader.open(store, sstKey(3, 1, 1), counters, 3, encoded.meta);
    const cols = await reader.readGroup(0, ['k', 'n', 'ts']);
    expect(Array.from(cols.get('k')!)).toEqual(entries.map(([row]) => row[0]));
    expect(Array.from(cols.get('n')!)).toEqual(entries.map(([row]) => row[1]));
    expect(Array.from(cols.get('ts')!)).toEqual(entries.map(([row]) => row[2]));
  });

  it('is a Parquet file any reader opens, tags dictionary-encoded and pages compressed', async () => {
    const { encoded } = await stored(sampleEntries());
    const buffer = encoded.bytes.slice().buffer;
    const metadata = parquetMetadata(buffer);
    const rows = await parquetReadObjects({ file: buffer, compressors: { GZIP: (b: Uint8Array) => new Uint8Array(gunzipSync(b)) } });
    expect(rows).toHaveLength(9000);
    expect(rows[1]).toMatchObject({ host: 'host-00', idc: 'dc1', cpu: 1 / 3, __deleted: false });
    const chunk = metadata.row_groups[0].columns[0].meta_data!;
    expect(chunk.encodings).toContain('RLE_DICTIONARY');
    // Fields gzip-compressed; the key columns, a few bytes a group once encoded, not.
    expect(metadata.row_groups[0].columns.map((c) => c.meta_data!.codec)).toEqual(layout.names.map((_, i) => (layout.isKey[i] ? 'UNCOMPRESSED' : 'GZIP')).concat('UNCOMPRESSED'));
    // Far smaller than the values it holds (6 columns, 9000 rows).
    expect(encoded.bytes.length).toBeLessThan(9000 * 20);
  });

  it('reports damage as SST_CORRUPT naming region and file, never as a wrong answer', async () => {
    const entries = sampleEntries().slice(0, 50);
    const { store, encoded } = await stored(entries);
    const { bytes } = encoded;
    let detected = 0;
    for (let at = 0; at < bytes.length; at += 3) {
      const damaged = bytes.slice();
      damaged[at] ^= 1 << (at % 8);
      await store.put(KEY, damaged);
      try {
        const reader = await SstReader.open(store, KEY, layout, 7, encoded.meta);
        // Undetected damage (e.g. in Parquet statistics the engine does not use) must not change the data.
        expect(await readAll(reader)).toEqual(entries);
      } catch (err) {
        expect(isRepriseError(err, 'SST_CORRUPT') || isRepriseError(err, 'SST_FORMAT_UNSUPPORTED')).toBe(true);
        expect((err as Error).message).toContain('region 7');
        expect((err as Error).message).toContain(KEY);
        detected++;
      }
    }
    expect(detected).toBeGreaterThan(100);
    await store.put(KEY, bytes.subarray(0, bytes.length - 1));
    await expectError(() => SstReader.open(store, KEY, layout, 7), 'SST_CORRUPT', KEY);
    await store.put(KEY, new Uint8Array(5));
    await expectError(() => SstReader.open(store, KEY, layout, 7), 'SST_CORRUPT', /only 5 bytes/);
  });

  it('rejects an SST of another region, of other columns, or not holding what its manifest says', async () => {
    const { store, encoded } = await stored(sampleEntries().slice(0, 10));
    await expectError(() => SstReader.open(store, KEY, layout, 8), 'SST_CORRUPT', 'region 8', /written for region 7/);
    await expectError(() => SstReader.open(store, KEY, layout, 7, { ...encoded.meta, rows: 11 }), 'SST_CORRUPT', /its manifest says 11/);
    await expectError(() => SstReader.open(store, KEY, layout, 7, { ...encoded.meta, maxKey: ['zz', 'dc1', 1] }), 'SST_CORRUPT', /its manifest says/);
    const other = layoutOf({ ...metrics, columns: metrics.columns.map((c) => (c.name === 'cpu' ? { ...c, name: 'load' } : c)) });
    const foreign = encodeSst(other, 7, [[['a', 'x', 1, 1, true, 1], false]]);
    await store.put(KEY, foreign!.bytes);
    await expectError(() => SstReader.open(store, KEY, layout, 7), 'SST_CORRUPT', /columns/, 'system_metrics');
  });

  it('refuses an SST of an older format with SST_FORMAT_UNSUPPORTED naming file and format; missing -> SST_MISSING', async () => {
    const store = new FsObjectStore(await tempDir());
    await store.put(KEY, Uint8Array.from([0x52, 0x53, 0x53, 0x54, 1, ...new Array(40).fill(0)]));
    await expectError(() => SstReader.open(store, KEY, layout, 7), 'SST_FORMAT_UNSUPPORTED', KEY, /format 1/);
    // Format 2: Parquet with the index in the footer's key-value metadata, no index trailer.
    const footer = new TextEncoder().encode('...reprise{"format":2,"regionId":7,"columns":[]}...');
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, footer.length, true);
    const par1 = new TextEncoder().encode('PAR1');
    await store.put(KEY, Uint8Array.from([...par1, ...new Array(40).fill(0), ...footer, ...length, ...par1]));
    await expectError(() => SstReader.open(store, KEY, layout, 7), 'SST_FORMAT_UNSUPPORTED', KEY, /format 2/, /any Parquet reader/);
    await expectError(() => SstReader.open(store, sstKey(7, 1, 2), layout, 7), 'SST_MISSING', 'region 7', sstKey(7, 1, 2));
  });
});

describe('manifest', () => {
  const manifest: Manifest & { epoch: number } = {
    version: 3,
    epoch: 2,
    regionId: 9,
    flushedEntryId: 41,
    nextSeq: 3,
    ssts: [
      { file: sstKey(9, 1, 1), seq: 1, rows: 10, bytes: 500, minTime: 0, maxTime: 9, minKey: ['a', 'x', 0], maxKey: ['b', 'x', 9] },
      { file: sstKey(9, 2, 2), seq: 2, rows: 1, bytes: 90, minTime: 5, maxTime: 5, minKey: ['c', 'y', 5], maxKey: ['c', 'y', 5] },
    ],
  };
  const KEY = manifestKey(9, 2, 3);

  it('round-trips; every version is an object of its own, named by epoch and version, and the newest is read', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    expect(await readManifest(store, 9)).toBeUndefined();
    expect(await writeManifest(store, manifest)).toBe(KEY);
    expect(await readManifest(store, 9)).toEqual({ manifest, key: KEY });
    await writeManifest(store, { ...manifest, version: 4, ssts: [] });
    expect((await readManifest(store, 9))?.manifest.version).toBe(4);
    // Nothing overwritten, no temp file left.
    expect(await readdir(join(dir, 'regions', '9', 'manifests'))).toEqual(['0000000002-000000000003', '0000000002-000000000004']);
    expect(await readFile(join(dir, KEY), 'utf8')).toMatch(/^reprise-manifest 1 [0-9a-f]{8}\n\{/);
  });

  it("a newer epoch's manifest outranks any version of an older epoch: what a deposed leader writes later is never read", async () => {
    const store = new FsObjectStore(await tempDir());
    await writeManifest(store, { ...manifest, epoch: 3, version: 4, flushedEntryId: 50 });
    // The deposed leader (epoch 2) flushes after the new one opened: a higher version, a lower epoch.
    await writeManifest(store, { ...manifest, epoch: 2, version: 9, flushedEntryId: 60 });
    expect((await readManifest(store, 9))?.manifest).toMatchObject({ epoch: 3, version: 4, flushedEntryId: 50 });
    expect(await manifestKeys(store, 9)).toEqual([manifestKey(9, 2, 9), manifestKey(9, 3, 4)]);
  });

  it('reads the one manifest of a store written before manifests were versioned, as epoch 0', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    const { epoch: _epoch, ...unversioned } = manifest;
    await store.put(legacyManifestKey(9), encodeManifest(unversioned));
    expect(await readManifest(store, 9)).toEqual({ manifest: unversioned, key: 'regions/9/manifest' });
    // Once a versioned one exists, it is read.
    await writeManifest(store, { ...manifest, epoch: 1, version: 4 });
    expect((await readManifest(store, 9))?.key).toBe(manifestKey(9, 1, 4));
  });

  it('detects damage with MANIFEST_CORRUPT naming region and key', async () => {
    const bytes = encodeManifest(manifest);
    for (let at = 0; at < bytes.length; at++) {
      const damaged = bytes.slice();
      damaged[at] ^= 0x04;
      await expectError(() => decodeManifest(9, damaged, KEY), 'MANIFEST_CORRUPT', 'region 9', KEY);
    }
    await expectError(() => decodeManifest(9, bytes.subarray(0, bytes.length - 2), KEY), 'MANIFEST_CORRUPT');
    await expectError(() => decodeManifest(9, new Uint8Array(), KEY), 'MANIFEST_CORRUPT', /header/);
  });

  it('rejects a well-formed manifest of another region, at another key, or with a bad SST list', async () => {
    await expectError(() => decodeManifest(8, encodeManifest(manifest), KEY), 'MANIFEST_CORRUPT', 'region 8', /belongs to region 9/);
    await expectError(() => decodeManifest(9, encodeManifest(manifest), manifestKey(9, 3, 3)), 'MANIFEST_CORRUPT', /its key says epoch 3 version 3/);
    const unordered = { ...manifest, ssts: [...manifest.ssts].reverse() };
    await expectError(() => decodeManifest(9, encodeManifest(unordered), KEY), 'MANIFEST_CORRUPT', /SST entry 1/);
    const beyond = { ...manifest, nextSeq: 2 };
    await expectError(() => decodeManifest(9, encodeManifest(beyond), KEY), 'MANIFEST_CORRUPT', /SST entry 1/);
  });

  it('a corrupt newest manifest fails readManifest (no falling back to an older version: the log below it may be pruned)', async () => {
    const dir = await tempDir();
    const store = new FsObjectStore(dir);
    await writeManifest(store, { ...manifest, version: 2 });
    await writeManifest(store, manifest);
    const path = join(dir, KEY);
    await writeFile(path, (await readFile(path, 'utf8')).replace('"flushedEntryId":41', '"flushedEntryId":42'));
    await expectError(() => readManifest(store, 9), 'MANIFEST_CORRUPT', /checksum mismatch/);
  });
});
