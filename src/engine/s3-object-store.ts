import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { RepriseError, type ErrorCode } from '../errors.js';
import type { ObjectStore } from './object-store.js';

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface S3ObjectStoreOptions {
  readonly bucket: string;
  /** Key prefix inside the bucket ('' or e.g. 'reprise/prod'); keys are stored as `<root>/<key>`. */
  readonly root?: string;
  /** For S3-compatible stores (MinIO, Ceph RGW, R2, OSS, s3rver): e.g. http://127.0.0.1:9000. Default: AWS. */
  readonly endpoint?: string;
  /** Default 'us-east-1' (S3-compatible stores mostly ignore it, but the signature needs one). */
  readonly region?: string;
  /** Bucket in the path (http://host/bucket/key) instead of the host name; most S3-compatible stores need it. */
  readonly forcePathStyle?: boolean;
  /** Explicit credentials; otherwise the SDK's default chain (AWS_* env, ~/.aws, instance roles). */
  readonly credentials?: S3Credentials;
  /** One request (an attempt), from sending to the last byte of its answer. Default 30 s. */
  readonly requestTimeoutMs?: number;
  /** Opening a connection. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /** An operation retries transient failures until this long after it started, then fails STORE_UNAVAILABLE. Default 60 s. */
  readonly retryDeadlineMs?: number;
  /** First backoff between attempts, doubled each time up to backoffMaxMs (with jitter). Defaults 100 ms and 5 s. */
  readonly backoffInitMs?: number;
  readonly backoffMaxMs?: number;
  /** Objects of at least this many bytes go up as multipart uploads. Default 16 MiB. */
  readonly multipartThresholdBytes?: number;
  /** Part size of a multipart upload (S3 wants at least 5 MiB for all but the last). Default 8 MiB. */
  readonly partBytes?: number;
  /** Parts uploaded at once. Default 4. */
  readonly partConcurrency?: number;
  /** Keys per ListObjectsV2 page (S3's maximum, 1000, by default; tests page sooner). */
  readonly listPageSize?: number;
}

export const S3_DEFAULTS = {
  region: 'us-east-1',
  requestTimeoutMs: 30_000,
  connectTimeoutMs: 5_000,
  retryDeadlineMs: 60_000,
  backoffInitMs: 100,
  backoffMaxMs: 5_000,
  multipartThresholdBytes: 16 * 1024 * 1024,
  partBytes: 8 * 1024 * 1024,
  partConcurrency: 4,
  listPageSize: 1000,
} as const;

/** DeleteObjects takes at most this many keys. */
const DELETE_BATCH = 1000;

/** S3 error names that mean "slow down / try again", whatever the status says. */
const THROTTLING = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError', 'ServiceUnavailable']);

type Op = 'put' | 'get' | 'getRange' | 'size' | 'exists' | 'delete' | 'list' | 'deletePrefix';

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/**
 * An ObjectStore in an S3 bucket (or any S3-compatible store), over
 * @aws-sdk/client-s3.
 *
 * Retries are ours, not the SDK's (the client is built with maxAttempts 1):
 * the SDK's standard strategy counts attempts rather than time, and its
 * client-wide retry quota (a token bucket drained by failures) stops retrying
 * at all during a sustained outage, exactly when a flush needs to keep
 * trying; and its final error cannot name our bucket and key. Here each
 * operation retries 5xx, throttling, connection errors and timeouts with
 * exponential backoff and jitter until `retryDeadlineMs` after it started,
 * then fails STORE_UNAVAILABLE naming bucket, key and the last error. A
 * missing key is NOT_FOUND at once; other refusals (403, a missing bucket)
 * are not retried either: STORE_WRITE_FAILED for writes, STORE_UNAVAILABLE
 * for reads.
 *
 * Checksums are computed only where S3 requires them
 * (requestChecksumCalculation WHEN_REQUIRED): the SDK's newer default adds
 * CRC32 headers and trailers that several S3-compatible stores reject.
 */
