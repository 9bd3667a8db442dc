import { encode } from '@msgpack/msgpack';
import pino, { type Logger } from 'pino';
import { RepriseError } from '../errors.js';
import { partitionCount } from '../engine/table/partition.js';
import type { TableSchema } from '../engine/schema.js';
import type { ProcedurePause, TestFaults } from '../testing/faults.js';
import type { EntryId, LogStore } from '../wal/log-store.js';
import { encodeEntry } from '../wal/codec.js';
import { readEntries } from '../wal/shard-reader.js';
import { TopicWriter } from '../wal/topic-writer.js';
import type { MetaReplica } from './meta-replica.js';
import { MetaView, metaTopicOf } from './meta-view.js';
import { applyMetaEvent, type MetaEvent, type ProcedureInfo, type ProcedureKind, type ProcedureOutcome, type TableInfo } from './model.js';
import { TableCreations } from './table-creations.js';
import { planRegions } from './placement.js';

export interface MetaOptions {
  /** Topic name prefix: shard s lives in `<prefix>_<s>`, meta in `<prefix>_meta`. */
  readonly topicPrefix: string;
  /**
   * Shards the cluster has: created on first start (DEFAULT_SHARDS when not
   * given), added when more than the log has; fewer is refused (a shard
   * holds regions and their WAL, and is never removed).
   */
  readonly numShards?: number;
  /** For the create_table procedures' warnings (rollbacks). Default: silent. */
  readonly logger?: Logger;
  /** A create table the frontend leaves unfinished this long is rolled back. Default 2 min. */
  readonly createTableTimeoutMs?: number;
  /** Tests only: pauses in the create_table procedure. */
  readonly procedurePause?: ProcedurePause;
  /**
   * This meta's epoch, from the election that made it leader. Its first
   * append is a marker of it, and every entry it writes carries it, so
   * readers drop whatever an older meta leader appends afterwards. Default
   * (one meta, nothing to elect): one above the newest marker in the log.
   */
  readonly epoch?: number;
  /**
   * Whether this meta still leads (its election lease holds). Checked
   * before and after every append. Default: always (one meta, no election).
   */
  readonly leading?: () => boolean;
  /** Tests only: deliberate bugs (src/testing/faults.ts). */
  readonly faults?: TestFaults;
}

/** Shards created on first start when none is asked for. */
export const DEFAULT_SHARDS = 4;

/** How long a frontend may take between begin_create and commit_create (or abort_create). */
export const DEFAULT_CREATE_TABLE_TIMEOUT_MS = 120_000;

/**
 * The metadata service, in-process. Its state is event-sourced in the
 * `<prefix>_meta` topic of a LogStore: every change is appended (durably) before it
 * is applied, and `open` rebuilds the state by folding the log. Operations
 * are serialised so check-then-append decisions cannot interleave.
 */
export class MetaService extends MetaView {
  private queue: Promise<unknown> = Promise.resolve();
  private ownEpoch = 0;
  /** Create table procedures, driven by the frontend's begin, commit and abort (procedure-machines.ts, run by table-creations.ts). */
  private readonly creations: TableCreations;

  private constructor(
    private readonly log: LogStore,
    private readonly writer: TopicWriter,
    private readonly options: MetaOptions,
  ) {
    super();
    this.creations = new TableCreations(this, options.logger ?? pino({ level: 'silent' }), options.createTableTimeoutMs ?? DEFAULT_CREATE_TABLE_TIMEOUT_MS, options.procedurePause);
  }

