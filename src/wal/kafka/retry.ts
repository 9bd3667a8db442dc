import type { Settings } from './settings.js';

/**
 * Run `fn`; while it throws an error that `retry` accepts, before
 * `deadline` and until `signal` aborts, run `beforeRetry`, wait (backoff)
 * and run `fn` again. Otherwise its last error is thrown. The one retry loop
 * of the Kafka provider: appends retry only what provably wrote nothing, reads
 * anything, fetches transient failures.
 */
export async function withBackoff<T>(
  settings: Settings,
  deadline: number,
  retry: (err: unknown) => boolean,
  fn: () => Promise<T>,
  options: { readonly signal?: AbortSignal; readonly beforeRetry?: () => Promise<unknown> } = {},
): Promise<T> {
  const { signal, beforeRetry } = options;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (signal?.aborted || !retry(err) || Date.now() >= deadline) throw err;
      await beforeRetry?.();
      await sleep(backoff(settings, attempt), signal);
      if (signal?.aborted) throw err;
    }
  }
}

export function backoff(settings: Settings, attempt: number): number {
  return Math.min(settings.backoffMaxMs, settings.backoffInitMs * 2 ** Math.min(attempt, 20));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** `promise`, or undefined as soon as `signal` aborts (the promise is left to settle on its own). */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  promise.catch(() => undefined);
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
