import { Encoder } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Value } from '../../../src/engine/schema.js';
import { MsgpackWriter } from '../../../src/engine/table/msgpack-rows.js';

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
