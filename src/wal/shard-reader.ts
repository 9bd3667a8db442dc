import type { TestFaults } from '../testing/faults.js';
import { EntryAssembler } from './codec.js';
import type { LoggedEntry } from './entry.js';
import type { EntryId, LogStore, TailSubscription } from './log-store.js';

/**
 * Replay by shard: one pass over a shard's topic, records decoded and
 * reassembled into entries, lower-epoch entries fenced off. Routing entries
 * to regions (and skipping what a region already flushed) is the caller's
 * onEntry.
 */

/**
 * Whole entries of `topic` whose records lie in [from, to) (`to` defaults to
 * the topic's next id). A split entry cut by `to` is not yielded. Rejects
 * WAL_TRUNCATED if `from` is below the earliest held id, WAL_CORRUPT on a bad
 * record or if `from` is not the start of an entry.
 */
export async function* readEntries(
  store: LogStore,
  topic: string,
  from: EntryId,
  opts: { to?: EntryId } = {},
): AsyncGenerator<LoggedEntry, void, undefined> {
  const assembler = new EntryAssembler(topic);
  for await (const record of store.read(topic, from, opts.to === undefined ? undefined : { to: opts.to })) {
    const entry = assembler.push(record);
    if (entry) yield entry;
  }
}

/**
 * Fencing: a new leader appends an epoch marker (kind 'epoch') before it
 * writes; an entry of a lower epoch after a marker comes from a deposed
 * leader and is dropped. The fence remembers every marker it has seen (one
 * per change of leadership), so a follower that re-reads part of the log it
 * already passed (to reload a region) judges each entry by the markers
 * before it, not by the newest one.
 */
export class EpochFence {
  /** Markers seen, in id order. */
  private readonly markers: { readonly id: EntryId; readonly epoch: number }[] = [];

  /** `faults.skipEpochCheck`: a deliberate bug, for tests only. */
  constructor(private readonly faults: TestFaults = {}) {}

  /** Whether `entry` is admitted; a marker is always admitted, and remembered. */
  admit(entry: LoggedEntry): boolean {
    if (entry.kind === 'epoch') {
      this.seed(entry.id, entry.epoch);
      return true;
    }
    if (this.faults.skipEpochCheck) return true;
    for (let i = this.markers.length - 1; i >= 0; i--) {
      const marker = this.markers[i]!;
      if (marker.id < entry.id && marker.epoch > entry.epoch) return false;
    }
    return true;
  }

  /**
   * Remember a marker of `epoch` at `id` without reading it: a region's
   * manifest records the fence at its flushed entry id, and the log below
   * that id (the marker itself included) may be pruned.
   */
  seed(id: EntryId, epoch: number): void {
    if (epoch <= 0) return;
    let i = this.markers.length;
    while (i > 0 && this.markers[i - 1]!.id > id) i--;
    const before = this.markers[i - 1];
    if (before && before.id === id) {
      if (before.epoch < epoch) this.markers[i - 1] = { id, epoch };
      return;
    }
    this.markers.splice(i, 0, { id, epoch });
  }

  /** The highest epoch of the markers at or below `id` (0 if none): what a flush up to `id` records. */
  epochAt(id: EntryId): number {
    let epoch = 0;
    for (const m of this.markers) if (m.id <= id && m.epoch > epoch) epoch = m.epoch;
    return epoch;
  }
}

export interface ReplayProgress {
  /** Entries delivered so far. */
  readonly entries: number;
  /** Bytes of records read so far. */
  readonly bytes: number;
  /** Id of the last entry read (from - 1 before the first). */
  readonly lastId: EntryId;
  /** Id of the last record the replay reads (to - 1). */
  readonly targetId: EntryId;
  readonly elapsedMs: number;
}

