/**
 * Where the meta leader election (meta-election.ts) keeps its one key: a
 * register with compare-and-set on a revision, read and watched. The election
 * logic is written once against `ElectionStore`; two backends hold the key:
 *
 * - `NatsKvElectionStore`: a NATS JetStream KV bucket (production).
 * - `MemoryElectionStore`: an in-process register with fault controls (the
 *   cluster simulation and unit tests), shared by several candidates.
 *
 * A failed call rejects with a RepriseError: code CLOSED when the store is
 * gone for good (the election stops), any other code is transient (the
 * election retries). A refused compare-and-set is not a failure: it is the
 * `conflict` outcome.
 */
import type { JetStreamClient, KV, KvEntry, NatsConnection } from 'nats';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { RepriseError } from '../errors.js';
import { stderrLogger, type TransportLogger } from '../transport/transport.js';

/** One revision of the key. `value` null: a delete marker (the key is occupied, with no value). */
export interface StoredValue {
  readonly revision: number;
  readonly value: Uint8Array | null;
}

export type CompareAndSetOutcome =
  /** The write took effect at this revision. */
  | { readonly kind: 'written'; readonly revision: number }
  /** The key's last revision was not the expected one: nothing was written. */
  | { readonly kind: 'conflict' };

/** The key's revisions as they are written: the current one first (if any), then each new one. May stall; ends when stopped or when the store drops it. */
export interface ElectionWatch extends AsyncIterable<StoredValue> {
  stop(): void;
}

export interface ElectionStore {
  /** For logs: which store and key. */
  readonly name: string;
  /** Settles when the store is gone for good (a NATS store: its connection closed); undefined if it never is. */
  readonly closed: Promise<void> | undefined;
  /** The key's last revision, or undefined if the key was never written. */
  read(): Promise<StoredValue | undefined>;
  /** Write `value` if the key's last revision is `expectedRevision` (0: the key was never written). */
  compareAndSet(value: Uint8Array, expectedRevision: number): Promise<CompareAndSetOutcome>;
  watch(): Promise<ElectionWatch>;
}

/** A RepriseError with code CLOSED: the store is gone for good. Anything else a store throws is transient. */
export function isStoreClosed(err: unknown): boolean {
  return err instanceof RepriseError && err.code === 'CLOSED';
}

export function describeError(err: unknown): string {
  return err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
}

const CONFLICT: CompareAndSetOutcome = { kind: 'conflict' };

// ------------------------------------------------------------ NATS JetStream KV

export interface NatsKvElectionStoreOptions {
  /** The connection (a JetStream client is made from it; its close closes the store), or give `js`. */
  readonly nc?: NatsConnection;
  readonly js?: JetStreamClient;
  /** KV bucket (created if missing, with `replicas`, history 1). It must hold the election's key alone: see compareAndSet. */
  readonly bucket: string;
  /** The key in the bucket (default `leader`). */
  readonly key?: string;
  /** Replicas of the bucket's stream when this creates it (default 3). */
  readonly replicas?: number;
  /** Timeout of one KV request (default 2000). */
  readonly requestTimeoutMs?: number;
  /** First wait between attempts to bind the bucket (default 25 ms, doubling up to 1 s). */
  readonly backoffInitialMs?: number;
  /** Stops `open` retrying to bind the bucket. */
  readonly signal?: AbortSignal;
  readonly logger?: TransportLogger;
}

/** JetStream's "wrong last sequence": the expectation of a publish failed. */
const WRONG_LAST_SEQUENCE = 10071;

export class NatsKvElectionStore implements ElectionStore {
  readonly name: string;
  readonly closed: Promise<void> | undefined;
  private readonly subject: string;

  private constructor(
    private readonly js: JetStreamClient,
    private readonly kv: KV,
    bucket: string,
    private readonly key: string,
    nc: NatsConnection | undefined,
  ) {
    this.name = `nats-kv:${bucket}/${key}`;
    this.subject = `$KV.${bucket}.${key}`;
    this.closed = nc?.closed().then(
      () => {},
      () => {},
    );
  }

