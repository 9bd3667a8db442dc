import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { DEFAULT_FLUSH_POLICY, type ActorContext, type FlushPolicy, type FollowerApply, type ReplayProgress, type Transition } from '../actors/context.js';
import { NodeActor } from '../actors/node.js';
import { errorReason } from '../machine-effects.js';
import type { Deadline } from '../deadline.js';
import type { TestHooks } from '../testing/faults.js';
import { isRepriseError, RepriseError } from '../errors.js';
import type { ObjectStore } from '../engine/object-store.js';
import type { PreparedWrite, RegionEngine } from '../engine/region-engine.js';
import { rowsOf, type ColumnarRows, type Row, type TableSchema, type Value } from '../engine/schema.js';
import { queryTable } from '../frontend/query.js';
import { tableMutationCodec } from '../engine/table/codec.js';
import { partitionOf } from '../engine/table/partition.js';
import { TableEngine } from '../engine/table/table-engine.js';
import { DEFAULT_SCHEMA_LIMITS, validateKeys, validateSchema, type SchemaLimits } from '../engine/table/validate.js';
import { MetaService } from '../meta/meta-service.js';
import { metaTopicOf, type MetaView } from '../meta/meta-view.js';
import { FINISHED_PROCEDURES_KEPT, type FinishedProcedure, type ProcedureInfo, type TableInfo, type TableStatus } from '../meta/model.js';
import { DEFAULT_MAX_BATCH_BYTES } from '../wal/entry.js';
import type { LogStore } from '../wal/log-store.js';
import { openLogStore, type WalOptions } from '../wal/open-log-store.js';
import { MetaReplica } from '../meta/meta-replica.js';
import { RemoteMeta } from '../meta/remote-meta.js';
import { ASSIGNMENT_CHANGED, type ClusterMetaStatus } from '../meta/meta-server.js';
import type { Transport } from '../transport/transport.js';
import { RuntimeObserver } from './observe.js';
import type { EncodedTable, TableCatalog } from './write-encoding.js';
import { openObjectStore, type OpenedObjectStore, type StorageOptions } from './storage.js';
import type { MemoryStatus, RuntimeStatus } from './runtime-status.js';

export type { MemoryStatus, RuntimeStatus } from './runtime-status.js';
import { RESULT_ROWS_IN_FLIGHT_FACTOR, ResultBudget, rowsOfResult } from './result-budget.js';
import { LeaseKeeper } from './lease.js';
import { ClusterShardRouter, LocalShardRouter, serveNode, type ClusterRoutingOptions, type ShardRouter } from './routing.js';

/** What the API needs from meta: the MetaService embedded, RemoteMeta in a cluster. */
export interface RuntimeMeta {
  beginCreateTable(schema: TableSchema): Promise<TableInfo>;
  commitCreateTable(tableId: number, createdAt: Record<number, number>): Promise<void>;
  /** `reason`: why the frontend gave up, for meta's record of the create_table procedure. */
  abortCreateTable(tableId: number, reason?: string): Promise<void>;
  dropTable(name: string): Promise<TableInfo>;
  table(name: string): TableInfo;
  tables(): TableInfo[];
  /** 'creating' or 'active' as this node has seen it; undefined: no such table (or its create was rolled back). */
  tableStatus(name: string): TableStatus | undefined;
  /** Called after every change of this node's view of meta (listeners must not throw). */
  onChange(listener: () => void): () => void;
  /** Cluster: catch up with meta's log (another frontend may have just created the table). */
  sync?(): Promise<void>;
  /** Cluster: meta's view of nodes and shards. */
  status?(): Promise<ClusterMetaStatus>;
  /** Cluster: planned move of a shard's leadership. */
  migrate?(shardId: number, to: string): Promise<{ shard: number; from: string; to: string; ms: number }>;
}

/**
 * How long ensureTable waits for a table that another request is creating
 * to become visible before it answers UNAVAILABLE (retry). A create takes a
 * few WAL appends; one left unfinished (its frontend died) is rolled back by
 * meta after DEFAULT_CREATE_TABLE_TIMEOUT_MS, and a wait that outlives it
 * creates the table itself.
 */
export const TABLE_CREATE_WAIT_MS = 30_000;

export interface OpenOptions {
  /** Where the local WAL, meta and (by default) the object store live. */
  readonly dataDir: string;
  /** Directory for SSTs and manifests with storage `local` (the default); default `<dataDir>/objects`. */
  readonly objectStoreDir?: string;
  /** Where SSTs and manifests live: `{ type: 'local' }` (objectStoreDir, the default) or an S3 bucket, cached under `<dataDir>/cache`. */
  readonly storage?: StorageOptions;
  /** The WAL: the local LevelDB log under `<dataDir>/wal` (default), or Kafka. */
  readonly wal?: WalOptions;
  /** Shards (WAL topics): created on first start (default DEFAULT_SHARDS, 4), added if more than the data dir has; fewer is INVALID_ARGUMENT. Default: what the data dir has. */
  readonly shards?: number;
  readonly nodeId?: string;
  readonly flush?: Partial<Omit<FlushPolicy, 'nodeMemtableBytes'>>;
  readonly memory?: MemoryOptions;
  /** Caps on what a table may declare (columns, partition bounds). Default DEFAULT_SCHEMA_LIMITS. */
  readonly limits?: Partial<SchemaLimits>;
  /** A pino logger, or false for silence. Default: pino at 'info' on stderr. */
  readonly logger?: Logger | false;
  readonly onReplayProgress?: (p: ReplayProgress) => void;
  readonly onTransition?: (t: Transition) => void;
}

