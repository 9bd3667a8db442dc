/**
 * The meta leader election: one leader among the meta replicas, elected on
 * one key of an ElectionStore (election-store.ts): in production a NATS
 * JetStream KV bucket (Raft-replicated with R3), in the cluster simulation an
 * in-process register. An epoch grows by one on every takeover and a lease
 * the leader can check synchronously before it acts. All of the logic below
 * is here, once; a store only reads, compare-and-sets and watches the key.
 *
 * ## The record
 * The key holds `{ leader, epoch, incarnation, nonce, renewedAt, resigned? }`
 * (JSON). `leader` is the candidate id, `incarnation` a random id of this
 * MetaElection object (a restarted process with the same candidate id is
 * another incarnation), `nonce` a counter of its writes (to recognise a write
 * whose answer was lost), `renewedAt` wall-clock time for display only: no
 * decision reads it. A resigned leader leaves `{ leader: null, epoch,
 * resigned: true }`: a tombstone that keeps the epoch.
 *
 * ## Safety
 * Every write is a compare-and-set on the key's revision, so the key's
 * revisions form one sequence in which each write knew its predecessor. On
 * NATS the CAS is a publish to the key's subject that expects the stream's
 * last sequence to be that revision (or, for a key never written, the key to
 * have no message), not `kv.update`: see NatsKvElectionStore.compareAndSet
 * for why (nats-server 2.9's clustered `kv.update` lets concurrent updates of
 * one revision all win). The bucket must therefore hold this key alone.
 *
 * 1. *One winner per epoch.* A takeover from revision r writes epoch
 *    `epoch(r) + 1`; a renewal or a tombstone keeps its epoch. Two takeovers
 *    from r cannot both succeed (CAS), and a takeover from an older revision
 *    fails (r is no longer last). Epochs therefore never decrease along the
 *    revisions, and each epoch is introduced by exactly one write: its
 *    winner. (A floor, `minEpoch`, lets a caller that knows a higher epoch,
 *    e.g. from the meta log, keep epochs above it even if the key was lost.)
 *
 * 2. *Leases do not overlap.* Clocks are local and monotonic
 *    (`performance.now()`); no two processes compare timestamps.
 *    - The leader sends a renewal (CAS on its own last revision) at local time
 *      s. If it succeeds, its lease runs to s + leaseMs: from the moment it
 *      SENT, not from the answer. It acts only while `leaseValidFor() > 0`
 *      (and the meta asks that, with a margin for what it is about to do,
 *      before each action).
 *    - A candidate that sees a revision r (watch or read) at its local time o
 *      saw it after it was written, and it was written after its leader sent
 *      it: real(o) >= real(s). The candidate may try a takeover only after r
 *      has stayed the last revision it knows for leaseMs + marginMs since o,
 *      and its takeover is a CAS on r: if the leader renewed meanwhile, it
 *      fails.
 *    - So a takeover from r succeeds, if at all, at a real time at least
 *      (leaseMs + marginMs) of the candidate's clock after real(s), while the
 *      leader's lease from r ends leaseMs of the leader's clock after real(s).
 *      The old lease ends first as long as the two clocks' rates differ by
 *      less than marginMs / leaseMs (default 20%). Only rates matter; the
 *      clocks never need to agree. A stale read or a late watch event only
 *      makes o later (safe); a lost watch only makes the CAS fail.
 *    - A renewal whose answer is lost (timeout) may still have been written.
 *      The leader keeps its lease from its last CONFIRMED send; when a later
 *      CAS meets a revision it does not know, it reads the key: if the value
 *      is its own write (incarnation + nonce), its lease runs from that
 *      write's send time; otherwise it is deposed. Without a confirmed
 *      renewal it loses the lease at the deadline, whatever the reason (KV
 *      without quorum, timeouts, a paused process): a leader never leads past
 *      s + leaseMs of its last successful CAS.
 *    - `isLeader()` and `leaseValidFor()` read the clock, not only a flag: a
 *      process that was stopped (SIGSTOP) and resumes is no longer leader by
 *      the first instruction it runs, before any timer told it so. A deposed
 *      leader never leads at that epoch again; it may win a later one.
 * 3. *Resign* first steps down (isLeader() is false from that instruction),
 *    then writes the tombstone (CAS on its own revision). Nobody acts on that
 *    epoch after the tombstone, so candidates may take over at once, without
 *    waiting out the lease. The resigner itself waits the normal
 *    leaseMs + marginMs before it competes again, so another candidate wins.
 *    A candidate that finds its own incarnation's value there while not
 *    leading (it lost its lease, e.g. the KV was down) also takes over at
 *    once: nobody else acts at that epoch, and it knows it does not.
 *
 * What this does not cover: an action the leader began before its lease
 * ended and whose effect lands after (an append in flight). The meta log's
 * epoch markers fence those: every entry carries its epoch and readers drop a
 * lower epoch's entries after a higher marker.
 *
 * Liveness: store errors (on NATS: no JetStream quorum, timeouts, 503) are
 * retried with backoff; the key is also read every `pollMs` while a
 * candidate, so a watch that stalls (its consumer lost with a server) delays
 * nothing by more than that.
 */
