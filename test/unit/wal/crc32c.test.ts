import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../../src/wal/crc32c.js';
import { utf8 } from './helpers.js';

/** Bit-at-a-time reference implementation. */
function reference(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of data) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('crc32c', () => {
  it('matches the standard check value and the RFC 3720 vectors', () => {
    expect(crc32c(utf8('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('agrees with a bitwise implementation on any bytes, at any alignment and length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000, size: 'max' }), fc.nat(7), (data, shift) => {
        // Copy at an offset so that the word-at-a-time path starts unaligned.
        const holder = new Uint8Array(data.length + shift);
        holder.set(data, shift);
        expect(crc32c(holder.subarray(shift))).toBe(reference(data));
      }),
      { numRuns: 300 },
    );
  });

  it('continues from a seed: crc(b, crc(a)) = crc(a + b)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600, size: 'max' }), fc.uint8Array({ maxLength: 600, size: 'max' }), (a, b) => {
        const ab = new Uint8Array(a.length + b.length);
        ab.set(a);
        ab.set(b, a.length);
        expect(crc32c(b, crc32c(a))).toBe(crc32c(ab));
      }),
    );
  });
});
