import type { Value } from '../schema.js';

/** What @msgpack/msgpack hands to TextEncoder rather than encoding itself (its TEXT_ENCODER_THRESHOLD). */
const TEXT_ENCODER_MIN = 51;
const textEncoder = new TextEncoder();

/**
 * A msgpack writer for what the hot paths encode: rows, arrays of primitive
 * values (WAL put bodies, SST blocks). It writes the very bytes
 * @msgpack/msgpack's Encoder writes for the same values, without its
 * per-value dispatch, its extension lookup per array, its bounds check per
 * byte and its second pass over each string. Synchronous, so one instance
 * can be shared; `finish` returns a copy.
 */
export class MsgpackWriter {
  private bytes: Uint8Array;
  private view: DataView;
  private pos = 0;

  constructor(initialBytes = 64 * 1024) {
    this.bytes = new Uint8Array(initialBytes);
    this.view = new DataView(this.bytes.buffer);
  }

  /** Start a new message. */
  reset(): this {
    this.pos = 0;
    return this;
  }

  /** A copy of the message written since `reset`. */
  finish(): Uint8Array {
    return this.bytes.slice(0, this.pos);
  }

  /** Bytes written since `reset`. */
  get length(): number {
    return this.pos;
  }

  /** The bytes written since `reset`, not copied: valid until the next write. */
  written(): Uint8Array {
    return this.bytes.subarray(0, this.pos);
  }

  /** Bytes as they are (not msgpack-encoded). */
  raw(data: Uint8Array): this {
    this.ensure(data.length);
    this.bytes.set(data, this.pos);
    this.pos += data.length;
    return this;
  }

  arrayHeader(length: number): this {
    return this.header(length, 0x90, 0xdc, 0xdd);
  }

  mapHeader(size: number): this {
    return this.header(size, 0x80, 0xde, 0xdf);
  }

  /** An array of rows, each an array of values. */
  rows(rows: readonly (readonly Value[])[]): this {
    this.arrayHeader(rows.length);
    for (let r = 0; r < rows.length; r++) this.array(rows[r]);
    return this;
  }

