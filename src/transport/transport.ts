/**
 * How meta, nodes and clients reach each other: one `Transport` interface,
 * two implementations (`InProcessTransport` for embedding and deterministic
 * tests, `NatsTransport` for multi-process deploys).
 *
 * Subjects are named per cluster, `reprise.<cluster>.<service>.<...>`, built
 * by `subjectOf` and checked on every call: a transport only talks inside its
 * own cluster, so two clusters can share one NATS server.
 *
 * Payloads are msgpack values (@msgpack/msgpack defaults): plain objects,
 * arrays, strings, numbers, booleans, null, Uint8Array (arrives as a
 * Uint8Array, never a Buffer), Date. `undefined` arrives as null, class
 * instances as plain objects. Both implementations encode every message, so
 * nothing is shared by reference between sender and receiver.
 *
 * Replies travel as `{ ok: value }` or `{ error: { code, message, details } }`:
 * a handler that throws a RepriseError makes the caller's promise reject with
 * a RepriseError of the same code, message and details; anything else thrown
 * arrives as INTERNAL with its message.
 *
 * Errors of the transport itself (RepriseError codes):
 * - UNAVAILABLE: nobody serves the subject (the request was not delivered),
 *   or the connection is down and did not come back within the timeout.
 * - TIMEOUT: the request went out and no reply came within `timeoutMs`; the
 *   handler may or may not have run.
 * - INVALID_ARGUMENT: a malformed subject, queue name or option, or a payload
 *   msgpack cannot encode.
 * - REQUEST_TOO_LARGE: an encoded request or reply over `maxPayloadBytes`.
 * - CLOSED: the transport (or its connection) is closed.
 *
 * A subject that only event subscribers match (no `serve`) gets no reply:
 * TIMEOUT, not UNAVAILABLE, as on NATS.
 *
 * Retries happen only when the caller asks (`retries`), and only after
 * UNAVAILABLE or TIMEOUT: requests need not be idempotent, and a caller that
 * retries after TIMEOUT accepts that the handler may run more than once.
 */
import { decode, encode } from '@msgpack/msgpack';
import { RepriseError, asRepriseError, type ErrorCode } from '../errors.js';

/** The first token of every subject. */
export const SUBJECT_ROOT = 'reprise';

/** NATS's default `max_payload`; the in-process transport uses it too. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;

export interface RequestOptions {
  /** How long one attempt waits for its reply, in milliseconds (> 0). */
  readonly timeoutMs: number;
  /**
   * Further attempts after an UNAVAILABLE or TIMEOUT (default 0). Only for
   * requests the handler can safely receive twice.
   */
  readonly retries?: number;
  /** Wait before the first retry, doubled before each next one (default 100, at most 10 s). */
  readonly retryDelayMs?: number;
}

export interface SubscriptionOptions {
  /**
   * A queue group: of all subscriptions of the same subject and queue, each
   * message goes to one only, so instances of a service share the load.
   * Without one, every subscription receives every message (and a request
   * takes the first reply).
   */
  readonly queue?: string;
}

/**
 * Thrown by a request handler that must not answer at all, e.g. a meta
 * replica that no longer leads: no reply is sent, so the caller takes
 * another responder's answer (subscriptions without a queue group all
 * receive the request) or times out. An error reply would win the race
 * against the real responder's answer.
 */
export class RequestDeclined extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'RequestDeclined';
  }
}

/** What a handler learns about the message besides its payload. */
export interface MessageInfo {
  /** The subject the message was sent to (concrete, also for wildcard subscriptions). */
  readonly subject: string;
}

/**
 * Answers one request. Its return value is the reply; a RepriseError it
 * throws reaches the caller with the same code, message and details.
 * Handlers run concurrently, one call per message.
 */
export type RequestHandler<Req = unknown, Res = unknown> = (payload: Req, info: MessageInfo) => Res | Promise<Res>;

/** Receives one event. Errors it throws are logged, never sent anywhere. */
export type EventHandler<T = unknown> = (payload: T, info: MessageInfo) => void | Promise<void>;

export interface Subscription {
  /** The subject (or, for `subscribe`, the pattern) subscribed to. */
  readonly subject: string;
  /**
   * Stop receiving, then wait until every handler already running has
   * finished and its reply is sent. Idempotent.
   */
  close(): Promise<void>;
}

