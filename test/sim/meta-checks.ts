/**
 * The simulation's checks of meta replicas (cluster-sim.ts runs them at the
 * end of every run):
 * - the meta log as every reader must fold it (MetaView, with its
 *   EpochFence): one marker per meta epoch, no entry that takes effect
 *   without a marker of its epoch before it, and no entry of a deposed
 *   leader (an epoch below one already in the log) that takes effect;
 * - the readers held to that fold: each node's MetaReplica and the meta
 *   leader's own state equal the fold at the entry each has applied;
 * - the election: one replica elected per meta epoch, and no two leaders'
 *   leases overlapping (the replicas share this process's monotonic clock).
 */
import { decode } from '@msgpack/msgpack';
import { MetaView, metaTopicOf } from '../../src/meta/meta-view.js';
import type { MetaEvent, ProcedureInfo, ShardInfo } from '../../src/meta/model.js';
import type { MetaElectionObservation } from '../../src/testing/faults.js';
import type { EntryId, LogStore } from '../../src/wal/log-store.js';
import type { LoggedEntry } from '../../src/wal/entry.js';
import { readEntries } from '../../src/wal/shard-reader.js';

/** What every reader of the meta log must agree on at a given entry: shards (leaders, epochs, followers), running procedures, registered nodes. */
export interface ComparableMeta {
  readonly shards: readonly ShardInfo[];
  readonly procedures: readonly ProcedureInfo[];
  readonly nodes: readonly string[];
}

export function comparableOf(view: MetaView): ComparableMeta {
  return { shards: view.shards(), procedures: view.procedures(), nodes: view.nodes().map((n) => n.id) };
}

/** As text, keys sorted, absent and null alike (msgpack turns an undefined field into null). */
export function canonical(value: unknown): string {
  const sorted = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sorted);
    if (v === null || typeof v !== 'object') return v;
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined && x !== null);
    return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, sorted(x)]));
  };
  return JSON.stringify(sorted(value));
}

/** The meta log folded as every reader folds it, with what the checks need of it. */
export class MetaLogReference extends MetaView {
  /** Meta epoch -> the ids of its markers. */
  readonly markers = new Map<number, EntryId[]>();
  /** `shard/epoch` -> the nodes granted that epoch by entries that take effect. */
  readonly grants = new Map<string, Set<string>>();
  /** The fold's state after each entry asked for (canonical), and how many entries the fence had dropped by then. */
  readonly at = new Map<EntryId, { state: string; fenced: number }>();
  readonly problems: string[] = [];
  /** The last entry id in the log. */
  lastId: EntryId = -1;
  private newest: { id: EntryId; epoch: number } | undefined;
  private readonly unmarked = new Set<number>();

  /** Fold the meta log from its start, keeping the state after each id of `wanted`. */
  static async read(log: LogStore, topicPrefix: string, wanted: ReadonlySet<EntryId>): Promise<MetaLogReference> {
    const topic = metaTopicOf(topicPrefix);
    const reference = new MetaLogReference();
    for await (const entry of readEntries(log, topic, 0)) {
      reference.fold(topic, entry);
      if (wanted.has(entry.id)) reference.at.set(entry.id, { state: canonical(comparableOf(reference)), fenced: reference.fencedEntries });
    }
    return reference;
  }

  private fold(topic: string, entry: LoggedEntry): void {
    const fencedBefore = this.fencedEntries;
    this.applyEntry(topic, entry);
    this.lastId = entry.id;
    if (entry.kind === 'epoch') this.markers.set(entry.epoch, [...(this.markers.get(entry.epoch) ?? []), entry.id]);
    if (entry.kind === 'data' && this.fencedEntries === fencedBefore) this.admitted(entry);
    if (!this.newest || entry.epoch > this.newest.epoch) this.newest = { id: entry.id, epoch: entry.epoch };
  }