  /** Bind (or create) the bucket, retrying NATS errors with backoff until bound, closed or aborted. */
  static async open(options: NatsKvElectionStoreOptions): Promise<NatsKvElectionStore> {
    const timeout = options.requestTimeoutMs ?? 2000;
    const js = options.js ?? options.nc?.jetstream({ timeout });
    if (!js) throw new RepriseError('INVALID_ARGUMENT', 'meta election store: give nc or js');
    const logger = options.logger ?? stderrLogger;
    let wait = options.backoffInitialMs ?? 25;
    for (let attempt = 1; ; attempt++) {
      if (options.signal?.aborted) throw new RepriseError('CLOSED', `meta election: stopped while binding bucket ${options.bucket}`);
      try {
        // No direct gets: those are answered by any replica, and a lagging
        // one returns an older revision (seen here: a candidate read back a
        // revision older than the one its watch had shown, and waited again).
        const kv = await js.views.kv(options.bucket, { replicas: options.replicas ?? 3, history: 1, timeout, allow_direct: false });
        return new NatsKvElectionStore(js, kv, options.bucket, options.key ?? 'leader', options.nc);
      } catch (err) {
        if (isConnectionClosed(err)) throw new RepriseError('CLOSED', `meta election: the NATS connection closed while binding bucket ${options.bucket}`, undefined, { cause: err });
        if (attempt === 1 || attempt % 20 === 0) logger.warn({ bucket: options.bucket, attempt, err: describeError(err) }, 'meta election: cannot bind the KV bucket yet, retrying');
        await sleep(wait * (0.5 + Math.random()));
        wait = Math.min(wait * 2, 1000);
      }
    }
  }

  async read(): Promise<StoredValue | undefined> {
    try {
      const entry = await this.kv.get(this.key);
      return entry ? storedValueOf(entry) : undefined;
    } catch (err) {
      throw this.failure('read', err);
    }
  }

  /**
   * Not `kv.update`: that expects the key's last sequence
   * (Nats-Expected-Last-Subject-Sequence), which nats-server before 2.9.21
   * checks on a clustered stream only before proposing, not when the write is
   * applied, so concurrent updates on one revision can all succeed
   * (nats-server#4320; measured here on 2.9.10, R3: two or three winners in
   * most rounds of three racing updates). The stream's last sequence
   * (Nats-Expected-Last-Sequence) is checked when each replica applies the
   * write, in log order: one winner. It equals the key's revision because
   * the bucket holds this key alone. "Must not exist" (subject sequence 0)
   * is also checked at apply time.
   */
  async compareAndSet(value: Uint8Array, expectedRevision: number): Promise<CompareAndSetOutcome> {
    const expect = expectedRevision === 0 ? { lastSubjectSequence: 0 } : { lastSequence: expectedRevision, lastSubjectSequence: expectedRevision };
    try {
      const ack = await this.js.publish(this.subject, value, { expect });
      return { kind: 'written', revision: ack.seq };
    } catch (err) {
      if ((err as { api_error?: { err_code?: number } } | undefined)?.api_error?.err_code === WRONG_LAST_SEQUENCE) return CONFLICT;
      throw this.failure('write', err);
    }
  }

  async watch(): Promise<ElectionWatch> {
    let entries: AsyncIterable<KvEntry> & { stop(): void };
    try {
      entries = await this.kv.watch({ key: this.key });
    } catch (err) {
      throw this.failure('watch', err);
    }
    const failure = (err: unknown) => this.failure('watch', err);
    return {
      stop: () => entries.stop(),
      async *[Symbol.asyncIterator]() {
        try {
          for await (const entry of entries) yield storedValueOf(entry);
        } catch (err) {
          throw failure(err);
        }
      },
    };
  }

