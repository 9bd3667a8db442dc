import { Decoder, Encoder } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Value } from '../../../src/engine/schema.js';
import {
  FALSE_READ,
  MsgpackFormatError,
  MsgpackReader,
  MsgpackWriter,
  NIL_READ,
  NUMBER_READ,
  OTHER_READ,
  TRUE_READ,
} from '../../../src/engine/table/msgpack-rows.js';

const encoder = new Encoder();

/** Byte equality, fast on large buffers (toEqual compares element by element). */
function expectBytes(actual: Uint8Array, expected: Uint8Array, what?: string): void {
  expect(Buffer.compare(Buffer.from(actual), Buffer.from(expected)), what).toBe(0);
}

/** Values at every msgpack format boundary, non-ASCII and lone surrogates included. */
const edges: Value[] = [
  null, true, false,
  0, -0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53,
  -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53) + 1,
  0.5, -1.5, 1e300, -1e-300, Number.MIN_VALUE, NaN, Infinity, -Infinity,
  '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(51), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(65536),
  'é', 'é'.repeat(15), 'é'.repeat(16), 'é'.repeat(60), '\u0800'.repeat(11), '😀', '😀'.repeat(30),
  '\ud800', 'a\udc00b', '\ud800'.repeat(60), 'ascii then é',
];

describe('MsgpackWriter', () => {
  it('writes the bytes @msgpack/msgpack writes, value by value', () => {
    for (const v of edges) {
      expectBytes(new MsgpackWriter().array([v]).finish(), encoder.encode([v]), JSON.stringify(v)?.slice(0, 20));
    }
  });

  it('writes rows, maps and arrays of any length like @msgpack/msgpack, growing from a tiny buffer', () => {
    const rows = Array.from({ length: 40 }, (_, i) => Array.from({ length: 17 }, (_, j) => edges[(i * 7 + j) % edges.length]));
    const writer = new MsgpackWriter(1);
    expectBytes(writer.mapHeader(2).string('op').string('put').string('rows').rows(rows).finish(), encoder.encode({ op: 'put', rows }));
    const long = Array.from({ length: 70000 }, (_, i) => i % 300);
    expectBytes(writer.reset().array(long).finish(), encoder.encode(long));
    const wide = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i]));
    writer.reset().mapHeader(20);
    for (const [k, v] of Object.entries(wide)) writer.string(k).number(v);
    expectBytes(writer.finish(), encoder.encode(wide));
  });

  it('matches @msgpack/msgpack on arbitrary rows (property)', () => {
    const value = fc.oneof(
      fc.constant(null),
      fc.boolean(),
      fc.double(),
      fc.maxSafeInteger(),
      fc.integer(),
      fc.string({ unit: 'binary', maxLength: 80 }),
    );
    const writer = new MsgpackWriter(16);
    fc.assert(
      fc.property(fc.array(fc.array(value, { maxLength: 20 }), { maxLength: 20 }), (rows) => {
        expectBytes(writer.reset().rows(rows).finish(), encoder.encode(rows));
      }),
    );
  });

  it('appends raw bytes, exposes what it wrote, and copies on finish', () => {
    const writer = new MsgpackWriter(2).raw(Uint8Array.of(1, 2, 3)).number(5);
    expect(writer.length).toBe(4);
    expect([...writer.written()]).toEqual([1, 2, 3, 5]);
    const out = writer.finish();
    writer.reset().number(7);
    expect([...out]).toEqual([1, 2, 3, 5]);
  });

  it('rejects what is not a row value', () => {
    expect(() => new MsgpackWriter().value({} as unknown as Value)).toThrow(TypeError);
  });
});

describe('MsgpackReader', () => {
  const decoder = new Decoder();

  it('reads every value @msgpack/msgpack writes as @msgpack/msgpack reads it, and steps over anything', () => {
    const reader = new MsgpackReader();
    const finite = edges.filter((v) => typeof v !== 'number' || Number.isFinite(v) || Number.isNaN(v));
    const bytes = encoder.encode(finite);
    reader.reset(bytes);
    expect(reader.arrayHeader()).toBe(finite.length);
    const expected = decoder.decode(bytes) as Value[];
    for (let i = 0; i < finite.length; i++) expect(reader.value(), String(i)).toEqual(expected[i]);
    expect(reader.done).toBe(true);
    // skip: nested maps and arrays, bin and ext, then a value after them.
    const nested = encoder.encode([{ a: [1, { b: 'x' }], c: new Uint8Array(300) }, new Date(5), 'after']);
    reader.reset(nested);
    expect(reader.arrayHeader()).toBe(3);
    reader.skip();
    reader.skip();
    expect(reader.value()).toBe('after');
    expect(reader.done).toBe(true);
  });

  it('reads numbers, nil and booleans into a Float64Array, leaving anything else unread', () => {
    const reader = new MsgpackReader().reset(encoder.encode([0.5, -3, 2 ** 40, -(2 ** 40), 255, null, true, false, 'x']));
    const out = new Float64Array(9);
    reader.arrayHeader();
    const reads = Array.from({ length: 8 }, (_, i) => reader.numberInto(out, i));
    expect(reads).toEqual([NUMBER_READ, NUMBER_READ, NUMBER_READ, NUMBER_READ, NUMBER_READ, NIL_READ, TRUE_READ, FALSE_READ]);
    expect([...out.subarray(0, 5)]).toEqual([0.5, -3, 2 ** 40, -(2 ** 40), 255]);
    expect(reader.numberInto(out, 8)).toBe(OTHER_READ);
    expect(reader.value()).toBe('x');
  });

  it('reads a message inside a larger buffer, and fails on truncated or unexpected bytes', () => {
    const inner = encoder.encode(['ab', 1]);
    const buf = Uint8Array.from([9, 9, ...inner, 9]);
    const reader = new MsgpackReader().reset(buf, 2, 2 + inner.length);
    expect(reader.arrayHeader()).toBe(2);
    expect([reader.value(), reader.value()]).toEqual(['ab', 1]);
    expect(reader.done).toBe(true);
    const cut = new MsgpackReader().reset(inner.subarray(0, 2));
    expect(cut.arrayHeader()).toBe(2);
    expect(() => cut.value()).toThrow(MsgpackFormatError);
    expect(() => new MsgpackReader().reset(Uint8Array.of(0x92)).mapHeader()).toThrow(/expected a map/);
    expect(() => new MsgpackReader().reset(Uint8Array.of(0xc4, 1, 0)).value()).toThrow(/expected a value/);
    expect(() => new MsgpackReader().reset(Uint8Array.of(0xa3, 0x61)).value()).toThrow(/truncated/);
  });

  it('returns the same string object for the same short bytes (interned), equal strings for long ones', () => {
    const reader = new MsgpackReader();
    const bytes = encoder.encode(['host_001', 'host_001', 'y'.repeat(40), 'y'.repeat(40)]);
    reader.reset(bytes).arrayHeader();
    const [a, b, c, d] = [reader.value(), reader.value(), reader.value(), reader.value()];
    expect(a).toBe('host_001');
    expect(Object.is(a, b)).toBe(true);
    expect(c).toBe(d);
  });
});
