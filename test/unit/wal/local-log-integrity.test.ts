import { randomBytes } from 'node:crypto';
import { copyFile, cp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeEntry } from '../../../src/wal/codec.js';
import { HIGH_WATER_FILE } from '../../../src/wal/high-water.js';
import { LocalLogStore, type WalLogger } from '../../../src/wal/local-log-store.js';
import { recordKey } from '../../../src/wal/local-log-keys.js';
import { readEntries } from '../../../src/wal/shard-reader.js';
import { collect, expectCode, ids, tempDir, utf8 } from './helpers.js';

/** The newest LevelDB log file of a store's directory. */
async function newestLog(dir: string): Promise<string> {
  const logs = (await readdir(dir)).filter((n) => /^\d+\.log$/.test(n)).sort((a, b) => Number(a.slice(0, -4)) - Number(b.slice(0, -4)));
  expect(logs.length).toBeGreaterThan(0);
  return join(dir, logs[logs.length - 1]!);
}

async function flipByte(path: string, offset: number): Promise<void> {
  const bytes = await readFile(path);
  bytes[offset] ^= 0x5a;
  await writeFile(path, bytes);
}

/** A logger that keeps what it is told. */
function recordingLogger(): WalLogger & { lines: { level: string; msg: string; obj: object }[] } {
  const lines: { level: string; msg: string; obj: object }[] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => lines.push({ level: 'error', obj, msg }),
  };
}

const records = (n: number, tag = 'r', size = 0) => Array.from({ length: n }, (_, i) => utf8(`${tag}${i}`.padEnd(size, '.')));