export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  /** '' or the root with a trailing '/'. */
  readonly root: string;
  private readonly opts: Required<Omit<S3ObjectStoreOptions, 'endpoint' | 'credentials' | 'root' | 'forcePathStyle'>> & S3ObjectStoreOptions;
  private client: S3Client | undefined;
  /** The last operation that ran out of retries (cleared by the next success), for failure(). */
  private lastFailure: string | undefined;
  private retries = 0;
  private failures = 0;

  constructor(options: S3ObjectStoreOptions) {
    if (!options.bucket) throw new RepriseError('INVALID_ARGUMENT', 'the s3 object store needs a bucket');
    this.bucket = options.bucket;
    const root = (options.root ?? '').replace(/^\/+|\/+$/g, '');
    this.root = root === '' ? '' : `${root}/`;
    this.opts = { ...S3_DEFAULTS, ...stripUndefined(options), bucket: options.bucket };
    if (this.opts.partBytes < 1 || this.opts.multipartThresholdBytes < 1) throw new RepriseError('INVALID_ARGUMENT', 'the s3 object store needs positive part and multipart threshold sizes');
  }

  /** `s3://bucket/root` (`s3://bucket` without a root), for messages. */
  get where(): string {
    return `s3://${this.bucket}${this.root === '' ? '' : `/${this.root.slice(0, -1)}`}`;
  }

  private s3(): S3Client {
    if (this.client) return this.client;
    // The SDK warns once per process, on the first client, that its releases
    // after January 2027 will need Node 22: on Node 20 that would print at
    // every CLI start. Its own switch for it, unless the user set it.
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
    this.client = new S3Client({
      region: this.opts.region,
      ...(this.opts.endpoint ? { endpoint: this.opts.endpoint } : {}),
      ...(this.opts.forcePathStyle ? { forcePathStyle: true } : {}),
      ...(this.opts.credentials ? { credentials: { ...this.opts.credentials } } : {}),
      maxAttempts: 1,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: Math.min(this.opts.connectTimeoutMs, this.opts.requestTimeoutMs), requestTimeout: this.opts.requestTimeoutMs },
    });
    return this.client;
  }

  private remote(key: string): string {
    validateKey(key, this.where);
    return this.root + key;
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    const Key = this.remote(key);
    if (data.byteLength >= this.opts.multipartThresholdBytes) return this.putMultipart(key, Key, data);
    await this.retrying('put', key, (abortSignal) =>
      this.s3().send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: data, ContentLength: data.byteLength }), { abortSignal }),
    );
  }

  /** CreateMultipartUpload, the parts (partConcurrency at once, each retried), Complete; Abort if any of it fails. */
  private async putMultipart(key: string, Key: string, data: Uint8Array): Promise<void> {
    const created = await this.retrying('put', key, (abortSignal) => this.s3().send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }), { abortSignal }));
    const UploadId = created.UploadId;
    if (!UploadId) throw this.error('put', key, 'STORE_WRITE_FAILED', 'CreateMultipartUpload returned no upload id');
    const partBytes = this.opts.partBytes;
    const count = Math.ceil(data.byteLength / partBytes);
    const etags: string[] = new Array<string>(count);
    try {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < count) {
          const i = next++;
          const Body = data.subarray(i * partBytes, Math.min(data.byteLength, (i + 1) * partBytes));
          const part = await this.retrying('put', key, (abortSignal) =>
            this.s3().send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber: i + 1, Body, ContentLength: Body.byteLength }), { abortSignal }),
          );
          if (!part.ETag) throw this.error('put', key, 'STORE_WRITE_FAILED', `UploadPart ${i + 1} returned no ETag`);
          etags[i] = part.ETag;
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.opts.partConcurrency, count) }, worker));
      await this.retrying('put', key, (abortSignal) =>
        this.s3().send(
          new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }),
          { abortSignal },
        ),
      );
    } catch (err) {
      // Best effort (the store may be the reason we are here): a leftover upload costs storage, not correctness.
      await this.s3()
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }), { abortSignal: AbortSignal.timeout(this.opts.requestTimeoutMs) })
        .catch(() => undefined);
      throw err;
    }
  }

  async get(key: string): Promise<Uint8Array> {
    const Key = this.remote(key);
    return this.retrying('get', key, async (abortSignal) => {
      const res = await this.s3().send(new GetObjectCommand({ Bucket: this.bucket, Key }), { abortSignal });
      return res.Body ? await res.Body.transformToByteArray() : new Uint8Array(0);
    });
  }

  async getRange(key: string, start: number, end: number): Promise<Uint8Array> {
    const Key = this.remote(key);
    if (end <= start) {
      await this.size(key);
      return new Uint8Array(0);
    }
    return this.retrying('getRange', key, async (abortSignal) => {
      try {
        const res = await this.s3().send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: `bytes=${start}-${end - 1}` }), { abortSignal });
        return res.Body ? await res.Body.transformToByteArray() : new Uint8Array(0);
      } catch (err) {
        // 416: the object exists and `start` is at or past its end: nothing there, as a file read would say.
        if (statusOf(err) === 416) return new Uint8Array(0);
        throw err;
      }
    });
  }

  async size(key: string): Promise<number> {
    const Key = this.remote(key);
    const head = await this.retrying('size', key, (abortSignal) => this.s3().send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal }));
    return head.ContentLength ?? 0;
  }

  async exists(key: string): Promise<boolean> {
    const Key = this.remote(key);
    try {
      await this.retrying('exists', key, (abortSignal) => this.s3().send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal }));
      return true;
    } catch (err) {
      if (err instanceof RepriseError && err.code === 'NOT_FOUND') return false;
      throw err;
    }
  }

  /** S3's DELETE of a missing key succeeds: idempotent as the interface asks. */
  async delete(key: string): Promise<void> {
    const Key = this.remote(key);
    await this.retrying('delete', key, (abortSignal) => this.s3().send(new DeleteObjectCommand({ Bucket: this.bucket, Key }), { abortSignal }));
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.listRemote('list', prefix)).map((k) => k.slice(this.root.length)).sort();
  }

  /** Full remote keys under root + prefix, every page (ListObjectsV2 answers at most 1,000 a time). */
  private async listRemote(op: Op, prefix: string): Promise<string[]> {
    const Prefix = this.root + prefix;
    const keys: string[] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await this.retrying(op, prefix, (abortSignal) =>
        this.s3().send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix, MaxKeys: this.opts.listPageSize, ...(ContinuationToken ? { ContinuationToken } : {}) }), { abortSignal }),
      );
      for (const o of page.Contents ?? []) if (o.Key && !o.Key.endsWith('/')) keys.push(o.Key);
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return keys;
  }

  async deletePrefix(prefix: string): Promise<void> {
    const keys = await this.listRemote('deletePrefix', prefix);
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const Objects = keys.slice(i, i + DELETE_BATCH).map((Key) => ({ Key }));
      const res = await this.retrying('deletePrefix', prefix, (abortSignal) =>
        this.s3().send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects, Quiet: true } }), { abortSignal }),
      );
      const errors = res.Errors ?? [];
      if (errors.length > 0) {
        const first = errors[0]!;
        throw this.error('deletePrefix', prefix, 'STORE_WRITE_FAILED', `${errors.length} objects not deleted, e.g. "${first.Key ?? '?'}": ${first.Code ?? ''} ${first.Message ?? ''}`.trim());
      }
    }
  }

  /** Why the store fails right now: the last operation that ran out of retries, until one succeeds. */
  failure(): string | undefined {
    return this.lastFailure;
  }

  /** Attempts retried, and operations that failed for good (unreachable or refused), since start. */
  stats(): { retries: number; failures: number } {
    return { retries: this.retries, failures: this.failures };
  }

  /** Close the client's connections; the next operation opens a new client. */
  close(): void {
    this.client?.destroy();
    this.client = undefined;
  }

  /**
   * Run `attempt` until it succeeds, fails for good (not retryable), or the
   * deadline passes. Each attempt gets at most requestTimeoutMs (or what is
   * left of the deadline), after which it is aborted and counts as a timeout.
   */
  private async retrying<T>(op: Op, key: string, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const started = Date.now();
    const deadline = started + this.opts.retryDeadlineMs;
    let delay = this.opts.backoffInitMs;
    for (let attempts = 1; ; attempts++) {
      const budget = Math.max(1, Math.min(this.opts.requestTimeoutMs, deadline - Date.now()));
      try {
        const result = await withTimeout(attempt, budget);
        this.lastFailure = undefined;
        return result;
      } catch (err) {
        const status = statusOf(err);
        const name = (err as SdkError).name ?? '';
        if (status === 404 && name !== 'NoSuchBucket') {
          throw new RepriseError('NOT_FOUND', `object store ${this.where}: no object "${key}"`, { bucket: this.bucket, key }, { cause: err });
        }
        if (!isRetryable(err)) {
          throw this.fail(op, key, op === 'put' || op === 'delete' || op === 'deletePrefix' ? 'STORE_WRITE_FAILED' : 'STORE_UNAVAILABLE', `refused: ${describeError(err)}`, err);
        }
        const wait = Math.round(delay / 2 + (Math.random() * delay) / 2);
        if (Date.now() + wait >= deadline) {
          throw this.fail(op, key, 'STORE_UNAVAILABLE', `no success in ${attempts} attempt${attempts > 1 ? 's' : ''} over ${Date.now() - started} ms (retry deadline ${this.opts.retryDeadlineMs} ms); last error: ${describeError(err)}`, err, attempts);
        }
        this.retries++;
        await new Promise((resolve) => setTimeout(resolve, wait));
        delay = Math.min(this.opts.backoffMaxMs, delay * 2);
      }
    }
  }

  /** An operation failed for good: remembered for failure() and counted. */
  private fail(op: Op, key: string, code: ErrorCode, why: string, cause?: unknown, attempts?: number): RepriseError {
    const err = this.error(op, key, code, why, cause, attempts);
    this.failures++;
    this.lastFailure = `${err.code}: ${err.message}`;
    return err;
  }

  private error(op: Op, key: string, code: ErrorCode, why: string, cause?: unknown, attempts?: number): RepriseError {
    const what = op === 'list' || op === 'deletePrefix' ? `${op} of prefix "${key}"` : `${op} of "${key}"`;
    return new RepriseError(
      code,
      `object store ${this.where} (bucket ${this.bucket}): ${what} failed: ${why}`,
      { bucket: this.bucket, key: this.root + key, op, ...(attempts === undefined ? {} : { attempts }) },
      { cause },
    );
  }
}

