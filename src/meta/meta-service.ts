import { decode, encode } from '@msgpack/msgpack';
import { RepriseError } from '../errors.js';
import { partitionCount } from '../engine/table/partition.js';
import type { TableSchema } from '../engine/schema.js';
import type { EntryId, LogStore } from '../wal/log-store.js';
import { encodeEntry } from '../wal/codec.js';
import { readEntries } from '../wal/shard-reader.js';
import { TopicWriter } from '../wal/topic-writer.js';
import {
  applyMetaEvent,
  emptyMetaState,
  type MetaEvent,
  type MetaState,
  type RegionInfo,
  type ShardInfo,
  type TableInfo,
} from './model.js';

/**
 * The meta log's topic: beside the shards' topics, under the same prefix, so
 * that several reprise clusters can share one Kafka cluster (and Kafka's own
 * `__` prefix stays Kafka's).
 */
export function metaTopicOf(topicPrefix: string): string {
  return `${topicPrefix}_meta`;
}

export interface MetaOptions {
  /** Topic name prefix: shard s lives in `<prefix>_<s>`, meta in `<prefix>_meta`. */
  readonly topicPrefix: string;
  /** Shards to create on first start (existing shards are kept). */
  readonly numShards: number;
}

/**
 * The metadata service, in-process. Its state is event-sourced in the
 * `<prefix>_meta` topic of a LogStore: every change is appended (durably) before it
 * is applied, and `open` rebuilds the state by folding the log. Operations
 * are serialised so check-then-append decisions cannot interleave.
 */
