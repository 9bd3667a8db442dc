import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FollowerApply, ReplayProgress, Transition } from '../actors/context.js';
import { describeMachine, MACHINES } from '../actors/diagram.js';
import type { LogStore } from '../wal/log-store.js';
import type { MemoryStatus, RuntimeStatus } from './runtime-status.js';

/**
 * What a runtime shows of itself while it runs: Prometheus metrics (one
 * registry per runtime, never prom-client's global one, so two runtimes in a
 * process do not mix) and a stream of live events (machine transitions and
 * replay progress) for the dashboard. Fed by the actors' hooks and by a thin
 * wrapper around the log store; costs a few counter updates per WAL append.
 */

export type RuntimeEvent =
  | { readonly type: 'transition'; readonly transition: Transition }
  | { readonly type: 'replay'; readonly progress: ReplayProgress };

export type RuntimeEventListener = (event: RuntimeEvent) => void;

/** How many transitions the runtime remembers for a client that connects later. */
export const RECENT_TRANSITIONS = 200;

const SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const FLUSH_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const REPLAY_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];
const BATCH_RECORD_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];
const BATCH_BYTE_BUCKETS = [256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304];

type ActorKind = Transition['kind'];
const KINDS: readonly ActorKind[] = ['node', 'shard', 'region'];

export interface ObserverHooks {
  readonly onTransition?: (t: Transition) => void;
  readonly onReplayProgress?: (p: ReplayProgress) => void;
  readonly onFollowerApply?: (a: FollowerApply) => void;
}

export class RuntimeObserver {
  /** This runtime's Prometheus registry (`registry.metrics()` is the text exposition). */
  readonly registry = new Registry();
  private readonly listeners = new Set<RuntimeEventListener>();
  private readonly recent: Transition[] = [];
  private status: (() => RuntimeStatus) | undefined;

  private readonly appendSeconds: Histogram;
  private readonly appendBatchRecords: Histogram;
  private readonly appendBatchBytes: Histogram;
  private readonly appends: Counter<'topic'>;
  private readonly appendedRecords: Counter<'topic'>;
  private readonly appendedBytes: Counter<'topic'>;
  private readonly appendFailures: Counter<'topic'>;
  private readonly replayEntries: Counter<'shard'>;
  private readonly replayBytes: Counter<'shard'>;
  private readonly replayRemaining: Gauge<'shard'>;
  private readonly replaySeconds: Histogram;
  private readonly flushes: Counter<'actor' | 'result'>;
  private readonly flushSeconds: Histogram<'actor'>;
  private readonly transitions: Counter<'actor' | 'from' | 'to'>;
  private readonly followerApplyLag: Histogram;
  /** Per shard: entries and bytes of its replay already counted (progress reports are cumulative). */
  private readonly replayed = new Map<number, { entries: number; bytes: number }>();
  /** When each actor entered its current state (for flush and replay durations). */
  private readonly enteredAt = new Map<string, number>();

