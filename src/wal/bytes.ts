/** Big-endian unsigned integers in byte arrays, as the WAL's frames and the local log's keys store them. */

const TWO_32 = 0x1_0000_0000;

export function writeU32(buf: Uint8Array, p: number, v: number): void {
  buf[p] = v >>> 24;
  buf[p + 1] = (v >>> 16) & 0xff;
  buf[p + 2] = (v >>> 8) & 0xff;
  buf[p + 3] = v & 0xff;
}

/** `v` a safe non-negative integer. */
export function writeU64(buf: Uint8Array, p: number, v: number): void {
  writeU32(buf, p, Math.floor(v / TWO_32));
  writeU32(buf, p + 4, v >>> 0);
}

export function readU32(buf: Uint8Array, p: number): number {
  return ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
}

export function readU64(buf: Uint8Array, p: number): number {
  return readU32(buf, p) * TWO_32 + readU32(buf, p + 4);
}
