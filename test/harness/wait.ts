/**
 * Polling for tests: the one way to wait for something to become true.
 */

export interface UntilOptions {
  /** Give up (throw) after this long. Default 10 s. */
  readonly timeoutMs?: number;
  /** Look again after this long. Default 10 ms. */
  readonly everyMs?: number;
  /** Treat a probe that throws as "not yet" (e.g. an HTTP probe of a process that is restarting). Default false. */
  readonly ignoreErrors?: boolean;
}

/** Poll `probe` until it returns a value other than undefined; that value. */
export async function until<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, options: UntilOptions = {}): Promise<T> {
  const { timeoutMs = 10_000, everyMs = 10, ignoreErrors = false } = options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value: T | undefined;
    try {
      value = await probe();
    } catch (err) {
      if (!ignoreErrors) throw err;
    }
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Poll until `condition` holds. */
export async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, options: UntilOptions = {}): Promise<void> {
  await until(async () => ((await condition()) ? true : undefined), what, options);
}