  private failure(what: string, err: unknown): RepriseError {
    const code = isConnectionClosed(err) ? 'CLOSED' : (err as { code?: string } | undefined)?.code === 'TIMEOUT' ? 'TIMEOUT' : 'UNAVAILABLE';
    return new RepriseError(code, `${this.name}: ${what}: ${describeError(err)}`, undefined, { cause: err });
  }
}

function isConnectionClosed(err: unknown): boolean {
  return (err as { code?: string } | undefined)?.code === 'CONNECTION_CLOSED';
}

/** A DEL or PURGE marker keeps its revision but has no value. */
function storedValueOf(entry: KvEntry): StoredValue {
  return { revision: entry.revision, value: entry.operation === 'PUT' ? entry.value : null };
}

// ------------------------------------------------------------ in-process

/** The key as every connection of one memory store sees it. */
interface MemoryRegister {
  current: StoredValue | undefined;
  readonly watches: Set<MemoryWatch>;
}

/** Faults of one link: the store as a whole, or one connection to it. */
interface LinkFaults {
  /** Set: every call fails, after this many ms. */
  failAfterMs: number | undefined;
  answerDelayMs: number;
  lostWriteAnswers: number;
  lostAnswerAfterMs: number;
  watchesStalled: boolean;
}

const noFaults = (): LinkFaults => ({ failAfterMs: undefined, answerDelayMs: 0, lostWriteAnswers: 0, lostAnswerAfterMs: 0, watchesStalled: false });

/** An answer goes out on the next turn of the event loop at the earliest, as it would from I/O. */
const later = (ms: number): Promise<unknown> => (ms > 0 ? sleep(ms) : nextTurn());

class MemoryWatch implements ElectionWatch {
  private readonly queue: StoredValue[] = [];
  private waiting: ((result: IteratorResult<StoredValue>) => void) | undefined;
  private ended = false;
  /** Deliveries in order, each after the delay its links had when it was written. */
  private deliveries: Promise<unknown> = Promise.resolve();

  constructor(
    readonly links: readonly LinkFaults[],
    private readonly onStop: (watch: MemoryWatch) => void,
  ) {}

  /** Nothing gets through a stalled or an unavailable link (a partition cuts the watch too); the watch stays open. */
  deliver(stored: StoredValue): void {
    if (this.ended || this.links.some((l) => l.watchesStalled || l.failAfterMs !== undefined)) return;
    const delay = totalDelay(this.links);
    this.deliveries = this.deliveries.then(() => later(delay)).then(() => this.push(stored));
  }

  stop(): void {
    if (this.ended) return;
    this.ended = true;
    this.onStop(this);
    this.waiting?.({ value: undefined, done: true });
    this.waiting = undefined;
  }