import { RepriseError } from '../errors.js';
import { stderrLogger, type TransportLogger } from '../transport/transport.js';
import { describeError as describe, isStoreClosed, NatsKvElectionStore, type ElectionStore, type ElectionWatch, type NatsKvElectionStoreOptions, type StoredValue } from './election-store.js';

/** What an election needs whatever holds its key. */
export interface MetaElectionBaseOptions {
  /** This candidate's id (unique among live candidates), e.g. the meta replica's name. */
  readonly candidateId: string;
  /** How long a successful renewal lets the leader lead, from when it was sent. */
  readonly leaseMs: number;
  /** The leader renews this often (well under leaseMs: a third or less). */
  readonly renewMs: number;
  /** Added to leaseMs before a candidate takes over: covers clock rate differences (default 20% of leaseMs, at least 50). */
  readonly marginMs?: number;
  /** A candidate reads the key at least this often, besides the watch (default half of leaseMs). */
  readonly pollMs?: number;
  /** Backoff after a store error: first wait and cap (default 25 ms, then doubling up to renewMs). */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** Takeovers win epochs above this (e.g. the highest meta epoch in the meta log). Default 0. */
  readonly minEpoch?: number;
  readonly logger?: TransportLogger;
  /** Listeners attached before the election starts, so none misses the first event. */
  readonly on?: Partial<{ [K in keyof ElectionEvents]: ElectionEvents[K] }>;
  /** Faults for tests (see ElectionTestHooks). */
  readonly testHooks?: ElectionTestHooks;
}

/**
 * An election on a NATS JetStream KV bucket: `start` opens the
 * NatsKvElectionStore, with requestTimeoutMs defaulting to half of leaseMs,
 * at most 2000.
 */
export interface MetaElectionOptions extends MetaElectionBaseOptions, NatsKvElectionStoreOptions {
  readonly store?: undefined;
}

/** An election on a store given ready: the simulation's MemoryElectionStore, or a NatsKvElectionStore opened beforehand. */
export interface MetaElectionOnStoreOptions extends MetaElectionBaseOptions {
  readonly store: ElectionStore;
}

/** Who leads, as this candidate last observed it. `leaderId` null: the last leader resigned. */
export interface LeaderInfo {
  readonly leaderId: string | null;
  readonly epoch: number;
  readonly revision: number;
  /** Whether that leader is this candidate (this incarnation). */
  readonly self: boolean;
  /** The leader's wall clock at its last renewal: display only. */
  readonly renewedAt: string | undefined;
  /** Local monotonic time (performance.now()) this revision was first seen. */
  readonly observedAt: number;
}

export type DeposeReason =
  /** No renewal succeeded before the lease ended (KV unavailable, paused, too slow). */
  | 'lease-expired'
  /** The key holds someone else's write: a renewal's CAS failed, or the watch showed it. */
  | 'superseded'
  | 'resigned'
  | 'closed'
  /** The store is gone for good (a NATS store: its connection was closed) under the election. */
  | 'connection-closed';

export interface ElectedEvent {
  readonly epoch: number;
  /** Local monotonic time the winning CAS was confirmed. */
  readonly at: number;
  /** When the winning CAS was sent; the lease runs from here. */
  readonly sentAt: number;
  readonly leaseEnd: number;
}

export interface DeposedEvent {
  readonly epoch: number;
  readonly reason: DeposeReason;
  /** Local monotonic time of the step down. */
  readonly at: number;
  /** Where the lease would have ended (it ended earlier for every reason but lease-expired). */
  readonly leaseEnd: number;
  readonly detail?: string;
}

export interface ElectionEvents {
  elected(event: ElectedEvent): void;
  deposed(event: DeposedEvent): void;
  /** A new leader or epoch observed (including this candidate's own win, and a resignation: leaderId null). */
  leaderChanged(info: LeaderInfo): void;
  /** The time from the previous leader's last renewal seen to a new epoch seen (or won), in ms. */
  electionTime(ms: number, info: LeaderInfo): void;
}