describe('local WAL integrity: damage LevelDB would drop silently', () => {
  let dir: string;
  let remove: () => Promise<void>;

  beforeEach(async () => {
    ({ dir, remove } = await tempDir('reprise-wal-integrity-'));
  });
  afterEach(async () => {
    await remove();
  });

  /** Topic t: three appends (ids 0, 1, 2), and topic u beside it. Closed, so the log is what the next open replays. */
  async function threeAppends(): Promise<void> {
    const store = await LocalLogStore.open(dir);
    await store.createTopic('u');
    await store.createTopic('t');
    await store.append('u', records(4, 'u'));
    for (let i = 0; i < 3; i++) await store.append('t', [utf8(`row ${i} `.repeat(10))]);
    await store.close();
  }

  it('a byte flipped in the last record is WAL_CORRUPT naming topic and entry id, and changes nothing', async () => {
    await threeAppends();
    const log = await newestLog(dir);
    const { size } = await stat(log);
    await flipByte(log, size - 10);
    const damaged = await readFile(log);
    const files = (await readdir(dir)).sort();

    const err = await expectCode(LocalLogStore.open(dir), 'WAL_CORRUPT');
    expect(err.message).toContain(dir);
    expect(err.message).toMatch(/checksum mismatch/);
    expect(err.message).toContain('topic "t" entry ids 2');
    expect(err.message).toMatch(/--wal-skip-corrupt/);
    // The evidence is still there: LevelDB never opened the directory.
    expect(Buffer.compare(await readFile(log), damaged)).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(files);
    await expectCode(LocalLogStore.open(dir), 'WAL_CORRUPT');
  });

  it('the ids are named even when the flipped byte is in the damaged record\'s own key', async () => {
    const store = await LocalLogStore.open(dir);
    await store.createTopic('t');
    await store.append('t', records(3));
    await store.append('t', [utf8('x')]); // id 3: a 36-byte record whose key sits 4..16 bytes from the end
    await store.close();
    const log = await newestLog(dir);
    const { size } = await stat(log);
    await flipByte(log, size - 8);
    const err = await expectCode(LocalLogStore.open(dir), 'WAL_CORRUPT');
    expect(err.message).toContain('entries lost: topic "t" entry ids 3');
  });

  it('skipCorrupt opens past the damage: a copy is quarantined, the id is a hole, and is never issued again', async () => {
    await threeAppends();
    const log = await newestLog(dir);
    const { size } = await stat(log);
    await flipByte(log, size - 10);
    const logger = recordingLogger();

    let store = await LocalLogStore.open(dir, { skipCorrupt: true, logger });
    try {
      expect(await store.bounds('t')).toEqual({ earliest: 0, next: 3 });
      expect(ids(await collect(store.read('t', 0)))).toEqual([0, 1]);
      expect(store.holes('t')).toEqual([{ from: 2, to: 3 }]);
      expect(ids(await collect(store.read('u', 0)))).toEqual([0, 1, 2, 3]);
      expect(await store.append('t', [utf8('after')])).toEqual([3]);
    } finally {
      await store.close();
    }
    const errors = logger.lines.filter((l) => l.level === 'error').map((l) => l.msg);
    expect(errors.some((m) => /skipping damaged log bytes/.test(m))).toBe(true);
    expect(errors.some((m) => m.includes('topic "t" entry ids 2 are lost'))).toBe(true);
    const [kept] = await readdir(join(dir, 'quarantine'));
    const files = await readdir(join(dir, 'quarantine', kept!));
    expect(files).toContain('report.json');
    expect(files).toContain(log.slice(dir.length + 1));
    const report = JSON.parse(await readFile(join(dir, 'quarantine', kept!, 'report.json'), 'utf8')) as { damages: { entries: Record<string, string> }[] };
    expect(report.damages[0]!.entries).toEqual({ t: '2' });

    // The hole is remembered: a plain open reads past it and keeps the ids.
    store = await LocalLogStore.open(dir);
    try {
      expect(ids(await collect(store.read('t', 0)))).toEqual([0, 1, 3]);
      expect(await store.append('t', [utf8('later')])).toEqual([4]);
    } finally {
      await store.close();
    }
  });

  it('cutting the last 30 bytes is WAL_TAIL_LOST naming topic and entry id; skipCorrupt keeps the id issued', async () => {
    await threeAppends();
    const log = await newestLog(dir);
    const { size } = await stat(log);
    await truncate(log, size - 30);

    const err = await expectCode(LocalLogStore.open(dir), 'WAL_TAIL_LOST');
    expect(err.message).toContain('topic "t" ends before entry id 2, but entry ids 2 were acknowledged');
    expect(err.message).toMatch(/--wal-skip-corrupt/);
    // Every later start says so too (the high-water file is not rewritten by a failed open).
    await expectCode(LocalLogStore.open(dir), 'WAL_TAIL_LOST');

    const logger = recordingLogger();
    const store = await LocalLogStore.open(dir, { skipCorrupt: true, logger });
    try {
      expect(await store.bounds('t')).toEqual({ earliest: 0, next: 3 });
      expect(ids(await collect(store.read('t', 0)))).toEqual([0, 1]);
      expect(await store.append('t', [utf8('after')])).toEqual([3]);
    } finally {
      await store.close();
    }
    expect(logger.lines.some((l) => l.level === 'error' && l.msg.includes('topic "t" entry ids 2 are lost'))).toBe(true);
  });

  it('6,000 records: a flip in the middle and a truncation to half are refused, naming the ids; skipping loses only those', async () => {
    const store = await LocalLogStore.open(dir);
    await store.createTopic('t');
    for (let i = 0; i < 60; i++) await store.append('t', records(100, `b${i}-`, 40));
    await store.close();
    const log = await newestLog(dir);
    const original = await readFile(log);

    // A flip in the middle: LevelDB would drop the rest of that 32 KiB block and replay the records after it.
    await flipByte(log, Math.floor(original.length / 2));
    const corrupt = await expectCode(LocalLogStore.open(dir), 'WAL_CORRUPT');
    const named = /topic "t" entry ids (\d+)\.\.(\d+)/.exec(corrupt.message);
    expect(named, corrupt.message).not.toBeNull();
    const lostFrom = Number(named![1]);
    const lostTo = Number(named![2]);
    expect(lostFrom).toBeGreaterThan(0);
    expect(lostTo).toBeLessThan(5999);

    const skipped = await LocalLogStore.open(dir, { skipCorrupt: true, logger: recordingLogger() });
    try {
      const got = ids(await collect(skipped.read('t', 0)));
      const lost = new Set(Array.from({ length: 6000 }, (_, i) => i).filter((i) => !got.includes(i)));
      // What was skipped is what the error named (the damaged batch and the intact ones LevelDB dropped with it).
      expect(Math.min(...lost)).toBe(lostFrom);
      expect(Math.max(...lost)).toBe(lostTo);
      expect(got.length).toBeGreaterThan(5000);
      expect(await skipped.append('t', [utf8('x')])).toEqual([6000]);
    } finally {
      await skipped.close();
    }

    // Truncation to half, on a fresh copy of the same log.
    await rm(dir, { recursive: true, force: true });
    const again = await LocalLogStore.open(dir);
    await again.createTopic('t');
    for (let i = 0; i < 60; i++) await again.append('t', records(100, `b${i}-`, 40));
    await again.close();
    const half = await newestLog(dir);
    await truncate(half, Math.floor((await stat(half)).size / 2));
    const tail = await expectCode(LocalLogStore.open(dir), 'WAL_TAIL_LOST');
    expect(tail.message).toMatch(/topic "t" ends before entry id (\d+), but entry ids \1\.\.5999 were acknowledged/);
  });

  it('a record split over several blocks, damaged in a middle fragment, is named from its first fragment', async () => {
    const store = await LocalLogStore.open(dir);
    await store.createTopic('t');
    await store.append('t', records(2));
    await store.append('t', [new Uint8Array(100_000).fill(7)]); // id 2: one batch of ~100 KB, four fragments
    await store.append('t', records(1, 'z'));
    await store.close();
    const log = await newestLog(dir);
    await flipByte(log, 50_000);
    const err = await expectCode(LocalLogStore.open(dir), 'WAL_CORRUPT');
    expect(err.message).toContain('topic "t" entry ids 2');
  });

  it('deleting the log file: topics that had acknowledged entries are missing, WAL_TAIL_LOST', async () => {
    await threeAppends();
    await rm(await newestLog(dir));
    const err = await expectCode(LocalLogStore.open(dir), 'WAL_TAIL_LOST');
    expect(err.message).toContain('topic "t" is missing (it had acknowledged entries up to id 2)');
    expect(err.message).toContain('topic "u" is missing (it had acknowledged entries up to id 3)');

    const store = await LocalLogStore.open(dir, { skipCorrupt: true, logger: recordingLogger() });
    try {
      expect(await store.bounds('t')).toEqual({ earliest: 3, next: 3 });
      await expectCode(collect(store.read('t', 0)), 'WAL_TRUNCATED');
      expect(await store.append('t', [utf8('after')])).toEqual([3]);
    } finally {
      await store.close();
    }
  });

  it('what a crash leaves is not damage: a torn record at the end, and records the high-water mark does not cover yet', async () => {
    const first = await LocalLogStore.open(dir);
    await first.createTopic('t');
    await first.append('t', records(2));
    await copyFile(join(dir, HIGH_WATER_FILE), join(dir, 'hw-before'));
    await first.append('t', records(3, 'more'));
    await first.close();
    // The crash came after LevelDB's synced write but before the mark's: the log holds more than the mark says.
    await copyFile(join(dir, 'hw-before'), join(dir, HIGH_WATER_FILE));
    // And a writer killed mid-append left half a record at the end (a header claiming 100 bytes, 20 there).
    const log = await newestLog(dir);
    const torn = new Uint8Array(27);
    torn.set([0x12, 0x34, 0x56, 0x78, 100, 0, 1]);
    await writeFile(log, Buffer.concat([await readFile(log), torn]));

    const store = await LocalLogStore.open(dir);
    try {
      expect(await store.bounds('t')).toEqual({ earliest: 0, next: 5 });
      expect(await store.append('t', records(1))).toEqual([5]);
    } finally {
      await store.close();
    }
  });

  it('the high-water file: a torn write falls back to the other copy; no valid copy is WAL_CORRUPT unless skipCorrupt', async () => {
    await threeAppends();
    const path = join(dir, HIGH_WATER_FILE);
    const bytes = await readFile(path);
    const capacity = bytes.length / 2;
    // The newer copy is the one with the higher sequence; damage it.
    const seqOf = (slot: number) => bytes.readUInt32BE(slot * capacity + 12);
    const newer = seqOf(0) > seqOf(1) ? 0 : 1;
    const older = 1 - newer;
    const torn = Buffer.from(bytes);
    torn[newer * capacity + 25] ^= 0xff;
    await writeFile(path, torn);
    const store = await LocalLogStore.open(dir); // the older copy marks less: nothing to complain about
    expect(await store.bounds('t')).toEqual({ earliest: 0, next: 3 });
    await store.close();

    const both = Buffer.from(await readFile(path));
    const cap = both.length / 2;
    both[20] ^= 0xff;
    both[cap + 20] ^= 0xff;
    await writeFile(path, both);
    const err = await expectCode(LocalLogStore.open(dir), 'WAL_CORRUPT');
    expect(err.message).toContain(HIGH_WATER_FILE);
    const skipped = await LocalLogStore.open(dir, { skipCorrupt: true, logger: recordingLogger() });
    expect(await skipped.bounds('t')).toEqual({ earliest: 0, next: 3 });
    await skipped.close();
    expect(older).not.toBe(newer);
  });

  it('a hole that took the first part of a split entry takes the rest of it; reads of whole entries go on', async () => {
    let store = await LocalLogStore.open(dir);
    await store.createTopic('t');
    const small = (n: number) => encodeEntry({ kind: 'data', region: 1, epoch: 1, body: new Uint8Array(n).fill(n & 0xff) }, 64);
    await store.append('t', small(10)); // id 0
    const split = small(200);
    expect(split.length).toBeGreaterThan(2);
    const splitIds = await store.append('t', split); // ids 1..k
    const [last] = await store.append('t', small(12));
    // Lose the first part (as a damaged log would), with nothing left to say it was there but the ids around it.
    const db = (store as unknown as { db: { del: (key: Uint8Array, o: object) => Promise<void> } }).db;
    await db.del(recordKey(0, splitIds[0]!), { sync: true });
    await store.close();

    store = await LocalLogStore.open(dir);
    await expectCode(collect(readEntries(store, 't', 0)), 'WAL_CORRUPT');
    await store.close();

    store = await LocalLogStore.open(dir, { skipCorrupt: true, logger: recordingLogger() });
    try {
      expect(store.holes('t')).toEqual([{ from: splitIds[0]!, to: splitIds[splitIds.length - 1]! + 1 }]);
      const entries = await collect(readEntries(store, 't', 0));
      expect(entries.map((e) => e.id)).toEqual([0, last]);
    } finally {
      await store.close();
    }
  });

  it("LevelDB's own files (a table, MANIFEST, CURRENT) flipped or cut: WAL_CORRUPT at open or on read, never a silent loss", async () => {
    const quiet = recordingLogger();
    const store = await LocalLogStore.open(dir, { logger: quiet });
    await store.createTopic('t');
    const bodies = Array.from({ length: 2000 }, (_, i) => randomBytes(80 + (i % 40)));
    for (const body of bodies) await store.append('t', encodeEntry({ kind: 'data', region: 1, epoch: 1, body }));
    await store.close();
    // A second open turns the log into a table (.ldb) and writes a new MANIFEST.
    await (await LocalLogStore.open(dir, { logger: quiet })).close();
    const files = await readdir(dir);
    const kinds = [files.find((f) => f.endsWith('.ldb')), files.find((f) => f.startsWith('MANIFEST-')), 'CURRENT'];
    const copy = `${dir}-damaged`;
    const outcomes = new Map<string, number>();
    try {
      for (const file of kinds) {
        expect(file, files.join(', ')).toBeDefined();
        const original = await readFile(join(dir, file!));
        const damages = [...Array.from({ length: 24 }, (_, k) => Math.floor((k * original.length) / 24)), -1];
        for (const at of damages) {
          await rm(copy, { recursive: true, force: true });
          await cp(dir, copy, { recursive: true });
          const damaged = at < 0 ? original.subarray(0, original.length >> 1) : Buffer.from(original);
          if (at >= 0) damaged[at]! ^= 0x10;
          await writeFile(join(copy, file!), damaged);
          let outcome: string;
          try {
            const reopened = await LocalLogStore.open(copy, { logger: quiet });
            try {
              const got = await collect(readEntries(reopened, 't', 0));
              // Damage LevelDB does not read (an unused byte) must leave the data as it was.
              expect(got.map((e) => Buffer.from(e.body).toString('hex'))).toEqual(bodies.map((b) => b.toString('hex')));
              outcome = 'intact';
            } catch (err) {
              expect((err as { code?: string }).code, String(err)).toBe('WAL_CORRUPT');
              expect((err as Error).message).toMatch(/topic "t".* entry id \d+/);
              outcome = 'read';
            } finally {
              await reopened.close();
            }
          } catch (err) {
            expect((err as { code?: string }).code, String(err)).toBe('WAL_CORRUPT');
            expect((err as Error).message).toContain(copy);
            outcome = 'open';
          }
          outcomes.set(`${file!.replace(/\d+/g, 'N')} ${outcome}`, (outcomes.get(`${file!.replace(/\d+/g, 'N')} ${outcome}`) ?? 0) + 1);
        }
      }
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
    // Most damage is found; the cut files always.
    expect((outcomes.get('N.ldb read') ?? 0) + (outcomes.get('N.ldb open') ?? 0)).toBeGreaterThan(15);
    expect(outcomes.get('MANIFEST-N open')).toBe(25);
    expect(outcomes.get('CURRENT open')).toBe(25);
  });
});
