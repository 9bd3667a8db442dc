import pino, { type Logger } from 'pino';
import { MetaServer, type MetaServerOptions } from '../meta/meta-server.js';
import { MetaService } from '../meta/meta-service.js';
import type { Transport } from '../transport/transport.js';
import { RepriseError } from '../errors.js';
import type { LogStore } from '../wal/log-store.js';
import { openLogStore, type KafkaWalOptions, type LocalWalOptions } from '../wal/open-log-store.js';
import { borrowedLog } from './runtime.js';

export interface MetaProcessOptions extends Partial<MetaServerOptions> {
  readonly transport: Transport;
  /** Meta's own log is `<topicPrefix>_meta` in the cluster's Kafka, which every node tails. */
  readonly wal: KafkaWalOptions | LocalWalOptions;
  /**
   * For tests and simulation: an already open LogStore to use instead of
   * opening one from `wal` (then only `wal.topicPrefix` is read and `wal` may
   * be `{ provider: 'local' }`). The caller owns it: close() leaves it open.
   */
  readonly log?: LogStore;
  /** Shards (WAL topics) created on first start. Default 4. */
  readonly shards?: number;
  readonly logger?: Logger | false;
}

export interface MetaProcess {
  readonly server: MetaServer;
  close(): Promise<void>;
}

/**
 * The cluster's meta: the MetaService over the meta log, served on the
 * transport with heartbeats, leases, failure detection and placement.
 */
export async function startMeta(options: MetaProcessOptions): Promise<MetaProcess> {
  const logger = options.logger === false ? pino({ level: 'silent' }) : (options.logger ?? pino({ level: 'info' }, pino.destination(2)));
  if (!options.log && options.wal.provider !== 'kafka') {
    throw new RepriseError('INVALID_ARGUMENT', `meta needs the Kafka WAL (wal.provider 'kafka'), got '${options.wal.provider}'`);
  }
  const log = options.log ? borrowedLog(options.log) : await openLogStore(options.wal, '');
  try {
    const meta = await MetaService.open(log, { topicPrefix: options.wal.topicPrefix ?? 'reprise_wal', numShards: options.shards ?? 4 });
    // A create table cut short by a crash never became visible: roll it back.
    for (const table of meta.incompleteCreates()) {
      logger.warn({ table: table.schema.name }, `rolling back the interrupted creation of table '${table.schema.name}'`);
      await meta.abortCreateTable(table.id);
    }
    const { transport: _t, wal: _w, log: _g, shards: _s, logger: _l, ...serverOptions } = options;
    const server = await MetaServer.start(meta, options.transport, logger, serverOptions);
    return {
      server,
      close: async () => {
        await server.close();
        await meta.close();
        await log.close();
      },
    };
  } catch (err) {
    await log.close().catch(() => undefined);
    throw err;
  }
}
