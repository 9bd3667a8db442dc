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

export interface MetaState {
  nextTableId: number;
  nextRegionId: number;
  readonly shards: Map<number, ShardInfo>;
  /** By table name. */
  readonly tables: Map<string, TableInfo>;
  readonly nodes: Map<string, NodeInfo>;
}

export type MetaEvent =
  | { type: 'shard_created'; shard: number; topic: string }
  | { type: 'node_registered'; node: string; at: number }
  | { type: 'leader_granted'; shard: number; node: string; epoch: number }
  /** Meta placed the shard on a node (first placement, failover, migration); the node takes a new epoch when it opens it. */
  | { type: 'shard_assigned'; shard: number; node: string }
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
  | { type: 'table_dropped'; tableId: number };

export function emptyMetaState(): MetaState {
  return { nextTableId: 1, nextRegionId: 1, shards: new Map(), tables: new Map(), nodes: new Map() };
}

function tableById(state: MetaState, tableId: number): TableInfo | undefined {
  for (const table of state.tables.values()) if (table.id === tableId) return table;
  return undefined;
}

/** Fold one event into the state (mutates and returns it). Unknown ids are ignored: events are facts. */
export function applyMetaEvent(state: MetaState, event: MetaEvent): MetaState {
  switch (event.type) {
    case 'shard_created':
      state.shards.set(event.shard, { id: event.shard, topic: event.topic, leader: null, epoch: 0 });
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
      if (shard) shard.leader = event.node;
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
      if (table) state.tables.delete(table.schema.name);
      break;
    }
  }
  return state;
}