/** Keys are '/'-separated relative paths, as FsObjectStore takes them. */
function validateKey(key: string, where: string): void {
  if (typeof key !== 'string' || key === '' || key.startsWith('/') || key.endsWith('/') || key.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new RepriseError('INVALID_ARGUMENT', `object store ${where}: invalid key "${String(key)}"`, { key });
  }
}

/** One attempt, aborted after `ms` (the promise rejects with a TimeoutError even if the SDK does not notice the abort). */
async function withTimeout<T>(attempt: (signal: AbortSignal) => Promise<T>, ms: number): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`no complete answer within ${ms} ms`);
      err.name = 'TimeoutError';
      controller.abort(err);
      reject(err);
    }, ms);
  });
  const work = attempt(controller.signal);
  work.catch(() => undefined); // it may settle after the timeout won
  try {
    return await Promise.race([work, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

function statusOf(err: unknown): number | undefined {
  return (err as SdkError | undefined)?.$metadata?.httpStatusCode;
}

/**
 * 5xx, 429, 408 and throttling names are worth another attempt, and so is
 * anything that never got an HTTP answer (refused, reset, timed out, a
 * garbled answer), except JavaScript's own errors, which are bugs.
 */
function isRetryable(err: unknown): boolean {
  const status = statusOf(err);
  const name = (err as SdkError | undefined)?.name ?? '';
  if (THROTTLING.has(name)) return true;
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  return !(err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError || err instanceof SyntaxError);
}

function describeError(err: unknown): string {
  const e = err as SdkError & { cause?: { code?: string } };
  const status = statusOf(err);
  const code = e.code ?? e.cause?.code;
  const parts = [status !== undefined ? `HTTP ${status}` : undefined, e.name && e.name !== 'Error' ? e.name : undefined, code, e.message].filter((p) => p !== undefined && p !== '');
  return parts.join(' ') || String(err);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