export class MetaService {
  private readonly state: MetaState = emptyMetaState();
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly log: LogStore,
    private readonly writer: TopicWriter,
    private readonly options: MetaOptions,
  ) {}

  static async open(log: LogStore, options: MetaOptions): Promise<MetaService> {
    const topic = metaTopicOf(options.topicPrefix);
    await log.createTopic(topic);
    const meta = new MetaService(log, new TopicWriter(log, topic), options);
    // The meta log is never pruned: reading it from 0 makes a log that lost
    // its head (retention) a loud WAL_TRUNCATED instead of a partial state.
    for await (const entry of readEntries(log, topic, 0)) {
      if (entry.kind !== 'data') continue;
      let event: MetaEvent;
      try {
        event = decode(entry.body) as MetaEvent;
      } catch (err) {
        throw new RepriseError('META_CORRUPT', `meta log entry ${entry.id} in topic '${topic}' cannot be decoded`, {
          entryId: entry.id,
        }, { cause: err });
      }
      applyMetaEvent(meta.state, event);
    }
    await meta.ensureShards();
    return meta;
  }

  private async ensureShards(): Promise<void> {
    for (let shard = 0; shard < this.options.numShards; shard++) {
      if (this.state.shards.has(shard)) continue;
      const topic = `${this.options.topicPrefix}_${shard}`;
      await this.log.createTopic(topic);
      // A marker first, so real entries never start at id 0 by accident.
      if ((await this.log.bounds(topic)).next === 0) {
        await this.log.append(topic, encodeEntry({ kind: 'topic_marker', region: 0, epoch: 0, body: new Uint8Array() }));
      }
      await this.persist({ type: 'shard_created', shard, topic });
    }
  }

  /** Append the event durably, then apply it. */
  private async persist(event: MetaEvent): Promise<void> {
    await this.writer.append({ kind: 'data', region: 0, epoch: 0, body: encode(event) });
    applyMetaEvent(this.state, event);
  }

  private serialised<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queue.then(op, op);
    this.queue = result.catch(() => undefined);
    return result;
  }

  // ---- nodes and leadership ----

  registerNode(nodeId: string): Promise<void> {
    return this.serialised(() => this.persist({ type: 'node_registered', node: nodeId, at: Date.now() }));
  }

  /**
   * Shards this node should lead: those it led before and those nobody
   * leads (static topology, one node embedded; the distributed scheduler
   * replaces this choice).
   */
  shardsFor(nodeId: string): ShardInfo[] {
    return [...this.state.shards.values()].filter((s) => s.leader === null || s.leader === nodeId);
  }

  /** Grant leadership of a shard to a node with a new epoch (persisted before it is returned). */
  grantLeadership(shardId: number, nodeId: string): Promise<{ epoch: number; topic: string }> {
    return this.serialised(async () => {
      const shard = this.shard(shardId);
      if (shard.leader !== null && shard.leader !== nodeId) {
        throw new RepriseError('NOT_LEADER', `shard ${shardId} is led by node '${shard.leader}', not '${nodeId}'`);
      }
      const epoch = shard.epoch + 1;
      await this.persist({ type: 'leader_granted', shard: shardId, node: nodeId, epoch });
      return { epoch, topic: shard.topic };
    });
  }

  shard(shardId: number): ShardInfo {
    const shard = this.state.shards.get(shardId);
    if (!shard) throw new RepriseError('NOT_FOUND', `shard ${shardId} does not exist`);
    return shard;
  }

  shards(): ShardInfo[] {
    return [...this.state.shards.values()].sort((a, b) => a.id - b.id);
  }

  // ---- tables ----

  /**
   * Step one of create table: fix ids and placement durably. Regions go to
   * the shards holding the fewest regions, so tables spread over shards.
   */
  beginCreateTable(schema: TableSchema): Promise<TableInfo> {
    return this.serialised(async () => {
      if (this.state.tables.has(schema.name)) {
        throw new RepriseError('TABLE_EXISTS', `table '${schema.name}' already exists`, { table: schema.name });
      }
      const load = new Map<number, number>();
      for (const shard of this.state.shards.keys()) load.set(shard, 0);
      for (const table of this.state.tables.values()) {
        for (const region of table.regions) load.set(region.shard, (load.get(region.shard) ?? 0) + 1);
      }
      if (load.size === 0) throw new RepriseError('INTERNAL', 'meta has no shards to place regions on');
      const regions: { id: number; partition: number; shard: number }[] = [];
      for (let partition = 0; partition < partitionCount(schema); partition++) {
        const [shard] = [...load.entries()].sort((a, b) => a[1] - b[1] || a[0] - b[0])[0]!;
        load.set(shard, load.get(shard)! + 1);
        regions.push({ id: this.state.nextRegionId + partition, partition, shard });
      }
      const tableId = this.state.nextTableId;
      await this.persist({ type: 'table_creating', tableId, schema, regions });
      return this.state.tables.get(schema.name)!;
    });
  }

  /** Step two: every region has its region_create entry; the table becomes visible. */
  commitCreateTable(tableId: number, createdAt: Record<number, EntryId>): Promise<void> {
    return this.serialised(() => this.persist({ type: 'table_created', tableId, createdAt }));
  }

  abortCreateTable(tableId: number): Promise<void> {
    return this.serialised(() => this.persist({ type: 'table_create_aborted', tableId }));
  }

  dropTable(name: string): Promise<TableInfo> {
    return this.serialised(async () => {
      const table = this.table(name);
      await this.persist({ type: 'table_dropped', tableId: table.id });
      return table;
    });
  }

  /** An active (visible) table; TABLE_NOT_FOUND otherwise. */
  table(name: string): TableInfo {
    const table = this.state.tables.get(name);
    if (!table || table.status !== 'active') {
      throw new RepriseError('TABLE_NOT_FOUND', `table '${name}' does not exist`, { table: name });
    }
    return table;
  }

  tables(): TableInfo[] {
    return [...this.state.tables.values()].filter((t) => t.status === 'active').sort((a, b) => a.id - b.id);
  }

  /** Tables whose creation began but never committed (a crash in between). */
  incompleteCreates(): TableInfo[] {
    return [...this.state.tables.values()].filter((t) => t.status === 'creating');
  }

  /** Live regions of a shard, i.e. of active tables. */
  regionsOfShard(shardId: number): RegionInfo[] {
    const regions: RegionInfo[] = [];
    for (const table of this.tables()) for (const r of table.regions) if (r.shard === shardId) regions.push(r);
    return regions.sort((a, b) => a.id - b.id);
  }

  /** Every region id meta knows about (active or being created). */
  knownRegionIds(): Set<number> {
    const ids = new Set<number>();
    for (const table of this.state.tables.values()) for (const r of table.regions) ids.add(r.id);
    return ids;
  }

  async close(): Promise<void> {
    await this.queue;
    await this.writer.close();
  }
}