  /** An array of values. */
  array(values: readonly Value[]): this {
    this.arrayHeader(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v === 'number') this.number(v);
      else if (typeof v === 'string') this.string(v);
      else this.value(v);
    }
    return this;
  }

  value(v: Value): this {
    if (typeof v === 'number') return this.number(v);
    if (typeof v === 'string') return this.string(v);
    this.ensure(1);
    if (v === null) this.bytes[this.pos++] = 0xc0;
    else if (typeof v === 'boolean') this.bytes[this.pos++] = v ? 0xc3 : 0xc2;
    else throw new TypeError(`cannot encode ${typeof v} as a row value`);
    return this;
  }

  number(v: number): this {
    if (Number.isSafeInteger(v)) return this.integer(v);
    this.ensure(9);
    this.bytes[this.pos] = 0xcb;
    this.view.setFloat64(this.pos + 1, v);
    this.pos += 9;
    return this;
  }

  private integer(v: number): this {
    this.ensure(9);
    const { bytes, view } = this;
    let p = this.pos;
    if (v >= 0) {
      if (v < 0x80) {
        bytes[p++] = v;
      } else if (v < 0x100) {
        bytes[p] = 0xcc;
        bytes[p + 1] = v;
        p += 2;
      } else if (v < 0x10000) {
        bytes[p] = 0xcd;
        view.setUint16(p + 1, v);
        p += 3;
      } else if (v < 0x100000000) {
        bytes[p] = 0xce;
        view.setUint32(p + 1, v);
        p += 5;
      } else {
        bytes[p] = 0xcf;
        view.setUint32(p + 1, v / 0x100000000);
        view.setUint32(p + 5, v);
        p += 9;
      }
    } else if (v >= -0x20) {
      bytes[p++] = 0xe0 | (v + 0x20);
    } else if (v >= -0x80) {
      bytes[p] = 0xd0;
      view.setInt8(p + 1, v);
      p += 2;
    } else if (v >= -0x8000) {
      bytes[p] = 0xd1;
      view.setInt16(p + 1, v);
      p += 3;
    } else if (v >= -0x80000000) {
      bytes[p] = 0xd2;
      view.setInt32(p + 1, v);
      p += 5;
    } else {
      bytes[p] = 0xd3;
      view.setUint32(p + 1, Math.floor(v / 0x100000000));
      view.setUint32(p + 5, v);
      p += 9;
    }
    this.pos = p;
    return this;
  }

  string(s: string): this {
    const n = s.length;
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    this.ensure(5 + 3 * n);
    const { bytes } = this;
    // Optimistically ASCII (byte length n): one pass, header sized for n.
    const start = this.pos + headerBytes(n);
    let i = 0;
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      bytes[start + i++] = c;
    }
    if (i === n) {
      this.writeStringHeader(n);
      this.pos += n;
      return this;
    }
    // Not ASCII: encode after room for the largest header the string can
    // need, then move it back if its real header is shorter.
    const room = headerBytes(3 * n);
    const at = this.pos + room;
    const length = n >= TEXT_ENCODER_MIN ? textEncoder.encodeInto(s, bytes.subarray(at)).written : utf8Encode(s, bytes, at);
    const header = headerBytes(length);
    if (header < room) bytes.copyWithin(this.pos + header, at, at + length);
    this.writeStringHeader(length);
    this.pos += length;
    return this;
  }

  private writeStringHeader(length: number): void {
    const { bytes } = this;
    const p = this.pos;
    if (length < 32) {
      bytes[p] = 0xa0 + length;
      this.pos = p + 1;
    } else if (length < 0x100) {
      bytes[p] = 0xd9;
      bytes[p + 1] = length;
      this.pos = p + 2;
    } else if (length < 0x10000) {
      bytes[p] = 0xda;
      this.view.setUint16(p + 1, length);
      this.pos = p + 3;
    } else {
      bytes[p] = 0xdb;
      this.view.setUint32(p + 1, length);
      this.pos = p + 5;
    }
  }

  private header(n: number, fix: number, b16: number, b32: number): this {
    this.ensure(5);
    const p = this.pos;
    if (n < 16) {
      this.bytes[p] = fix + n;
      this.pos = p + 1;
    } else if (n < 0x10000) {
      this.bytes[p] = b16;
      this.view.setUint16(p + 1, n);
      this.pos = p + 3;
    } else {
      this.bytes[p] = b32;
      this.view.setUint32(p + 1, n);
      this.pos = p + 5;
    }
    return this;
  }

  private ensure(n: number): void {
    if (this.pos + n > this.bytes.length) this.grow(n);
  }

  private grow(n: number): void {
    const grown = new Uint8Array(Math.max(2 * this.bytes.length, this.pos + n));
    grown.set(this.bytes.subarray(0, this.pos));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }
}

/** Bytes of a msgpack str header for a string of `length` UTF-8 bytes. */
function headerBytes(length: number): number {
  return length < 32 ? 1 : length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
}

/**
 * UTF-8 of a string into `out` at `at`, returning the byte count. As in
 * @msgpack/msgpack, a lone surrogate is encoded as its 3-byte form (so it
 * decodes back to itself).
 */
function utf8Encode(s: string, out: Uint8Array, at: number): number {
  let p = at;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[p++] = c;
      continue;
    }
    if (c < 0x800) {
      out[p++] = 0xc0 | (c >> 6);
    } else {
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const low = s.charCodeAt(i + 1);
        if ((low & 0xfc00) === 0xdc00) {
          i++;
          c = ((c & 0x3ff) << 10) + (low & 0x3ff) + 0x10000;
        }
      }
      if (c < 0x10000) {
        out[p++] = 0xe0 | (c >> 12);
        out[p++] = 0x80 | ((c >> 6) & 0x3f);
      } else {
        out[p++] = 0xf0 | (c >> 18);
        out[p++] = 0x80 | ((c >> 12) & 0x3f);
        out[p++] = 0x80 | ((c >> 6) & 0x3f);
      }
    }
    out[p++] = 0x80 | (c & 0x3f);
  }
  return p - at;
}
