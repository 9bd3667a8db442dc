import type { PreparedWrite } from '../engine/region-engine.js';
import type { TableSchema } from '../engine/schema.js';
import { tableMutationCodec } from '../engine/table/codec.js';
import { parseJsonBody } from './json-body.js';
import { checkRowCount, planLines, rejectedLines, type LinePlanOptions } from './line-protocol-rows.js';
import type { LineError } from './line-protocol.js';

/**
 * The per-row work of a write request, from its body's text to WAL entry
 * bodies ready to append: parse (line protocol or JSON), validate against
 * the table's schema, split by partition, encode. Pure and synchronous, so
 * the same code runs on the main thread or on an ingest worker
 * (./ingest-pool.ts); what it needs of the runtime is the catalog it is
 * given. Creating a table is not here: it is a meta procedure, run by the
 * main thread (see writeLineProtocol).
 */

/** A table as the encoders see it. Its id tells it from a table dropped and created again with the same name. */
export interface CatalogTable {
  readonly id: number;
  readonly schema: TableSchema;
}

/** The tables a write may name, by name: a snapshot, replaced (not changed) when a table is created or dropped. */
export type TableCatalog = ReadonlyMap<string, CatalogTable>;

/** One table's part of an encoded write: one body per partition it touches, validated against table `id`'s schema. */
export interface EncodedTable {
  readonly table: string;
  readonly id: number;
  readonly prepared: PreparedWrite;
}

export type EncodedLines =
  /** Ready to append; `rejected`: the bad lines (only with `partial`). */
  | { readonly kind: 'encoded'; readonly tables: EncodedTable[]; readonly rejected: LineError[] }
  /** Bad lines and not `partial`: nothing is to be written. */
  | { readonly kind: 'rejected'; readonly lines: LineError[] }
  /** A measurement has no table in the catalog (autoCreateTables): the main thread creates it, then plans the body itself. */
  | { readonly kind: 'plan_on_main' };

export interface LineEncodeOptions extends LinePlanOptions {
  /** Write the good lines and report the bad ones (else any bad line rejects the request). */
  readonly partial: boolean;
}

/** A request body as text: bytes are UTF-8. */
export function bodyText(body: string | Uint8Array): string {
  return typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
}

/** A line-protocol body, encoded against `catalog`. Throws REQUEST_TOO_LARGE or INVALID_ROW (preparePuts) as a write would. */
export function encodeLines(body: string | Uint8Array, catalog: TableCatalog, options: LineEncodeOptions): EncodedLines {
  const { plans, bad } = planLines(bodyText(body), (name) => catalog.get(name)?.schema, options);
  if (plans.some((p) => p.create)) return { kind: 'plan_on_main' };
  const rejected = rejectedLines(bad);
  if (rejected.length > 0 && !options.partial) return { kind: 'rejected', lines: rejected };
  const tables = plans
    .filter((p) => p.rows.length > 0)
    .map((p) => ({ table: p.schema.name, id: catalog.get(p.schema.name)!.id, prepared: tableMutationCodec.preparePuts(p.schema, p.rows) }));
  return { kind: 'encoded', tables, rejected };
}

/**
 * A JSON insert body (an array of row objects) for `table`, encoded against
 * its schema in `catalog`; undefined when the catalog does not hold it.
 * Throws as an insert would: MALFORMED_JSON, REQUEST_TOO_LARGE past
 * `maxRows`, INVALID_ROW naming the first bad row.
 */
export function encodeJsonRows(body: string, catalog: TableCatalog, table: string, maxRows: number): EncodedTable | undefined {
  const known = catalog.get(table);
  if (known === undefined) return undefined;
  const rows = parseJsonBody(body);
  checkRowCount(rows, maxRows);
  return { table, id: known.id, prepared: tableMutationCodec.preparePuts(known.schema, rows) };
}