  /**
   * Open the service over the meta log: append this meta's epoch marker,
   * then fold the log up to it, so entries an older leader appended before
   * the marker (still in flight when it lost its lease) are folded, and any
   * it appends after it are fenced. `from`: a replica that has been tailing
   * the log (a meta replica taking over): its state is adopted and only the
   * entries between it and the marker are read; it is closed.
   */
  static async open(log: LogStore, options: MetaOptions, from?: MetaReplica): Promise<MetaService> {
    const topic = metaTopicOf(options.topicPrefix);
    await log.createTopic(topic);
    const meta = new MetaService(log, new TopicWriter(log, topic), options);
    let epoch: number;
    if (from) {
      if (options.epoch === undefined) throw new RepriseError('INVALID_ARGUMENT', 'a meta taking over from a replica needs the epoch it was elected at');
      epoch = options.epoch;
      meta.assertNewer(epoch, from.metaEpoch);
      const marker = await meta.appendMarker(epoch);
      await from.waitFor(marker);
      await from.close();
      meta.adopt(from);
    } else {
      // The meta log is never pruned: reading it from 0 makes a log that lost
      // its head (retention) a loud WAL_TRUNCATED instead of a partial state.
      for await (const entry of readEntries(log, topic, 0)) meta.applyEntry(topic, entry);
      epoch = options.epoch ?? meta.metaEpoch + 1;
      meta.assertNewer(epoch, meta.metaEpoch);
      const marker = await meta.appendMarker(epoch);
      for await (const entry of readEntries(log, topic, meta.applied + 1, { to: marker + 1 })) meta.applyEntry(topic, entry);
    }
    // A newer leader's marker landed before ours: ours is fenced, and so would be all this meta writes.
    if (meta.metaEpoch !== epoch) meta.assertNewer(epoch, meta.metaEpoch);
    meta.ownEpoch = epoch;
    await meta.ensureShards();
    return meta;
  }

  /** This meta's epoch (its marker is the first thing it appended). */
  get epoch(): number {
    return this.ownEpoch;
  }

  private assertNewer(epoch: number, newest: number): void {
    if (epoch > newest) return;
    throw new RepriseError(
      'NOT_LEADER',
      `meta epoch ${epoch} is not above the newest in the meta log (${metaTopicOf(this.options.topicPrefix)}), ${newest}: a newer meta leader has written; this one must not`,
      { epoch, newest },
    );
  }

  /** Append this meta's epoch marker, before anything else it appends; returns its id. */
  private async appendMarker(epoch: number): Promise<EntryId> {
    this.assertLeading('append its epoch marker');
    // The deliberate bug: no marker; the fold goes to the log's end as it is now, and nothing fences what a deposed leader appends later.
    if (this.options.faults?.skipMetaEpochMarker) return (await this.log.bounds(metaTopicOf(this.options.topicPrefix))).next - 1;
    return this.writer.append({ kind: 'epoch', region: 0, epoch, body: new Uint8Array() });
  }

  /** Refuse to write once this meta may no longer lead (its election lease ran out). */
  private assertLeading(what: string): void {
    if (this.options.leading && !this.options.leading()) {
      throw new RepriseError('NOT_LEADER', `meta (epoch ${this.ownEpoch}) no longer leads: it did not ${what}`, { epoch: this.ownEpoch });
    }
  }

