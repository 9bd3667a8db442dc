import type { Logger } from 'pino';
import { isRepriseError, RepriseError } from '../errors.js';
import type { TableSchema } from '../engine/schema.js';
import type { ProcedurePause } from '../testing/faults.js';
import type { EntryId } from '../wal/log-store.js';
import type { ProcedureInfo, TableInfo } from './model.js';
import { MachineDriver, type Final, type ProcedureLog } from './procedure-driver.js';
import { createTableProcedure } from './procedure-machines.js';

/** What table creations need of meta: its tables, and the appends of a create table. */
export interface TableCreationLog extends ProcedureLog {
  tableById(tableId: number): TableInfo | undefined;
  incompleteCreates(): TableInfo[];
  recordTableCreating(schema: TableSchema): Promise<{ table: TableInfo; procedure: ProcedureInfo }>;
  recordTableCreated(tableId: number, createdAt: Record<number, EntryId>): Promise<void>;
  recordTableCreateAborted(tableId: number): Promise<void>;
}

// ---------------------------------------------------------------- create table, driven by the frontend

interface Creation {
  /** The frontend's report: its region_create entry ids (commit), or why it gave up (abort). */
  readonly report: { resolve(createdAt: Record<number, EntryId>): void; reject(err: Error): void };
  /** The machine's end, once its outcome is recorded, with the error of the step that failed, if one did. */
  readonly final: Promise<Final & { cause?: unknown }>;
}

/**
 * Create table procedures. The frontend drives them (Reprise.createTable:
 * begin_create, create_region on each region's shard leader,
 * commit_create or abort_create); meta runs the machine and records each
 * step before its effect. A create_table that a meta restart cut short is
 * resumed by rolling it back (`rollBackIncompleteCreates`, at meta start):
 * the frontend was never told it succeeded, and meta alone cannot create
 * the regions. One the frontend leaves unfinished for `timeoutMs` (it died
 * mid-way) is rolled back too, so that it neither holds its name nor
 * blocks migrations of its shards until the next meta restart.
 */
export class TableCreations extends MachineDriver<TableCreationLog> {
  /** Running creations by table id. */
  private readonly running = new Map<number, Creation>();

  constructor(
    meta: TableCreationLog,
    logger: Logger,
    private readonly timeoutMs: number,
    pause?: ProcedurePause,
  ) {
    super(meta, logger, pause);
  }

  /** Step one: ids and placement fixed, the procedure recorded; the frontend now creates the regions. */
  async begin(schema: TableSchema): Promise<TableInfo> {
    this.assertOpen(null);
    const { table, procedure } = await this.meta.recordTableCreating(schema);
    this.start(procedure, false);
    return table;
  }

  /** Every region has its region_create entry: the table becomes visible (or the procedure ended otherwise, and this says why). */
  async commit(tableId: number, createdAt: Record<number, EntryId>): Promise<void> {
    const creation = this.running.get(tableId);
    if (!creation) {
      const table = this.tableById(tableId);
      if (table?.status === 'active') return; // committed already (a retried request)
      if (table) return this.meta.recordTableCreated(tableId, createdAt); // begun before create_table was a procedure
      throw new RepriseError('UNAVAILABLE', `table #${tableId} was not created: its creation was rolled back (meta restarted, or the frontend took longer than ${this.timeoutMs} ms); create it again`, { tableId });
    }
    creation.report.resolve(createdAt);
    const { value, context, cause } = await creation.final;
    if (value === 'done') return;
    // A failed append keeps its code; a creation rolled back meanwhile (the timeout) is worth retrying.
    throw new RepriseError(isRepriseError(cause) ? cause.code : 'UNAVAILABLE', `table #${tableId} was not created: ${context.error ?? value}`, { tableId }, { cause });
  }

  /** The frontend gave up (a region could not be created): roll the creation back. */
  async abort(tableId: number, reason = 'the frontend gave up'): Promise<void> {
    const creation = this.running.get(tableId);
    if (!creation) {
      // No procedure running (a meta restart or the timeout rolled it back, or
      // it committed and the reply was lost): the frontend dropped the
      // regions, so the table goes too.
      if (this.tableById(tableId)) await this.meta.recordTableCreateAborted(tableId);
      return;
    }
    creation.report.reject(new Error(reason));
    const final = await creation.final;
    if (final.value === 'done') await this.meta.recordTableCreateAborted(tableId);
    if (final.value === 'failed') throw new RepriseError('INTERNAL', `table #${tableId}: ${final.context.error}`, { tableId });
  }

  /**
   * At meta start: roll back every create_table the log has unfinished,
   * and every table still `creating` without one (a log written before
   * create table was a procedure).
   */
  async resume(logger: Logger = this.logger): Promise<void> {
    const interrupted = this.meta.procedures().filter((p) => p.kind === 'create_table' && p.table !== undefined && !this.running.has(p.table));
    for (const p of interrupted) {
      const name = this.tableById(p.table!)?.schema.name;
      logger.warn({ procedure: p.id, table: name, tableId: p.table, step: p.state }, `rolling back the interrupted creation of table '${name ?? `#${p.table}`}' (create_table #${p.id} at step '${p.state}')`);
      const final = await this.start(p, true).final;
      if (final.value === 'failed') throw new RepriseError('INTERNAL', `create_table #${p.id}: ${final.context.error}`);
    }
    const orphans = this.meta.incompleteCreates().filter((t) => !this.meta.procedures().some((p) => p.kind === 'create_table' && p.table === t.id));
    for (const table of orphans) {
      logger.warn({ table: table.schema.name }, `rolling back the interrupted creation of table '${table.schema.name}'`);
      await this.meta.recordTableCreateAborted(table.id);
    }
  }

  private start(p: ProcedureInfo, resumed: boolean): Creation {
    const tableId = p.table!;
    let report!: Creation['report'];
    const reported = new Promise<Record<number, EntryId>>((resolve, reject) => (report = { resolve, reject }));
    reported.catch(() => undefined);
    const machine = createTableProcedure.provide({
      actors: {
        regionsCreated: this.step(p, 'creating_regions', () => reported),
        commit: this.step(p, 'committing', ({ createdAt }: { id: number; tableId: number; createdAt: Record<number, EntryId> }) => this.meta.recordTableCreated(tableId, createdAt)),
        abort: this.step(p, 'aborting', async () => {
          if (this.tableById(tableId)) await this.meta.recordTableCreateAborted(tableId);
        }),
      },
    });
    const final = (async () => {
      try {
        const end = await this.drive(p, machine, { id: p.id, tableId, resumed, commitTimeoutMs: this.timeoutMs });
        const reason = end.context.error;
        if (end.value === 'done') await this.finish(p, 'done');
        else await this.finish(p, end.value === 'aborted' ? 'aborted' : 'failed', reason ?? end.value);
        if (end.value !== 'done') this.logger.warn({ procedure: p.id, tableId, reason }, `create_table #${p.id} (table #${tableId}) ${end.value}: ${reason}`);
        return { ...end, cause: this.errors.get(p.id) };
      } finally {
        this.running.delete(tableId);
        this.errors.delete(p.id);
      }
    })();
    final.catch(() => undefined);
    const creation = { report, final };
    this.running.set(tableId, creation);
    return creation;
  }

  private tableById(tableId: number): TableInfo | undefined {
    return this.meta.tableById(tableId);
  }
}
