/**
 * Where the meta leader election (meta-election.ts) keeps its one key: a
 * register with compare-and-set on a revision, read and watched. The election
 * logic is written once against `ElectionStore`, so that a backend other
 * than NATS (the cluster simulation's) can hold the key:
 *
 * - `NatsKvElectionStore`: a NATS JetStream KV bucket (production).
 *
 * A failed call rejects with a RepriseError: code CLOSED when the store is
 * gone for good (the election stops), any other code is transient (the
 * election retries). A refused compare-and-set is not a failure: it is the
 * `conflict` outcome.
 */
import type { JetStreamClient, KV, KvEntry, NatsConnection } from 'nats';
import { setTimeout as sleep } from 'node:timers/promises';
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
