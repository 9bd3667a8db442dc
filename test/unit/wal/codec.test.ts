import { decode as msgpackDecode, encode as msgpackEncode } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRepriseError } from '../../../src/errors.js';
import {
  decodeRecord,
  encodeEntry,
  EntryAssembler,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  FRAME_VERSION,
} from '../../../src/wal/codec.js';
import { crc32c } from '../../../src/wal/crc32c.js';
import { DEFAULT_MAX_BATCH_BYTES, ENTRY_KINDS, type Entry, type LoggedEntry } from '../../../src/wal/entry.js';
import type { LogRecord } from '../../../src/wal/log-store.js';
import { bytes } from './helpers.js';

const MiB = 1024 * 1024;

/** Give records consecutive ids from `first`, as a store would. */
function asRecords(frames: readonly Uint8Array[], first = 0): LogRecord[] {
  return frames.map((data, i) => ({ id: first + i, data }));
}

function expectCorrupt(fn: () => unknown, ...fragments: string[]): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isRepriseError(thrown, 'WAL_CORRUPT'), `expected WAL_CORRUPT, got ${String(thrown)}`).toBe(true);
  for (const f of fragments) expect((thrown as Error).message).toContain(f);
}

function assembleAll(topic: string, records: readonly LogRecord[]): { entries: LoggedEntry[]; torn: number } {
  const assembler = new EntryAssembler(topic);
  const entries: LoggedEntry[] = [];
  for (const r of records) {
    const e = assembler.push(r);
    if (e) entries.push(e);
  }
  return { entries, torn: assembler.tornEntries };
}

const entry = (body: Uint8Array, over: Partial<Entry> = {}): Entry => ({ kind: 'data', region: 7, epoch: 2, body, ...over });

