import { execFile } from 'node:child_process';
import { startReprise, type Server } from './standalone.js';

// Debian's real SQL clients (mariadb from mariadb-client, psql from
// postgresql-client) as child processes, and the seed walkthroughs'
// statements verbatim, for the suites that paste them.

export interface SqlServer extends Server {
  readonly mysql: { host: string; port: number };
  readonly postgres: { host: string; port: number };
}

const addrOf = (text: unknown): { host: string; port: number } => {
  const m = /^(.*):(\d+)$/.exec(String(text));
  if (m === null) throw new Error(`not host:port: ${String(text)}`);
  return { host: m[1], port: Number(m[2]) };
};

/** A reprise process serving MySQL and PostgreSQL on free ports (read from its "serving" log line). */
export function startSqlServer(args: string[], env: Record<string, string> = {}): Promise<SqlServer> {
  let served: Record<string, unknown> = {};
  return startReprise([...args, '--http-addr', '127.0.0.1:0', '--mysql-addr', '127.0.0.1:0', '--postgres-addr', '127.0.0.1:0'], env, (log) => {
    if (typeof log.url !== 'string' || log.mysql === undefined) return undefined;
    served = log;
    return log.url;
  }).then((server) => ({ ...server, mysql: addrOf(served.mysql), postgres: addrOf(served.postgres) }));
}

/** A reprise process started elsewhere (e.g. ProcessGroup.launch) as a SqlServer, from the "serving" log line it was ready on. */
export function sqlServerOf(server: Server, ready: Record<string, unknown>): SqlServer {
  if (ready.mysql === undefined || ready.postgres === undefined) throw new Error(`no mysql/postgres address in its ready log line: ${JSON.stringify(ready)}`);
  return { ...server, mysql: addrOf(ready.mysql), postgres: addrOf(ready.postgres) };
}

export function run(command: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** The mariadb client as the quick start uses it (`mysql -h 127.0.0.1 -P 4002`), tab-separated output. */
export function mariadb(server: SqlServer, sql: string, extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('mariadb', ['-h', server.mysql.host, '-P', String(server.mysql.port), '--batch', ...extra], sql);
}

export function psql(server: SqlServer, sql: string, extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('psql', ['-h', server.postgres.host, '-p', String(server.postgres.port), '-d', 'public', '-X', '-A', '-F', '\t', '-v', 'ON_ERROR_STOP=1', ...extra, '-f', '-'], sql);
}

export const QUICK_START_CREATE = `CREATE TABLE IF NOT EXISTS system_metrics (
    host STRING,
    idc STRING,
    cpu_util DOUBLE,
    memory_util DOUBLE,
    disk_util DOUBLE,
    ts TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY(host, idc),
    TIME INDEX(ts)
);`;

export const QUICK_START_INSERT = `INSERT INTO system_metrics
VALUES
    ("host1", "idc_a", 11.8, 10.3, 10.3, 1667446797450),
    ("host1", "idc_a", 80.1, 70.3, 90.0, 1667446797550),
    ("host1", "idc_b", 50.0, 66.7, 40.6, 1667446797650),
    ("host1", "idc_b", 51.0, 66.5, 39.6, 1667446797750),
    ("host1", "idc_b", 52.0, 66.9, 70.6, 1667446797850),
    ("host1", "idc_b", 53.0, 63.0, 50.6, 1667446797950),
    ("host1", "idc_b", 78.0, 66.7, 20.6, 1667446798050),
    ("host1", "idc_b", 68.0, 63.9, 50.6, 1667446798150),
    ("host1", "idc_b", 90.0, 39.9, 60.6, 1667446798250);`;

/** SELECT * FROM system_metrics as the mariadb client prints it after the quick start's insert. */
export const QUICK_START_ROWS = [
  'host\tidc\tcpu_util\tmemory_util\tdisk_util\tts',
  'host1\tidc_a\t11.8\t10.3\t10.3\t2022-11-03 03:39:57.450',
  'host1\tidc_a\t80.1\t70.3\t90\t2022-11-03 03:39:57.550',
  'host1\tidc_b\t50\t66.7\t40.6\t2022-11-03 03:39:57.650',
  'host1\tidc_b\t51\t66.5\t39.6\t2022-11-03 03:39:57.750',
  'host1\tidc_b\t52\t66.9\t70.6\t2022-11-03 03:39:57.850',
  'host1\tidc_b\t53\t63\t50.6\t2022-11-03 03:39:57.950',
  'host1\tidc_b\t78\t66.7\t20.6\t2022-11-03 03:39:58.050',
  'host1\tidc_b\t68\t63.9\t50.6\t2022-11-03 03:39:58.150',
  'host1\tidc_b\t90\t39.9\t60.6\t2022-11-03 03:39:58.250',
];

export const DIST_TABLE_CREATE = `CREATE TABLE dist_table(
    ts TIMESTAMP DEFAULT current_timestamp(),
    n INT,
    row_id INT,
    PRIMARY KEY(n),
    TIME INDEX (ts)
)
PARTITION ON COLUMNS (n) (
    n < 5,
    n >= 5 AND n < 9,
    n >= 9
);`;

export const DIST_TABLE_INSERTS = Array.from({ length: 12 }, (_, i) => `INSERT INTO dist_table(n, row_id) VALUES (${i + 1}, ${i + 1});`).join('\n');

/** `SELECT n, row_id FROM dist_table` after the guide's 12 inserts (ts is the insert time). */
export const DIST_TABLE_ROWS = ['n\trow_id', ...Array.from({ length: 12 }, (_, i) => `${i + 1}\t${i + 1}`)];

