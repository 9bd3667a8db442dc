import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { isRepriseError, RepriseError, type ErrorCode } from '../errors.js';
import { encodeJsonRows, encodeLines, type EncodedLines, type EncodedTable, type LineEncodeOptions, type TableCatalog } from './write-encoding.js';

/**
 * Where write requests are encoded (./write-encoding.ts): on the calling
 * thread, or on a pool of worker threads so that parsing, validation and
 * encoding use every core while the main thread keeps the HTTP server, the
 * WAL appends (group commit and per-shard order unchanged) and the regions.
 * Both give the same bodies for the same request; only where the CPU is
 * spent differs.
 */
export interface WriteEncoder {
  /** Worker threads encoding writes; 0: the calling thread. */
  readonly threads: number;
  /** A string body is line protocol as text; bytes are UTF-8. */
  encodeLines(body: string | Uint8Array, catalog: TableCatalog, options: LineEncodeOptions): Promise<EncodedLines>;
  /** undefined when `table` is not in `catalog`. */
  encodeJsonRows(body: string, catalog: TableCatalog, table: string, maxRows: number): Promise<EncodedTable | undefined>;
  close(): Promise<void>;
}

/** Encoding on the calling thread. */
export const inlineEncoder: WriteEncoder = {
  threads: 0,
  encodeLines: async (body, catalog, options) => encodeLines(body, catalog, options),
  encodeJsonRows: async (body, catalog, table, maxRows) => encodeJsonRows(body, catalog, table, maxRows),
  close: async () => undefined,
};

/**
 * Below this a body is encoded where it arrived: the hop to a worker and
 * back (two messages, a copy of the body, a wake-up of each thread) costs
 * more than the work it moves. Measured in the peer ingest bench: JSON
 * inserts of 100 rows (~9 KB) went from 153k/207k rows/s (8/64 clients) on
 * the main thread to 115k/155k through a worker, while 1,000-line
 * line-protocol bodies (~100 KB) went from 68k/70k to 196k/262k.
 */
export const INLINE_BELOW_BYTES = 32 * 1024;

/** Default worker threads: one per core beside the main thread's, at least one. */
export function defaultIngestThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

// ---------------------------------------------------------------- messages

export type EncodeTask =
  | { readonly type: 'lines'; readonly task: number; readonly body: string | Uint8Array; readonly options: LineEncodeOptions }
  | { readonly type: 'rows'; readonly task: number; readonly body: string; readonly table: string; readonly maxRows: number };

export type ToWorker = EncodeTask | { readonly type: 'catalog'; readonly tables: readonly (readonly [string, number, unknown])[] };

export type FromWorker =
  | { readonly task: number; readonly ok: true; readonly result: EncodedLines | EncodedTable | undefined }
  | { readonly task: number; readonly ok: false; readonly error: { readonly code: ErrorCode; readonly message: string; readonly details?: Record<string, unknown> }; readonly stack?: string };

/** The error a worker sends for what an encode threw: a RepriseError keeps its code, anything else is INTERNAL (its stack for the log, not the client). */
export function errorMessage(task: number, err: unknown): FromWorker {
  if (isRepriseError(err)) return { task, ok: false, error: err.toJSON() };
  return { task, ok: false, error: { code: 'INTERNAL', message: `ingest worker: ${(err as Error)?.message ?? String(err)}` }, stack: (err as Error)?.stack };
}

/** The buffers of encoded bodies, handed over to the main thread rather than copied. */
export function transferablesOf(result: EncodedLines | EncodedTable | undefined): ArrayBuffer[] {
  const tables = result === undefined ? [] : 'prepared' in result ? [result] : result.kind === 'encoded' ? result.tables : [];
  return tables.flatMap((t) => t.prepared.parts.map((p) => p.mutation.body.buffer as ArrayBuffer));
}

// ---------------------------------------------------------------- pool

export interface IngestPoolOptions {
  readonly threads: number;
  /** The worker's module: default ./ingest-worker.js beside this one (the build's). */
  readonly script?: URL;
  /** Node options for the workers (e.g. a TypeScript loader in tests). */
  readonly execArgv?: string[];
  /** Bodies shorter than this (bytes, or characters of a JSON text) are encoded on the calling thread. Default INLINE_BELOW_BYTES. */
  readonly inlineBelowBytes?: number;
  readonly logger?: Logger;
}

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: Error) => void;
  /** Encodes the task on the calling thread: what runs if the worker dies first. */
  readonly inline: () => unknown;
}

interface Slot {
  worker: Worker;
  /** The catalog this worker was last sent. */
  catalog: TableCatalog | undefined;
  readonly pending: Map<number, Pending>;
}