describe('entry codec', () => {
  it('frames a small entry as one record with magic, version, checksum and length', () => {
    const [frame, ...rest] = encodeEntry(entry(Uint8Array.of(1, 2, 3)));
    expect(rest).toEqual([]);
    expect(frame![0]).toBe(FRAME_MAGIC);
    expect(frame![1]).toBe(FRAME_VERSION);
    const view = new DataView(frame!.buffer, frame!.byteOffset, frame!.byteLength);
    expect(view.getUint32(2)).toBe(crc32c(frame!.subarray(6)));
    expect(view.getUint32(6)).toBe(frame!.length - FRAME_HEADER_BYTES);
    expect(decodeRecord({ id: 0, data: frame! }, 't')).toEqual({
      kind: 'data',
      region: 7,
      epoch: 2,
      body: Uint8Array.of(1, 2, 3),
      part: 0,
      parts: 1,
    });
  });

  it('writes standard MessagePack payloads, and reads them from other encoders', () => {
    const big = { kind: 'epoch' as const, region: 2 ** 40 + 3, epoch: 70_000, body: bytes(300) };
    const [frame] = encodeEntry(big);
    // Our bytes are what @msgpack/msgpack writes for the same array.
    const payload = frame!.subarray(FRAME_HEADER_BYTES);
    expect(msgpackDecode(payload)).toEqual([1, big.region, big.epoch, big.body]);
    expect(Array.from(payload)).toEqual(Array.from(msgpackEncode([1, big.region, big.epoch, big.body])));

    // A frame whose payload another encoder wrote (here: a split part) decodes.
    const foreign = msgpackEncode([3, 5, 6, Uint8Array.of(9, 9), 1, 4]);
    const data = new Uint8Array(FRAME_HEADER_BYTES + foreign.length);
    data.set([FRAME_MAGIC, FRAME_VERSION]);
    data.set(foreign, FRAME_HEADER_BYTES);
    const view = new DataView(data.buffer);
    view.setUint32(6, foreign.length);
    view.setUint32(2, crc32c(data.subarray(6)));
    expect(decodeRecord({ id: 3, data }, 't')).toEqual({
      kind: 'region_drop',
      region: 5,
      epoch: 6,
      body: Uint8Array.of(9, 9),
      part: 1,
      parts: 4,
    });
  });

  it('returns the body of a whole entry as a view of the record, without copying', () => {
    const [frame] = encodeEntry(entry(bytes(1000)));
    const decoded = new EntryAssembler('t').push({ id: 5, data: frame! })!;
    expect(decoded.body.buffer).toBe(frame!.buffer);
    expect(decoded).toMatchObject({ id: 5, firstId: 5, bytes: frame!.length });
  });

  it('round-trips any entry through records, ids and the assembler', () => {
    const arbEntry = fc.record({
      kind: fc.constantFrom(...ENTRY_KINDS),
      region: fc.oneof(fc.nat(200), fc.maxSafeNat()),
      epoch: fc.oneof(fc.nat(70_000), fc.maxSafeNat()),
      size: fc.oneof(fc.nat(300), fc.nat(70_000), fc.integer({ min: 0, max: 3 * MiB })),
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    });
    const arbMax = fc.oneof(
      fc.integer({ min: 64, max: 4096 }),
      fc.integer({ min: 4096, max: 256 * 1024 }),
      fc.integer({ min: 256 * 1024, max: 4 * MiB }),
    );
    fc.assert(
      fc.property(arbEntry, arbMax, fc.nat(1000), (e, maxRecordBytes, firstId) => {
        const body = bytes(e.size, e.seed);
        // Records of tiny limits over megabytes would take long; keep cases bounded.
        fc.pre(body.length / maxRecordBytes < 20_000);
        const input: Entry = { kind: e.kind, region: e.region, epoch: e.epoch, body };
        const frames = encodeEntry(input, maxRecordBytes);
        for (const f of frames) expect(f.length).toBeLessThanOrEqual(maxRecordBytes);
        const assembler = new EntryAssembler('prop');
        const records = asRecords(frames, firstId);
        for (const r of records.slice(0, -1)) expect(assembler.push(r)).toBeUndefined();
        const out = assembler.push(records[records.length - 1]!)!;
        expect(out.kind).toBe(input.kind);
        expect(out.region).toBe(input.region);
        expect(out.epoch).toBe(input.epoch);
        expect(out.id).toBe(firstId + frames.length - 1);
        expect(out.firstId).toBe(firstId);
        expect(out.bytes).toBe(frames.reduce((n, f) => n + f.length, 0));
        expect(Buffer.from(out.body).equals(Buffer.from(body))).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('uses the default limit of DEFAULT_MAX_BATCH_BYTES', () => {
    const frames = encodeEntry(entry(bytes(DEFAULT_MAX_BATCH_BYTES)));
    expect(frames.length).toBe(2);
    for (const f of frames) expect(f.length).toBeLessThanOrEqual(DEFAULT_MAX_BATCH_BYTES);
  });

  it('detects a single flipped bit anywhere in a frame as WAL_CORRUPT', () => {
    fc.assert(
      fc.property(
        fc.nat(2000),
        fc.constantFrom(64, 512, 100_000),
        fc.nat(),
        fc.nat(7),
        (size, maxRecordBytes, pick, bit) => {
          const frames = encodeEntry(entry(bytes(size, size + 1), { region: 12345 }), maxRecordBytes);
          const index = pick % frames.length;
          const data = frames[index]!.slice();
          data[pick % data.length]! ^= 1 << bit;
          expectCorrupt(() => decodeRecord({ id: 40 + index, data }, 'flip-topic'), 'flip-topic', `${40 + index}`);
          expectCorrupt(() => new EntryAssembler('flip-topic').push({ id: 40 + index, data }), 'flip-topic');
        },
      ),
      { numRuns: 500 },
    );
  });

  it('rejects truncated and padded records as WAL_CORRUPT', () => {
    const [frame] = encodeEntry(entry(bytes(50)));
    expectCorrupt(() => decodeRecord({ id: 1, data: frame!.subarray(0, 5) }, 't'), 'shorter than a frame header');
    expectCorrupt(() => decodeRecord({ id: 1, data: frame!.subarray(0, frame!.length - 1) }, 't'), 'payload bytes');
    const padded = new Uint8Array(frame!.length + 1);
    padded.set(frame!);
    expectCorrupt(() => decodeRecord({ id: 1, data: padded }, 't'), 'payload bytes');
  });

  it('drops a torn split entry when the next entry starts, and counts it', () => {
    const split = encodeEntry(entry(bytes(1000), { region: 1 }), 300);
    expect(split.length).toBeGreaterThan(2);
    const whole = encodeEntry(entry(Uint8Array.of(42), { region: 2 }), 300);
    const next = encodeEntry(entry(bytes(700, 5), { region: 3 }), 300);
    const { entries, torn } = assembleAll('t', asRecords([...split.slice(0, 2), ...whole, ...next]));
    expect(torn).toBe(1);
    expect(entries.map((e) => e.region)).toEqual([2, 3]);
    expect(entries[0]).toMatchObject({ id: 2, firstId: 2 });
    expect(entries[1]).toMatchObject({ firstId: 3, id: 2 + next.length });
    expect(Array.from(entries[1]!.body)).toEqual(Array.from(bytes(700, 5)));
  });

  it('drops late parts of a torn entry (a fenced writer that carried on)', () => {
    const zombie = encodeEntry(entry(bytes(1000), { epoch: 1 }), 300);
    const marker = encodeEntry({ kind: 'epoch', region: 0, epoch: 2, body: new Uint8Array(0) });
    const { entries, torn } = assembleAll('t', asRecords([zombie[0]!, ...marker, ...zombie.slice(1)]));
    expect(torn).toBe(1);
    expect(entries.map((e) => e.kind)).toEqual(['epoch']);
  });

  it('yields nothing for a split entry still incomplete at the end', () => {
    const split = encodeEntry(entry(bytes(1000)), 300);
    const { entries, torn } = assembleAll('t', asRecords(split.slice(0, -1)));
    expect(entries).toEqual([]);
    expect(torn).toBe(0);
  });

  it('rejects a continuation part at the start of a read as WAL_CORRUPT', () => {
    const split = encodeEntry(entry(bytes(1000)), 300);
    const assembler = new EntryAssembler('orphan-topic');
    expectCorrupt(() => assembler.push({ id: 17, data: split[1]! }), 'orphan-topic', '17', 'middle of a split entry');
  });

  it('rejects an out-of-sequence continuation as WAL_CORRUPT', () => {
    const split = encodeEntry(entry(bytes(1000)), 300);
    const assembler = new EntryAssembler('t');
    assembler.push({ id: 0, data: split[0]! });
    expectCorrupt(() => assembler.push({ id: 1, data: split[2]! }), 'expected part 1');
    const other = new EntryAssembler('t');
    other.push({ id: 0, data: encodeEntry(entry(Uint8Array.of(1)))[0]! });
    expectCorrupt(() => other.push({ id: 1, data: split[1]! }), 'no split entry is in progress');
  });

  it('throws ENTRY_TOO_LARGE when the record limit cannot hold a frame', () => {
    let thrown: unknown;
    try {
      encodeEntry(entry(bytes(100)), 28);
    } catch (err) {
      thrown = err;
    }
    expect(isRepriseError(thrown, 'ENTRY_TOO_LARGE')).toBe(true);
    expect((thrown as Error).message).toContain('region 7');
    // Two bytes more leave room for one body byte per record.
    const tiny = encodeEntry(entry(bytes(100)), 30);
    expect(tiny).toHaveLength(100);
    for (const f of tiny) expect(f.length).toBeLessThanOrEqual(30);
    // An empty entry fits a limit just the size of its frame.
    const [frame] = encodeEntry(entry(new Uint8Array(0)));
    expect(encodeEntry(entry(new Uint8Array(0)), frame!.length)).toHaveLength(1);
  });

  it('refuses entries it cannot encode', () => {
    expect(() => encodeEntry(entry(Uint8Array.of(1), { region: -1 }))).toThrow(/region/);
    expect(() => encodeEntry(entry(Uint8Array.of(1), { epoch: 1.5 }))).toThrow(/epoch/);
    expect(() => encodeEntry(entry(Uint8Array.of(1), { kind: 'bogus' as Entry['kind'] }))).toThrow(/bogus/);
  });
});
