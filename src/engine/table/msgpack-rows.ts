import type { Value } from '../schema.js';

/** What @msgpack/msgpack hands to TextEncoder rather than encoding itself (its TEXT_ENCODER_THRESHOLD). */
const TEXT_ENCODER_MIN = 51;
const textEncoder = new TextEncoder();

/**
 * A msgpack writer for what the hot paths encode: rows, arrays of primitive
 * values (WAL put bodies). It writes the very bytes
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

  /** Drop what was written after the first `length` bytes. */
  truncate(length: number): this {
    this.pos = Math.min(this.pos, length);
    return this;
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

  nil(): this {
    this.ensure(1);
    this.bytes[this.pos++] = 0xc0;
    return this;
  }

  boolean(v: boolean): this {
    this.ensure(1);
    this.bytes[this.pos++] = v ? 0xc3 : 0xc2;
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

/** What @msgpack/msgpack decodes itself (longer strings go to TextDecoder): the same split keeps decoding identical. */
const TEXT_DECODER_MIN = 201;
const textDecoder = new TextDecoder();

/** Strings this short are looked up in the reader's cache by their bytes. */
const CACHED_MAX = 32;
const CACHE_SLOTS = 4096;

/** What MsgpackReader.numberInto read. */
export const NUMBER_READ = 0;
export const NIL_READ = 1;
export const TRUE_READ = 2;
export const FALSE_READ = 3;
export const OTHER_READ = 4;

/** Thrown by MsgpackReader on bytes that are not the msgpack it expects; callers wrap it. */
export class MsgpackFormatError extends Error {}

/**
 * The reading counterpart of MsgpackWriter, for the same hot data: arrays
 * and maps of primitive values (null, booleans, numbers, strings). It reads
 * what @msgpack/msgpack's Decoder reads for those, to the same values (int64
 * and uint64 as numbers, strings as it decodes them), without building
 * objects and arrays: the caller walks the structure header by header.
 *
 * Short strings are interned by their bytes in a small direct-mapped cache:
 * tag values repeat from row to row, and the same string object each time
 * saves its allocation and lets maps find it by its cached hash. Not
 * re-entrant: one message at a time.
 */
export class MsgpackReader {
  private bytes: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.bytes.buffer);
  private pos = 0;
  private start = 0;
  private end = 0;
  private readonly cacheKeys = new Uint8Array(CACHE_SLOTS * CACHED_MAX);
  private readonly cacheLengths = new Uint8Array(CACHE_SLOTS);
  private readonly cacheStrings: string[] = new Array<string>(CACHE_SLOTS).fill('');
  private readonly units: number[] = [];

  /** Start reading a message: bytes[start, end). */
  reset(bytes: Uint8Array, start = 0, end = bytes.length): this {
    if (bytes !== this.bytes) {
      this.bytes = bytes;
      this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    this.pos = start;
    this.start = start;
    this.end = end;
    return this;
  }

  /** Whether every byte up to the end has been read. */
  get done(): boolean {
    return this.pos === this.end;
  }

  /** The position reached (an index into the bytes). */
  get offset(): number {
    return this.pos;
  }

  /** Go back (or forward) to a position read before. */
  seek(offset: number): void {
    this.pos = offset;
  }

  /** An array header: its length. */
  arrayHeader(): number {
    const b = this.byte();
    if (b >= 0x90 && b <= 0x9f) return b - 0x90;
    if (b === 0xdc) return this.u16();
    if (b === 0xdd) return this.u32();
    return this.unexpected(b, 'an array');
  }

  /** A map header: its number of key/value pairs. */
  mapHeader(): number {
    const b = this.byte();
    if (b >= 0x80 && b <= 0x8f) return b - 0x80;
    if (b === 0xde) return this.u16();
    if (b === 0xdf) return this.u32();
    return this.unexpected(b, 'a map');
  }

  /**
   * A null, boolean, number or string. Anything else (an array, a map, bin
   * or ext data) is a MsgpackFormatError.
   */
  value(): Value {
    const b = this.byte();
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0xa0 && b <= 0xbf) return this.str(b - 0xa0);
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xcb: {
        const v = this.view.getFloat64(this.need(8));
        return v;
      }
      case 0xca:
        return this.view.getFloat32(this.need(4));
      case 0xcc:
        return this.byte();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf: {
        const p = this.need(8);
        return this.view.getUint32(p) * 0x100000000 + this.view.getUint32(p + 4);
      }
      case 0xd0:
        return this.view.getInt8(this.need(1));
      case 0xd1:
        return this.view.getInt16(this.need(2));
      case 0xd2:
        return this.view.getInt32(this.need(4));
      case 0xd3: {
        const p = this.need(8);
        return this.view.getInt32(p) * 0x100000000 + this.view.getUint32(p + 4);
      }
      case 0xd9:
        return this.str(this.byte());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
    }
    return this.unexpected(b, 'a value');
  }

  /**
   * A number, nil or boolean, the number written to target[i] (unboxed:
   * doubles go from the bytes to the array without becoming objects): what
   * was read, as NUMBER_READ, NIL_READ, TRUE_READ or FALSE_READ. Anything
   * else is OTHER_READ and is left unread, for value() or skip().
   */
  numberInto(target: Float64Array, i: number): number {
    const p = this.pos;
    const b = this.byte();
    if (b < 0x80) {
      target[i] = b;
      return NUMBER_READ;
    }
    if (b >= 0xe0) {
      target[i] = b - 0x100;
      return NUMBER_READ;
    }
    const { view } = this;
    switch (b) {
      case 0xcb:
        target[i] = view.getFloat64(this.need(8));
        return NUMBER_READ;
      case 0xc0:
        return NIL_READ;
      case 0xc2:
        return FALSE_READ;
      case 0xc3:
        return TRUE_READ;
      case 0xcf: {
        const q = this.need(8);
        target[i] = view.getUint32(q) * 0x100000000 + view.getUint32(q + 4);
        return NUMBER_READ;
      }
      case 0xd3: {
        const q = this.need(8);
        target[i] = view.getInt32(q) * 0x100000000 + view.getUint32(q + 4);
        return NUMBER_READ;
      }
      case 0xca:
        target[i] = view.getFloat32(this.need(4));
        return NUMBER_READ;
      case 0xcc:
        target[i] = this.byte();
        return NUMBER_READ;
      case 0xcd:
        target[i] = this.u16();
        return NUMBER_READ;
      case 0xce:
        target[i] = this.u32();
        return NUMBER_READ;
      case 0xd0:
        target[i] = view.getInt8(this.need(1));
        return NUMBER_READ;
      case 0xd1:
        target[i] = view.getInt16(this.need(2));
        return NUMBER_READ;
      case 0xd2:
        target[i] = view.getInt32(this.need(4));
        return NUMBER_READ;
    }
    this.pos = p;
    return OTHER_READ;
  }

  /** Step over one value of any type, nested ones included. */
  skip(): void {
    let pending = 1;
    while (pending > 0) {
      pending--;
      const b = this.byte();
      if (b < 0x80 || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) continue;
      if (b >= 0xa0 && b <= 0xbf) this.need(b - 0xa0);
      else if (b >= 0x90 && b <= 0x9f) pending += b - 0x90;
      else if (b >= 0x80 && b <= 0x8f) pending += 2 * (b - 0x80);
      else {
        switch (b) {
          case 0xcc:
          case 0xd0:
            this.need(1);
            break;
          case 0xcd:
          case 0xd1:
            this.need(2);
            break;
          case 0xca:
          case 0xce:
          case 0xd2:
            this.need(4);
            break;
          case 0xcb:
          case 0xcf:
          case 0xd3:
            this.need(8);
            break;
          case 0xd9:
          case 0xc4:
            this.need(this.byte());
            break;
          case 0xda:
          case 0xc5:
            this.need(this.u16());
            break;
          case 0xdb:
          case 0xc6:
            this.need(this.u32());
            break;
          case 0xd4:
            this.need(2);
            break;
          case 0xd5:
            this.need(3);
            break;
          case 0xd6:
            this.need(5);
            break;
          case 0xd7:
            this.need(9);
            break;
          case 0xd8:
            this.need(17);
            break;
          case 0xc7:
            this.need(this.byte() + 1);
            break;
          case 0xc8:
            this.need(this.u16() + 1);
            break;
          case 0xc9:
            this.need(this.u32() + 1);
            break;
          case 0xdc:
            pending += this.u16();
            break;
          case 0xdd:
            pending += this.u32();
            break;
          case 0xde:
            pending += 2 * this.u16();
            break;
          case 0xdf:
            pending += 2 * this.u32();
            break;
          default:
            this.unexpected(b, 'a value');
        }
      }
    }
  }

  private byte(): number {
    if (this.pos >= this.end) this.truncated();
    return this.bytes[this.pos++];
  }

  private u16(): number {
    return this.view.getUint16(this.need(2));
  }

  private u32(): number {
    return this.view.getUint32(this.need(4));
  }

  /** Claim the next n bytes: their offset. */
  private need(n: number): number {
    const p = this.pos;
    if (p + n > this.end) this.truncated();
    this.pos = p + n;
    return p;
  }

  private str(n: number): string {
    const p = this.need(n);
    if (n <= CACHED_MAX) return this.cached(p, n);
    return this.utf8(p, n);
  }

  /** A short string, from the cache when its bytes are there. */
  private cached(p: number, n: number): string {
    const { bytes, cacheKeys } = this;
    let h = n;
    for (let i = 0; i < n; i++) h = Math.imul(h ^ bytes[p + i], 0x01000193);
    const slot = (h ^ (h >>> 15)) & (CACHE_SLOTS - 1);
    const at = slot * CACHED_MAX;
    if (this.cacheLengths[slot] === n) {
      let i = 0;
      while (i < n && cacheKeys[at + i] === bytes[p + i]) i++;
      if (i === n) return this.cacheStrings[slot];
    }
    const s = this.utf8(p, n);
    cacheKeys.set(bytes.subarray(p, p + n), at);
    this.cacheLengths[slot] = n;
    this.cacheStrings[slot] = s;
    return s;
  }

  /**
   * UTF-8 -> string as @msgpack/msgpack decodes it: by hand up to
   * TEXT_DECODER_MIN bytes (a 3-byte-encoded lone surrogate comes back as
   * itself), by TextDecoder beyond.
   */
  private utf8(p: number, n: number): string {
    const { bytes } = this;
    if (n >= TEXT_DECODER_MIN) return textDecoder.decode(bytes.subarray(p, p + n));
    const units = this.units;
    units.length = 0;
    const end = p + n;
    while (p < end) {
      const b = bytes[p++];
      if (b < 0x80) {
        units.push(b);
      } else if ((b & 0xe0) === 0xc0) {
        units.push(((b & 0x1f) << 6) | (bytes[p++] & 0x3f));
      } else if ((b & 0xf0) === 0xe0) {
        units.push(((b & 0x0f) << 12) | ((bytes[p++] & 0x3f) << 6) | (bytes[p++] & 0x3f));
      } else if ((b & 0xf8) === 0xf0) {
        let c = ((b & 0x07) << 18) | ((bytes[p++] & 0x3f) << 12) | ((bytes[p++] & 0x3f) << 6) | (bytes[p++] & 0x3f);
        if (c > 0xffff) {
          c -= 0x10000;
          units.push(0xd800 | ((c >>> 10) & 0x3ff));
          c = 0xdc00 | (c & 0x3ff);
        }
        units.push(c);
      } else {
        units.push(b);
      }
    }
    return String.fromCharCode.apply(null, units);
  }

  private truncated(): never {
    throw new MsgpackFormatError(`truncated at byte ${this.pos - this.start} of ${this.end - this.start}`);
  }

  private unexpected(b: number, what: string): never {
    throw new MsgpackFormatError(`expected ${what} at byte ${this.pos - 1 - this.start}, found type 0x${b.toString(16).padStart(2, '0')}`);
  }
}