/** A node of a cluster: meta runs elsewhere (`reprise meta`), the WAL is Kafka, SSTs live in a shared directory. */
export interface JoinOptions {
  /** This node's id: letters, digits, '-' and '_' (it names NATS subjects). */
  readonly nodeId: string;
  /** Subjects are `reprise.<cluster>.*`. */
  readonly transport: Transport;
  /**
   * The cluster's WAL (Kafka). With `log` given, only its `topicPrefix` and
   * `maxBatchBytes` are read, and it may be `{ provider: 'local' }`.
   */
  readonly wal: WalOptions;
  /**
   * For tests and simulation: an already open LogStore to use instead of
   * opening one from `wal` (e.g. one LocalLogStore shared by meta and every
   * node of a cluster run in one process). The caller owns it: closing the
   * runtime does not close it.
   */
  readonly log?: LogStore;
  /** The directory every node shares for SSTs and manifests (storage `local`, the default). */
  readonly objectStoreDir?: string;
  /** Where SSTs and manifests live: a shared directory (`local`, objectStoreDir) or an S3 bucket every node uses. */
  readonly storage?: StorageOptions;
  /** This node's own directory: with storage `s3`, its SST cache lives in `<dataDir>/cache`. */
  readonly dataDir?: string;
  /**
   * For tests and simulation: an object store to use instead of `storage`
   * (e.g. one whose writes a test holds). The caller owns it.
   */
  readonly objects?: ObjectStore;
  /** Heartbeat interval; meta's reply sets the lease. Default 200 ms. */
  readonly heartbeatMs?: number;
  /** Deadlines of operations routed to shard leaders (tests shorten them). */
  readonly routing?: ClusterRoutingOptions;
  readonly flush?: Partial<Omit<FlushPolicy, 'nodeMemtableBytes'>>;
  readonly memory?: MemoryOptions;
  /** Caps on what a table may declare (columns, partition bounds). Default DEFAULT_SCHEMA_LIMITS. */
  readonly limits?: Partial<SchemaLimits>;
  readonly logger?: Logger | false;
  readonly onReplayProgress?: (p: ReplayProgress) => void;
  readonly onTransition?: (t: Transition) => void;
  /** Each data entry a hot-standby follower on this node applies, with its lag behind the append. */
  readonly onFollowerApply?: (a: FollowerApply) => void;
  /** How long a node started before meta waits for meta's log to exist. Default META_LOG_WAIT_MS. */
  readonly metaWaitMs?: number;
  /** Deliberate bugs and observation, for the simulation only (src/testing/faults.ts). */
  readonly testHooks?: TestHooks;
}

/** Queries a delete runs at once to count the rows it removes. */
const LIVE_LOOKUPS_AT_ONCE = 32;

/** Run `tasks`, LIVE_LOOKUPS_AT_ONCE at a time. */
async function inParallel(tasks: readonly (() => Promise<void>)[]): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) await tasks[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(LIVE_LOOKUPS_AT_ONCE, tasks.length) }, worker));
}

/** A node started before meta (or with meta restarting) waits this long for meta's log before it gives up. */
export const META_LOG_WAIT_MS = 5 * 60_000;

/**
 * Wait until meta's log topic exists: meta creates it on its first start,
 * and nodes started at the same time (the README's cluster walkthrough, a
 * compose file) may come first. Retries with backoff up to 2 s, logging
 * what it waits for; UNAVAILABLE naming the topic after `waitMs`.
 */
