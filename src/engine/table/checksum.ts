import * as zlib from 'node:zlib';

/**
 * CRC-32 (IEEE 802.3, the zlib/PNG polynomial) over bytes, for SST and
 * manifest integrity. node:zlib's native crc32 (Node >= 20.15) is an order
 * of magnitude faster, which matters for SSTs of tens of MB written on every
 * flush; older Nodes fall back to a table-driven implementation. The engine
 * must not import src/wal (layering), so it carries its own.
 */
const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 of `data` in JavaScript, as an unsigned 32-bit integer. */
export function crc32Js(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = TABLE[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const native = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

/** CRC-32 of `data`, as an unsigned 32-bit integer. */
export const crc32: (data: Uint8Array) => number = native ? (data) => native(data) >>> 0 : crc32Js;