export interface Transport {
  /** The cluster every subject of this transport belongs to. */
  readonly cluster: string;
  /** The largest encoded request, reply or event this transport carries. */
  readonly maxPayloadBytes: number;
  /** `subjectOf(this.cluster, ...parts)`. */
  subject(...parts: string[]): string;
  /** Send a request to whoever serves `subject` and wait for its reply. */
  request<Req = unknown, Res = unknown>(subject: string, payload: Req, options: RequestOptions): Promise<Res>;
  /**
   * Answer requests to `subject` (no wildcards). Resolves once requests can
   * reach the handler; after a reconnect the subscription is re-established
   * by the transport itself.
   */
  serve<Req = unknown, Res = unknown>(
    subject: string,
    handler: RequestHandler<Req, Res>,
    options?: SubscriptionOptions,
  ): Promise<Subscription>;
  /** Send a one-way event (at most once: nobody listening, or a connection loss, drops it). */
  publish<T = unknown>(subject: string, payload: T): Promise<void>;
  /**
   * Receive events published to `subject`, which may hold wildcards: `*` for
   * one token, `>` (last) for one or more. Resolves once events can arrive.
   */
  subscribe<T = unknown>(subject: string, handler: EventHandler<T>, options?: SubscriptionOptions): Promise<Subscription>;
  /**
   * Close every subscription (draining running handlers), fail pending
   * requests with CLOSED, and disconnect. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Where a transport reports what it cannot hand to a caller: errors thrown by
 * event handlers, connection state changes. A pino logger fits.
 */
export interface TransportLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Warnings and errors to stderr, nothing else. */
export const stderrLogger: TransportLogger = {
  info() {},
  warn(obj, msg) {
    console.warn(`reprise transport: ${msg}`, obj);
  },
  error(obj, msg) {
    console.error(`reprise transport: ${msg}`, obj);
  },
};

// ---------------------------------------------------------------- subjects

const FORBIDDEN_IN_TOKEN = /[\s.*>\u0000-\u001f\u007f]/u;

function describeToken(token: string): string | undefined {
  if (token.length === 0) return 'is empty';
  const bad = FORBIDDEN_IN_TOKEN.exec(token);
  if (!bad) return undefined;
  const ch = bad[0];
  if (ch === '.') return "contains '.' (each part is one token)";
  if (ch === '*' || ch === '>') return `contains the wildcard '${ch}'`;
  return 'contains whitespace or a control character';
}

function invalid(message: string, details: Record<string, unknown>): RepriseError {
  return new RepriseError('INVALID_ARGUMENT', message, details);
}

function checkPart(what: string, part: unknown, index: number, pattern: boolean, last: boolean): void {
  if (typeof part !== 'string') throw invalid(`subject part ${index} (${what}) must be a string, got ${typeof part}`, { part: String(part) });
  if (pattern && (part === '*' || (part === '>' && last))) return;
  if (pattern && part === '>') throw invalid(`subject part ${index} (${what}): '>' may only be the last part`, { part });
  const problem = describeToken(part);
  if (problem) throw invalid(`subject part ${index} (${what}) ${JSON.stringify(part)} ${problem}`, { part });
}

function build(cluster: string, parts: readonly string[], pattern: boolean): string {
  checkPart('cluster', cluster, 0, false, false);
  if (parts.length === 0) throw invalid(`a subject needs at least a service after the cluster ${JSON.stringify(cluster)}`, { cluster });
  parts.forEach((part, i) => checkPart(i === 0 ? 'service' : 'name', part, i + 1, pattern, i === parts.length - 1));
  return [SUBJECT_ROOT, cluster, ...parts].join('.');
}

/**
 * The subject `reprise.<cluster>.<parts...>`, e.g.
 * `subjectOf('prod', 'node', '3', 'shard', 'open')`. Every part is one token:
 * not empty, no '.', no whitespace, no wildcard. Throws INVALID_ARGUMENT
 * naming the offending part.
 */
export function subjectOf(cluster: string, ...parts: string[]): string {
  return build(cluster, parts, false);
}

/**
 * A subscription pattern: like `subjectOf`, but a part may be `*` (any one
 * token) and the last part may be `>` (one or more tokens), e.g.
 * `subjectPatternOf('prod', 'node', '*', 'heartbeat')`.
 */
export function subjectPatternOf(cluster: string, ...parts: string[]): string {
  return build(cluster, parts, true);
}

/**
 * Check a full subject given to a transport of `cluster`: tokens as in
 * `subjectOf`, wildcards only where `pattern`, and the `reprise.<cluster>.`
 * prefix. Returns the subject's tokens.
 */
export function checkSubject(subject: unknown, cluster: string, pattern: boolean): string[] {
  if (typeof subject !== 'string') throw invalid(`a subject must be a string, got ${typeof subject}`, { subject: String(subject) });
  const tokens = subject.split('.');
  const prefix = `${SUBJECT_ROOT}.${cluster}.`;
  if (tokens.length < 3 || tokens[0] !== SUBJECT_ROOT || tokens[1] !== cluster) {
    throw invalid(`subject ${JSON.stringify(subject)} is not in this transport's cluster: it must start with '${prefix}' (build it with subjectOf)`, {
      subject,
      cluster,
    });
  }
  tokens.forEach((token, i) => {
    if (i < 2) return;
    if (token === '*' || token === '>') {
      if (!pattern) throw invalid(`subject ${JSON.stringify(subject)} has the wildcard '${token}': only subscribe takes patterns`, { subject });
      if (token === '>' && i !== tokens.length - 1) throw invalid(`subject ${JSON.stringify(subject)}: '>' may only be the last token`, { subject });
      return;
    }
    const problem = describeToken(token);
    if (problem) throw invalid(`subject ${JSON.stringify(subject)}: token ${i} ${JSON.stringify(token)} ${problem}`, { subject });
  });
  return tokens;
}

/** Check a queue group name: one token, as a subject part. */
export function checkQueue(queue: unknown): string | undefined {
  if (queue === undefined) return undefined;
  if (typeof queue !== 'string') throw invalid(`a queue group name must be a string, got ${typeof queue}`, {});
  const problem = describeToken(queue);
  if (problem) throw invalid(`queue group ${JSON.stringify(queue)} ${problem}`, { queue });
  return queue;
}

/** Whether the concrete `subject` tokens match the pattern tokens (`*`, trailing `>`). */
export function subjectMatches(pattern: readonly string[], subject: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p === '>') return subject.length > i;
    if (i >= subject.length) return false;
    if (p !== '*' && p !== subject[i]) return false;
  }
  return pattern.length === subject.length;
}