async function waitForMetaLog(log: LogStore, topic: string, logger: Logger, waitMs: number): Promise<void> {
  const t0 = Date.now();
  let delay = 50;
  let nextLog = 0;
  for (;;) {
    try {
      await log.bounds(topic);
      if (nextLog > 0) logger.info({ topic }, `meta's log ${topic} exists: joining`);
      return;
    } catch (err) {
      if (!isRepriseError(err, 'NOT_FOUND')) throw err;
    }
    const waited = Date.now() - t0;
    if (waited >= waitMs) {
      throw new RepriseError('UNAVAILABLE', `meta's log (WAL topic ${topic}) does not exist after ${Math.round(waited / 1000)} s: is \`reprise meta\` running with the same WAL and topic prefix?`, { topic });
    }
    if (waited >= nextLog) {
      logger.warn({ topic, waitedMs: waited }, `waiting for meta to create its log (WAL topic ${topic}); start \`reprise meta\` with the same WAL and topic prefix`);
      nextLog = waited + 10_000;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(2000, delay * 2);
  }
}

export interface TableDescription {
  readonly name: string;
  readonly id: number;
  readonly schema: TableSchema;
  readonly regions: { readonly id: number; readonly partition: number; readonly shard: number }[];
}


/** Memory is set by configuration, not by the data: these bound it. */
export interface MemoryOptions {
  /** Memtables of the shards a node leads; past it the node flushes the largest. Default 256 MiB. */
  readonly memtableBytes?: number;
  /** SST indexes and decoded SST chunks kept for queries, half each. Default 64 MiB. */
  readonly cacheBytes?: number;
  /** A query result (rows, or groups of an aggregation) larger than this fails QUERY_TOO_LARGE. Default 1,000,000. */
  readonly maxResultRows?: number;
  /**
   * Result rows (or groups) this node's queries may hold at once; a query
   * that would pass it fails OVERLOADED (retry). At least maxResultRows.
   * Default RESULT_ROWS_IN_FLIGHT_FACTOR (2) x maxResultRows.
   */
  readonly maxResultRowsInFlight?: number;
}


/** Every node's actor tree and, in a cluster, meta's view: node liveness, shard leaders and epochs. */
export interface ClusterStatus extends RuntimeStatus {
  readonly meta?: ClusterMetaStatus;
}

function describe(table: TableInfo): TableDescription {
  return {
    name: table.schema.name,
    id: table.id,
    schema: table.schema,
    regions: table.regions.map((r) => ({ id: r.id, partition: r.partition, shard: r.shard })),
  };
}

/**
 * The embedded runtime: meta, one node and the local WAL in this process.
 * Every write resolves only once its WAL entry is durable.
 */
export class Reprise {
  private closed = false;
  /** ensureTable calls under way in this process, by table name: concurrent ones share one. */
  private readonly ensuring = new Map<string, Promise<TableDescription>>();
  /** Cancels each wait for another request's create (close() ends them). */
  private readonly waits = new Set<(err: Error) => void>();
  /** The tables as the write encoders see them (tableCatalog), rebuilt after meta changes. */
  private catalog: TableCatalog = new Map();
  private catalogStale = true;
  private watchingCatalog = false;

  private constructor(
    private readonly log: LogStore,
    private readonly meta: RuntimeMeta,
    /** What `meta` reads from: meta's state embedded, the node's replica of the meta log in a cluster. */
    private readonly metaLog: MetaView,
    private readonly router: ShardRouter,
    private readonly node: NodeActor,
    readonly logger: Logger,
    /** This runtime's Prometheus registry and live events (transitions, replay progress). */
    readonly observer: RuntimeObserver,
    /** Closes what this assembly opened besides the node and the log (meta, transport, heartbeats). */
    private readonly release: () => Promise<void>,
    private readonly limits: SchemaLimits,
    /** Result rows held by this node's queries (memory.maxResultRowsInFlight). */
    private readonly results: ResultBudget,
  ) {}

  static async open(options: OpenOptions): Promise<Reprise> {
    const dataDir = resolve(options.dataDir);
    const logger = loggerOf(options.logger);
    await mkdir(dataDir, { recursive: true });
    const observer = new RuntimeObserver(options);
    const log = observer.instrumentLog(await openLogStore(options.wal ?? { provider: 'local' }, join(dataDir, 'wal'), logger));
    let store: OpenedObjectStore | undefined;
    try {
      const meta = await MetaService.open(log, {
        topicPrefix: options.wal?.topicPrefix ?? 'reprise_wal',
        numShards: options.shards,
        logger,
      });
      store = await openObjectStore(options.storage, { directory: options.objectStoreDir ? resolve(options.objectStoreDir) : join(dataDir, 'objects'), dataDir });
      const { objects } = store;
      const engine = engineOf(options.memory);
      const results = resultBudgetOf(options.memory, engine);
      await meta.rollBackIncompleteCreates(logger);
      const catalog = options.wal?.provider === 'kafka' ? `the meta log (Kafka topic ${metaTopicOf(options.wal.topicPrefix ?? 'reprise_wal')})` : `the meta log in the local WAL at ${join(dataDir, 'wal')}`;
      await reconcileRegionFiles(objects, meta, engine, logger, { dataDir, objectsDir: store.where, catalog });
      const node = observedNode(observer, log, { nodeId: options.nodeId ?? 'node-1', meta, engine, objects, logger }, options, results, store);
      await node.start();
      const release = async () => {
        objects.close?.();
        await meta.close();
      };
      return new Reprise(log, meta, meta, new LocalShardRouter(node), node, logger, observer, release, { ...DEFAULT_SCHEMA_LIMITS, ...options.limits }, results);
    } catch (err) {
      store?.objects.close?.();
      await log.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Join a cluster as node `nodeId`: follow meta's log, register, lead the
   * shards meta assigns (reopening them elsewhere is meta's failover), serve
   * them to the other nodes, and route this API's operations to whichever
   * node leads each shard. Transport and the returned runtime are the
   * caller's to close (the runtime first).
   */
  static async join(options: JoinOptions): Promise<Reprise> {
    if (!/^[A-Za-z0-9_-]+$/.test(options.nodeId)) {
      throw new RepriseError('INVALID_ARGUMENT', `node id '${options.nodeId}' may hold only letters, digits, '-' and '_'`);
    }
    const logger = loggerOf(options.logger);
    const observer = new RuntimeObserver(options);
    if (!options.log && options.wal.provider !== 'kafka') {
      throw new RepriseError('INVALID_ARGUMENT', `a cluster node needs the Kafka WAL (wal.provider 'kafka'), got '${options.wal.provider}'`);
    }
    const log = observer.instrumentLog(options.log ? borrowedLog(options.log) : await openLogStore(options.wal, ''));
    const cleanup: (() => Promise<unknown>)[] = [];
    try {
      const topicPrefix = options.wal.topicPrefix ?? 'reprise_wal';
      await waitForMetaLog(log, metaTopicOf(topicPrefix), logger, options.metaWaitMs ?? META_LOG_WAIT_MS);
      const replica = await MetaReplica.open(log, topicPrefix);
      cleanup.unshift(() => replica.close());
      const meta = new RemoteMeta(options.transport, replica);
      if (!options.objects && (options.storage?.type ?? 'local') === 'local' && !options.objectStoreDir) {
        throw new RepriseError('INVALID_ARGUMENT', `node '${options.nodeId}': storage 'local' needs objectStoreDir, the directory every node shares (or use storage 's3')`);
      }
      const store: OpenedObjectStore = options.objects
        ? { objects: options.objects, where: 'the object store given to Reprise.join', type: 'local' }
        : await openObjectStore(options.storage, { directory: options.objectStoreDir ?? '', ...(options.dataDir ? { dataDir: options.dataDir } : {}) });
      const { objects } = store;
      if (!options.objects) cleanup.push(async () => objects.close?.());
      let keeper: LeaseKeeper | undefined;
      const engine = engineOf(options.memory);
      const results = resultBudgetOf(options.memory, engine);
      const node = observedNode(
        observer,
        log,
        {
          nodeId: options.nodeId,
          meta,
          leaseHeld: () => keeper?.leaseHeld() ?? false,
          awaitLease: (timeoutMs) => keeper?.awaitLease(timeoutMs) ?? Promise.resolve(false),
          engine,
          objects,
          logger,
        },
        options,
        results,
        store,
      );
      const subscriptions = await serveNode(options.transport, options.nodeId, node);
      cleanup.unshift(async () => {
        for (const s of subscriptions) await s.close();
      });
      await node.start();
      keeper = new LeaseKeeper(options.nodeId, node, meta, logger, options.heartbeatMs ?? 200, options.testHooks?.faults);
      keeper.start();
      const stopKeeper = keeper;
      // Meta's nudge after it changed what this node holds: learn it now, not at the next heartbeat.
      subscriptions.push(await options.transport.serve(options.transport.subject('node', options.nodeId, ASSIGNMENT_CHANGED), () => {
        stopKeeper.beatNow();
        return {};
      }));
      // After the node closed (shards flushed): stop heartbeats, then hand the
      // shards off to meta at once instead of after the failure timeout.
      cleanup.unshift(async () => {
        await stopKeeper.stop();
        await meta.leave(options.nodeId).catch((err: unknown) => logger.warn({ err }, 'could not tell meta this node is leaving; its shards move after the failure timeout'));
      });
      const router = new ClusterShardRouter(options.transport, replica, logger, options.routing);
      const release = async () => {
        for (const step of cleanup) await step();
      };
      return new Reprise(log, meta, replica, router, node, logger, observer, release, { ...DEFAULT_SCHEMA_LIMITS, ...options.limits }, results);
    } catch (err) {
      for (const step of cleanup) await step().catch(() => undefined);
      await log.close().catch(() => undefined);
      throw err;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new RepriseError('CLOSED', 'the runtime is closed');
  }

  /** The table, looked up again after catching up with meta when this node has not seen it yet. */
  private async tableInfo(name: string): Promise<TableInfo> {
    try {
      return this.meta.table(name);
    } catch (err) {
      if (!this.meta.sync || !isRepriseError(err, 'TABLE_NOT_FOUND')) throw err;
      await this.meta.sync();
      return this.meta.table(name);
    }
  }

  /**
   * Create a table and its regions (one per range partition), placed on the
   * least loaded shards. Visible only once every region exists.
   */
  async createTable(input: unknown): Promise<TableDescription> {
    this.assertOpen();
    const schema = validateSchema(input, this.limits);
    const table = await this.meta.beginCreateTable(schema);
    try {
      const createdAt: Record<number, number> = {};
      for (const region of table.regions) {
        createdAt[region.id] = await this.router.createRegion(region.shard, region, schema);
      }
      await this.meta.commitCreateTable(table.id, createdAt);
    } catch (err) {
      for (const region of table.regions) await this.router.dropRegion(region.shard, region.id).catch(() => undefined);
      await this.meta.abortCreateTable(table.id, errorReason(err));
      throw err;
    }
    return describe(this.meta.table(schema.name));
  }

  /**
   * The table `input` names, created from `input` if there is none (line
   * protocol's autoCreateTables). However many callers ask at once, here or
   * on other nodes, the table is created once: meta lets one begin_create
   * through and answers the others TABLE_EXISTS, and those wait until the
   * table is visible (committed), or create it themselves if that create is
   * rolled back. Concurrent calls in this process share one attempt. Only
   * the caller whose create made it gets `created: true`; the others get the
   * table as it was created, whose schema may differ from their `input`.
   * UNAVAILABLE if another request's create is not visible within `waitMs`.
   */
  async ensureTable(input: unknown, options: { waitMs?: number } = {}): Promise<{ table: TableDescription; created: boolean }> {
    this.assertOpen();
    const schema = validateSchema(input, this.limits);
    if (this.meta.tableStatus(schema.name) === 'active') return { table: describe(this.meta.table(schema.name)), created: false };
    const running = this.ensuring.get(schema.name);
    if (running) return { table: await running, created: false };
    let created = false;
    const attempt = this.createOrAwait(schema, options.waitMs ?? TABLE_CREATE_WAIT_MS, () => (created = true));
    this.ensuring.set(schema.name, attempt);
    try {
      return { table: await attempt, created };
    } finally {
      this.ensuring.delete(schema.name);
    }
  }

  private async createOrAwait(schema: TableSchema, waitMs: number, onCreated: () => void): Promise<TableDescription> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        const table = await this.createTable(schema);
        onCreated();
        return table;
      } catch (err) {
        if (!isRepriseError(err, 'TABLE_EXISTS')) throw err;
      }
      // Meta has the table, committed or being created by another request:
      // this node's view may not have it yet (a replica), so catch up first.
      if (this.meta.tableStatus(schema.name) === undefined) await this.meta.sync?.();
      const table = await this.awaitCreated(schema.name, deadline, waitMs);
      if (table) return table;
      // That create was rolled back (or the table dropped) meanwhile: create it here.
    }
  }

  /** The table once it is visible, or undefined once it is gone (its create rolled back); UNAVAILABLE at `deadline`. */
  private awaitCreated(name: string, deadline: number, waitMs: number): Promise<TableDescription | undefined> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        stopListening();
        clearTimeout(timer);
        this.waits.delete(cancel);
        outcome();
      };
      const check = () => {
        const status = this.meta.tableStatus(name);
        if (status === 'active') settle(() => resolve(describe(this.meta.table(name))));
        else if (status === undefined) settle(() => resolve(undefined));
      };
      const cancel = (err: Error) => settle(() => reject(err));
      const stopListening = this.meta.onChange(check);
      const timer = setTimeout(
        () => cancel(new RepriseError('UNAVAILABLE', `table '${name}' is being created by another request, which did not commit it within ${waitMs} ms; retry`, { table: name })),
        Math.max(0, deadline - Date.now()),
      );
      this.waits.add(cancel);
      if (this.closed) cancel(new RepriseError('CLOSED', 'the runtime is closed'));
      check();
    });
  }

  async dropTable(name: string): Promise<void> {
    this.assertOpen();
    const table = await this.meta.dropTable(name);
    for (const region of table.regions) await this.router.dropRegion(region.shard, region.id);
  }

  listTables(): TableDescription[] {
    return this.meta.tables().map(describe);
  }

  describeTable(name: string): TableDescription {
    return describe(this.meta.table(name));
  }

  /** describeTable, after catching up with meta when this node has not seen the table yet (in a cluster, one just created elsewhere). */
  async lookUpTable(name: string): Promise<TableDescription> {
    return describe(await this.tableInfo(name));
  }

  /**
   * The active tables by name, with their ids and schemas: what write
   * encoders validate against (see ./write-encoding.ts). The same object
   * until a table is created or dropped, so a worker is sent a new one only
   * then.
   */
  tableCatalog(): TableCatalog {
    if (!this.watchingCatalog) {
      this.watchingCatalog = true;
      this.meta.onChange(() => (this.catalogStale = true));
    }
    if (this.catalogStale) {
      this.catalogStale = false;
      const tables = this.meta.tables();
      const same = tables.length === this.catalog.size && tables.every((t) => this.catalog.get(t.schema.name)?.id === t.id);
      if (!same) this.catalog = new Map(tables.map((t) => [t.schema.name, { id: t.id, schema: t.schema }]));
    }
    return this.catalog;
  }

  /**
   * Append writes encoded against tableCatalog() (by a write encoder, on any
   * thread): resolves, with the rows written, once all are durable. undefined,
   * having written nothing, when a table is no longer the one they were
   * encoded for (dropped, or dropped and created again): encode them again.
   */
  writeEncoded(writes: readonly EncodedTable[], deadline?: Deadline): Promise<{ written: number }> | undefined {
    this.assertOpen();
    const tables: TableInfo[] = [];
    for (const w of writes) {
      const table = this.meta.tableStatus(w.table) === 'active' ? this.meta.table(w.table) : undefined;
      if (table?.id !== w.id) return undefined;
      tables.push(table);
    }
    const written = writes.reduce((n, w) => n + w.prepared.count, 0);
    return Promise.all(writes.map((w, i) => this.writeByRegion(tables[i]!, w.prepared, deadline))).then(() => ({ written }));
  }

  /**
   * Insert (upsert by primary key) rows. Resolves once every row is durable
   * in the WAL. Rows are validated first: one bad row rejects the request and
   * nothing is written. Rows of different regions are written to their
   * regions independently.
   */
  async insert(tableName: string, rows: unknown, deadline?: Deadline): Promise<{ written: number }> {
    this.assertOpen();
    const table = await this.tableInfo(tableName);
    // Validated and encoded in one pass, one body per partition.
    const prepared = tableMutationCodec.preparePuts(table.schema, rows);
    // Returned, not awaited (here and in delete): an async function keeps its
    // arguments alive across its awaits, and row objects held until the WAL
    // acknowledges them survive young-generation GCs into the old one. At 64
    // writers that GC cost ~35 µs per batch, as much as encoding the rows.
    return this.writeByRegion(table, prepared, deadline).then(() => ({ written: prepared.count }));
  }

  /**
   * Delete rows by primary key (tags + time). Durable when it resolves.
   * `deleted` counts the rows removed: the distinct keys that held a live
   * row when looked up, just before the tombstones (one per key given) are
   * written. A write racing the delete on the same key may be counted
   * either way; a key given twice counts once.
   */
  async delete(tableName: string, keys: unknown, deadline?: Deadline): Promise<{ deleted: number }> {
    this.assertOpen();
    const table = await this.tableInfo(tableName);
    const valid = validateKeys(table.schema, keys);
    const prepared = tableMutationCodec.prepareDeletes(table.schema, valid);
    const deleted = await this.countLive(table, valid);
    return this.writeByRegion(table, prepared, deadline).then(() => ({ deleted }));
  }

  /**
   * How many distinct `keys` hold a live row. Keys are grouped by series,
   * and each series' times from its first key to its last are read in
   * pages, up to 64 rows per key plus 4,096 (deleting most rows of a span
   * reads that span once); keys past what that reached (a few keys far
   * apart) are looked up one by one. LIVE_LOOKUPS_AT_ONCE queries at once.
   */
  private async countLive(table: TableInfo, keys: readonly Row[]): Promise<number> {
    const { schema } = table;
    const time = schema.columns.find((c) => c.role === 'time')!.name;
    const tags = schema.columns.filter((c) => c.role === 'tag').map((c) => c.name);
    const series = new Map<string, { where: Record<string, Value>; times: Set<number> }>();
    for (const key of keys) {
      const id = JSON.stringify(tags.map((t) => key[t]));
      let s = series.get(id);
      if (s === undefined) series.set(id, (s = { where: Object.fromEntries(tags.map((t) => [t, key[t]!])), times: new Set() }));
      s.times.add(key[time] as number);
    }
    /** The times of live rows of a series from `from` to `to` (inclusive), at most `limit`, ascending. */
    const liveTimes = async (where: Record<string, Value>, from: number, to: number, limit: number): Promise<readonly Value[]> => {
      const region = table.regions[partitionOf(schema, where)]!;
      const found = await this.router.query(region.shard, region.id, { where, timeRange: { from, to: to + 1 }, columns: [time], limit });
      return found.kind === 'rows' ? (found.rows.data[found.rows.columns.indexOf(time)] ?? []) : [];
    };
    let live = 0;
    const lookUps: (() => Promise<void>)[] = [];
    await inParallel(
      [...series.values()].map(({ where, times }) => async () => {
        const sorted = [...times].sort((a, b) => a - b);
        const last = sorted[sorted.length - 1]!;
        let budget = 64 * sorted.length + 4096;
        let from = sorted[0]!;
        let reached = from - 1;
        const seen = new Set<Value>();
        while (budget > 0) {
          const limit = Math.min(budget, 65_536);
          const page = await liveTimes(where, from, last, limit);
          for (const t of page) seen.add(t);
          budget -= page.length;
          if (page.length < limit) {
            reached = last;
            break;
          }
          reached = page[page.length - 1] as number;
          from = reached + 1;
        }
        for (const t of sorted) {
          if (t <= reached) live += seen.has(t) ? 1 : 0;
          else
            lookUps.push(async () => {
              if ((await liveTimes(where, t, t, 1)).length > 0) live++;
            });
        }
      }),
    );
    await inParallel(lookUps);
    return live;
  }

  /**
   * Write each partition's part of a prepared write to its region, in
   * parallel. Parts whose appends have not started when `deadline` passes
   * are dropped (DEADLINE_EXCEEDED); parts already appended stay written.
   */
  private async writeByRegion(table: TableInfo, prepared: PreparedWrite, deadline?: Deadline): Promise<void> {
    await Promise.all(
      prepared.parts.map(({ partition, mutation }) => {
        const region = table.regions[partition]!;
        return this.router.write(region.shard, region.id, mutation, deadline);
      }),
    );
  }

  /**
   * Rows ordered by primary key then time (descending with order "desc"),
   * or aggregates per group, merged across the table's regions (see
   * frontend/query.ts); as columns.
   */
  async queryColumns(tableName: string, input: unknown = {}): Promise<ColumnarRows> {
    const { rows, release } = await this.queryHeld(tableName, input);
    release();
    return rows;
  }

  /**
   * queryColumns, its rows held against memory.maxResultRowsInFlight until
   * `release` is called (the HTTP API calls it once the answer is sent).
   * OVERLOADED, before any region is asked, when the node's queries already
   * hold the bound, and as soon as a region's answer would pass it.
   */
  async queryHeld(tableName: string, input: unknown = {}): Promise<{ rows: ColumnarRows; release: () => void }> {
    this.assertOpen();
    const table = await this.tableInfo(tableName);
    const lease = this.results.lease();
    try {
      const rows = await queryTable(table.schema, input, async (p, q) => {
        const region = table.regions[p]!;
        const answer = await this.router.query(region.shard, region.id, q);
        lease.take(rowsOfResult(answer));
        return answer;
      });
      lease.resize(rows.data[0]?.length ?? 0);
      return { rows, release: () => lease.release() };
    } catch (err) {
      lease.release();
      throw err;
    }
  }

  /** queryColumns as row objects. */
  async query(tableName: string, input: unknown = {}): Promise<Row[]> {
    return rowsOf(await this.queryColumns(tableName, input));
  }

  /** Flush every region's memtable to SSTs and prune the WAL below what is flushed (every node's, in a cluster). */
  async flush(): Promise<void> {
    this.assertOpen();
    await this.router.flush();
  }

  /** This process's node: its shards and regions with their machine states. */
  status(): RuntimeStatus {
    return this.observer.snapshot();
  }

  /**
   * Meta's state as this process has folded the meta log (embedded: meta
   * itself; in a cluster: this node's replica). Read it, never change it:
   * it is there for checks that every reader of the log agrees.
   */
  metaView(): MetaView {
    return this.metaLog;
  }

  /**
   * Move a shard's leadership to node `to` (cluster only): the leader stops
   * writing, flushes and closes, then `to` opens it with a new epoch.
   * Writes to the shard pause meanwhile (routers retry); nothing
   * acknowledged is lost. Resolves once `to` serves it; rejects
   * (SHARD_NOT_SERVING) if `to` failed to open it, the shard given back.
   */
  async migrateShard(shardId: number, to: string): Promise<{ shard: number; from: string; to: string; ms: number; procedure?: number }> {
    this.assertOpen();
    if (!this.meta.migrate) throw new RepriseError('INVALID_ARGUMENT', `shard ${shardId} cannot migrate to '${to}': no other node in embedded mode`);
    const moved = await this.meta.migrate(shardId, to);
    // The procedure that moved it, as the meta log recorded it (see procedure()).
    await this.meta.sync?.();
    const procedure = this.metaLog.lastFinishedOn('migrate', shardId);
    return procedure?.to === to && procedure.outcome === 'done' ? { ...moved, procedure: procedure.id } : moved;
  }

  /**
   * One of meta's procedures (migrate, failover, rebalance, create table),
   * running or among the newest FINISHED_PROCEDURES_KEPT finished, as this
   * node's view of the meta log has it once caught up. NOT_FOUND otherwise.
   */
  async procedure(id: number): Promise<ProcedureInfo | FinishedProcedure> {
    await this.meta.sync?.();
    const found = this.metaLog.procedure(id);
    if (found === undefined) throw new RepriseError('NOT_FOUND', `procedure ${id} is neither running nor among the last ${FINISHED_PROCEDURES_KEPT} finished`, { procedure: id });
    return found;
  }

  /** Every node's actor tree (in a cluster each node is asked over the transport) and meta's view. */
  async clusterStatus(): Promise<ClusterStatus> {
    const [nodes, meta] = await Promise.all([this.router.nodes(), this.meta.status?.()]);
    return { wal: { provider: this.log.provider }, nodes, ...(meta ? { meta } : {}) };
  }

  /**
   * Stop accepting work, flush (unless `flush: false`: the next open then
   * replays the WAL), close every actor and the WAL. Idempotent.
   */
  async close(options: { flush?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const cancel of [...this.waits]) cancel(new RepriseError('CLOSED', 'the runtime is closed'));
    try {
      try {
        await this.node.close(options);
      } finally {
        await this.release();
      }
    } finally {
      await this.log.close();
    }
  }
}

