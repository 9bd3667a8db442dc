import { isRepriseError, RepriseError } from '../../errors.js';
import type { ObjectStore } from '../object-store.js';
import type { Value } from '../schema.js';
import { crc32 } from './checksum.js';

/**
 * A region's manifest: which SSTs make up its flushed state and the entry id
 * they cover. Stored at `regions/<regionId>/manifest` as a header line
 * holding the format and a CRC-32 of the JSON body that follows:
 *
 *   reprise-manifest 1 <crc32 hex>\n{...}
 *
 * It is replaced whole through ObjectStore.put (atomic), which is what makes
 * a flush or a compaction take effect.
 */

export interface SstRef {
  /** Object key of the SST. */
  readonly file: string;
  /** Order of creation; a higher seq holds newer versions. */
  readonly seq: number;
  readonly rows: number;
  readonly bytes: number;
  readonly minTime: number;
  readonly maxTime: number;
  /** Primary keys (tags, time) of the first and last rows, to skip the SST on reads. */
  readonly minKey: readonly Value[];
  readonly maxKey: readonly Value[];
  /**
   * Start of the compaction time window (ms) all its rows lie in, for an SST
   * written by compaction; absent for one written by a flush.
   */
  readonly window?: number;
  /**
   * CRC-32 of the SST's index (sst.ts): the index says where every chunk
   * lies and how to decode it, so it is checked before it is trusted.
   */
  readonly indexCrc?: number;
}

export interface Manifest {
  /** Bumped on every write. */
  readonly version: number;
  readonly regionId: number;
  /** Highest entry id whose effects are in `ssts`. */
  readonly flushedEntryId: number;
  /**
   * The highest epoch marker at or below flushedEntryId that the flushing
   * shard knew of (absent: 0). Replay starts after flushedEntryId and the log
   * below it may be pruned, markers included; this keeps their fence.
   */
  readonly fenceEpoch?: number;
  /** Oldest first. */
  readonly ssts: readonly SstRef[];
  /** Seq of the next SST to write. */
  readonly nextSeq: number;
}

const HEADER_RE = /^reprise-manifest 1 ([0-9a-f]{8})$/;

/** Every region's objects live under `regions/<id>/`. */
export const REGIONS_PREFIX = 'regions/';

export function regionPrefix(regionId: number): string {
  return `${REGIONS_PREFIX}${regionId}/`;
}

export function manifestKey(regionId: number): string {
  return `${regionPrefix(regionId)}manifest`;
}

/** Seqs are zero-padded so that listing order is creation order. */
export function sstKey(regionId: number, seq: number): string {
  return `${regionPrefix(regionId)}sst/${String(seq).padStart(12, '0')}.sst`;
}

/**
 * Whether a key names an SST: written once under a fresh seq and never
 * rewritten in place (a manifest is), so a node may keep a local copy.
 */
export function isSstKey(key: string): boolean {
  return key.startsWith(REGIONS_PREFIX) && key.endsWith('.sst') && key.includes('/sst/');
}

export function encodeManifest(m: Manifest): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(m));
  const header = new TextEncoder().encode(`reprise-manifest 1 ${crc32(body).toString(16).padStart(8, '0')}\n`);
  const out = new Uint8Array(header.length + body.length);
  out.set(header);
  out.set(body, header.length);
  return out;
}

/** Parse and verify; any damage is MANIFEST_CORRUPT naming the region and key. */
export function decodeManifest(regionId: number, bytes: Uint8Array): Manifest {
  const key = manifestKey(regionId);
  const corrupt = (why: string, cause?: unknown): never => {
    throw new RepriseError('MANIFEST_CORRUPT', `region ${regionId}: manifest ${key} is corrupt: ${why}`, { regionId, file: key }, { cause });
  };
  const newline = bytes.indexOf(0x0a);
  if (newline < 0) corrupt('no header line');
  const header = HEADER_RE.exec(new TextDecoder().decode(bytes.subarray(0, newline)));
  if (header === null) return corrupt('bad header line');
  const body = bytes.subarray(newline + 1);
  const computed = crc32(body).toString(16).padStart(8, '0');
  if (computed !== header[1]) corrupt(`checksum mismatch (stored ${header[1]}, computed ${computed})`);
  let m: Manifest;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body)) as Manifest;
  } catch (err) {
    return corrupt(`unparsable body: ${(err as Error).message}`, err);
  }
  const isCount = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
  const isTime = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
  if (typeof m !== 'object' || m === null || !isCount(m.version) || !Number.isSafeInteger(m.flushedEntryId) || !isCount(m.nextSeq) || !Array.isArray(m.ssts)) {
    corrupt('malformed body');
  }
  if (m.regionId !== regionId) corrupt(`it belongs to region ${String(m.regionId)}`);
  if (m.fenceEpoch !== undefined && !isCount(m.fenceEpoch)) corrupt('malformed fenceEpoch');
  m.ssts.forEach((s, i) => {
    const ok =
      typeof s === 'object' &&
      s !== null &&
      typeof s.file === 'string' &&
      isCount(s.seq) &&
      s.seq < m.nextSeq &&
      isCount(s.rows) &&
      isCount(s.bytes) &&
      isTime(s.minTime) &&
      isTime(s.maxTime) &&
      Array.isArray(s.minKey) &&
      Array.isArray(s.maxKey) &&
      (s.indexCrc === undefined || isCount(s.indexCrc)) &&
      (i === 0 || s.seq > m.ssts[i - 1].seq);
    if (!ok) corrupt(`malformed SST entry ${i}`);
  });
  return m;
}

/** The region's manifest, or undefined if it has none yet. */
export async function readManifest(store: ObjectStore, regionId: number): Promise<Manifest | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await store.get(manifestKey(regionId));
  } catch (err) {
    if (isRepriseError(err, 'NOT_FOUND')) return undefined;
    throw err;
  }
  return decodeManifest(regionId, bytes);
}

export async function writeManifest(store: ObjectStore, m: Manifest): Promise<void> {
  await store.put(manifestKey(m.regionId), encodeManifest(m));
}
