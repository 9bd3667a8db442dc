import { RepriseError } from '../errors.js';

/** Bytes of write bodies (JSON rows, delete keys, line protocol) a node works on at once, by default. */
export const DEFAULT_MAX_WRITE_BYTES_IN_FLIGHT = 256 * 1024 * 1024;

/**
 * Admission of writes by the bytes of their bodies: a write holds its
 * body's bytes from when it is parsed until its answer is sent (its rows
 * durable, or refused), so the rows a node validates, encodes and keeps
 * queued for the WAL are bounded by configuration, not by how fast clients
 * send. A write that would pass the bound is refused OVERLOADED at once
 * (HTTP 503 with Retry-After): a client faster than the WAL gets slower
 * answers, then refusals, never an unbounded heap. A write larger than the
 * whole bound is admitted when nothing else is in flight (the body limit
 * bounds it), so no single write is refused for ever.
 */
export class WriteBudget {
  private held = 0;
  private refusedCount = 0;

  constructor(readonly maxBytes: number = DEFAULT_MAX_WRITE_BYTES_IN_FLIGHT) {}

  /** Bytes held by writes in flight. */
  inFlight(): number {
    return this.held;
  }

  /** Writes refused since start. */
  refused(): number {
    return this.refusedCount;
  }

  /** Hold `bytes` for a write; the returned release gives them back (once, however often it is called). */
  admit(bytes: number, what: string): () => void {
    if (this.held > 0 && this.held + bytes > this.maxBytes) {
      this.refusedCount++;
      throw new RepriseError(
        'OVERLOADED',
        `${what} refused: ${this.held} bytes of writes are in flight and its ${bytes} more would pass limits.maxWriteBytesInFlight (${this.maxBytes}); retry shortly`,
        { inFlight: this.held, bytes, limit: this.maxBytes },
      );
    }
    this.held += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held -= bytes;
    };
  }
}