/** The logger option of open/join/startMeta: a pino logger, false for silence, or pino at 'info' on stderr. */
export function loggerOf(option: Logger | false | undefined): Logger {
  return option === false ? pino({ level: 'silent' }) : (option ?? pino({ level: 'info' }, pino.destination(2)));
}

/**
 * The node actor of a runtime (embedded or cluster): the parts that differ
 * come in `parts`; WAL limits, flush policy and the observer's hooks are
 * wired the same way for both.
 */
function observedNode(
  observer: RuntimeObserver,
  log: LogStore,
  parts: Pick<ActorContext, 'nodeId' | 'meta' | 'leaseHeld' | 'awaitLease' | 'objects' | 'logger'> & { readonly engine: TableEngine },
  options: { readonly wal?: { readonly maxBatchBytes?: number }; readonly flush?: Partial<Omit<FlushPolicy, 'nodeMemtableBytes'>>; readonly memory?: MemoryOptions; readonly testHooks?: TestHooks },
  results: ResultBudget,
  store: OpenedObjectStore,
): NodeActor {
  const flushPolicy: FlushPolicy = { ...DEFAULT_FLUSH_POLICY, ...options.flush, nodeMemtableBytes: options.memory?.memtableBytes ?? DEFAULT_FLUSH_POLICY.nodeMemtableBytes };
  const node = new NodeActor({
    ...parts,
    log,
    maxBatchBytes: options.wal?.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES,
    flushPolicy,
    onTransition: observer.onTransition,
    onReplayProgress: observer.onReplayProgress,
    onFollowerApply: observer.onFollowerApply,
    ...(options.testHooks ? { testHooks: options.testHooks } : {}),
  });
  const { engine } = parts;
  observer.bindStatus(() => {
    const cache = engine.cacheStats();
    const memory: MemoryStatus = {
      memtableBudgetBytes: flushPolicy.nodeMemtableBytes,
      memtableBytes: node.memtableBytes(),
      cacheBudgetBytes: cache.budgetBytes,
      cacheBytes: cache.usedBytes,
      cacheHits: cache.hits,
      cacheMisses: cache.misses,
      maxResultRows: engine.maxResultRows,
      maxResultRowsInFlight: results.limit,
      resultRowsInFlight: results.inFlight,
      queriesOverloaded: results.refused,
    };
    const walFailure = log.appendFailure?.();
    const storeFailure = store.objects.failure?.();
    return {
      wal: { provider: log.provider, ...(walFailure ? { error: walFailure } : {}) },
      objectStore: { type: store.type, where: store.where, ...(storeFailure ? { error: storeFailure } : {}), ...(store.cache ? { cache: store.cache.stats() } : {}) },
      nodes: [node.status()],
      memory,
    };
  });
  return node;
}

