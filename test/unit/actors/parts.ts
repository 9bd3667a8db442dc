import pino from 'pino';
import { DEFAULT_FLUSH_POLICY, type ActorContext } from '../../../src/actors/context.js';
import type { TableSchema } from '../../../src/engine/schema.js';
import { TableEngine } from '../../../src/engine/table/table-engine.js';
import { DEFAULT_MAX_BATCH_BYTES } from '../../../src/wal/entry.js';

/** What the actor tests share: a small table and the context an actor is given. */

export const SCHEMA: TableSchema = {
  name: 'm',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'v', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};

/** An actor context of real parts, silent, with the defaults a runtime gives. */
export function actorContext(parts: Pick<ActorContext, 'meta' | 'log' | 'objects'> & Partial<ActorContext>): ActorContext {
  return {
    nodeId: 'n1',
    engine: new TableEngine(),
    logger: pino({ level: 'silent' }),
    maxBatchBytes: DEFAULT_MAX_BATCH_BYTES,
    flushPolicy: DEFAULT_FLUSH_POLICY,
    ...parts,
  };
}
