import { decode } from '@msgpack/msgpack';
import type { TableSchema } from '../engine/schema.js';
import { RepriseError } from '../errors.js';
import type { LoggedEntry } from '../wal/entry.js';
import type { EntryId } from '../wal/log-store.js';
import { EpochFence } from '../wal/shard-reader.js';
import { applyMetaEvent, emptyMetaState, type FinishedProcedure, type MetaEvent, type MetaState, type NodeInfo, type ProcedureInfo, type ProcedureKind, type RegionInfo, type ShardInfo, type TableInfo, type TableStatus } from './model.js';

/**
 * The meta log's topic: beside the shards' topics, under the same prefix, so
 * that several reprise clusters can share one Kafka cluster (and Kafka's own
 * `__` prefix stays Kafka's).
 */
export function metaTopicOf(topicPrefix: string): string {
  return `${topicPrefix}_meta`;
}

/**
 * Reads of meta's state, shared by the service that writes the meta log
 * (MetaService) and by the replicas that tail it (MetaReplica, on nodes and
 * frontends). Both fold the same events with `applyMetaEvent`, so a replica
 * that has applied entry N sees exactly what the service saw after N.
 */
export class MetaView {
  protected state: MetaState = emptyMetaState();
  /** Id of the last meta log entry folded into the state (-1: none). */
  protected applied: EntryId = -1;
  /**
   * Meta's epoch markers, as a shard's: an entry of a lower epoch after a
   * higher marker is a deposed meta leader's, and is never folded (every
   * reader drops it alike, so all agree on the state).
   */
  protected fence = new EpochFence();
  /** Entries dropped by the fence. */
  fencedEntries = 0;
  private readonly listeners = new Set<() => void>();

  /** Take over another view's folded state (a replica that stopped tailing; it must not be used after). */
  protected adopt(from: MetaView): void {
    this.state = from.state;
    this.fence = from.fence;
    this.applied = from.applied;
    this.fencedEntries = from.fencedEntries;
  }

  /** The meta log entry id the state reflects. */
  get appliedEntryId(): EntryId {
    return this.applied;
  }

  /**
   * Called after every change of the state: each append of the service, each
   * entry a replica folds. Returns the function that stops the calls.
   */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  protected notifyChange(): void {
    for (const listener of this.listeners) listener();
  }

  /** Fold one meta log entry (non-data entries only advance the id). */
  protected applyEntry(topic: string, entry: LoggedEntry): void {
    if (!this.fence.admit(entry)) this.fencedEntries++;
    else if (entry.kind === 'data') applyMetaEvent(this.state, decodeMetaEvent(topic, entry));
    this.applied = entry.id;
  }

  /** The meta epoch of the newest marker folded (0: none): the epoch of the meta that wrote last. */
  get metaEpoch(): number {
    return this.fence.epochAt(Number.MAX_SAFE_INTEGER);
  }

  /**
   * Shards this node should lead. Embedded (`claimUnowned`): those it led
   * before and those nobody leads. In a cluster meta assigns every shard, so
   * a node opens only the shards assigned to it.
   */
  shardsFor(nodeId: string, claimUnowned = true): ShardInfo[] {
    return [...this.state.shards.values()].filter((s) => s.leader === nodeId || (claimUnowned && s.leader === null));
  }

  /** Shards this node should follow (hold a hot standby of). */
  shardsFollowedBy(nodeId: string): ShardInfo[] {
    return [...this.state.shards.values()].filter((s) => s.followers.includes(nodeId));
  }

  shard(shardId: number): ShardInfo {
    const shard = this.state.shards.get(shardId);
    if (!shard) throw new RepriseError('NOT_FOUND', `shard ${shardId} does not exist`);
    return shard;
  }

  shards(): ShardInfo[] {
    return [...this.state.shards.values()].sort((a, b) => a.id - b.id);
  }

  hasNode(nodeId: string): boolean {
    return this.state.nodes.has(nodeId);
  }

