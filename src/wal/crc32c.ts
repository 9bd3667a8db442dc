/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum used by
 * iSCSI, ext4, LevelDB and Kafka record batches.
 *
 * Slicing-by-8: eight 256-entry tables let the main loop consume eight bytes
 * per iteration with independent lookups instead of one dependent lookup per
 * byte. T<k>[b] is the CRC of byte b followed by k zero bytes.
 */
const POLY = 0x82f63b78;

const TABLES: Int32Array = (() => {
  const t = new Int32Array(8 * 256);
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[b] = c;
  }
  for (let b = 0; b < 256; b++) {
    let c = t[b]!;
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + b] = c;
    }
  }
  return t;
})();
const T0 = TABLES.subarray(0, 256);
const T1 = TABLES.subarray(256, 512);
const T2 = TABLES.subarray(512, 768);
const T3 = TABLES.subarray(768, 1024);
const T4 = TABLES.subarray(1024, 1280);
const T5 = TABLES.subarray(1280, 1536);
const T6 = TABLES.subarray(1536, 1792);
const T7 = TABLES.subarray(1792, 2048);

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/**
 * Below this length, creating an Int32Array view over the input costs more
 * than it saves; byte-wise slicing is used instead.
 */
const WORD_VIEW_MIN = 256;

/**
 * CRC32C of `bytes`, as an unsigned 32-bit integer. `seed` is the CRC of the
 * preceding data, so `crc32c(b, crc32c(a))` equals the CRC of a followed by b.
 */
export function crc32c(bytes: Uint8Array, seed = 0): number {
  let crc = ~seed;
  let i = 0;
  const n = bytes.length;
  if (LITTLE_ENDIAN && n >= WORD_VIEW_MIN) {
    // Reading aligned 32-bit words through an Int32Array is much faster than
    // assembling them from four byte loads; align the start first.
    while (((bytes.byteOffset + i) & 3) !== 0) crc = T0[(crc ^ bytes[i++]!) & 0xff]! ^ (crc >>> 8);
    const words = new Int32Array(bytes.buffer, bytes.byteOffset + i, ((n - i) >>> 3) << 1);
    for (let w = 0; w < words.length; w += 2) {
      const lo = crc ^ words[w]!;
      const hi = words[w + 1]!;
      crc =
        T7[lo & 0xff]! ^
        T6[(lo >>> 8) & 0xff]! ^
        T5[(lo >>> 16) & 0xff]! ^
        T4[lo >>> 24]! ^
        T3[hi & 0xff]! ^
        T2[(hi >>> 8) & 0xff]! ^
        T1[(hi >>> 16) & 0xff]! ^
        T0[hi >>> 24]!;
    }
    i += words.length << 2;
  } else {
    const end8 = n - (n & 7);
    while (i < end8) {
      const lo = crc ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
      crc =
        T7[lo & 0xff]! ^
        T6[(lo >>> 8) & 0xff]! ^
        T5[(lo >>> 16) & 0xff]! ^
        T4[lo >>> 24]! ^
        T3[bytes[i + 4]!]! ^
        T2[bytes[i + 5]!]! ^
        T1[bytes[i + 6]!]! ^
        T0[bytes[i + 7]!]!;
      i += 8;
    }
  }
  while (i < n) crc = T0[(crc ^ bytes[i++]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}