// ---------------------------------------------------------------- options

export interface ResolvedRequestOptions {
  readonly timeoutMs: number;
  readonly retries: number;
  readonly retryDelayMs: number;
}

const MAX_RETRY_DELAY_MS = 10_000;

export function checkRequestOptions(subject: string, options: RequestOptions | undefined): ResolvedRequestOptions {
  if (!options || typeof options !== 'object') throw invalid(`request to ${subject} needs options with timeoutMs`, { subject });
  const { timeoutMs, retries = 0, retryDelayMs = 100 } = options;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw invalid(`request to ${subject}: timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`, { subject });
  }
  if (!Number.isInteger(retries) || retries < 0) {
    throw invalid(`request to ${subject}: retries must be a non-negative integer, got ${String(retries)}`, { subject });
  }
  if (typeof retryDelayMs !== 'number' || !Number.isFinite(retryDelayMs) || retryDelayMs < 0) {
    throw invalid(`request to ${subject}: retryDelayMs must be a non-negative number, got ${String(retryDelayMs)}`, { subject });
  }
  return { timeoutMs, retries, retryDelayMs };
}

// ---------------------------------------------------------------- errors

export function noResponders(subject: string): RepriseError {
  return new RepriseError('UNAVAILABLE', `no responder for ${subject}: nothing serves this subject`, { subject });
}

export function timedOut(subject: string, timeoutMs: number, note?: string): RepriseError {
  return new RepriseError('TIMEOUT', `request to ${subject} timed out after ${timeoutMs} ms${note ? ` (${note})` : ''}`, {
    subject,
    timeoutMs,
  });
}

export function transportClosed(what: string): RepriseError {
  return new RepriseError('CLOSED', `transport closed: ${what}`);
}

export function tooLarge(what: string, size: number, max: number): RepriseError {
  return new RepriseError('REQUEST_TOO_LARGE', `${what} is ${size} bytes encoded, over the transport's maximum of ${max}`, { size, max });
}

/** Errors after which a retry may help: the request was not delivered, or its reply did not come. */
export function isRetryable(err: unknown): boolean {
  return err instanceof RepriseError && (err.code === 'UNAVAILABLE' || err.code === 'TIMEOUT');
}

// ---------------------------------------------------------------- payloads

/** msgpack-encode a payload; INVALID_ARGUMENT (naming `what`) if it cannot be. */
export function encodePayload(what: string, payload: unknown): Uint8Array {
  try {
    return encode(payload);
  } catch (err) {
    throw new RepriseError('INVALID_ARGUMENT', `${what}: payload cannot be encoded as msgpack: ${(err as Error).message}`, undefined, { cause: err });
  }
}

