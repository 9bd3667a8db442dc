/**
 * Indexing queued bodies in the background starts once no region of the
 * engine has had an apply for IDLE_MS (longer than a replay waits for its
 * next batch of records, so a replay is not slowed by it; busy writers keep
 * it waiting too), and goes on in slices of INDEX_SLICE_MS, one per turn of
 * the event loop, for as long as no apply comes in. Flushes and close index
 * in such slices too (short, so that writes waiting on the WAL get their
 * turn in between); a query indexes what is left in one go.
 */
export const IDLE_MS = 50;
export const INDEX_SLICE_MS = 1;

export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Indexes the queues of an engine's regions while the engine is idle: one
 * slice per turn of the event loop for all regions together (round-robin),
 * so that background work never holds the event loop for more than a slice,
 * however many regions have queues. Indexing a region's queue from its head
 * is all it does, so it never changes the order in which entries take effect.
 */
/** What the indexer needs of a region (TableRegion): a flag it keeps for it, and a slice of indexing. */
export interface IdleIndexable {
  awaitingIndexer: boolean;
  /** Index queued bodies until `deadline` (performance.now() ms); false once nothing is left. */
  indexWhileIdle(deadline: number): boolean;
}

export class IdleIndexer {
  /** Regions with bodies queued since they were last indexed, in turn order. */
  private readonly regions = new Set<IdleIndexable>();
  private applies = 0;
  private appliesSeen = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;

  /** A region queued a body. */
  applied(region: IdleIndexable): void {
    this.applies++;
    if (!region.awaitingIndexer) {
      region.awaitingIndexer = true;
      this.regions.add(region);
    }
    if (this.timer === undefined && this.immediate === undefined) this.watch();
  }

  /** A region that closed or failed: nothing more to do for it. */
  forget(region: IdleIndexable): void {
    region.awaitingIndexer = false;
    this.regions.delete(region);
  }

  private watch(): void {
    this.appliesSeen = this.applies;
    this.timer = setTimeout(this.tick, IDLE_MS);
    this.timer.unref();
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    if (this.regions.size === 0) return;
    // Applies came in since the last look: not idle, look again later.
    if (this.applies !== this.appliesSeen) return this.watch();
    const deadline = performance.now() + INDEX_SLICE_MS;
    for (const region of this.regions) {
      this.regions.delete(region);
      if (!region.indexWhileIdle(deadline)) {
        // More to do: its turn comes again after the others'.
        this.regions.add(region);
        break;
      }
      region.awaitingIndexer = false;
      if (performance.now() >= deadline) break;
    }
    if (this.regions.size > 0) {
      this.immediate = setImmediate(this.tick);
      this.immediate.unref();
    }
  };
}
