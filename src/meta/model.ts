import type { TableSchema } from '../engine/schema.js';
import type { EntryId } from '../wal/log-store.js';

/**
 * Cluster metadata as plain data, and the events that change it. Meta's
 * state is event-sourced: it is exactly the fold of `applyMetaEvent` over
 * its log, so a restart (or a model test) rebuilds it from the events.
 */
export interface ShardInfo {
  readonly id: number;
  readonly topic: string;
  /** Node holding leadership, or null before the first grant. */
  leader: string | null;
  /** Leadership generation; each grant increments it. */
  epoch: number;
  /** Nodes holding hot standbys of the shard (tailing its topic), never the leader. */
  followers: string[];
}

export interface RegionInfo {
  readonly id: number;
  readonly tableId: number;
  readonly table: string;
  /** Index among the table's range partitions. */
  readonly partition: number;
  readonly shard: number;
  /** Entry id of the region_create entry in the shard's topic (-1 until committed). */
  createdAt: EntryId;
}

export type TableStatus = 'creating' | 'active';

export interface TableInfo {
  readonly id: number;
  readonly schema: TableSchema;
  readonly regions: RegionInfo[];
  status: TableStatus;
}

export interface NodeInfo {
  readonly id: string;
  registeredAt: number;
}

/** What a node's heartbeat reports of one shard it holds (leads, or follows as a hot standby). */
export interface ShardReport {
  readonly id: number;
  readonly epoch: number;
  readonly state: string;
  readonly role?: 'leader' | 'follower';
  readonly lastEntryId?: EntryId;
  readonly lag?: { readonly entries: number; readonly ms: number };
  /** Why the shard failed (state `failed`). */
  readonly error?: string;
  /** Regions of the shard that failed (e.g. to open), with why: the shard serves the others. */
  readonly failedRegions?: readonly { readonly id: number; readonly error: string }[];
}

/** Meta's procedures whose progress is in the meta log (src/meta/procedure-machines.ts). */
export type ProcedureKind = 'migrate' | 'rebalance' | 'failover' | 'create_table';
export const PROCEDURE_KINDS: readonly ProcedureKind[] = ['migrate', 'rebalance', 'failover', 'create_table'];
/**
 * done: it did what it was for; stopped: conditions changed and it gave up
 * (e.g. a node died); failed: a step failed; aborted: it was rolled back (a
 * create table the frontend gave up, or that a meta restart cut short; a
 * migration whose target did not serve the shard, given back to its source).
 */
export type ProcedureOutcome = 'done' | 'stopped' | 'failed' | 'aborted';

/** A procedure that started and has not finished: it resumes from `state` when meta starts. */
export interface ProcedureInfo {
  readonly id: number;
  readonly kind: ProcedureKind;
  /** The shard it works on (one procedure per shard at a time); null for cluster-wide ones (rebalance). */
  readonly shard: number | null;
  readonly from: string | null;
  readonly to: string | null;
  /** The procedure that started this one (a rebalance's moves), or null. */
  readonly parent: number | null;
  /** create_table: the table's id (its regions' shards are the ones it works on). */
  readonly table?: number;
  /** failover and migrate: the shard's epoch when the procedure started (a failover's: when its leader was declared dead); the target must serve it above that. */
  readonly epoch?: number;
  /** The last step recorded: its machine state, entered before the step's effect ran. */
  state: string;
  readonly startedAt: number;
  stepAt: number;
}

/** A procedure that finished, as procedure_state reports it: what it was, how it ended, when. */
export interface FinishedProcedure extends ProcedureInfo {
  readonly outcome: ProcedureOutcome;
  readonly reason?: string;
  readonly finishedAt: number;
}

/** Finished procedures the state keeps (the newest), for procedure_state: a bound, so the state does not grow with the log. */
export const FINISHED_PROCEDURES_KEPT = 256;

export interface MetaState {
  nextTableId: number;
  nextRegionId: number;
  readonly shards: Map<number, ShardInfo>;
  /** By table name. */
  readonly tables: Map<string, TableInfo>;
  readonly nodes: Map<string, NodeInfo>;
  nextProcedureId: number;
  /** Running procedures by id (finished ones move to finishedProcedures). */
  readonly procedures: Map<number, ProcedureInfo>;
  /** The newest FINISHED_PROCEDURES_KEPT finished procedures, by id (in finishing order). */
  readonly finishedProcedures: Map<number, FinishedProcedure>;
  /**
   * Regions of tables dropped or whose create was rolled back: their files
   * may be deleted. Any other region on disk that no table owns is unknown,
   * and never deleted on a guess.
   */
  readonly retiredRegions: Map<number, 'dropped' | 'aborted'>;
  /**
   * Shards an operator migrated (a migrate procedure without a parent that
   * finished done), by the node it sent each to, while the shard is still
   * there: a rebalance moves other shards first. Folded from the procedure
   * events, so every meta (and replica) knows it.
   */
  readonly operatorPlacements: Map<number, string>;
}

