import { isRepriseError, type ErrorCode, type RepriseError } from '../../src/errors.js';
import { waitUntil } from '../harness/wait.js';

/** Assert that `promise` rejects with a RepriseError of `code`; returns the error. */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<RepriseError> {
  try {
    await promise;
  } catch (err) {
    if (!isRepriseError(err, code)) {
      throw new Error(`expected a RepriseError ${code}, got ${err instanceof Error ? `${err.name} ${(err as { code?: string }).code ?? ''}: ${err.message}` : String(err)}`, {
        cause: err,
      });
    }
    return err;
  }
  throw new Error(`expected a rejection with ${code}, but it resolved`);
}

/** Like `expectCode` for a function that may throw synchronously. */
export async function expectThrows(fn: () => unknown, code: ErrorCode): Promise<RepriseError> {
  return expectCode(
    (async () => {
      await fn();
    })(),
    code,
  );
}

/** Poll `check` until it returns true, or fail after `timeoutMs`. */
export function waitFor(check: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  return waitUntil(check, what, { timeoutMs, everyMs: 5 });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A promise and the function that resolves it. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}