/**
 * Worker threads encoding writes. A body of INLINE_BELOW_BYTES or more goes
 * to the worker with the fewest requests in flight (a smaller one is
 * encoded on the calling thread), with the catalog first whenever it changed
 * since that worker's last. A body's bytes are copied to the worker (the
 * caller's buffer may be a slice of a shared pool, and stays the caller's);
 * the encoded bodies come back transferred. A worker that dies is replaced, and what it had in flight is
 * encoded on the calling thread instead: nothing was written for it yet.
 * Queues are bounded upstream: the HTTP write budget caps the bytes in
 * flight (limits.maxWriteBytesInFlight).
 */
export class IngestPool implements WriteEncoder {
  readonly threads: number;
  private readonly slots: Slot[] = [];
  private nextTask = 1;
  private closed = false;
  private readonly script: URL;
  private readonly inlineBelow: number;

  constructor(private readonly options: IngestPoolOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1) throw new RepriseError('INVALID_ARGUMENT', `ingest threads must be a whole number from 1 (got ${options.threads}); 0 encodes on the main thread without a pool`);
    this.threads = options.threads;
    this.script = options.script ?? new URL('./ingest-worker.js', import.meta.url);
    this.inlineBelow = options.inlineBelowBytes ?? INLINE_BELOW_BYTES;
    if (!existsSync(fileURLToPath(this.script))) {
      throw new RepriseError('INVALID_ARGUMENT', `the ingest worker module ${fileURLToPath(this.script)} is missing (build with npm run build, or set ingestThreads to 0)`);
    }
    for (let i = 0; i < options.threads; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(this.script, { execArgv: this.options.execArgv, name: 'reprise-ingest' });
    // An idle pool must not keep a process alive that is otherwise done
    // (close() ends the workers); a worker with tasks does (see run), or an
    // awaited encode could see the process exit under it.
    worker.unref();
    const slot: Slot = { worker, catalog: undefined, pending: new Map() };
    worker.on('message', (message: FromWorker) => {
      const pending = slot.pending.get(message.task);
      if (!pending) return;
      slot.pending.delete(message.task);
      if (slot.pending.size === 0) worker.unref();
      if (message.ok) pending.resolve(message.result);
      else {
        if (message.stack !== undefined) this.options.logger?.error({ stack: message.stack }, message.error.message);
        pending.reject(new RepriseError(message.error.code, message.error.message, message.error.details));
      }
    });
    const lost = (why: string) => {
      if (slot.worker !== worker) return;
      const inFlight = [...slot.pending.values()];
      slot.pending.clear();
      if (!this.closed) {
        this.options.logger?.error({ why, inFlight: inFlight.length }, 'an ingest worker stopped; starting another, and encoding what it held on the main thread');
        const index = this.slots.indexOf(slot);
        if (index >= 0) this.slots[index] = this.spawn();
      }
      for (const p of inFlight) {
        try {
          p.resolve(p.inline());
        } catch (err) {
          p.reject(err as Error);
        }
      }
    };
    worker.on('error', (err) => lost(err.stack ?? String(err)));
    worker.on('exit', (code) => lost(`exit code ${code}`));
    return slot;
  }

  private run<T>(build: (task: number) => EncodeTask, catalog: TableCatalog, inline: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new RepriseError('CLOSED', 'the ingest pool is closed'));
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.pending.size < slot.pending.size) slot = s;
    if (slot.catalog !== catalog) {
      slot.worker.postMessage({ type: 'catalog', tables: [...catalog].map(([name, t]) => [name, t.id, t.schema]) } satisfies ToWorker);
      slot.catalog = catalog;
    }
    const task = this.nextTask++;
    const message = build(task);
    return new Promise<T>((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(task, { resolve: resolve as (r: unknown) => void, reject, inline });
      slot.worker.postMessage(message, typeof message.body === 'string' ? [] : [message.body.buffer as ArrayBuffer]);
    });
  }

  encodeLines(body: string | Uint8Array, catalog: TableCatalog, options: LineEncodeOptions): Promise<EncodedLines> {
    if ((typeof body === 'string' ? body.length : body.byteLength) < this.inlineBelow) return inlineEncoder.encodeLines(body, catalog, options);
    // Bytes are copied (the caller's buffer stays the caller's) and the copy transferred; a string is cloned.
    return this.run((task) => ({ type: 'lines', task, body: typeof body === 'string' ? body : new Uint8Array(body), options }), catalog, () => encodeLines(body, catalog, options));
  }

  encodeJsonRows(body: string, catalog: TableCatalog, table: string, maxRows: number): Promise<EncodedTable | undefined> {
    if (body.length < this.inlineBelow) return inlineEncoder.encodeJsonRows(body, catalog, table, maxRows);
    return this.run((task) => ({ type: 'rows', task, body, table, maxRows }), catalog, () => encodeJsonRows(body, catalog, table, maxRows));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