  nodes(): NodeInfo[] {
    return [...this.state.nodes.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** An active (visible) table; TABLE_NOT_FOUND otherwise. */
  table(name: string): TableInfo {
    const table = this.state.tables.get(name);
    if (!table || table.status !== 'active') {
      throw new RepriseError('TABLE_NOT_FOUND', `table '${name}' does not exist`, { table: name });
    }
    return table;
  }

  /** 'creating' from begin_create until the commit, then 'active'; undefined for a name no table has (or a create rolled back). */
  tableStatus(name: string): TableStatus | undefined {
    return this.state.tables.get(name)?.status;
  }

  /** A table by id, active or being created. */
  tableById(tableId: number): TableInfo | undefined {
    for (const table of this.state.tables.values()) if (table.id === tableId) return table;
    return undefined;
  }

  tables(): TableInfo[] {
    return [...this.state.tables.values()].filter((t) => t.status === 'active').sort((a, b) => a.id - b.id);
  }

  /** Tables whose creation began but never committed (a crash in between). */
  incompleteCreates(): TableInfo[] {
    return [...this.state.tables.values()].filter((t) => t.status === 'creating');
  }

  creatingRegionsOfShard(shardId: number): RegionInfo[] {
    return this.incompleteCreates().flatMap((t) => t.regions.filter((r) => r.shard === shardId));
  }

  /** Live regions of a shard, i.e. of active tables. */
  regionsOfShard(shardId: number): RegionInfo[] {
    const regions: RegionInfo[] = [];
    for (const table of this.tables()) for (const r of table.regions) if (r.shard === shardId) regions.push(r);
    return regions.sort((a, b) => a.id - b.id);
  }

  /** A region of an active table or of one being created, with its table's schema. */
  regionById(regionId: number): { region: RegionInfo; schema: TableSchema } | undefined {
    for (const table of this.state.tables.values()) {
      const region = table.regions.find((r) => r.id === regionId);
      if (region) return { region, schema: table.schema };
    }
    return undefined;
  }

  /** Procedures started and not finished, oldest first. */
  procedures(): ProcedureInfo[] {
    return [...this.state.procedures.values()].sort((a, b) => a.id - b.id);
  }

  /** A procedure running or among the newest finished ones (see FINISHED_PROCEDURES_KEPT), by id. */
  procedure(id: number): ProcedureInfo | FinishedProcedure | undefined {
    return this.state.procedures.get(id) ?? this.state.finishedProcedures.get(id);
  }

  /** The newest finished procedure of this kind on the shard, if it is still kept. */
  lastFinishedOn(kind: ProcedureKind, shardId: number): FinishedProcedure | undefined {
    let last: FinishedProcedure | undefined;
    for (const p of this.state.finishedProcedures.values()) if (p.kind === kind && p.shard === shardId && (last === undefined || p.id > last.id)) last = p;
    return last;
  }

  /** The running procedure moving a shard's leadership (migrate, failover), if any (there is at most one). */
  procedureOfShard(shardId: number): ProcedureInfo | undefined {
    for (const p of this.state.procedures.values()) if (p.shard === shardId) return p;
    return undefined;
  }

  /** Shards still led by the node an operator migrated each to (a rebalance moves them last). */
  placedByOperator(): Set<number> {
    return new Set(this.state.operatorPlacements.keys());
  }

  /** Running create_table procedures with a region on the shard (several tables may be created at once). */
  creationsOnShard(shardId: number): ProcedureInfo[] {
    const tables = new Set<number>();
    for (const table of this.state.tables.values()) if (table.regions.some((r) => r.shard === shardId)) tables.add(table.id);
    return [...this.state.procedures.values()].filter((p) => p.kind === 'create_table' && p.table !== undefined && tables.has(p.table)).sort((a, b) => a.id - b.id);
  }

  /** Regions of dropped tables and rolled-back creates: their files may go. */
  retiredRegions(): ReadonlyMap<number, 'dropped' | 'aborted'> {
    return this.state.retiredRegions;
  }

  /** The id the next region will get: every id below it was given out once. */
  nextRegionId(): number {
    return this.state.nextRegionId;
  }

  /** Every region id meta knows about (active or being created). */
  knownRegionIds(): Set<number> {
    const ids = new Set<number>();
    for (const table of this.state.tables.values()) for (const r of table.regions) ids.add(r.id);
    return ids;
  }
}

function decodeMetaEvent(topic: string, entry: LoggedEntry): MetaEvent {
  try {
    return decode(entry.body) as MetaEvent;
  } catch (err) {
    throw new RepriseError('META_CORRUPT', `meta log entry ${entry.id} in topic '${topic}' cannot be decoded`, { entryId: entry.id }, { cause: err });
  }
}
