import { RepriseError } from './errors.js';

/**
 * When the caller of a write stops waiting for it: an absolute wall-clock
 * time (epoch ms, as carried between processes) and/or a signal (its HTTP
 * client went away). Work whose deadline has passed before its WAL append
 * starts is dropped with DEADLINE_EXCEEDED, which means "not written"; once
 * the append has started, the outcome is the log's (see README, "Timeouts
 * and unknown outcomes"). Wall-clock times assume the nodes' clocks agree to
 * well within the router's per-attempt timeout.
 */
export interface Deadline {
  /** Epoch ms after which the caller no longer waits. */
  readonly at?: number;
  /** Aborted once the caller no longer waits. */
  readonly signal?: AbortSignal;
}

/** Whether the caller has stopped waiting. */
export function deadlinePassed(deadline: Deadline | undefined, now = Date.now()): boolean {
  return deadline !== undefined && ((deadline.at !== undefined && now >= deadline.at) || deadline.signal?.aborted === true);
}

/** The error for work dropped because its caller stopped waiting: nothing of it was written. */
export function deadlineExceeded(what: string, deadline: Deadline | undefined, now = Date.now()): RepriseError {
  const why =
    deadline?.signal?.aborted === true ? 'its client went away' : deadline?.at !== undefined ? `its deadline passed ${now - deadline.at} ms ago` : 'its deadline passed';
  return new RepriseError('DEADLINE_EXCEEDED', `${what} dropped before its WAL append: ${why}; nothing was written`, deadline?.at === undefined ? undefined : { deadline: deadline.at });
}

/** The earlier of two epoch-ms times (either may be absent). */
export function earlier(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.min(a, b);
}
