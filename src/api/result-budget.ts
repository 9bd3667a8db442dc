import type { RegionQueryResult } from '../engine/region-engine.js';
import { RepriseError } from '../errors.js';

/** memory.maxResultRowsInFlight when not set: this many times maxResultRows (two full-size results at once). */
export const RESULT_ROWS_IN_FLIGHT_FACTOR = 2;

/** Rows (or aggregation groups) of a region's answer. */
export function rowsOfResult(result: RegionQueryResult): number {
  if (result.kind === 'rows') return result.rows.data[0]?.length ?? 0;
  return result.partial.states[0]?.length ?? result.partial.keys[0]?.length ?? 0;
}

/**
 * The node-wide bound on query result rows held at once
 * (memory.maxResultRowsInFlight): maxResultRows bounds one query, this
 * bounds them together, since concurrent large results add up (four 430 MB
 * answers took a node to 5.7 GB). Each query holds a lease: it takes the
 * rows of each region answer as it arrives, keeps those of its merged
 * result until released (the HTTP API: once the answer is sent), and fails
 * OVERLOADED (retryable) as soon as it would pass the bound, or at once if
 * the bound is already reached.
 */
export class ResultBudget {
  private held = 0;
  /** Queries refused since start. */
  refused = 0;

  constructor(readonly limit: number) {}

  /** Rows held now. */
  get inFlight(): number {
    return this.held;
  }

  lease(): ResultLease {
    if (this.held >= this.limit) throw this.overloaded(0);
    return new ResultLease(this);
  }

  /** @internal (ResultLease) */
  adjust(rows: number): void {
    this.held += rows;
  }

  /** @internal (ResultLease) */
  overloaded(more: number): RepriseError {
    this.refused++;
    return new RepriseError(
      'OVERLOADED',
      `queries in flight on this node hold ${this.held} result rows${more > 0 ? `, and this one's ${more} more` : ''} would pass memory.maxResultRowsInFlight (${this.limit}); retry shortly, or narrow the query (a limit, a shorter time range, an aggregation)`,
      { inFlight: this.held, limit: this.limit },
    );
  }
}

/** One query's rows against its ResultBudget. */
export class ResultLease {
  private rows = 0;
  private released = false;

  constructor(private readonly budget: ResultBudget) {}

  /**
   * Hold `rows` more. OVERLOADED if that passes the bound: the lease is then
   * released, so the query's other region answers still on their way are
   * neither counted nor refused again.
   */
  take(rows: number): void {
    if (this.released) return;
    if (this.budget.inFlight + rows > this.budget.limit) {
      const error = this.budget.overloaded(rows);
      this.release();
      throw error;
    }
    this.rows += rows;
    this.budget.adjust(rows);
  }

  /** Hold exactly `rows` from now on (the merged result, once the region answers are dropped). */
  resize(rows: number): void {
    if (this.released) return;
    this.budget.adjust(rows - this.rows);
    this.rows = rows;
  }

  /** Give everything back; idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.budget.adjust(-this.rows);
    this.rows = 0;
  }
}
