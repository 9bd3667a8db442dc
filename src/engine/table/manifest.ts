import { isRepriseError, RepriseError } from '../../errors.js';
import type { TestFaults } from '../../testing/faults.js';
import type { ObjectStore } from '../object-store.js';
import type { Value } from '../schema.js';
import { crc32 } from './checksum.js';

/**
 * A region's manifest: which SSTs make up its flushed state and the entry id
 * they cover. Each version is an object of its own, never overwritten, at
 *
 *   regions/<regionId>/manifests/<epoch, 10 digits>-<version, 12 digits>
 *
 * holding a header line with the format and a CRC-32 of the JSON body that
 * follows (`reprise-manifest 1 <crc32 hex>\n{...}`). `epoch` is the shard
 * leadership epoch of the node that wrote it; readers take the greatest
 * key, so the newest version of the newest leader wins.
 *
 * That is the fence between two nodes that both think they lead a shard
 * (a leader paused past its lease, a partition; GreptimeDB #2289): a new
 * leader writes its own manifest as soon as it opens the region (a copy of
 * the newest it read, at its epoch), and whatever a deposed leader writes
 * afterwards sorts below it and is never read. It does not need the store
 * to enforce any condition. What a deposed leader deletes (compacted SSTs,
 * the log below what it flushed) is fenced by its lease instead: it checks
 * the lease after writing the manifest the deletion follows from and before
 * deleting, and a new epoch is granted only once that lease has run out,
 * so a new leader reads a manifest at least as new as the deletion assumes.
 * SST keys carry the epoch too, so two leaders never write the same key.
 *
 * A store written before manifests were versioned holds one object at
 * `regions/<regionId>/manifest`: it is read as epoch 0, and removed once
 * the region writes a versioned one.
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
  /** Leadership epoch of the shard when this version was written (absent in a manifest written before they were versioned: 0). */
  readonly epoch?: number;
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

function manifestsPrefix(regionId: number): string {
  return `${regionPrefix(regionId)}manifests/`;
}

/** The key of one version of a region's manifest, written at `epoch`. */
export function manifestKey(regionId: number, epoch: number, version: number): string {
  return `${manifestsPrefix(regionId)}${String(epoch).padStart(10, '0')}-${String(version).padStart(12, '0')}`;
}

/** Where a store written before manifests were versioned keeps a region's one manifest. */
export function legacyManifestKey(regionId: number): string {
  return `${regionPrefix(regionId)}manifest`;
}

const MANIFEST_NAME_RE = /\/manifests\/(\d{10})-(\d{12})$/;

/** Epoch and seq are zero-padded so that listing order is (epoch, creation) order. */
export function sstKey(regionId: number, epoch: number, seq: number): string {
  return `${regionPrefix(regionId)}sst/${String(epoch).padStart(10, '0')}-${String(seq).padStart(12, '0')}.sst`;
}

/** The epoch and seq an SST key names (epoch 0 for the unversioned `sst/<seq>.sst`), or undefined for another key. */
export function sstNameOf(key: string): { epoch: number; seq: number } | undefined {
  const m = /\/sst\/(?:(\d{10})-)?(\d+)\.sst$/.exec(key);
  return m === null ? undefined : { epoch: m[1] === undefined ? 0 : Number(m[1]), seq: Number(m[2]) };
}

/**
 * Whether a key names an SST: written once (its epoch and seq are never
 * reused) and read again and again, so a node may keep a local copy. A
 * manifest version is written once too, but read once per open, right
 * after a listing that must go to the store anyway.
 */
export function isSstKey(key: string): boolean {
  return key.startsWith(REGIONS_PREFIX) && sstNameOf(key) !== undefined;
}

export function encodeManifest(m: Manifest): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(m));
  const header = new TextEncoder().encode(`reprise-manifest 1 ${crc32(body).toString(16).padStart(8, '0')}\n`);
  const out = new Uint8Array(header.length + body.length);
  out.set(header);
  out.set(body, header.length);
  return out;
}

/** Parse and verify the manifest stored at `key`; any damage is MANIFEST_CORRUPT naming the region and key. */
export function decodeManifest(regionId: number, bytes: Uint8Array, key: string): Manifest {
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
  if (m.epoch !== undefined && !isCount(m.epoch)) corrupt('malformed epoch');
  const named = MANIFEST_NAME_RE.exec(key);
  if (named !== null && (Number(named[1]) !== (m.epoch ?? 0) || Number(named[2]) !== m.version)) {
    corrupt(`it holds epoch ${String(m.epoch ?? 0)} version ${String(m.version)}, its key says epoch ${Number(named[1])} version ${Number(named[2])}`);
  }
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

/** Keys of the region's manifest versions, oldest first. */
export async function manifestKeys(store: ObjectStore, regionId: number): Promise<string[]> {
  return (await store.list(manifestsPrefix(regionId))).filter((key) => MANIFEST_NAME_RE.test(key));
}

/**
 * The region's newest manifest (greatest epoch, then version) and its key,
 * or undefined if it has none yet. A newest version that is damaged is
 * MANIFEST_CORRUPT, not a reason to fall back to an older one: the log
 * below the newest may be pruned already.
 */
export async function readManifest(store: ObjectStore, regionId: number): Promise<{ manifest: Manifest; key: string } | undefined> {
  // The leader deletes versions two behind its newest: a listing can name one gone by the time it is read.
  for (let attempt = 1; ; attempt++) {
    const key = (await manifestKeys(store, regionId)).at(-1) ?? legacyManifestKey(regionId);
    try {
      return { manifest: decodeManifest(regionId, await store.get(key), key), key };
    } catch (err) {
      if (!isRepriseError(err, 'NOT_FOUND')) throw err;
      if (key === legacyManifestKey(regionId)) return undefined;
      if (attempt === 3) throw err;
    }
  }
}

/** Write a new version (never overwrites one: epoch and version name it); returns its key. */
export async function writeManifest(store: ObjectStore, m: Manifest & { readonly epoch: number }, faults?: Pick<TestFaults, 'unfencedManifests'>): Promise<string> {
  // A deliberate bug, for the simulation only: one object, the last writer wins.
  const key = faults?.unfencedManifests ? legacyManifestKey(m.regionId) : manifestKey(m.regionId, m.epoch, m.version);
  await store.put(key, encodeManifest(m));
  return key;
}