export interface ReplayOptions {
  readonly from: EntryId;
  /** Exclusive end; defaults to the topic's next id when the replay starts. */
  readonly to?: EntryId;
  /** Each delivered entry, in id order; a returned promise is awaited before the next. */
  readonly onEntry: (entry: LoggedEntry) => void | Promise<void>;
  readonly onProgress?: (progress: ReplayProgress) => void;
  /** Minimum interval between onProgress calls (default 1000). A last call always reports the end. */
  readonly progressEveryMs?: number;
  /** Markers seen before this pass (a follower's), and recorded by it; a fresh fence by default. */
  readonly fence?: EpochFence;
}

export interface ReplayStats {
  /** Entries delivered to onEntry. */
  readonly entries: number;
  /** Bytes of all records read. */
  readonly bytes: number;
  readonly records: number;
  /** Split entries never completed by their (crashed) writer, dropped. */
  readonly tornEntries: number;
  /** Entries dropped because a higher epoch marker precedes them. */
  readonly fencedEntries: number;
  /** Id of the last entry read, delivered or not (from - 1 if none). */
  readonly lastId: EntryId;
  readonly elapsedMs: number;
}

/**
 * Read [from, to) of a shard's topic once and deliver its entries.
 *
 * Fencing (see EpochFence): only markers seen in this pass, or known to
 * the fence passed in, count; a marker below `from` does not fence.
 */
export async function replayShard(store: LogStore, topic: string, opts: ReplayOptions): Promise<ReplayStats> {
  const started = performance.now();
  const to = opts.to ?? (await store.bounds(topic)).next;
  const progressEveryMs = opts.progressEveryMs ?? 1000;
  const { onEntry, onProgress } = opts;
  const assembler = new EntryAssembler(topic);
  let entries = 0;
  let bytes = 0;
  let records = 0;
  let fencedEntries = 0;
  let lastId = opts.from - 1;
  const fence = opts.fence ?? new EpochFence();
  let lastProgress = started;
  const progress = (now: number): ReplayProgress => ({
    entries,
    bytes,
    lastId,
    targetId: to - 1,
    elapsedMs: now - started,
  });

  for await (const record of store.read(topic, opts.from, { to })) {
    records++;
    bytes += record.data.length;
    // Looking at the clock every 64 records keeps it off the hot path.
    if (onProgress && (records & 0x3f) === 0) {
      const now = performance.now();
      if (now - lastProgress >= progressEveryMs) {
        lastProgress = now;
        onProgress(progress(now));
      }
    }
    const entry = assembler.push(record);
    if (!entry) continue;
    lastId = entry.id;
    if (!fence.admit(entry)) {
      fencedEntries++;
      continue;
    }
    entries++;
    const pending = onEntry(entry);
    if (pending) await pending;
  }

  const elapsedMs = performance.now() - started;
  onProgress?.(progress(started + elapsedMs));
  return { entries, bytes, records, tornEntries: assembler.tornEntries, fencedEntries, lastId, elapsedMs };
}

/**
 * Follow a shard's topic from `from` (the start of an entry): every whole
 * entry the fence admits, then each new one as it is appended, in order, one
 * callback at a time. `appendedAt` is when the entry's last record was
 * appended, if the log knows. `onError` gets a terminal error (e.g.
 * WAL_TRUNCATED, WAL_CORRUPT, or a throwing onEntry).
 */
export function tailEntries(
  store: LogStore,
  topic: string,
  from: EntryId,
  fence: EpochFence,
  onEntry: (entry: LoggedEntry, appendedAt: number | undefined) => void | Promise<void>,
  onError: (err: Error) => void,
): Promise<TailSubscription> {
  const assembler = new EntryAssembler(topic);
  let failed = false;
  return store.tail(
    topic,
    from,
    async (record) => {
      if (failed) return;
      try {
        const entry = assembler.push(record);
        if (entry && fence.admit(entry)) await onEntry(entry, record.appendedAt);
      } catch (err) {
        failed = true;
        onError(err as Error);
      }
    },
    onError,
  );
}
