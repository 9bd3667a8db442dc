import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import type { ReplayProgress } from '../actors/context.js';
import { createHttpServer, parseAddr } from '../api/http.js';
import { Reprise } from '../api/runtime.js';
import { isRepriseError } from '../errors.js';
import { brokerList, redactConfig, resolveConfig, walOptionsOf, type StandaloneConfig } from './config.js';
import { renderStatus, renderRows } from './render.js';

const DEFAULT_SERVER = 'http://127.0.0.1:4000';

function integer(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`'${value}' is not an integer`);
  return n;
}

function json(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    throw new InvalidArgumentError(`'${value}' is not valid JSON`);
  }
}

/** A one-line replay progress bar on an interactive stderr. */
function progressBar(): (p: ReplayProgress) => void {
  return (p) => {
    if (!process.stderr.isTTY) return;
    const done = p.targetId > 0 ? Math.min(1, (p.lastId + 1) / p.targetId) : 1;
    const width = 30;
    const bar = '#'.repeat(Math.round(done * width)).padEnd(width, '.');
    const rate = Math.round(p.entries / Math.max(p.elapsedMs / 1000, 1e-3));
    process.stderr.write(`\rreplaying shard ${p.shardId} [${bar}] ${(done * 100).toFixed(0)}% ${p.entries} entries ${rate}/s   `);
    if (done >= 1) process.stderr.write('\n');
  };
}

interface StandaloneFlags {
  config?: string;
  dataDir?: string;
  httpAddr?: string;
  shards?: number;
  logLevel?: string;
  wal?: string;
  brokers?: string[];
}

/** The effective configuration: flags > REPRISE_* env > config file > defaults. */
function configOf(flags: StandaloneFlags): StandaloneConfig {
  return resolveConfig({
    ...(flags.config ? { configFile: flags.config } : {}),
    env: process.env,
    flags: {
      dataDir: flags.dataDir,
      httpAddr: flags.httpAddr,
      shards: flags.shards,
      logLevel: flags.logLevel,
      wal: { provider: flags.wal, brokerEndpoints: flags.brokers },
    },
  });
}

/**
 * Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT: HTTP closed, regions
 * flushed, WAL closed); 1 if startup or shutdown failed, or a second signal
 * forced the exit; 2 for a usage error (see main).
 */
async function standalone(flags: StandaloneFlags): Promise<void> {
  const config = configOf(flags);
  const { host, port } = parseAddr(config.httpAddr);
  const logger = pino({ level: config.logLevel });

  // Signals are handled from the start: one during startup (a long replay)
  // shuts down as soon as the runtime is open.
  let stopping = false;
  let shutdown: ((signal: string) => void) | undefined;
  let early: string | undefined;
  const onSignal = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now without finishing the shutdown (the next start replays the WAL)');
      process.exit(1);
    }
    stopping = true;
    if (shutdown) shutdown(signal);
    else {
      early = signal;
      logger.info({ signal }, 'signal during startup: shutting down once the runtime is open');
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  const runtime = await Reprise.open({
    dataDir: config.dataDir,
    shards: config.shards,
    wal: walOptionsOf(config.wal),
    logger,
    onReplayProgress: progressBar(),
  });
  const app = createHttpServer(runtime, {
    logger,
    bodyLimit: config.bodyLimitBytes,
    autoCreateTables: config.autoCreateTables,
    processMetrics: true,
  });

  shutdown = (signal: string) => {
    logger.info({ signal }, 'shutting down: closing HTTP, flushing regions, closing the WAL');
    void (async () => {
      try {
        await app.close();
        await runtime.close();
        process.exit(0);
      } catch (err) {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      }
    })();
  };
  if (early) return shutdown(early);

  let url: string;
  try {
    url = await app.listen({ host, port });
  } catch (err) {
    await runtime.close();
    throw err;
  }
  logger.info({ url, dataDir: config.dataDir }, `reprise standalone serving on ${url}`);
}

async function request(server: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const url = new URL(path, server);
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw new Error(`cannot reach reprise at ${server}: ${(err as Error).cause ?? (err as Error).message}`);
  }
  const payload = (await response.json()) as { error?: { code: string; message: string } };
  if (!response.ok) throw new Error(`${payload.error?.code ?? response.status}: ${payload.error?.message ?? response.statusText}`);
  return payload;
}