  private async ensureShards(): Promise<void> {
    const existing = this.state.shards.size;
    const wanted = this.options.numShards ?? (existing > 0 ? existing : DEFAULT_SHARDS);
    if (wanted < existing) {
      throw new RepriseError(
        'INVALID_ARGUMENT',
        `${wanted} shard${wanted === 1 ? '' : 's'} asked for (shards, --shards or REPRISE_SHARDS), but this cluster's meta log (${metaTopicOf(this.options.topicPrefix)}) already has ${existing}: shards are never removed; ask for ${existing} or more, or leave the setting out to keep ${existing}`,
        { requested: wanted, existing },
      );
    }
    if (existing > 0 && wanted > existing) this.options.logger?.info({ from: existing, to: wanted }, `adding shards ${existing}..${wanted - 1} (the meta log had ${existing})`);
    for (let shard = 0; shard < wanted; shard++) {
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

  /**
   * Append the event durably, then apply it. Only while this meta leads,
   * checked before and after the append: an append that completes after the
   * lease ran out may have landed after a newer leader's marker (fenced), so
   * its outcome is unknown and nothing may act on it.
   */
  private async persist(event: MetaEvent): Promise<void> {
    this.assertLeading(`append ${event.type}`);
    const id = await this.writer.append({ kind: 'data', region: 0, epoch: this.epoch, body: encode(event) });
    this.assertLeading(`confirm ${event.type} (entry ${id} may or may not take effect)`);
    applyMetaEvent(this.state, event);
    this.applied = id;
    this.notifyChange();
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

  /**
   * Make `nodeId` the shard's leader-to-be without a new epoch: the node
   * takes the epoch with grantLeadership when it opens the shard. Meta's
   * scheduler uses this to place shards and to fail them over.
   */
  assignShard(shardId: number, nodeId: string): Promise<void> {
    return this.serialised(async () => {
      this.shard(shardId);
      await this.persist({ type: 'shard_assigned', shard: shardId, node: nodeId });
    });
  }

  /** Set the shard's hot-standby followers (the leader is never one). */
  assignFollowers(shardId: number, nodes: readonly string[]): Promise<void> {
    return this.serialised(async () => {
      this.shard(shardId);
      await this.persist({ type: 'followers_assigned', shard: shardId, nodes: [...nodes] });
    });
  }

  /** Embedded, the service is meta itself: always up to date. */
  async sync(): Promise<void> {}

  // ---- tables ----
  //
  // Create table is a procedure (create_table, table-creations.ts) that the
  // frontend drives: begin, then create_region on each region's shard
  // leader, then commit (or abort). Each step is recorded before its effect.

  /**
   * Step one of create table: fix ids and placement durably, and start the
   * create_table procedure (the frontend creates the regions next).
   */
  beginCreateTable(schema: TableSchema): Promise<TableInfo> {
    return this.creations.begin(schema);
  }

  /** Step two: every region has its region_create entry; the table becomes visible. */
  commitCreateTable(tableId: number, createdAt: Record<number, EntryId>): Promise<void> {
    return this.creations.commit(tableId, createdAt);
  }

  /** The frontend gave up (it dropped the regions it created): the table goes. */
  abortCreateTable(tableId: number, reason?: string): Promise<void> {
    return this.creations.abort(tableId, reason);
  }

  /** At start: a create table cut short by a crash never became visible: roll each one back. */
  async rollBackIncompleteCreates(logger?: Logger): Promise<void> {
    await this.creations.resume(logger);
  }

  /**
   * The create_table procedure's start: `procedure_started` then
   * `table_creating`, in one serialised step. Regions go to the shards
   * holding the fewest regions, so tables spread over shards, but not to a
   * shard being migrated or failed over (PROCEDURE_RUNNING if every shard is).
   */
  recordTableCreating(schema: TableSchema): Promise<{ table: TableInfo; procedure: ProcedureInfo }> {
    return this.serialised(async () => {
      if (this.state.tables.has(schema.name)) {
        throw new RepriseError('TABLE_EXISTS', `table '${schema.name}' already exists`, { table: schema.name });
      }
      if (this.state.shards.size === 0) throw new RepriseError('INTERNAL', 'meta has no shards to place regions on');
      const load = new Map<number, number>();
      for (const shard of this.state.shards.keys()) if (!this.procedureOfShard(shard)) load.set(shard, 0);
      if (load.size === 0) {
        throw new RepriseError('PROCEDURE_RUNNING', `every shard is being migrated or failed over: table '${schema.name}' has nowhere to place its regions yet; try again`, { table: schema.name });
      }
      for (const table of this.state.tables.values()) {
        for (const region of table.regions) if (load.has(region.shard)) load.set(region.shard, load.get(region.shard)! + 1);
      }
      const regions = planRegions(load, partitionCount(schema)).map((shard, partition) => ({ id: this.state.nextRegionId + partition, partition, shard }));
      const tableId = this.state.nextTableId;
      const id = this.state.nextProcedureId;
      await this.persist({ type: 'procedure_started', id, kind: 'create_table', shard: null, from: null, to: null, parent: null, table: tableId, state: 'creating_regions', at: Date.now() });
      try {
        await this.persist({ type: 'table_creating', tableId, schema, regions });
      } catch (err) {
        // Nothing to roll back: end the procedure now (if this fails too, the next meta's start does).
        await this.persist({ type: 'procedure_finished', id, outcome: 'failed', reason: `table_creating was not recorded: ${(err as Error).message}`, at: Date.now() }).catch(() => undefined);
        throw err;
      }
      return { table: this.state.tables.get(schema.name)!, procedure: { ...this.state.procedures.get(id)! } };
    });
  }

  /** The create_table procedure's commit: `table_created`, the table becomes visible. */
  recordTableCreated(tableId: number, createdAt: Record<number, EntryId>): Promise<void> {
    return this.serialised(() => this.persist({ type: 'table_created', tableId, createdAt }));
  }

  /** The create_table procedure's rollback: `table_create_aborted`, the table goes (its region_create entries stay in the shard topics, ignored). */
  recordTableCreateAborted(tableId: number): Promise<void> {
    return this.serialised(() => this.persist({ type: 'table_create_aborted', tableId }));
  }

  dropTable(name: string): Promise<TableInfo> {
    return this.serialised(async () => {
      const table = this.table(name);
      await this.persist({ type: 'table_dropped', tableId: table.id });
      return table;
    });
  }

  // ---- procedures (their machines: procedure-machines.ts) ----

  /**
   * Record that a procedure begins at its first step. One procedure per
   * shard and one rebalance at a time: a second is refused with
   * PROCEDURE_RUNNING (the check and the append are one serialised step).
   * A migration is refused also while a table with a region on the shard
   * is being created; a failover is not (a dead node's shard must move).
   * (create_table starts with recordTableCreating.)
   */
  startProcedure(p: { kind: Exclude<ProcedureKind, 'create_table'>; shard: number | null; from: string | null; to: string | null; parent: number | null; epoch?: number; state: string }): Promise<ProcedureInfo> {
    return this.serialised(async () => {
      if (p.shard !== null) {
        this.shard(p.shard);
        const running = this.procedureOfShard(p.shard) ?? (p.kind === 'migrate' ? this.creationsOnShard(p.shard)[0] : undefined);
        if (running) {
          throw new RepriseError('PROCEDURE_RUNNING', `shard ${p.shard} already has a procedure running: ${running.kind} #${running.id} (${running.state}); one procedure per shard at a time`, { shard: p.shard, procedure: running.id });
        }
      } else {
        const running = this.procedures().find((q) => q.kind === p.kind && q.shard === null);
        if (running) throw new RepriseError('PROCEDURE_RUNNING', `a ${p.kind} is already running: #${running.id} (${running.state})`, { procedure: running.id });
      }
      const id = this.state.nextProcedureId;
      await this.persist({ type: 'procedure_started', id, ...p, at: Date.now() });
      return { ...this.state.procedures.get(id)! };
    });
  }

  /** A procedure enters a step: recorded before the step's effect runs, so a restarted meta resumes there. */
  recordProcedureStep(id: number, state: string): Promise<void> {
    return this.serialised(async () => {
      if (!this.state.procedures.has(id)) throw new RepriseError('NOT_FOUND', `procedure #${id} is not running`);
      await this.persist({ type: 'procedure_step', id, state, at: Date.now() });
    });
  }

  finishProcedure(id: number, outcome: ProcedureOutcome, reason?: string): Promise<void> {
    return this.serialised(() => this.persist({ type: 'procedure_finished', id, outcome, ...(reason !== undefined ? { reason } : {}), at: Date.now() }));
  }

  async close(): Promise<void> {
    // Table creations stop where they are (the next meta rolls them back).
    this.creations.close();
    await this.queue;
    await this.writer.close();
  }
}
