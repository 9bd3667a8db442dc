/**
 * S3ObjectStore against a real s3rver, through a fault proxy (real sockets)
 * that answers 500/503, hangs, resets connections or is down: transient
 * faults are retried away, a store down past the retry deadline is a coded
 * error naming bucket and key, and what is not worth retrying is not.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { S3ObjectStore, type S3ObjectStoreOptions } from '../../../src/engine/s3-object-store.js';
import { isRepriseError } from '../../../src/errors.js';
import { startFaultProxy, type FaultProxy } from '../../harness/fault-proxy.js';
import { startS3Server, type TestS3Server } from '../../harness/s3-server.js';
import { expectError } from './helpers.js';

let s3: TestS3Server;
let proxy: FaultProxy;
let roots = 0;
const opened: S3ObjectStore[] = [];

beforeAll(async () => {
  s3 = await startS3Server();
  proxy = await startFaultProxy(s3.endpoint);
});
afterEach(async () => {
  proxy.clear();
  await proxy.up();
});
afterAll(async () => {
  for (const store of opened) store.close();
  await proxy.stop();
  await s3.stop();
});

/** A store of its own (fresh root) through the proxy, with short timeouts and backoff so faults cost little time. */
function store(options: Partial<S3ObjectStoreOptions> = {}): S3ObjectStore {
  const s = new S3ObjectStore({
    ...s3.storeOptions(`faults-${process.pid}-${roots++}`, proxy.endpoint),
    requestTimeoutMs: 500,
    connectTimeoutMs: 300,
    retryDeadlineMs: 5_000,
    backoffInitMs: 20,
    backoffMaxMs: 200,
    multipartThresholdBytes: 64 * 1024,
    partBytes: 16 * 1024,
    ...options,
  });
  opened.push(s);
  return s;
}

const data = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 13 + 1) % 256);
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

describe('S3ObjectStore', () => {
  it('lists past a real 1,000-key page (ListObjectsV2 continuation)', async () => {
    const s = new S3ObjectStore(s3.storeOptions(`pages-${process.pid}`));
    opened.push(s);
    const keys = Array.from({ length: 1010 }, (_, i) => `k/${String(i).padStart(5, '0')}`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < keys.length) await s.put(keys[next++]!, new Uint8Array([1]));
      }),
    );
    expect(await s.list('k/')).toEqual(keys);
    await s.deletePrefix('k/');
    expect(await s.list('')).toEqual([]);
  }, 60_000);

  it.each([
    ['503 answers', { kind: 'status', status: 503, count: 3 }],
    ['500 answers', { kind: 'status', status: 500, count: 3 }],
    ['connection resets', { kind: 'reset', count: 3 }],
    ['answers slower than the request timeout', { kind: 'slow', delayMs: 1_000, count: 1 }],
  ] as const)('retries writes and reads through %s, and succeeds', async (_name, fault) => {
    const s = store();
    const bytes = data(3000);
    proxy.inject(fault);
    const before = proxy.faulted;
    await s.put('regions/1/sst/000000000001.sst', bytes);
    expect(proxy.faulted - before).toBe(fault.count);
    proxy.inject(fault);
    expect(same(await s.get('regions/1/sst/000000000001.sst'), bytes)).toBe(true);
    proxy.inject(fault);
    expect(same(await s.getRange('regions/1/sst/000000000001.sst', 100, 200), bytes.subarray(100, 200))).toBe(true);
    proxy.inject(fault);
    expect(await s.size('regions/1/sst/000000000001.sst')).toBe(3000);
    proxy.inject(fault);
    expect(await s.list('regions/1/')).toEqual(['regions/1/sst/000000000001.sst']);
    proxy.inject(fault);
    await s.deletePrefix('regions/1/');
    expect(await s.exists('regions/1/sst/000000000001.sst')).toBe(false);
    expect(s.stats().retries).toBeGreaterThanOrEqual(fault.count * 6);
    expect(s.failure()).toBeUndefined();
  });

  it('retries the parts of a multipart upload', async () => {
    const s = store();
    const bytes = data(100 * 1024);
    // Resets land on whichever requests come next: the create, parts, or the complete.
    proxy.inject({ kind: 'reset', count: 4 });
    await s.put('big.sst', bytes);
    expect(same(await s.get('big.sst'), bytes)).toBe(true);
  });

  it('rides out a store that is down for less than the retry deadline', async () => {
    const s = store({ retryDeadlineMs: 10_000 });
    await proxy.down();
    const put = s.put('regions/2/manifest', data(10));
    setTimeout(() => void proxy.up(), 1_500);
    const started = Date.now();
    await put;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(same(await s.get('regions/2/manifest'), data(10))).toBe(true);
  });

  it('fails STORE_UNAVAILABLE naming bucket and key once a store stays down past the deadline, and recovers after', async () => {
    const s = store({ retryDeadlineMs: 800 });
    await s.put('regions/3/manifest', data(10));
    await proxy.down();
    const started = Date.now();
    await expectError(() => s.put('regions/3/sst/000000000001.sst', data(10)), 'STORE_UNAVAILABLE', s3.bucket, 'regions/3/sst/000000000001.sst', /attempts/);
    expect(Date.now() - started).toBeLessThan(4_000);
    await expectError(() => s.get('regions/3/manifest'), 'STORE_UNAVAILABLE', s3.bucket, 'regions/3/manifest');
    const err = await s.exists('regions/3/manifest').catch((e: unknown) => e);
    expect(isRepriseError(err, 'STORE_UNAVAILABLE') && err.details).toMatchObject({ bucket: s3.bucket, op: 'exists' });
    expect(s.failure()).toMatch(/^STORE_UNAVAILABLE: .*regions\/3\/manifest/);
    expect(s.stats().failures).toBe(3);
    await proxy.up();
    expect(same(await s.get('regions/3/manifest'), data(10))).toBe(true);
    expect(s.failure()).toBeUndefined();
  });

  it('does not retry a missing key: NOT_FOUND after one request', async () => {
    const s = store();
    const before = proxy.requests;
    await expectError(() => s.get('regions/9/manifest'), 'NOT_FOUND', 'regions/9/manifest');
    expect(proxy.requests - before).toBe(1);
    expect(await s.exists('regions/9/manifest')).toBe(false);
  });

  it('does not retry a refusal (bad credentials): STORE_WRITE_FAILED for a write, STORE_UNAVAILABLE for a read', async () => {
    const s = store({ credentials: { accessKeyId: 'WRONG', secretAccessKey: 'WRONG' } });
    const before = proxy.requests;
    await expectError(() => s.put('x', data(1)), 'STORE_WRITE_FAILED', s3.bucket, '"x"', /refused/);
    await expectError(() => s.list(''), 'STORE_UNAVAILABLE', s3.bucket, /refused/);
    expect(proxy.requests - before).toBe(2);
  });

  it('fails STORE_UNAVAILABLE, not NOT_FOUND, for a bucket that does not exist', async () => {
    const s = new S3ObjectStore({ ...s3.storeOptions(), bucket: 'no-such-bucket', retryDeadlineMs: 1_000 });
    opened.push(s);
    await expectError(() => s.list(''), 'STORE_UNAVAILABLE', 'no-such-bucket');
  });
});
