/**
 * One error type for the whole runtime: a stable machine-readable code and a
 * message that names the thing (table, region, topic, entry id) at fault.
 * The HTTP API maps codes to status codes; apart from codeOfReason (machine
 * contexts keep failures as text), nothing inspects messages.
 */
export const ERROR_CODES = [
  // client input
  'INVALID_ARGUMENT',
  'INVALID_SCHEMA',
  'INVALID_ROW',
  'INVALID_QUERY',
  /** A query's result would pass the configured bound (maxResultRows). */
  'QUERY_TOO_LARGE',
  'MALFORMED_JSON',
  /** A SQL statement that does not parse: the message names line, column and the token found. */
  'SQL_SYNTAX',
  /** A SQL statement that parses but that reprise does not run (a join, OR across columns, ...): the message names what. */
  'SQL_UNSUPPORTED',
  /** A user or password a protocol does not accept. */
  'UNAUTHENTICATED',
  'REQUEST_TOO_LARGE',
  /** An HTTP request not received whole (headers and body) within httpRequestTimeoutMs. */
  'REQUEST_TIMEOUT',
  'TABLE_NOT_FOUND',
  'TABLE_EXISTS',
  'NOT_FOUND',
  // runtime state
  'NOT_LEADER',
  'REGION_NOT_SERVING',
  'SHARD_NOT_SERVING',
  'REGION_FAILED',
  'CLOSED',
  /** This node holds as many query result rows as memory.maxResultRowsInFlight allows: retry shortly. */
  'OVERLOADED',
  /** Meta already runs a procedure on that shard (one at a time), or a rebalance is already running. */
  'PROCEDURE_RUNNING',
  /** An HTTP request a browser was made to send: a Host this server does not answer to, or a write from a foreign Origin. */
  'FORBIDDEN',
  // transport: nobody serves the subject / no reply in time
  'UNAVAILABLE',
  'TIMEOUT',
  /** The caller stopped waiting (its deadline passed, its client went away) before the write's WAL append started: nothing was written. */
  'DEADLINE_EXCEEDED',
  // storage faults
  'WAL_CORRUPT',
  'WAL_TRUNCATED',
  /** The log ends before entries it acknowledged (its high-water mark, or a region's manifest, knows more). */
  'WAL_TAIL_LOST',
  'WAL_APPEND_FAILED',
  /** The object store could not write an object (a full disk, permissions), named with its key. */
  'STORE_WRITE_FAILED',
  /** The object store (S3) did not answer, kept failing (5xx, timeouts, resets) past its retry deadline, or refused a read: named with bucket and key. Nothing is lost; retry. */
  'STORE_UNAVAILABLE',
  /** A flush could not write its SST or manifest (a full disk): nothing is lost, the rows stay in memory and in the WAL. */
  'FLUSH_FAILED',
  'ENTRY_TOO_LARGE',
  'SST_MISSING',
  'SST_CORRUPT',
  /** An SST of a format this version does not read (named with its format). */
  'SST_FORMAT_UNSUPPORTED',
  'MANIFEST_CORRUPT',
  'META_CORRUPT',
  /** The object store holds regions the catalog (meta log) does not know: the WAL looks lost or replaced. */
  'CATALOG_LOST',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/**
 * The code a failure reason kept as text (`CODE: message`, as machine
 * contexts record errors) starts with, or `fallback`: so a failure reported
 * later keeps the code it had.
 */
export function codeOfReason(reason: string | undefined, fallback: ErrorCode = 'INTERNAL'): ErrorCode {
  const code = reason === undefined ? undefined : /^([A-Z_]+): /.exec(reason)?.[1];
  return code !== undefined && KNOWN_CODES.has(code) ? (code as ErrorCode) : fallback;
}

export class RepriseError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RepriseError';
    this.code = code;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isRepriseError(err: unknown, code?: ErrorCode): err is RepriseError {
  return err instanceof RepriseError && (code === undefined || err.code === code);
}

/** Wrap anything thrown into a RepriseError, keeping the original as cause. */
export function asRepriseError(err: unknown, fallback: ErrorCode = 'INTERNAL'): RepriseError {
  if (err instanceof RepriseError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new RepriseError(fallback, message, undefined, { cause: err });
}