/** The node-wide bound on result rows held at once: maxResultRowsInFlight, at least the engine's maxResultRows. */
function resultBudgetOf(memory: MemoryOptions | undefined, engine: TableEngine): ResultBudget {
  const limit = memory?.maxResultRowsInFlight ?? RESULT_ROWS_IN_FLIGHT_FACTOR * engine.maxResultRows;
  if (!Number.isSafeInteger(limit) || limit < engine.maxResultRows) {
    throw new RepriseError(
      'INVALID_ARGUMENT',
      `memory.maxResultRowsInFlight must be an integer of at least maxResultRows (${engine.maxResultRows}), or one query could never run; got ${limit}`,
    );
  }
  return new ResultBudget(limit);
}

/** The table engine with a process's memory options. */
function engineOf(memory: MemoryOptions | undefined): TableEngine {
  return new TableEngine({ cacheBytes: memory?.cacheBytes, maxResultRows: memory?.maxResultRows });
}

/**
 * Region files against the catalog, before any shard opens: delete the
 * files of regions the catalog knows were dropped or rolled back (a crash
 * can come between the drop and the deletion); refuse to start if the
 * object store holds a region the catalog does not know at all. That
 * happens when the meta log was lost or replaced (a deleted or emptied WAL,
 * another data dir's WAL, a log that lost its tail): deleting those files,
 * or giving their ids to new regions, would destroy flushed data on a guess.
 */