/** The CLI runs compiled, from dist/src/cli: the package root is three levels up. */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command('reprise')
    .description('Event-sourced actor runtime: regions, shards and nodes as explicit state machines over a WAL')
    .version(packageVersion())
    .showHelpAfterError()
    // Usage errors become CommanderErrors, so main can exit 2 for them (1 stays for failures).
    .exitOverride();

  /** The options that make up the standalone configuration (shared by `standalone` and `config print`). */
  const configOptions = (command: Command) =>
    command
      .option('-c, --config <file>', 'config file: TOML (*.toml) or JSON (the same keys)')
      .option('--data-dir <dir>', `where the WAL, meta and SSTs live (default ./reprise_data; env REPRISE_DATA_DIR)`)
      .option('--http-addr <host:port>', 'HTTP API address (default 127.0.0.1:4000; env REPRISE_HTTP_ADDR)')
      .option('--shards <n>', 'WAL topics created on first start (default 4; env REPRISE_SHARDS)', integer)
      .addOption(new Option('--log-level <level>', 'log level (env REPRISE_LOG_LEVEL)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
      .addOption(new Option('--wal <provider>', 'WAL provider (default local; env REPRISE_WAL_PROVIDER)').choices(['local', 'kafka']))
      .option('--brokers <list>', 'Kafka bootstrap brokers, host:port,... (env REPRISE_WAL_BROKER_ENDPOINTS)', brokerList);

  configOptions(
    program.command('standalone').description('run meta and one node in this process, with the HTTP API and dashboard (WAL: local LevelDB by default, or Kafka)'),
  ).action(standalone);

  const config = program.command('config').description('the standalone configuration');
  configOptions(
    config
      .command('print')
      .description('print the effective configuration as JSON (flags > REPRISE_* env > config file > defaults; secrets shown as ***)'),
  ).action((flags: StandaloneFlags) => {
    process.stdout.write(`${JSON.stringify(redactConfig(configOf(flags)), null, 2)}\n`);
  });

  program
    .command('status')
    .description('show the actor tree of a running server: node, shards and regions with their states')
    .option('-s, --server <url>', 'server URL', DEFAULT_SERVER)
    .option('--json', 'print the raw JSON')
    .action(async (opts: { server: string; json?: boolean }) => {
      const status = await request(opts.server, 'GET', '/v1/status');
      process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status as Parameters<typeof renderStatus>[0]));
    });

  program
    .command('query')
    .description('query a table on a running server')
    .argument('<table>', 'table name')
    .option('-s, --server <url>', 'server URL', DEFAULT_SERVER)
    .option('-w, --where <json>', 'conditions, e.g. \'{"host":"h1"}\' or \'{"host":{"gte":"a","lt":"f"}}\'', json)
    .option('--from <ms>', 'time range start (inclusive, epoch ms)', integer)
    .option('--to <ms>', 'time range end (exclusive, epoch ms)', integer)
    .option('--columns <list>', 'comma-separated columns', (v: string) => v.split(',').map((c) => c.trim()))
    .option('-l, --limit <n>', 'maximum rows', integer)
    .option('--json', 'print the raw JSON')
    .action(async (table: string, opts: { server: string; where?: unknown; from?: number; to?: number; columns?: string[]; limit?: number; json?: boolean }) => {
      const body: Record<string, unknown> = {};
      if (opts.where !== undefined) body.where = opts.where;
      if (opts.from !== undefined || opts.to !== undefined) body.timeRange = { from: opts.from, to: opts.to };
      if (opts.columns) body.columns = opts.columns;
      if (opts.limit !== undefined) body.limit = opts.limit;
      const result = (await request(opts.server, 'POST', `/v1/tables/${encodeURIComponent(table)}/query`, body)) as { rows: Record<string, unknown>[] };
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n` : renderRows(result.rows));
    });

  return program;
}

/**
 * Run the CLI. Exit codes: 0 success; 1 a failure (startup, a request, a
 * failed shutdown); 2 a usage error (unknown command or option, bad option
 * value), reported by commander with the help.
 */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    // Commander already printed its message (and help, for usage errors).
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    const message = isRepriseError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
    process.stderr.write(`reprise: ${message}\n`);
    process.exit(1);
  }
}