export interface ElectionStats {
  /** Takeovers this candidate won. */
  electionsWon: number;
  /** Takeovers it tried and lost to another write. */
  electionsLost: number;
  /** New epochs observed after the first observation. */
  leaderChanges: number;
  /** Times it stepped down, any reason. */
  deposed: number;
  renewals: number;
  /** Renewal attempts that failed with a store error (retried). */
  renewalErrors: number;
  /** The last election time observed (see the electionTime event), if any. */
  lastElectionMs: number | undefined;
}

/**
 * Faults for tests, given to `start`: `pauseRenewals` stops the candidate's
 * writes, renewals and takeovers (as a leader, its lease keeps running out),
 * as if its process were stopped; `freeze` stops everything the
 * election does on its own (loop, lease timer, watch handling), as SIGSTOP
 * would, until `thaw`; `forceRenewal` sends a renewal now at the epoch and
 * revision the candidate last led with, whatever its lease says (as a stale
 * leader would), and reports what the store answered.
 */
export class ElectionTestHooks {
  renewalsPaused = false;
  frozen = false;
  /** @internal */ onThaw: (() => void) | undefined;
  /** @internal */ forceRenewalImpl: (() => Promise<'ok' | 'conflict' | 'error'>) | undefined;

  pauseRenewals(): void {
    this.renewalsPaused = true;
  }
  resumeRenewals(): void {
    this.renewalsPaused = false;
  }
  freeze(): void {
    this.frozen = true;
  }
  thaw(): void {
    this.frozen = false;
    this.onThaw?.();
  }
  forceRenewal(): Promise<'ok' | 'conflict' | 'error'> {
    if (!this.forceRenewalImpl) return Promise.reject(new Error('the election has not started'));
    return this.forceRenewalImpl();
  }
}

interface Record_ {
  readonly leader: string | null;
  readonly epoch: number;
  readonly incarnation: string;
  readonly nonce: number;
  readonly renewedAt: string;
  readonly resigned?: boolean;
}

interface Observation {
  readonly revision: number;
  /** Undefined: the key does not exist (never written, or purged). */
  readonly record: Record_ | undefined;
  /** A DEL/PURGE marker or an unreadable value: occupied, no usable record. */
  readonly foreign: boolean;
  readonly seenAt: number;
}

type WriteOutcome = { kind: 'ok'; revision: number; sentAt: number } | { kind: 'conflict' } | { kind: 'error'; error: unknown } | { kind: 'closed' };

const now = () => performance.now();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The record a stored revision holds; undefined for a delete marker or a value that is not a record. */
function decodeRecord(stored: StoredValue): Record_ | undefined {
  if (stored.value === null) return undefined;
  try {
    const value = JSON.parse(decoder.decode(stored.value)) as Partial<Record_>;
    if (typeof value.epoch !== 'number' || !Number.isInteger(value.epoch) || typeof value.incarnation !== 'string' || typeof value.nonce !== 'number') return undefined;
    if (value.leader !== null && typeof value.leader !== 'string') return undefined;
    return value as Record_;
  } catch {
    return undefined;
  }
}