  /** A data entry that takes effect: it must be the newest epoch's, behind that epoch's marker. */
  private admitted(entry: LoggedEntry): void {
    const event = decode(entry.body) as MetaEvent;
    if (!this.markers.has(entry.epoch) && !this.unmarked.has(entry.epoch)) {
      this.unmarked.add(entry.epoch);
      this.problems.push(`meta log entry ${entry.id} (${event.type}) takes effect at meta epoch ${entry.epoch}, which has no marker before it: nothing fences what a deposed leader appends after it`);
    }
    if (this.newest && this.newest.epoch > entry.epoch) {
      this.problems.push(`meta log entry ${entry.id} (${event.type}) of meta epoch ${entry.epoch} follows entry ${this.newest.id} of epoch ${this.newest.epoch} and takes effect: a deposed meta leader's entry that no reader fences`);
    }
    if (event.type === 'leader_granted') {
      const key = `${event.shard}/${event.epoch}`;
      this.grants.set(key, new Set([...(this.grants.get(key) ?? []), event.node]));
    }
  }

  /** One marker per meta epoch (two: two leaders at one epoch), one node per granted shard epoch, and the entry problems. */
  violations(): string[] {
    const found = [...this.problems];
    for (const [epoch, ids] of this.markers) if (ids.length > 1) found.push(`meta epoch ${epoch} has ${ids.length} markers (entries ${ids.join(', ')}): two meta leaders at one epoch`);
    for (const [key, nodes] of this.grants) if (nodes.size > 1) found.push(`shard epoch ${key} was granted to ${[...nodes].join(' and ')} by entries that take effect`);
    return found;
  }

  /** `reader`'s state at entry `id` against the fold's; `fenced`: how many entries the reader's fence dropped, where known. */
  disagreement(reader: string, id: EntryId, state: ComparableMeta, fenced?: number): string | undefined {
    const expected = this.at.get(id);
    if (!expected) return `${reader} reports meta log entry ${id}, which the log (ending at ${this.lastId}) does not hold`;
    const actual = canonical(state);
    if (actual !== expected.state) return `${reader} disagrees with the meta log at entry ${id}: it holds ${actual}, the log folds to ${expected.state}`;
    if (fenced !== undefined && fenced !== expected.fenced) return `${reader} dropped ${fenced} meta log entries up to entry ${id}, the fence drops ${expected.fenced}`;
    return undefined;
  }
}

/** One meta incarnation's election event. */
export interface ElectionRecord extends MetaElectionObservation {
  /** Which incarnation (`meta-1#2`). */
  readonly incarnation: string;
}

/**
 * One incarnation elected per meta epoch, and no two terms overlapping: a
 * term runs from its election to its step-down or its lease's end, which
 * ever is first (a stalled leader's step-down is reported when it wakes,
 * but its lease ended on time).
 */
export function electionViolations(records: readonly ElectionRecord[]): string[] {
  const found: string[] = [];
  const terms: { who: string; epoch: number; from: number; to: number }[] = [];
  for (const r of records) {
    if (r.kind === 'elected') terms.push({ who: r.incarnation, epoch: r.epoch, from: r.at, to: Infinity });
    else {
      const term = terms.find((t) => t.who === r.incarnation && t.epoch === r.epoch && t.to === Infinity);
      if (term) term.to = Math.min(r.at, r.leaseEnd);
    }
  }
  const electedAt = new Map<number, Set<string>>();
  for (const t of terms) electedAt.set(t.epoch, new Set([...(electedAt.get(t.epoch) ?? []), t.who]));
  for (const [epoch, who] of electedAt) if (who.size > 1) found.push(`meta epoch ${epoch}: ${[...who].join(' and ')} were each elected: two meta leaders at one epoch`);
  const t0 = records[0]?.at ?? 0;
  const ms = (t: number) => (t === Infinity ? 'the end' : `${Math.round(t - t0)} ms`);
  const ordered = [...terms].sort((a, b) => a.from - b.from);
  for (let i = 0; i < ordered.length; i++) {
    for (let j = i + 1; j < ordered.length && ordered[j]!.from < ordered[i]!.to; j++) {
      const [a, b] = [ordered[i]!, ordered[j]!];
      found.push(`meta leaders overlapped: ${a.who} led at epoch ${a.epoch} until ${ms(a.to)}, ${b.who} at epoch ${b.epoch} from ${ms(b.from)}`);
    }
  }
  return found;
}
