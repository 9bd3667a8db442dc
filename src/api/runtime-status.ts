import type { NodeStatus } from '../actors/node.js';

/** What a runtime reports of itself (`/v1/status`, metrics, the dashboard): its own file, so the observer and the runtime do not import each other. */
export interface RuntimeStatus {
  /** `error`: why appends fail right now, while the store knows they will (see LogStore.appendFailure). */
  readonly wal: { readonly provider: string; readonly error?: string };
  readonly nodes: NodeStatus[];
  /** This process's memory budgets and what is held against them. */
  readonly memory?: MemoryStatus;
}

export interface MemoryStatus {
  readonly memtableBudgetBytes: number;
  readonly memtableBytes: number;
  readonly cacheBudgetBytes: number;
  readonly cacheBytes: number;
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly maxResultRows: number;
  readonly maxResultRowsInFlight: number;
  /** Result rows held now by queries in flight (until their answers are sent). */
  readonly resultRowsInFlight: number;
  /** Queries refused OVERLOADED since start. */
  readonly queriesOverloaded: number;
}