function randomId(): string {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

export class MetaElection {
  readonly candidateId: string;
  readonly incarnation = randomId();
  readonly leaseMs: number;
  readonly renewMs: number;
  readonly marginMs: number;
  private readonly pollMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly minEpoch: number;
  private readonly logger: TransportLogger;
  private readonly hooks: ElectionTestHooks | undefined;
  private readonly listeners: { [K in keyof ElectionEvents]: Set<ElectionEvents[K]> } = {
    elected: new Set(),
    deposed: new Set(),
    leaderChanged: new Set(),
    electionTime: new Set(),
  };

  private role: 'candidate' | 'leader' = 'candidate';
  private closed = false;
  /** Bumped on every step up or down: a result of an older term is dropped. */
  private term = 0;
  private myEpoch = 0;
  private myRevision = 0;
  private leaseEnd = 0;
  private nextRenewAt = 0;
  private renewFailures = 0;
  private leaseTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last epoch and revision this candidate led with (for forceRenewal). */
  private lastLed: { epoch: number; revision: number } | undefined;

  private nonce = 0;
  /** Writes whose answer was lost: nonce -> send time. */
  private readonly unanswered = new Map<number, number>();
  private obs: Observation | undefined;
  private lastReadAt = -Infinity;
  private forceRead = true;
  /** Checking reads in a row that found a revision below the one we know. */
  private lowerReads = 0;
  private reading: Promise<boolean> | undefined;
  private highestEpoch = 0;
  /** No takeover before this (after resigning). */
  private holdOffUntil = 0;
  private reported: { leaderId: string | null; epoch: number } | undefined;
  private readonly statsValue: ElectionStats = {
    electionsWon: 0,
    electionsLost: 0,
    leaderChanges: 0,
    deposed: 0,
    renewals: 0,
    renewalErrors: 0,
    lastElectionMs: undefined,
  };

  private readonly sleepers = new Set<() => void>();
  private watcher: ElectionWatch | undefined;
  private watchReady = false;
  private readonly frozenQueue: (() => void)[] = [];
  private loops: Promise<void>[] = [];

  private constructor(
    private readonly store: ElectionStore,
    options: MetaElectionBaseOptions,
  ) {
    this.candidateId = options.candidateId;
    this.leaseMs = options.leaseMs;
    this.renewMs = options.renewMs;
    this.marginMs = options.marginMs ?? Math.max(50, Math.round(options.leaseMs * 0.2));
    this.pollMs = options.pollMs ?? Math.round(options.leaseMs / 2);
    this.backoffInitialMs = options.backoffInitialMs ?? 25;
    this.backoffMaxMs = options.backoffMaxMs ?? options.renewMs;
    this.minEpoch = options.minEpoch ?? 0;
    this.logger = options.logger ?? stderrLogger;
    this.hooks = options.testHooks;
    for (const [event, fn] of Object.entries(options.on ?? {})) {
      if (fn) (this.listeners[event as keyof ElectionEvents] as Set<unknown>).add(fn);
    }
  }

  /**
   * Start campaigning on `store`, or on a NATS KV bucket: then first bind
   * (or create) it, retrying NATS errors with backoff.
   */
  static async start(options: MetaElectionOptions | MetaElectionOnStoreOptions): Promise<MetaElection> {
    const { leaseMs, renewMs } = options;
    if (!options.candidateId) throw new RepriseError('INVALID_ARGUMENT', 'meta election: candidateId is required');
    if (!(leaseMs > 0) || !(renewMs > 0) || renewMs >= leaseMs) {
      throw new RepriseError('INVALID_ARGUMENT', `meta election: renewMs (${renewMs}) must be positive and below leaseMs (${leaseMs})`);
    }
    if (options.marginMs !== undefined && !(options.marginMs >= 0)) throw new RepriseError('INVALID_ARGUMENT', `meta election: marginMs (${options.marginMs}) must be >= 0`);
    const store =
      options.store ??
      (await NatsKvElectionStore.open({ ...options, requestTimeoutMs: options.requestTimeoutMs ?? Math.min(2000, Math.round(leaseMs / 2)) }));
    const election = new MetaElection(store, options);
    election.begin();
    return election;
  }

  // ------------------------------------------------------------ queries

  /** Whether this candidate leads now: elected, not deposed, and its lease has not run out by the clock. */
  isLeader(): boolean {
    return !this.closed && this.role === 'leader' && now() < this.leaseEnd;
  }

  /** How long the lease still holds after `marginMs` from now (ms; 0 if not leader). Check before each action. */
  leaseValidFor(marginMs = 0): number {
    if (!this.isLeader()) return 0;
    return Math.max(0, this.leaseEnd - now() - marginMs);
  }

  /** The epoch this candidate leads at now, or undefined if it does not lead. */
  epoch(): number | undefined {
    return this.isLeader() ? this.myEpoch : undefined;
  }

  /** Who leads, as last observed (for forwarding a follower's callers to the leader). */
  leader(): LeaderInfo | undefined {
    return this.obs?.record ? this.infoOf(this.obs) : undefined;
  }

  /** Whether the watch on the key is established (else changes are seen by polling, every pollMs). */
  watching(): boolean {
    return this.watchReady;
  }

  stats(): Readonly<ElectionStats> {
    return { ...this.statsValue };
  }

  on<K extends keyof ElectionEvents>(event: K, fn: ElectionEvents[K]): () => void {
    this.listeners[event].add(fn);
    return () => this.listeners[event].delete(fn);
  }

  // ------------------------------------------------------------ actions

  /**
   * Step down now and leave a tombstone (same epoch, no leader) so another
   * candidate takes over without waiting out the lease. This candidate stays
   * a candidate but waits leaseMs + marginMs before it competes again.
   */
  async resign(): Promise<void> {
    if (this.role !== 'leader') return;
    const epoch = this.myEpoch;
    const deadline = this.leaseEnd;
    let revision = this.myRevision;
    this.holdOffUntil = now() + this.leaseMs + this.marginMs;
    this.stepDown('resigned');
    // The tombstone: CAS on our revision. If a renewal of ours that was in
    // flight landed first, the CAS fails on our own value: write on that one.
    for (let attempt = 0; attempt < 10 && !this.closed && now() < deadline + this.leaseMs; attempt++) {
      const outcome = await this.write({ leader: null, epoch, resigned: true }, revision);
      if (outcome.kind === 'ok' || outcome.kind === 'closed') return;
      if (outcome.kind === 'error') {
        await this.pause(this.backoff(attempt + 1));
        continue;
      }
      let stored: StoredValue | undefined;
      try {
        stored = await this.store.read();
      } catch {
        continue;
      }
      const record = stored && decodeRecord(stored);
      if (!stored || !record || record.incarnation !== this.incarnation || record.epoch !== epoch) return;
      revision = stored.revision;
    }
  }

  /** Stop: resign first if leading (unless `resign: false`), stop watching. Does not close the connection. */
  async close(options: { resign?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    if (options.resign !== false && this.role === 'leader') await this.resign().catch(() => {});
    this.shutdown('closed');
    await Promise.allSettled(this.loops);
  }

  // ------------------------------------------------------------ internals

  private begin(): void {
    if (this.hooks) {
      this.hooks.onThaw = () => {
        for (const fn of this.frozenQueue.splice(0)) fn();
        this.wake();
      };
      this.hooks.forceRenewalImpl = async () => {
        const led = this.lastLed;
        if (!led) return 'error';
        const outcome = await this.write({ leader: this.candidateId, epoch: led.epoch }, led.revision);
        return outcome.kind === 'ok' ? 'ok' : outcome.kind === 'conflict' ? 'conflict' : 'error';
      };
    }
    void this.store.closed?.then(() => this.shutdown('connection-closed'));
    this.loops = [this.watchLoop(), this.runLoop()];
  }

  private shutdown(reason: 'closed' | 'connection-closed'): void {
    if (this.closed) return;
    if (this.role === 'leader') this.stepDown(reason);
    this.closed = true;
    clearTimeout(this.leaseTimer);
    this.watcher?.stop();
    this.wake();
  }

  private emit<K extends keyof ElectionEvents>(event: K, ...args: Parameters<ElectionEvents[K]>): void {
    for (const fn of this.listeners[event]) {
      try {
        (fn as (...a: Parameters<ElectionEvents[K]>) => void)(...args);
      } catch (err) {
        this.logger.error({ event, err: describe(err) }, 'meta election: a listener threw');
      }
    }
  }

  /** Run `fn` now, or once thawed (as a stopped process would on SIGCONT). */
  private whenRunning(fn: () => void): void {
    if (this.hooks?.frozen) this.frozenQueue.push(fn);
    else fn();
  }

  private wake(): void {
    const sleepers = [...this.sleepers];
    this.sleepers.clear();
    for (const done of sleepers) done();
  }

  /** Sleep up to `ms`, or until woken (an observation, a step down, close, thaw). */
  private pause(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.sleepers.add(done);
    });
  }

  private async gate(): Promise<void> {
    while (this.hooks?.frozen && !this.closed) await this.pause(50);
  }

  private backoff(failures: number): number {
    const base = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** Math.max(0, failures - 1));
    return base * (0.5 + Math.random() / 2);
  }

  private infoOf(obs: Observation): LeaderInfo {
    return {
      leaderId: obs.record?.leader ?? null,
      epoch: obs.record?.epoch ?? 0,
      revision: obs.revision,
      self: obs.record !== undefined && obs.record.incarnation === this.incarnation && obs.record.leader !== null,
      renewedAt: obs.record?.renewedAt,
      observedAt: obs.seenAt,
    };
  }

  /**
   * A revision seen (watch, read, or our own write). Older or equal revisions
   * are ignored: a read can be stale, and a stale read going backwards would
   * only restart the wait. Only reads made to check (`reset`: after a failed
   * CAS or a step down) that keep finding a lower revision, three in a row,
   * are believed (a bucket deleted and made again).
   */
  private observe(stored: StoredValue | undefined, reset = false): void {
    const revision = stored?.revision ?? 0;
    if (this.obs && revision === this.obs.revision) return;
    if (this.obs && revision < this.obs.revision) {
      if (!reset || ++this.lowerReads < 3) return;
    }
    this.lowerReads = 0;
    const record = stored && decodeRecord(stored);
    const previous = this.obs;
    const obs: Observation = { revision, record, foreign: stored !== undefined && record === undefined, seenAt: now() };
    this.obs = obs;
    if (record) this.highestEpoch = Math.max(this.highestEpoch, record.epoch);
    // Someone else's write replaced ours. One of our own renewals (our
    // incarnation, our epoch: nobody else writes those) is not that: its
    // answer is on its way, or lost (the next CAS finds out).
    const ours = record !== undefined && record.incarnation === this.incarnation && record.epoch === this.myEpoch && record.leader === this.candidateId;
    if (this.role === 'leader' && revision !== this.myRevision && !ours) {
      this.stepDown('superseded', `revision ${revision} (${record ? `${record.leader ?? 'resigned'} at epoch ${record.epoch}` : 'not a leader record'}) replaced ours (${this.myRevision})`);
    }
    this.report(obs, previous);
    this.wake();
  }

  /** leaderChanged / electionTime / stats for a new observation. */
  private report(obs: Observation, previous: Observation | undefined): void {
    if (!obs.record) return;
    const current = { leaderId: obs.record.leader, epoch: obs.record.epoch };
    const before = this.reported;
    if (before && before.leaderId === current.leaderId && before.epoch === current.epoch) return;
    this.reported = current;
    const info = this.infoOf(obs);
    if (before && current.epoch > before.epoch) {
      this.statsValue.leaderChanges++;
      if (previous) {
        const ms = obs.seenAt - previous.seenAt;
        this.statsValue.lastElectionMs = ms;
        this.emit('electionTime', ms, info);
      }
    }
    this.emit('leaderChanged', info);
  }

  private async watchLoop(): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      try {
        const watcher = await this.store.watch();
        this.watcher = watcher;
        if (this.closed) watcher.stop();
        failures = 0;
        this.watchReady = true;
        for await (const stored of watcher) {
          if (this.closed) break;
          this.whenRunning(() => this.observe(stored));
        }
        this.watchReady = false;
      } catch (err) {
        this.watchReady = false;
        if (isStoreClosed(err)) return this.shutdown('connection-closed');
        failures++;
        if (failures === 1 || failures % 20 === 0) this.logger.warn({ store: this.store.name, failures, err: describe(err) }, 'meta election: watch failed, retrying');
      }
      if (this.closed) return;
      await this.pause(this.backoff(Math.max(1, failures)));
    }
  }

  private async runLoop(): Promise<void> {
    while (!this.closed) {
      await this.gate();
      if (this.closed) return;
      try {
        if (this.role === 'leader') await this.leaderStep();
        else await this.candidateStep();
      } catch (err) {
        this.logger.error({ err: describe(err) }, 'meta election: unexpected error, continuing');
        await this.pause(this.backoff(3));
      }
    }
  }

  /**
   * A CAS write of our record on `revision` (0: the key must not exist).
   * Records the nonce until answered: an error may hide a write that took
   * effect, which a later CAS conflict then finds (ownUnansweredWrite).
   */
  private async write(fields: { leader: string | null; epoch: number; resigned?: boolean }, revision: number): Promise<WriteOutcome> {
    const nonce = ++this.nonce;
    const record: Record_ = { ...fields, incarnation: this.incarnation, nonce, renewedAt: new Date().toISOString() };
    const data = encoder.encode(JSON.stringify(record));
    const sentAt = now();
    this.unanswered.set(nonce, sentAt);
    try {
      const outcome = await this.store.compareAndSet(data, revision);
      this.unanswered.delete(nonce);
      return outcome.kind === 'written' ? { kind: 'ok', revision: outcome.revision, sentAt } : { kind: 'conflict' };
    } catch (err) {
      if (isStoreClosed(err)) {
        this.unanswered.delete(nonce);
        this.shutdown('connection-closed');
        return { kind: 'closed' };
      }
      if (this.unanswered.size > 64) this.unanswered.delete(this.unanswered.keys().next().value!);
      return { kind: 'error', error: err };
    }
  }

  /** `read`, unless one is in flight: then that one. */
  private readOnce(reset: boolean): Promise<boolean> {
    if (!this.reading) {
      this.reading = this.read(reset).finally(() => {
        this.reading = undefined;
      });
    }
    return this.reading;
  }

  /** Read the key; false on a store error. */
  private async read(reset = false): Promise<boolean> {
    this.lastReadAt = now();
    try {
      const stored = await this.store.read();
      await this.gate();
      if (!this.closed) this.observe(stored, reset);
      return true;
    } catch (err) {
      if (isStoreClosed(err)) this.shutdown('connection-closed');
      return false;
    }
  }

  /** If the last observed value is a write of ours whose answer was lost, its send time. */
  private ownUnansweredWrite(): { sentAt: number; record: Record_; revision: number } | undefined {
    const obs = this.obs;
    const record = obs?.record;
    if (!obs || !record || record.incarnation !== this.incarnation) return undefined;
    const sentAt = this.unanswered.get(record.nonce);
    return sentAt === undefined ? undefined : { sentAt, record, revision: obs.revision };
  }

  private async leaderStep(): Promise<void> {
    const term = this.term;
    const t = now();
    if (this.hooks?.renewalsPaused || t < this.nextRenewAt) {
      await this.pause(this.hooks?.renewalsPaused ? this.renewMs : this.nextRenewAt - t);
      return;
    }
    if (now() >= this.leaseEnd) {
      this.stepDown('lease-expired', 'no renewal was due before the lease ended');
      return;
    }
    const outcome = await this.write({ leader: this.candidateId, epoch: this.myEpoch }, this.myRevision);
    await this.gate();
    if (this.term !== term || this.role !== 'leader' || this.closed) return;
    if (outcome.kind === 'ok') {
      this.renewFailures = 0;
      this.statsValue.renewals++;
      this.confirmLease(outcome.sentAt, outcome.revision);
      return;
    }
    if (outcome.kind === 'error') {
      this.renewFailures++;
      this.statsValue.renewalErrors++;
      if (this.renewFailures === 1 || this.renewFailures % 10 === 0) {
        this.logger.warn({ epoch: this.myEpoch, failures: this.renewFailures, err: describe(outcome.error) }, 'meta election: renewal failed, retrying until the lease ends');
      }
      this.nextRenewAt = now() + this.backoff(this.renewFailures);
      return;
    }
    if (outcome.kind === 'closed') return;
    // Conflict: someone wrote since our revision; maybe our own lost answer.
    if (!(await this.readOnce(true))) {
      this.nextRenewAt = now() + this.backoff(++this.renewFailures);
      return;
    }
    if (this.term !== term || this.role !== 'leader') return;
    const own = this.ownUnansweredWrite();
    if (own && own.record.epoch === this.myEpoch && own.record.leader === this.candidateId) {
      this.unanswered.delete(own.record.nonce);
      this.confirmLease(own.sentAt, own.revision);
      return;
    }
    if (this.obs?.revision === this.myRevision) {
      // Refused, yet the key is still at our revision (a stale read, or a
      // write to another key of the bucket): retry until the lease ends.
      this.statsValue.renewalErrors++;
      this.nextRenewAt = now() + this.backoff(++this.renewFailures);
      if (this.renewFailures % 10 === 1) this.logger.warn({ store: this.store.name, revision: this.myRevision }, 'meta election: renewal refused while the key is at our revision: is the bucket used for anything else?');
      return;
    }
    this.stepDown('superseded', `renewal CAS on revision ${this.myRevision} failed: the key is at revision ${this.obs?.revision}`);
  }

  private confirmLease(sentAt: number, revision: number): void {
    for (const [nonce, at] of this.unanswered) if (at <= sentAt) this.unanswered.delete(nonce);
    const leaseEnd = sentAt + this.leaseMs;
    if (now() >= leaseEnd) {
      this.stepDown('lease-expired', 'the renewal was answered after the lease it would give had ended');
      return;
    }
    this.myRevision = revision;
    this.lastLed = { epoch: this.myEpoch, revision };
    this.leaseEnd = leaseEnd;
    this.nextRenewAt = sentAt + this.renewMs;
    this.observeOwn(revision);
    this.armLeaseTimer();
  }

  /** Our own write as an observation (the watch will bring it again, ignored then). */
  private observeOwn(revision: number): void {
    if (this.obs && revision <= this.obs.revision) return;
    const record: Record_ = { leader: this.candidateId, epoch: this.myEpoch, incarnation: this.incarnation, nonce: this.nonce, renewedAt: new Date().toISOString() };
    const previous = this.obs;
    this.obs = { revision, record, foreign: false, seenAt: now() };
    this.highestEpoch = Math.max(this.highestEpoch, this.myEpoch);
    this.report(this.obs, previous);
  }

  private armLeaseTimer(): void {
    clearTimeout(this.leaseTimer);
    const term = this.term;
    this.leaseTimer = setTimeout(
      () =>
        this.whenRunning(() => {
          if (this.term !== term || this.role !== 'leader') return;
          if (now() >= this.leaseEnd) this.stepDown('lease-expired', `no renewal succeeded within ${this.leaseMs} ms`);
          else this.armLeaseTimer();
        }),
      Math.max(0, this.leaseEnd - now()),
    );
  }

  private stepDown(reason: DeposeReason, detail?: string): void {
    if (this.role !== 'leader') return;
    this.role = 'candidate';
    this.term++;
    clearTimeout(this.leaseTimer);
    this.statsValue.deposed++;
    this.forceRead = true;
    const event: DeposedEvent = { epoch: this.myEpoch, reason, at: now(), leaseEnd: this.leaseEnd, ...(detail ? { detail } : {}) };
    this.logger.info({ candidate: this.candidateId, ...event }, 'meta election: stepped down');
    this.emit('deposed', event);
    this.wake();
  }

  private becomeLeader(epoch: number, revision: number, sentAt: number, since: Observation | undefined): void {
    const at = now();
    const leaseEnd = sentAt + this.leaseMs;
    if (at >= leaseEnd) return; // won, but too late to lead: the key holds our value, we take over again at once
    this.role = 'leader';
    this.term++;
    this.myEpoch = epoch;
    this.myRevision = revision;
    this.leaseEnd = leaseEnd;
    this.nextRenewAt = sentAt + this.renewMs;
    this.renewFailures = 0;
    this.lastLed = { epoch, revision };
    this.statsValue.electionsWon++;
    for (const [nonce, t] of this.unanswered) if (t <= sentAt) this.unanswered.delete(nonce);
    this.armLeaseTimer();
    const event: ElectedEvent = { epoch, at, sentAt, leaseEnd };
    this.logger.info({ candidate: this.candidateId, ...event }, 'meta election: elected');
    // Observation first (leaderChanged, electionTime), then elected.
    if (!this.obs || revision > this.obs.revision || this.obs.record?.incarnation !== this.incarnation) {
      const record: Record_ = { leader: this.candidateId, epoch, incarnation: this.incarnation, nonce: this.nonce, renewedAt: new Date().toISOString() };
      const previous = since ?? this.obs;
      this.obs = { revision, record, foreign: false, seenAt: at };
      this.highestEpoch = Math.max(this.highestEpoch, epoch);
      this.report(this.obs, previous);
    }
    this.emit('elected', event);
  }

  /** When this candidate may try to take over the observed revision (ms, local clock). */
  private takeoverAt(obs: Observation): number {
    const record = obs.record;
    let at: number;
    if (obs.revision === 0) at = obs.seenAt; // never written
    else if (record && record.incarnation !== this.incarnation && record.resigned) at = obs.seenAt; // a tombstone: nobody leads
    else if (record && record.incarnation === this.incarnation && !record.resigned) at = obs.seenAt; // our own stale leadership
    else at = obs.seenAt + this.leaseMs + this.marginMs;
    return Math.max(at, this.holdOffUntil);
  }

  private async candidateStep(): Promise<void> {
    const term = this.term;
    // A takeover of ours whose answer was lost may have landed (a higher
    // epoch than we ever led at: a late renewal of a lost term is not adopted).
    const own = this.ownUnansweredWrite();
    if (own && own.record.leader === this.candidateId && !own.record.resigned && own.record.epoch > (this.lastLed?.epoch ?? 0)) {
      this.unanswered.delete(own.record.nonce);
      this.becomeLeader(own.record.epoch, own.revision, own.sentAt, undefined);
      if (this.role === 'leader') return;
    }
    // A read is needed before anything (none yet, or after a failed CAS or a
    // step down), but a newer revision from the watch meanwhile will do: a
    // slow read (a fresh stream's first reads time out) does not hold us.
    if (this.forceRead || !this.obs) {
      const before = this.obs?.revision;
      const result = await Promise.race([this.readOnce(this.forceRead), this.pause(this.pollMs).then(() => undefined)]);
      if (result === true || (this.obs !== undefined && this.obs.revision !== before)) this.forceRead = false;
      else if (result === false) await this.pause(this.backoff(3));
      return;
    }
    // Besides the watch, a read every pollMs, in the background.
    const t = now();
    if (t - this.lastReadAt >= this.pollMs) void this.readOnce(false);
    const obs = this.obs;
    const at = this.takeoverAt(obs);
    if (this.hooks?.renewalsPaused) {
      await this.pause(this.renewMs);
      return;
    }
    if (t < at) {
      await this.pause(Math.min(at - t, Math.max(5, this.lastReadAt + this.pollMs - t)));
      return;
    }
    const epoch = Math.max(obs.record?.epoch ?? 0, this.highestEpoch, this.minEpoch) + 1;
    const outcome = await this.write({ leader: this.candidateId, epoch }, obs.revision);
    await this.gate();
    if (this.closed || this.term !== term) return;
    if (outcome.kind === 'ok') {
      this.becomeLeader(epoch, outcome.revision, outcome.sentAt, obs);
      return;
    }
    if (outcome.kind === 'conflict') this.statsValue.electionsLost++;
    else if (outcome.kind === 'error') await this.pause(this.backoff(2));
    this.forceRead = true;
  }
}
