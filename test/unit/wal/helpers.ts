import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRepriseError, type ErrorCode } from '../../../src/errors.js';
import type { LogRecord } from '../../../src/wal/log-store.js';
import { waitUntil } from '../../harness/wait.js';

/** A fresh directory under the OS temp dir and a function that removes it. */
export async function tempDir(prefix = 'reprise-wal-'): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Assert that `promise` rejects with a RepriseError of `code`; returns the error. */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    if (!isRepriseError(err, code)) {
      throw new Error(`expected a RepriseError ${code}, got ${String(err)}`, { cause: err });
    }
    return err;
  }
  throw new Error(`expected a rejection with ${code}, but it resolved`);
}

/** Deterministic pseudo-random bytes (xorshift32), cheap enough for megabytes. */
export function bytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export function ids(records: readonly LogRecord[]): number[] {
  return records.map((r) => r.id);
}

/** Poll until `cond` holds (or fail after `timeoutMs`). */
export function waitFor(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  return waitUntil(cond, what, { timeoutMs, everyMs: 5 });
}
