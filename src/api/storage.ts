import { join, resolve } from 'node:path';
import { CachedObjectStore, type ObjectCacheStats } from '../engine/cached-object-store.js';
import { FsObjectStore } from '../engine/fs-object-store.js';
import type { ObjectStore } from '../engine/object-store.js';
import type { S3ObjectStoreOptions } from '../engine/s3-object-store.js';
import { isSstKey } from '../engine/table/manifest.js';
import { RepriseError } from '../errors.js';

/** Default local cache in front of S3: 1 GiB. */
export const DEFAULT_OBJECT_CACHE_BYTES = 1024 * 1024 * 1024;

/**
 * Where SSTs and manifests live: a directory (`local`, the default; see
 * objectStoreDir) or an S3 bucket with a bounded local cache of SSTs under
 * `<dataDir>/cache`.
 */
export type StorageOptions =
  | { readonly type: 'local' }
  | ({ readonly type: 's3'; /** Bytes of the local SST cache (0: none). Default DEFAULT_OBJECT_CACHE_BYTES. */ readonly cacheBytes?: number } & S3ObjectStoreOptions);

export interface OpenedObjectStore {
  readonly objects: ObjectStore;
  /** For messages: a directory, or s3://bucket/root. */
  readonly where: string;
  readonly type: 'local' | 's3';
  /** The cache in front of S3, if any (its counters go to /metrics). */
  readonly cache?: { stats(): ObjectCacheStats };
}

/**
 * The object store of a process. `local`: FsObjectStore in `directory`.
 * `s3`: S3ObjectStore, behind a CachedObjectStore in `<dataDir>/cache`
 * unless cacheBytes is 0; only SSTs are cached (see isSstKey).
 */
export async function openObjectStore(storage: StorageOptions | undefined, where: { directory: string; dataDir?: string }): Promise<OpenedObjectStore> {
  if (storage === undefined || storage.type === 'local') {
    const directory = resolve(where.directory);
    return { objects: new FsObjectStore(directory), where: directory, type: 'local' };
  }
  const { type: _type, cacheBytes, ...s3 } = storage;
  // Loaded only for s3: the AWS SDK takes ~250 ms to import, which every CLI start and local embedding would pay.
  const { S3ObjectStore } = await import('../engine/s3-object-store.js');
  const remote = new S3ObjectStore(s3);
  const budget = cacheBytes ?? DEFAULT_OBJECT_CACHE_BYTES;
  if (budget === 0) return { objects: remote, where: remote.where, type: 's3' };
  if (where.dataDir === undefined) {
    throw new RepriseError('INVALID_ARGUMENT', `the s3 object store's local cache needs a data directory (dataDir), or storage.cacheBytes = 0`);
  }
  const cache = await CachedObjectStore.open(remote, { dir: join(resolve(where.dataDir), 'cache'), maxBytes: budget, cacheable: isSstKey });
  return { objects: cache, where: remote.where, type: 's3', cache };
}
