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
}

/** Receives runs [from, to) of a block in merged order; false stops the scan. */
export type Sink = (block: Block, from: number, to: number) => boolean;

/** The block of the entries of a sorted stream (a memtable's), in scan order, for the given columns. */
export function blockOfEntries(entries: Iterable<Entry>, layout: TableLayout, columns: readonly number[], desc: boolean): Block | undefined {
  const cols: (Value[] | undefined)[] = layout.names.map(() => undefined);
  for (const c of columns) cols[c] = [];
  const deleted: number[] = [];
  for (const [row, dead] of entries) {
    for (const c of columns) (cols[c] as Value[]).push(row[c]);
    deleted.push(dead ? 1 : 0);
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
  const order = keep ?? Array.from({ length: n }, (_, i) => i);
  if (desc) order.reverse();
  const pick = (col: ArrayLike<unknown>): Value[] => order.map((i) => col[i] as Value);
  return { length: order.length, columns: columns.map((col) => (col === undefined ? undefined : pick(col))), deleted: pick(deleted) };
}

/**
 * Merge sources given newest first. On equal keys the newest source's row
 * is taken and the others' skipped (each source holds one version per key).
 */
export async function mergeRuns(sources: readonly BlockSource[], layout: TableLayout, desc: boolean, sink: Sink): Promise<void> {
  const n = sources.length;
  const blocks: (Block | undefined)[] = new Array(n);
  const pos = new Int32Array(n);
  const keyIdx = Int32Array.from(layout.keyIdx);
  const sign = desc ? -1 : 1;
  const fill = async (i: number): Promise<void> => {
    let b: Block | undefined;
    do b = await sources[i].next();
    while (b !== undefined && b.length === 0);
    blocks[i] = b;
    pos[i] = 0;
  };
  /** Order of row a of block x against row b of block y, in scan direction. */
  const cmp = (x: Block, a: number, y: Block, b: number): number => {
    for (let k = 0; k < keyIdx.length; k++) {
      const c = keyIdx[k];
      const u = (x.columns[c] as ArrayLike<Value>)[a];
      const v = (y.columns[c] as ArrayLike<Value>)[b];
      if (u !== v) {
        if (u === null) return -sign;
        if (v === null) return sign;
        return u < v ? -sign : sign;
      }
    }
    return 0;
  };
  await Promise.all(sources.map((_, i) => fill(i)));
  for (;;) {
    let w = -1;
    for (let i = 0; i < n; i++) {
      const b = blocks[i];
      if (b !== undefined && (w < 0 || cmp(b, pos[i], blocks[w] as Block, pos[w]) < 0)) w = i;
    }
    if (w < 0) return;
    const wb = blocks[w] as Block;
    // Older versions of the winning key.
    for (let i = w + 1; i < n; i++) {
      const b = blocks[i];
      if (b !== undefined && cmp(b, pos[i], wb, pos[w]) === 0 && ++pos[i] === b.length) await fill(i);
    }
    // The run ends where the next-smallest head of another source begins.
    let r = -1;
    for (let i = 0; i < n; i++) {
      const b = blocks[i];
      if (i !== w && b !== undefined && (r < 0 || cmp(b, pos[i], blocks[r] as Block, pos[r]) < 0)) r = i;
    }
    let end = wb.length;
    if (r >= 0) {
      const rb = blocks[r] as Block;
      const rp = pos[r];
      if (cmp(wb, end - 1, rb, rp) >= 0) {
        let lo = pos[w] + 1;
        let hi = end - 1;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (cmp(wb, mid, rb, rp) < 0) lo = mid + 1;
          else hi = mid;
        }
        end = lo;
      }
    }
    const from = pos[w];
    if (!sink(wb, from, end)) return;
    pos[w] = end;
    if (end === wb.length) await fill(w);
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
