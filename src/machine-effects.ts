/**
 * Helpers shared by the machine definitions. Machines declare their effects
 * with a default that fails loudly, so a machine used without the runtime's
 * (or a model test's) effects can never silently do nothing.
 */
export function effectNotProvided(name: string): () => Promise<never> {
  return async () => {
    throw new Error(`effect '${name}' was not provided to the machine`);
  };
}

/** A short, human-readable reason for a failed state. */
export function errorReason(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** `recordFailure` params from an invoked effect's error event. */
export const reasonOfError = ({ event }: { event: { error: unknown } }) => ({ reason: errorReason(event.error) });

/** `recordFailure` params from a FAIL event. */
export const reasonOfEvent = ({ event }: { event: { reason: string } }) => ({ reason: event.reason });