export type MetaEvent =
  | { type: 'shard_created'; shard: number; topic: string }
  | { type: 'node_registered'; node: string; at: number }
  | { type: 'leader_granted'; shard: number; node: string; epoch: number }
  /** Meta placed the shard on a node (first placement, failover, migration); the node takes a new epoch when it opens it. */
  | { type: 'shard_assigned'; shard: number; node: string }
  /** Meta chose the shard's hot-standby followers (the whole list). */
  | { type: 'followers_assigned'; shard: number; nodes: string[] }
  /** First step of create table: ids and placement are fixed before any region exists. */
  | {
      type: 'table_creating';
      tableId: number;
      schema: TableSchema;
      regions: { id: number; partition: number; shard: number }[];
    }
  /** Every region has its region_create entry; the table becomes visible. */
  | { type: 'table_created'; tableId: number; createdAt: Record<number, EntryId> }
  | { type: 'table_create_aborted'; tableId: number }
  | { type: 'table_dropped'; tableId: number }
  /** A procedure began; `state` is its first step, recorded before that step's effect runs. */
  | {
      type: 'procedure_started';
      id: number;
      kind: ProcedureKind;
      shard: number | null;
      from: string | null;
      to: string | null;
      parent: number | null;
      /** create_table only. */
      table?: number;
      /** failover and migrate (absent from migrations an older meta recorded). */
      epoch?: number;
      state: string;
      at: number;
    }
  /** A procedure entered a step (appended before the step's effect runs). */
  | { type: 'procedure_step'; id: number; state: string; at: number }
  | { type: 'procedure_finished'; id: number; outcome: ProcedureOutcome; reason?: string; at: number };

export function emptyMetaState(): MetaState {
  return { nextTableId: 1, nextRegionId: 1, shards: new Map(), tables: new Map(), nodes: new Map(), nextProcedureId: 1, procedures: new Map(), finishedProcedures: new Map(), retiredRegions: new Map(), operatorPlacements: new Map() };
}

function tableById(state: MetaState, tableId: number): TableInfo | undefined {
  for (const table of state.tables.values()) if (table.id === tableId) return table;
  return undefined;
}

/** Fold one event into the state (mutates and returns it). Unknown ids are ignored: events are facts. */
export function applyMetaEvent(state: MetaState, event: MetaEvent): MetaState {
  switch (event.type) {
    case 'shard_created':
      state.shards.set(event.shard, { id: event.shard, topic: event.topic, leader: null, epoch: 0, followers: [] });
      break;
    case 'node_registered':
      state.nodes.set(event.node, { id: event.node, registeredAt: event.at });
      break;
    case 'leader_granted': {
      const shard = state.shards.get(event.shard);
      if (shard) {
        shard.leader = event.node;
        shard.epoch = event.epoch;
      }
      break;
    }
    case 'shard_assigned': {
      const shard = state.shards.get(event.shard);
      if (shard) {
        shard.leader = event.node;
        // A follower promoted (or a node made leader) no longer follows.
        shard.followers = shard.followers.filter((n) => n !== event.node);
      }
      // Moved elsewhere (a failover, a later migration): no longer where the operator put it.
      if (state.operatorPlacements.get(event.shard) !== event.node) state.operatorPlacements.delete(event.shard);
      break;
    }
    case 'followers_assigned': {
      const shard = state.shards.get(event.shard);
      if (shard) shard.followers = event.nodes.filter((n) => n !== shard.leader);
      break;
    }
    case 'table_creating': {
      const regions = event.regions.map((r) => ({
        id: r.id,
        tableId: event.tableId,
        table: event.schema.name,
        partition: r.partition,
        shard: r.shard,
        createdAt: -1,
      }));
      state.tables.set(event.schema.name, { id: event.tableId, schema: event.schema, regions, status: 'creating' });
      state.nextTableId = Math.max(state.nextTableId, event.tableId + 1);
      for (const r of event.regions) state.nextRegionId = Math.max(state.nextRegionId, r.id + 1);
      break;
    }
    case 'table_created': {
      const table = tableById(state, event.tableId);
      if (table) {
        for (const region of table.regions) region.createdAt = event.createdAt[region.id] ?? region.createdAt;
        table.status = 'active';
      }
      break;
    }
    case 'table_create_aborted':
    case 'table_dropped': {
      const table = tableById(state, event.tableId);
      if (table) {
        state.tables.delete(table.schema.name);
        for (const r of table.regions) state.retiredRegions.set(r.id, event.type === 'table_dropped' ? 'dropped' : 'aborted');
      }
      break;
    }
    case 'procedure_started': {
      const { id, kind, shard, from, to, parent, table, epoch, state: step, at } = event;
      state.procedures.set(id, { id, kind, shard, from, to, parent, ...(table != null ? { table } : {}), ...(epoch != null ? { epoch } : {}), state: step, startedAt: at, stepAt: at });
      state.nextProcedureId = Math.max(state.nextProcedureId, id + 1);
      break;
    }
    case 'procedure_step': {
      const procedure = state.procedures.get(event.id);
      if (procedure) {
        procedure.state = event.state;
        procedure.stepAt = event.at;
      }
      break;
    }
    case 'procedure_finished': {
      const p = state.procedures.get(event.id);
      if (p?.kind === 'migrate' && p.parent === null && event.outcome === 'done' && p.shard !== null && p.to !== null) state.operatorPlacements.set(p.shard, p.to);
      state.procedures.delete(event.id);
      if (p) {
        state.finishedProcedures.set(p.id, { ...p, outcome: event.outcome, ...(event.reason !== undefined ? { reason: event.reason } : {}), finishedAt: event.at });
        if (state.finishedProcedures.size > FINISHED_PROCEDURES_KEPT) state.finishedProcedures.delete(state.finishedProcedures.keys().next().value as number);
      }
      break;
    }
  }
  return state;
}

/** A member's view of itself, and of its peers as they last reported. */
export interface MetaMemberStatus {
  readonly id: string;
  /** Its machine's state (src/meta/meta-member-machine.ts): following, leading, ... */
  readonly state: string;
  /** The meta epoch it leads at (leading or taking over), if any. */
  readonly epoch: number | null;
  /** The leader this replica last observed in the election (null: none known, or it resigned). */
  readonly leader: { readonly id: string | null; readonly epoch: number } | null;
  /** The meta log entry its state reflects. */
  readonly appliedEntryId: EntryId;
  readonly error: string | null;
}
