import { parentPort } from 'node:worker_threads';
import type { TableSchema } from '../engine/schema.js';
import { errorMessage, transferablesOf, type FromWorker, type ToWorker } from './ingest-pool.js';
import { encodeJsonRows, encodeLines, type CatalogTable } from './write-encoding.js';

/**
 * An ingest worker thread (see ./ingest-pool.ts): encodes the write requests
 * it is sent against the catalog it was last sent, and sends the bodies back.
 * It holds no state besides that catalog and writes nothing.
 */

if (!parentPort) throw new Error('ingest-worker.js runs as a worker thread of the ingest pool');
const port = parentPort;
let catalog = new Map<string, CatalogTable>();

port.on('message', (message: ToWorker) => {
  if (message.type === 'catalog') {
    catalog = new Map(message.tables.map(([name, id, schema]) => [name, { id, schema: schema as TableSchema }]));
    return;
  }
  let reply: FromWorker;
  try {
    const result = message.type === 'lines' ? encodeLines(message.body, catalog, message.options) : encodeJsonRows(message.body, catalog, message.table, message.maxRows);
    reply = { task: message.task, ok: true, result };
  } catch (err) {
    reply = errorMessage(message.task, err);
  }
  port.postMessage(reply, reply.ok ? transferablesOf(reply.result) : []);
});