  [Symbol.asyncIterator](): AsyncIterator<StoredValue> {
    return {
      next: () => {
        const stored = this.queue.shift();
        if (stored) return Promise.resolve({ value: stored, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: () => {
        this.stop();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private push(stored: StoredValue): void {
    if (this.ended) return;
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting) waiting({ value: stored, done: false });
    else this.queue.push(stored);
  }
}

function totalDelay(links: readonly LinkFaults[]): number {
  return links.reduce((sum, l) => sum + l.answerDelayMs, 0);
}

export interface MemoryElectionStoreOptions {
  /** For logs (default `memory`). */
  readonly name?: string;
}

/**
 * The key in process memory: revisions grow by one per write, the
 * compare-and-set is the NATS store's (expect the last revision, or 0 for a
 * key never written), and a watch gets each write on a later turn of the
 * event loop. Every call takes effect when made; its answer comes on a later
 * turn (or later still, see delayAnswers).
 *
 * Candidates share one store, or each takes a `connect`ion to it: the same
 * key, with faults of its own on top of the store's (a partitioned
 * candidate). Fault controls act on the link they are called on: the store
 * (every caller) or one connection.
 */
export class MemoryElectionStore implements ElectionStore {
  readonly name: string;
  readonly closed = undefined;
  private register: MemoryRegister = { current: undefined, watches: new Set() };
  private readonly faults = noFaults();
  /** This link's faults and those of the links it goes through (a connection: the store's). */
  private links: readonly LinkFaults[] = [this.faults];

  constructor(options: MemoryElectionStoreOptions = {}) {
    this.name = options.name ?? 'memory';
  }

  /** Another way to the same key, with faults of its own (e.g. one candidate's, to partition it). */
  connect(name: string): MemoryElectionStore {
    const connection = new MemoryElectionStore({ name: `${this.name}/${name}` });
    connection.register = this.register;
    connection.links = [...this.links, connection.faults];
    return connection;
  }

  read(): Promise<StoredValue | undefined> {
    return this.answer('read', () => this.register.current);
  }

  compareAndSet(value: Uint8Array, expectedRevision: number): Promise<CompareAndSetOutcome> {
    return this.answer(
      'write',
      (): CompareAndSetOutcome => {
        const revision = this.register.current?.revision ?? 0;
        if (revision !== expectedRevision) return CONFLICT;
        const stored: StoredValue = { revision: revision + 1, value: value.slice() };
        this.register.current = stored;
        for (const watch of this.register.watches) watch.deliver(stored);
        return { kind: 'written', revision: stored.revision };
      },
      (outcome) => outcome.kind === 'written',
    );
  }

  watch(): Promise<ElectionWatch> {
    return this.answer('watch', () => {
      const watch = new MemoryWatch(this.links, (w) => this.register.watches.delete(w));
      this.register.watches.add(watch);
      if (this.register.current) watch.deliver(this.register.current);
      return watch;
    });
  }

  // ------------------------------------------------------------ faults

  /** Every call fails until makeAvailable: at once (UNAVAILABLE), or after failAfterMs (TIMEOUT: a store that hangs). Open watches get nothing meanwhile. */
  makeUnavailable(failAfterMs = 0): void {
    this.faults.failAfterMs = failAfterMs;
  }

  makeAvailable(): void {
    this.faults.failAfterMs = undefined;
  }

  /** Every answer, and every watch delivery, comes `ms` later (0: no delay). The call itself still takes effect at once. */
  delayAnswers(ms: number): void {
    this.faults.answerDelayMs = ms;
  }

  /** The next `count` writes that take effect fail for their caller anyway (TIMEOUT after afterMs): their answers are lost. */
  loseWriteAnswers(count = 1, afterMs = 0): void {
    this.faults.lostWriteAnswers = count;
    this.faults.lostAnswerAfterMs = afterMs;
  }

  /** Open watches stay open but get nothing written meanwhile (a NATS watch whose consumer was lost), until called with false. */
  stallWatches(stalled = true): void {
    this.faults.watchesStalled = stalled;
  }

  /** End the watches opened through this link (their callers watch again). */
  endWatches(): void {
    for (const watch of this.register.watches) if (watch.links.includes(this.faults)) watch.stop();
  }

  /** Clear this link's faults. */
  heal(): void {
    Object.assign(this.faults, noFaults());
  }

  /** Take effect now, answer on a later turn, as this link's faults (and those it goes through) say. */
  private async answer<T>(what: string, effect: () => T, answerMayBeLost?: (result: T) => boolean): Promise<T> {
    const down = this.links.find((l) => l.failAfterMs !== undefined);
    if (down) {
      const afterMs = down.failAfterMs!;
      await later(afterMs);
      throw new RepriseError(afterMs > 0 ? 'TIMEOUT' : 'UNAVAILABLE', `${this.name}: ${what}: the store is unavailable`);
    }
    const result = effect();
    const losing = answerMayBeLost?.(result) ? this.links.find((l) => l.lostWriteAnswers > 0) : undefined;
    if (losing) {
      losing.lostWriteAnswers--;
      await later(losing.lostAnswerAfterMs);
      throw new RepriseError('TIMEOUT', `${this.name}: ${what}: the answer was lost (the write took effect)`);
    }
    await later(totalDelay(this.links));
    return result;
  }
}
