import { createRequire } from 'node:module';
import type SortedBtree from 'sorted-btree';
import { RepriseError } from '../../errors.js';
import type { Value } from '../schema.js';
import type { KeyComparator, RowValues } from './keys.js';
import type { Entry, ScanPlan } from './scan.js';

// sorted-btree is CommonJS with `exports.default`; Node's ESM interop and
// vitest's disagree on what a default import yields, require() does not.
const BTree = (createRequire(import.meta.url)('sorted-btree') as { default: typeof SortedBtree.default }).default;
type BTree<K, V> = SortedBtree.default<K, V>;

/** Rough per-entry cost of the tree slot, row array and entry bookkeeping. */
const ENTRY_OVERHEAD = 48;

function valueBytes(v: Value): number {
  if (typeof v === 'string') return 16 + 2 * v.length;
  return 8;
}

function rowBytes(row: readonly Value[]): number {
  let n = ENTRY_OVERHEAD;
  for (let i = 0; i < row.length; i++) n += valueBytes(row[i]);
  return n;
}

/**
 * The in-memory write buffer of a region: rows ordered by primary key (tags
 * then time), one version per key. A put or delete of an existing key
 * replaces it (upsert); a delete leaves a tombstone so that it hides older
 * versions in SSTs. Once frozen it is immutable and waits to be flushed.
 */
export class Memtable {
  private readonly tree: BTree<RowValues, boolean>;
  private byteSize = 0;

  constructor(compare: KeyComparator) {
    this.tree = new BTree<RowValues, boolean>(undefined, compare);
  }

  /** Entries held, tombstones included. */
  get size(): number {
    return this.tree.size;
  }

  /** Approximate memory held, for flush triggers. */
  get bytes(): number {
    return this.byteSize;
  }

  get frozen(): boolean {
    return this.tree.isFrozen;
  }

  /** Insert or replace the row with this primary key. */
  put(row: RowValues): void {
    this.set(row, false);
  }

  /** Record a tombstone: a row whose primary key is set and fields are null. */
  delete(tombstone: RowValues): void {
    this.set(tombstone, true);
  }

  freeze(): void {
    this.tree.freeze();
  }

  /**
   * Entries in key order, from `plan.seek` until `plan.pastEnd`, keeping
   * those that `plan.matches`; all entries without a plan.
   */
  *scan(plan?: ScanPlan): Generator<Entry> {
    for (const [row, deleted] of this.tree.entries(plan?.seek)) {
      if (plan !== undefined) {
        if (plan.pastEnd(row)) return;
        if (!plan.matches(row)) continue;
      }
      yield [row, deleted];
    }
  }

  private set(row: RowValues, deleted: boolean): void {
    if (this.tree.isFrozen) throw new RepriseError('INTERNAL', 'write to a frozen memtable');
    // The common case is a new key: one tree descent. A replaced key is
    // looked up again to retire its size (the tree swaps in the new row).
    if (!this.tree.set(row, deleted, false)) {
      const old = this.tree.getPairOrNextHigher(row) as [RowValues, boolean];
      this.byteSize -= rowBytes(old[0]);
      this.tree.set(row, deleted, true);
    }
    this.byteSize += rowBytes(row);
  }
}