  constructor(private readonly hooks: ObserverHooks = {}) {
    const registers = [this.registry];
    this.appendSeconds = new Histogram({
      name: 'reprise_wal_append_duration_seconds',
      help: 'Time for one WAL append (a group-commit batch) to become durable',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.appendBatchRecords = new Histogram({
      name: 'reprise_wal_append_batch_records',
      help: 'Records per WAL append: the group-commit batch size (an entry is one record unless larger than wal.maxBatchBytes)',
      buckets: BATCH_RECORD_BUCKETS,
      registers,
    });
    this.appendBatchBytes = new Histogram({
      name: 'reprise_wal_append_batch_bytes',
      help: 'Bytes per WAL append (a group-commit batch)',
      buckets: BATCH_BYTE_BUCKETS,
      registers,
    });
    this.appends = new Counter({ name: 'reprise_wal_appends_total', help: 'Durable WAL appends, by topic', labelNames: ['topic'], registers });
    this.appendedRecords = new Counter({ name: 'reprise_wal_appended_records_total', help: 'Records made durable in the WAL, by topic', labelNames: ['topic'], registers });
    this.appendedBytes = new Counter({ name: 'reprise_wal_appended_bytes_total', help: 'Bytes made durable in the WAL, by topic', labelNames: ['topic'], registers });
    this.appendFailures = new Counter({ name: 'reprise_wal_append_failures_total', help: 'WAL appends that failed (their entries were rejected), by topic', labelNames: ['topic'], registers });
    this.replayEntries = new Counter({ name: 'reprise_replay_entries_total', help: 'WAL entries read by replay, by shard', labelNames: ['shard'], registers });
    this.replayBytes = new Counter({ name: 'reprise_replay_bytes_total', help: 'WAL bytes read by replay, by shard', labelNames: ['shard'], registers });
    this.replayRemaining = new Gauge({
      name: 'reprise_replay_remaining_records',
      help: 'WAL records a replaying shard still has to read (0 once it serves)',
      labelNames: ['shard'],
      registers,
    });
    this.replaySeconds = new Histogram({
      name: 'reprise_replay_duration_seconds',
      help: 'Time shards spent in the replaying state',
      buckets: REPLAY_BUCKETS,
      registers,
    });
    this.flushes = new Counter({
      name: 'reprise_flushes_total',
      help: 'Flushes (memtables to SSTs) that ended, by actor kind and result',
      labelNames: ['actor', 'result'],
      registers,
    });
    this.flushSeconds = new Histogram({
      name: 'reprise_flush_duration_seconds',
      help: 'Time spent in the flushing state, by actor kind',
      labelNames: ['actor'],
      buckets: FLUSH_BUCKETS,
      registers,
    });
    this.transitions = new Counter({
      name: 'reprise_transitions_total',
      help: 'Machine transitions, by actor kind and states',
      labelNames: ['actor', 'from', 'to'],
      registers,
    });
    this.followerApplyLag = new Histogram({
      name: 'reprise_follower_apply_lag_seconds',
      help: 'Time from the append of a WAL entry to its apply by a hot-standby follower on this node',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    // State gauges are read from the live status at scrape time: always exact.
    for (const kind of KINDS) {
      const states = describeMachine(MACHINES[kind]!).states.map((s) => s.name);
      const observer = this;
      new Gauge({
        name: `reprise_${kind}s`,
        help: `${kind[0]!.toUpperCase()}${kind.slice(1)}s of this runtime by machine state (one series per state)`,
        labelNames: ['state'],
        registers,
        collect() {
          const counts = new Map(states.map((s) => [s, 0]));
          for (const actor of observer.actorsOf(kind)) counts.set(actor, (counts.get(actor) ?? 0) + 1);
          for (const [state, n] of counts) this.set({ state }, n);
        },
      });
    }
    const observer = this;
    new Gauge({
      name: 'reprise_memtable_bytes',
      help: 'Bytes held in region memtables (not yet flushed to SSTs)',
      registers,
      collect() {
        let bytes = 0;
        for (const node of observer.status?.().nodes ?? []) for (const shard of node.shards) for (const r of shard.regions) bytes += r.memtableBytes;
        this.set(bytes);
      },
    });
    const memory = (): MemoryStatus | undefined => observer.status?.().memory;
    new Gauge({
      name: 'reprise_memory_budget_bytes',
      help: 'Configured memory budgets: memtable (per node, flushes past it) and cache (SST indexes and decoded chunks, half each)',
      labelNames: ['kind'],
      registers,
      collect() {
        const m = memory();
        if (!m) return;
        this.set({ kind: 'memtable' }, m.memtableBudgetBytes);
        this.set({ kind: 'cache' }, m.cacheBudgetBytes);
      },
    });
    new Gauge({
      name: 'reprise_cache_bytes',
      help: 'Bytes held by the SST cache (SST indexes and decoded chunks)',
      registers,
      collect() {
        const m = memory();
        if (m) this.set(m.cacheBytes);
      },
    });
    new Gauge({
      name: 'reprise_result_rows_in_flight',
      help: 'Query result rows (or groups) held now by queries in flight, and their bound (memory.maxResultRowsInFlight)',
      labelNames: ['kind'],
      registers,
      collect() {
        const m = memory();
        if (!m) return;
        this.set({ kind: 'held' }, m.resultRowsInFlight);
        this.set({ kind: 'limit' }, m.maxResultRowsInFlight);
      },
    });
    new Counter({
      name: 'reprise_queries_overloaded_total',
      help: 'Queries refused OVERLOADED: they would have passed memory.maxResultRowsInFlight',
      registers,
      collect() {
        const m = memory();
        if (!m) return;
        this.reset();
        this.inc(m.queriesOverloaded);
      },
    });
    new Gauge({
      name: 'reprise_cache_lookups',
      help: 'SST cache lookups since start, by result (hit, miss)',
      labelNames: ['result'],
      registers,
      collect() {
        const m = memory();
        if (!m) return;
        this.set({ result: 'hit' }, m.cacheHits);
        this.set({ result: 'miss' }, m.cacheMisses);
      },
    });
    // The local SST cache in front of S3 (storage.type "s3"); absent with local storage.
    const objectStore = () => observer.status?.().objectStore;
    const cache = () => objectStore()?.cache;
    const cacheCounter = (name: string, help: string, value: (c: NonNullable<ReturnType<typeof cache>>) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const c = cache();
          if (!c) return;
          this.reset();
          this.inc(value(c));
        },
      });
    };
    cacheCounter('reprise_object_cache_hits_total', 'Reads of SSTs answered from the local object cache (storage s3)', (c) => c.hits);
    cacheCounter('reprise_object_cache_misses_total', 'Reads of SSTs that went to the object store (storage s3): the whole SST is then fetched into the cache', (c) => c.misses);
    cacheCounter('reprise_object_cache_evictions_total', 'SSTs evicted from the local object cache (least recently used first, past storage.cacheBytes)', (c) => c.evictions);
    cacheCounter('reprise_object_cache_fetched_bytes_total', 'Bytes fetched from the object store into the local object cache', (c) => c.fetchedBytes);
    new Gauge({
      name: 'reprise_object_cache_bytes',
      help: 'Bytes of SSTs held by the local object cache, and its budget (storage.cacheBytes)',
      labelNames: ['kind'],
      registers,
      collect() {
        const c = cache();
        if (!c) return;
        this.set({ kind: 'held' }, c.bytes);
        this.set({ kind: 'budget' }, c.budgetBytes);
      },
    });
    new Gauge({
      name: 'reprise_object_store_failing',
      help: '1 while the object store fails (an operation ran out of retries and none has succeeded since), else 0',
      labelNames: ['type'],
      registers,
      collect() {
        const store = objectStore();
        if (!store) return;
        this.reset();
        this.set({ type: store.type }, store.error === undefined ? 0 : 1);
      },
    });
    new Gauge({
      name: 'reprise_follower_lag_entries',
      help: 'WAL entries a hot-standby follower on this node has not applied yet, by shard',
      labelNames: ['shard'],
      registers,
      collect() {
        this.reset();
        for (const node of observer.status?.().nodes ?? []) for (const shard of node.shards) if (shard.lag) this.set({ shard: String(shard.id) }, shard.lag.entries);
      },
    });
  }

  /** The runtime's status, read by the state gauges at scrape time. */
  bindStatus(status: () => RuntimeStatus): void {
    this.status = status;
  }

  /** The runtime's status now (what /v1/status shows). */
  snapshot(): RuntimeStatus {
    if (this.status === undefined) throw new Error('no status bound');
    return this.status();
  }

  /** Subscribe to transitions and replay progress; returns the unsubscribe function. */
  subscribe(listener: RuntimeEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The last transitions (at most RECENT_TRANSITIONS), oldest first. */
  recentTransitions(): Transition[] {
    return [...this.recent];
  }

  readonly onTransition = (t: Transition): void => {
    const key = `${t.kind}:${t.id}`;
    const since = this.enteredAt.get(key);
    this.enteredAt.set(key, t.at);
    this.transitions.inc({ actor: t.kind, from: t.from, to: t.to });
    if (t.from === 'flushing' && since !== undefined) {
      // A failed flush returns to serving with the reason; success clears it.
      this.flushes.inc({ actor: t.kind, result: t.reason === undefined && t.to === 'serving' ? 'ok' : 'error' });
      this.flushSeconds.observe({ actor: t.kind }, (t.at - since) / 1000);
    }
    if (t.kind === 'shard' && t.from === 'replaying') {
      if (since !== undefined) this.replaySeconds.observe((t.at - since) / 1000);
      this.replayRemaining.set({ shard: String(t.id) }, 0);
    }
    if (t.to === 'closed' || t.to === 'failed') this.enteredAt.delete(key);
    this.recent.push(t);
    if (this.recent.length > RECENT_TRANSITIONS) this.recent.splice(0, this.recent.length - RECENT_TRANSITIONS);
    this.hooks.onTransition?.(t);
    this.emit({ type: 'transition', transition: t });
  };

  readonly onFollowerApply = (a: FollowerApply): void => {
    this.followerApplyLag.observe(a.lagMs / 1000);
    this.hooks.onFollowerApply?.(a);
  };

  readonly onReplayProgress = (p: ReplayProgress): void => {
    const shard = String(p.shardId);
    const seen = this.replayed.get(p.shardId);
    // Reports are cumulative within one replay; a smaller count starts a new one.
    const base = seen && seen.entries <= p.entries && seen.bytes <= p.bytes ? seen : { entries: 0, bytes: 0 };
    this.replayEntries.inc({ shard }, p.entries - base.entries);
    this.replayBytes.inc({ shard }, p.bytes - base.bytes);
    this.replayed.set(p.shardId, { entries: p.entries, bytes: p.bytes });
    this.replayRemaining.set({ shard }, Math.max(0, p.targetId - p.lastId));
    this.hooks.onReplayProgress?.(p);
    this.emit({ type: 'replay', progress: p });
  };

  /**
   * The log store with its appends measured. Everything else is the store's
   * own (the wrapper forwards every other member unchanged).
   */
  instrumentLog(log: LogStore): LogStore {
    const append = async (topic: string, records: readonly Uint8Array[]): Promise<number[]> => {
      const started = performance.now();
      let bytes = 0;
      for (const r of records) bytes += r.byteLength;
      try {
        const ids = await log.append(topic, records);
        this.appendSeconds.observe((performance.now() - started) / 1000);
        this.appendBatchRecords.observe(records.length);
        this.appendBatchBytes.observe(bytes);
        this.appends.inc({ topic });
        this.appendedRecords.inc({ topic }, records.length);
        this.appendedBytes.inc({ topic }, bytes);
        return ids;
      } catch (err) {
        this.appendFailures.inc({ topic });
        throw err;
      }
    };
    return new Proxy(log, {
      get(target, prop) {
        if (prop === 'append') return append;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  private actorsOf(kind: ActorKind): string[] {
    const nodes = this.status?.().nodes ?? [];
    if (kind === 'node') return nodes.map((n) => n.state);
    const shards = nodes.flatMap((n) => n.shards);
    if (kind === 'shard') return shards.map((s) => s.state);
    return shards.flatMap((s) => s.regions.map((r) => r.state));
  }

  private emit(event: RuntimeEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own (e.g. a closed connection).
      }
    }
  }
}
