import type net from 'node:net';
import type { Logger } from 'pino';
import type { SqlSessionFactory } from '../frontend/sql/types.js';
import type { UserProvider } from './users.js';

/** How a SQL wire-protocol server (MySQL, PostgreSQL) is started. */
export interface SqlProtocolOptions {
  readonly host: string;
  /** 0 picks a free port (read it from `address`). */
  readonly port: number;
  readonly sessions: SqlSessionFactory;
  /** Without one, every client is the anonymous user (mode rw), whatever credentials it sends. */
  readonly users?: UserProvider;
  readonly logger: Logger;
  /** The version the server reports to clients (each protocol has its default). */
  readonly serverVersion?: string;
}

/** A running SQL wire-protocol server. */
export interface SqlProtocolServer {
  readonly address: { readonly host: string; readonly port: number };
  /** Stops listening and ends every open connection. */
  close(): Promise<void>;
}

/** Listens on host:port, rejecting with the listen error (EADDRINUSE, ...). */
export function listen(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