export function decodePayload(what: string, data: Uint8Array): unknown {
  try {
    return decode(data);
  } catch (err) {
    throw new RepriseError('INVALID_ARGUMENT', `${what}: payload is not valid msgpack: ${(err as Error).message}`, undefined, { cause: err });
  }
}

type WireError = { code: string; message: string; details?: Record<string, unknown> };
type Envelope = { ok: unknown } | { error: WireError };

function encodeError(err: RepriseError): Uint8Array {
  const wire: WireError = { code: err.code, message: err.message };
  if (err.details) {
    try {
      return encode({ error: { ...wire, details: err.details } });
    } catch {
      // details msgpack cannot carry: send code and message only
    }
  }
  return encode({ error: wire });
}

/**
 * Run a request handler on an encoded request and return the encoded reply
 * envelope. Never throws: every failure becomes an error reply.
 */
export async function answerRequest(
  handler: RequestHandler<never, unknown>,
  data: Uint8Array,
  info: MessageInfo,
  maxPayloadBytes: number,
): Promise<Uint8Array | undefined> {
  let reply: Uint8Array;
  try {
    const payload = decodePayload(`request to ${info.subject}`, data) as never;
    const result = await handler(payload, info);
    reply = encodePayload(`reply from ${info.subject}`, { ok: result });
  } catch (err) {
    if (err instanceof RequestDeclined) return undefined;
    return encodeError(asRepriseError(err));
  }
  if (reply.length > maxPayloadBytes) return encodeError(tooLarge(`the reply from ${info.subject}`, reply.length, maxPayloadBytes));
  return reply;
}

/** Decode a reply envelope: the value, or throw the remote error as a RepriseError. */
export function decodeReply(subject: string, data: Uint8Array): unknown {
  let envelope: Envelope;
  try {
    envelope = decode(data) as Envelope;
  } catch (err) {
    throw new RepriseError('INTERNAL', `reply from ${subject} is not valid msgpack: ${(err as Error).message}`, { subject }, { cause: err });
  }
  if (envelope && typeof envelope === 'object' && !Array.isArray(envelope)) {
    if ('ok' in envelope) return envelope.ok;
    if ('error' in envelope && envelope.error && typeof envelope.error === 'object') {
      const { code, message, details } = envelope.error;
      if (typeof code === 'string' && typeof message === 'string') {
        const remoteDetails = details && typeof details === 'object' && !Array.isArray(details) ? details : undefined;
        throw new RepriseError(code as ErrorCode, message, remoteDetails);
      }
    }
  }
  throw new RepriseError('INTERNAL', `reply from ${subject} is not a reprise reply envelope`, { subject });
}

// ---------------------------------------------------------------- retries

/**
 * Run `attempt` once, and again up to `retries` times after a retryable
 * error, waiting `retryDelayMs`, doubled each time (at most 10 s), between.
 * The last error is rethrown, its message noting the attempts made.
 * `isClosed` stops the loop with CLOSED.
 */
export async function withRetries<T>(
  subject: string,
  options: ResolvedRequestOptions,
  isClosed: () => boolean,
  attempt: () => Promise<T>,
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (n >= options.retries || !isRetryable(err)) {
        if (n === 0 || !(err instanceof RepriseError)) throw err;
        throw new RepriseError(err.code, `${err.message} (${n + 1} attempts)`, { ...err.details, attempts: n + 1 }, { cause: err });
      }
    }
    const delay = Math.min(options.retryDelayMs * 2 ** n, MAX_RETRY_DELAY_MS);
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    if (isClosed()) throw transportClosed(`request to ${subject} abandoned between retries`);
  }
}

// ---------------------------------------------------------------- draining

/** The handlers of one subscription that are still running, so `close` can wait for them. */
export class RunningHandlers {
  private readonly running = new Set<Promise<unknown>>();

  track(work: Promise<unknown>): void {
    const p = work.catch(() => {}).finally(() => this.running.delete(p));
    this.running.add(p);
  }

  get size(): number {
    return this.running.size;
  }

  /** Resolves when no handler runs (including handlers started while waiting). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }
}

/** Run an event handler, logging what it throws. */
export async function deliverEvent(
  handler: EventHandler<never>,
  data: Uint8Array,
  info: MessageInfo,
  logger: TransportLogger,
): Promise<void> {
  try {
    const payload = decodePayload(`event on ${info.subject}`, data) as never;
    await handler(payload, info);
  } catch (err) {
    const e = asRepriseError(err);
    logger.error({ subject: info.subject, code: e.code, err: e.message }, `event handler for ${info.subject} failed: ${e.message}`);
  }
}
