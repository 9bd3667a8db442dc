import { RepriseError } from '../../errors.js';
import type { Value } from '../schema.js';
import type { Aggregator } from './aggregate.js';
import type { RowValues, TableLayout } from './keys.js';
import type { Entry, ScanPlan } from './scan.js';

/**
 * The read path of a region: sorted sources of columnar blocks (memtables,
 * SST row groups) merged by primary key, newest source first on equal keys,
 * into a sink that projects or aggregates. The merge works in runs: it
 * hands the sink the longest stretch of one block that no other source
 * interleaves, so sources that do not overlap (the common case once SSTs
 * are compacted into time windows) are read without a comparison per row.
 */

/** Rows of one source, in scan order, already filtered by the query's plan. */
export interface Block {
  readonly length: number;
  /** Per schema column: its values in row order, or undefined when not read. */
  readonly columns: readonly (ArrayLike<Value> | undefined)[];
  /** Truthy where the row is a tombstone. */
  readonly deleted: ArrayLike<unknown>;
}

/** Blocks in scan order; undefined once done. */
export interface BlockSource {
  next(): Promise<Block | undefined>;
  /**
   * Without reading it: a primary key (tags, time) that no row of the next
   * block comes before in scan order, or null when no block is left. The
   * merge reads a source only once its next block can matter (a
   * latest-first query with a limit reads the newest SST alone).
   */
  peek?(): readonly Value[] | null;
}

/** Receives runs [from, to) of a block in merged order; false stops the scan. */
export type Sink = (block: Block, from: number, to: number) => boolean;

/**
 * How far an ascending scan of a memtable needs to go for a query with a
 * limit: the newest source's live rows are all in the merged answer, so the
 * first `limit` rows of the answer lie at or before its `limit`-th live row,
 * and older sources are needed only up to that key.
 */
export type ScanStop = { readonly live: number } | { readonly through: RowValues };

/** The block of the entries of a sorted stream (a memtable's), in scan order, for the given columns; ascending, it ends at `stop`. */
export function blockOfEntries(entries: Iterable<Entry>, layout: TableLayout, columns: readonly number[], desc: boolean, stop?: ScanStop): Block | undefined {
  const cols: (Value[] | undefined)[] = layout.names.map(() => undefined);
  for (const c of columns) cols[c] = [];
  const deleted: number[] = [];
  const through = stop !== undefined && !desc && 'through' in stop ? stop.through : undefined;
  const liveLimit = stop !== undefined && !desc && 'live' in stop ? stop.live : Infinity;
  let live = 0;
  for (const [row, dead] of entries) {
    if (through !== undefined && layout.compare(row, through) > 0) break;
    for (const c of columns) (cols[c] as Value[]).push(row[c]);
    deleted.push(dead ? 1 : 0);
    if (!dead && ++live >= liveLimit) break;
  }
  if (deleted.length === 0) return undefined;
  if (desc) {
    for (const c of columns) (cols[c] as Value[]).reverse();
    deleted.reverse();
  }
  return { length: deleted.length, columns: cols, deleted };
}

/** One block, as a source. */
export function sourceOf(block: Block | undefined): BlockSource {
  let pending = block;
  return {
    next: () => {
      const b = pending;
      pending = undefined;
      return Promise.resolve(b);
    },
  };
}

/**
 * Rows [0, n) of decoded columns narrowed to those the plan matches, in
 * scan order. `whole` says every row matches (the caller checked the
 * group's statistics), so none is looked at.
 */
export function filterBlock(
  layout: TableLayout,
  plan: ScanPlan,
  n: number,
  columns: readonly (ArrayLike<Value> | undefined)[],
  deleted: ArrayLike<unknown>,
  whole: boolean,
  desc: boolean,
): Block | undefined {
  let keep: number[] | undefined;
  if (!whole) {
    keep = [];
    const probe: RowValues = new Array(layout.names.length).fill(null);
    const { keyIdx } = layout;
    for (let i = 0; i < n; i++) {
      for (const c of keyIdx) probe[c] = (columns[c] as ArrayLike<Value>)[i];
      if (plan.matches(probe)) keep.push(i);
      else if (plan.pastEnd(probe)) break;
    }
    if (keep.length === 0) return undefined;
    if (keep.length === n) keep = undefined;
  }
  if (keep === undefined && !desc) return { length: n, columns, deleted };
  // One stretch of rows (a time range of one series, the common case): views or slices of it, not a pick per value.
  if (keep !== undefined && !desc && keep[keep.length - 1]! - keep[0]! + 1 === keep.length) {
    const from = keep[0]!;
    const to = from + keep.length;
    const cut = <T>(col: ArrayLike<T>): ArrayLike<T> => (ArrayBuffer.isView(col) ? (col as unknown as Float64Array).subarray(from, to) : Array.prototype.slice.call(col, from, to)) as ArrayLike<T>;
    return { length: keep.length, columns: columns.map((col) => (col === undefined ? undefined : (cut(col) as ArrayLike<Value>))), deleted: cut(deleted) };
  }
  const order = keep ?? Array.from({ length: n }, (_, i) => i);
  if (desc) order.reverse();
  const pick = (col: ArrayLike<unknown>): Value[] => order.map((i) => col[i] as Value);
  return { length: order.length, columns: columns.map((col) => (col === undefined ? undefined : pick(col))), deleted: pick(deleted) };
}

/**
 * Merge sources given newest first. On equal keys the newest source's row
 * is taken and the others' skipped (each source holds one version per key).
 * A source that can peek is read only when its bound could win or tie.
 */
