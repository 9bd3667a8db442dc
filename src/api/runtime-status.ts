import type { NodeStatus } from '../actors/node.js';
import type { ObjectCacheStats } from '../engine/cached-object-store.js';

/** What a runtime reports of itself (`/v1/status`, metrics, the dashboard): its own file, so the observer and the runtime do not import each other. */
export interface RuntimeStatus {
  /** `error`: why appends fail right now, while the store knows they will (see LogStore.appendFailure). */
  readonly wal: { readonly provider: string; readonly error?: string };
  /**
   * Where SSTs and manifests live. `error`: why the store fails right now
   * (an S3 operation ran out of retries; cleared by the next success);
   * `cache`: the local SST cache in front of S3.
   */
  readonly objectStore?: { readonly type: 'local' | 's3'; readonly where: string; readonly error?: string; readonly cache?: ObjectCacheStats };
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