async function reconcileRegionFiles(
  objects: ObjectStore,
  meta: MetaService,
  engine: RegionEngine,
  logger: Logger,
  where: { dataDir: string; objectsDir: string; catalog: string },
): Promise<void> {
  const known = meta.knownRegionIds();
  const retired = meta.retiredRegions();
  const onDisk = await engine.listRegions(objects);
  const unknown = onDisk.filter((id) => !known.has(id) && !retired.has(id));
  if (unknown.length > 0) {
    const empty = meta.nextRegionId() === 1 && retired.size === 0;
    const regions = unknown.join(', ');
    const why = empty
      ? `${where.catalog} is empty: it never created a region, so the WAL looks lost, emptied or replaced`
      : `${where.catalog} never created ${unknown.length === 1 ? 'it' : 'them'} (its next region id is ${meta.nextRegionId()}): it looks to have lost entries`;
    throw new RepriseError(
      'CATALOG_LOST',
      `the object store at ${where.objectsDir} holds flushed data of region${unknown.length === 1 ? '' : 's'} ${regions} that no table owns, and ${why}. ` +
        `Refusing to start: deleting those files or reusing their ids would destroy that data. ` +
        `If the WAL is elsewhere (another --data-dir, a disk not mounted), start with it; if it is gone for good, ` +
        `move ${where.objectsDir}/regions/<id> of those regions out of ${where.objectsDir} (their SSTs and manifests stay intact) and start again (data dir ${where.dataDir})`,
      { regions: unknown, dataDir: where.dataDir, objectsDir: where.objectsDir, catalogEmpty: empty },
    );
  }
  for (const id of onDisk) {
    const why = retired.get(id);
    if (!why) continue;
    logger.info({ region: id }, `deleting files of region ${id}: its ${why === 'dropped' ? 'table was dropped' : 'table\'s create was rolled back'}`);
    await engine.destroyRegion(id, objects);
  }
}

/** A log the caller owns: everything delegates to it except close(), which does nothing. */
export function borrowedLog(log: LogStore): LogStore {
  return new Proxy(log, {
    get(target, prop) {
      if (prop === 'close') return async () => undefined;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** Open the embedded runtime. */
export function open(options: OpenOptions): Promise<Reprise> {
  return Reprise.open(options);
}