export async function mergeRuns(sources: readonly BlockSource[], layout: TableLayout, desc: boolean, sink: Sink): Promise<void> {
  const n = sources.length;
  const blocks: (Block | undefined)[] = new Array(n);
  const pos = new Int32Array(n);
  /** 0: pending (bound known, block not read), 1: filled, 2: done. */
  const phase = new Uint8Array(n);
  const bounds: (readonly Value[] | undefined)[] = new Array(n);
  const keyIdx = Int32Array.from(layout.keyIdx);
  const sign = desc ? -1 : 1;
  const order = (u: Value, v: Value): number => {
    if (u === v) return 0;
    if (u === null) return -sign;
    if (v === null) return sign;
    return u < v ? -sign : sign;
  };
  /** Order of the heads of sources i and j, in scan direction. */
  const cmpHeads = (i: number, j: number): number => {
    const bi = phase[i] === 1 ? undefined : bounds[i];
    const bj = phase[j] === 1 ? undefined : bounds[j];
    for (let k = 0; k < keyIdx.length; k++) {
      const c = keyIdx[k];
      const u = bi !== undefined ? bi[k] : (blocks[i]!.columns[c] as ArrayLike<Value>)[pos[i]];
      const v = bj !== undefined ? bj[k] : (blocks[j]!.columns[c] as ArrayLike<Value>)[pos[j]];
      const o = order(u, v);
      if (o !== 0) return o;
    }
    return 0;
  };
  /** Order of row a of block x against the head of source j. */
  const cmpRowHead = (x: Block, a: number, j: number): number => {
    const bj = phase[j] === 1 ? undefined : bounds[j];
    for (let k = 0; k < keyIdx.length; k++) {
      const c = keyIdx[k];
      const u = (x.columns[c] as ArrayLike<Value>)[a];
      const v = bj !== undefined ? bj[k] : (blocks[j]!.columns[c] as ArrayLike<Value>)[pos[j]];
      const o = order(u, v);
      if (o !== 0) return o;
    }
    return 0;
  };
  const fill = async (i: number): Promise<void> => {
    let b: Block | undefined;
    do b = await sources[i].next();
    while (b !== undefined && b.length === 0);
    blocks[i] = b;
    pos[i] = 0;
    phase[i] = b === undefined ? 2 : 1;
  };
  /** The source's current block is used up: wait for its next (pending, if it can peek). */
  const advance = async (i: number): Promise<void> => {
    const peek = sources[i].peek;
    if (peek === undefined) return fill(i);
    const bound = peek();
    blocks[i] = undefined;
    bounds[i] = bound ?? undefined;
    phase[i] = bound === null ? 2 : 0;
  };
  await Promise.all(sources.map((_, i) => advance(i)));
  for (;;) {
    let w = -1;
    for (let i = 0; i < n; i++) if (phase[i] !== 2 && (w < 0 || cmpHeads(i, w) < 0)) w = i;
    if (w < 0) return;
    if (phase[w] === 0) {
      await fill(w);
      continue;
    }
    // A pending source whose bound ties the winner may hold the same key: read it first.
    let reread = false;
    for (let i = 0; i < n; i++) {
      if (i !== w && phase[i] === 0 && cmpHeads(i, w) === 0) {
        await fill(i);
        reread = true;
      }
    }
    if (reread) continue;
    const wb = blocks[w] as Block;
    // Older versions of the winning key.
    for (let i = w + 1; i < n; i++) {
      if (phase[i] === 1 && cmpHeads(i, w) === 0 && ++pos[i] === (blocks[i] as Block).length) await advance(i);
    }
    // The run ends where the next-smallest head (or bound) of another source begins.
    let r = -1;
    for (let i = 0; i < n; i++) if (i !== w && phase[i] !== 2 && (r < 0 || cmpHeads(i, r) < 0)) r = i;
    let end = wb.length;
    if (r >= 0 && cmpRowHead(wb, end - 1, r) >= 0) {
      let lo = pos[w] + 1;
      let hi = end - 1;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (cmpRowHead(wb, mid, r) < 0) lo = mid + 1;
        else hi = mid;
      }
      end = lo;
    }
    const from = pos[w];
    if (!sink(wb, from, end)) return;
    pos[w] = end;
    if (end === wb.length) await advance(w);
  }
}

/** Collects live rows' columns, up to a limit, as column arrays. */
export class RowsSink {
  readonly data: Value[][];
  private readonly columns: readonly number[];
  private readonly limit: number;
  private readonly maxRows: number;
  private count = 0;

  constructor(columns: readonly number[], limit: number, maxRows: number) {
    this.columns = columns;
    this.limit = limit;
    this.maxRows = maxRows;
    this.data = columns.map(() => []);
  }

  readonly sink: Sink = (block, from, to) => {
    const { columns, data } = this;
    const { deleted } = block;
    for (let i = from; i < to; i++) {
      if (deleted[i]) continue;
      for (let k = 0; k < columns.length; k++) data[k].push((block.columns[columns[k]] as ArrayLike<Value>)[i]);
      if (++this.count >= this.limit) return false;
      if (this.count > this.maxRows) {
        throw new RepriseError('QUERY_TOO_LARGE', `query result has more than ${this.maxRows} rows (maxResultRows); add a limit, narrow the time range or aggregate`, {
          limit: this.maxRows,
        });
      }
    }
    return true;
  };
}

/** Feeds runs to an aggregator (which skips tombstones). */
export function aggregateSink(aggregator: Aggregator): Sink {
  return (block, from, to) => {
    aggregator.addRange(block, from, to);
    return true;
  };
}
