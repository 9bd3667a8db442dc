import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, type Server } from '../harness/standalone.js';
import {
  DIST_TABLE_CREATE,
  DIST_TABLE_INSERTS,
  DIST_TABLE_ROWS,
  mariadb,
  psql,
  QUICK_START_CREATE,
  QUICK_START_INSERT,
  QUICK_START_ROWS,
  run,
  startSqlServer,
} from '../harness/sql-clients.js';

// The seed walkthroughs pasted into Debian's real SQL clients (mariadb from
// mariadb-client, psql from postgresql-client) against `reprise standalone`
// as a user runs it; then SIGKILL, restart, and the same rows again.

const lines = (text: string): string[] => text.trimEnd().split('\n');

describe('SQL clients against reprise standalone', () => {
  const dirs: string[] = [];
  const servers: Server[] = [];
  afterAll(async () => {
    for (const s of servers) s.child.kill('SIGKILL');
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  const start = async (dataDir: string, args: string[] = []) => {
    const server = await startSqlServer(['standalone', '--data-dir', dataDir, ...args]);
    servers.push(server);
    return server;
  };
  const kill9 = async (server: Server) => {
    server.child.kill('SIGKILL');
    expect((await server.exited).signal).toBe('SIGKILL');
  };

  it('runs the quick start verbatim in mariadb, survives kill -9, and psql reads the same nine rows', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reprise-sql-e2e-'));
    dirs.push(dataDir);
    let server = await start(dataDir);
    const created = await mariadb(server, `${QUICK_START_CREATE}\n${QUICK_START_INSERT}\nSELECT * FROM system_metrics;`);
    expect(created.stderr).toBe('');
    expect(lines(created.stdout)).toEqual(QUICK_START_ROWS);

    await kill9(server);
    server = await start(dataDir);
    const again = await mariadb(server, 'SELECT * FROM system_metrics;');
    expect(again.stderr).toBe('');
    expect(lines(again.stdout)).toEqual(QUICK_START_ROWS);

    // The CLI's own client: reprise sql, through /v1/sql.
    const cli = await run(process.execPath, [BIN, 'sql', '-s', server.url, "SELECT idc, count(*) FROM system_metrics WHERE idc = 'idc_a' GROUP BY idc"]);
    expect(cli.stderr).toBe('');
    expect(lines(cli.stdout).slice(0, 4)).toEqual(['idc    count(*)', '-----  --------', 'idc_a  2', '(1 rows)']);

    const pg = await psql(server, 'SELECT host, idc, cpu_util, ts FROM system_metrics;');
    expect(pg.stderr).toBe('');
    expect(lines(pg.stdout)).toEqual([
      'host\tidc\tcpu_util\tts',
      ...QUICK_START_ROWS.slice(1).map((row) => {
        const [host, idc, cpu, , , ts] = row.split('\t');
        return [host, idc, cpu, ts].join('\t');
      }),
      '(9 rows)',
    ]);
  });

  it('runs the remote-WAL guide\'s dist_table in psql and mariadb, aggregates, and keeps every session apart from a bad statement', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reprise-sql-e2e-'));
    dirs.push(dataDir);
    const server = await start(dataDir);
    const created = await mariadb(server, `${DIST_TABLE_CREATE}\n${DIST_TABLE_INSERTS}\nSELECT n, row_id FROM dist_table;`);
    expect(created.stderr).toBe('');
    expect(lines(created.stdout)).toEqual(DIST_TABLE_ROWS);

    const aggregated = await psql(server, 'SELECT count(*), sum(row_id), max(row_id) FROM dist_table WHERE n >= 5;');
    expect(aggregated.stderr).toBe('');
    expect(lines(aggregated.stdout)).toEqual(['count(*)\tsum(row_id)\tmax(row_id)', '8\t68\t12', '(1 row)']);

    // A syntax error names its position and token; the session goes on (--force) and nothing was written.
    const bad = await mariadb(server, "SELEC 1;\nINSERT INTO dist_table(n, row_id) VALUES ('x', 1);\nSELECT count(*) FROM dist_table;", ['--force']);
    expect(bad.stderr).toMatch(/ERROR 1064 \(42000\).*line 1, column 1.*'SELEC'/);
    expect(bad.stderr).toMatch(/ERROR \d+ \(\w+\).*dist_table.*"n"/);
    expect(lines(bad.stdout)).toEqual(['count(*)', '12']);
    const pgBad = await psql(server, 'SELECT * FROM nope;');
    expect(pgBad.code).not.toBe(0);
    expect(pgBad.stderr).toMatch(/ERROR: {2}.*nope/);
  });

  it('refuses to start, exit 1 naming the flag, when the MySQL address is taken', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reprise-sql-e2e-'));
    dirs.push(dataDir);
    const first = await start(join(dataDir, 'a'));
    const taken = `${first.mysql.host}:${first.mysql.port}`;
    const second = await run(process.execPath, [BIN, 'standalone', '--data-dir', join(dataDir, 'b'), '--http-addr', '127.0.0.1:0', '--mysql-addr', taken, '--postgres-addr', '']);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`cannot serve MySQL on ${taken} (--mysql-addr; '' turns it off): listen EADDRINUSE`);
  });

  it('asks for a password with a user file: mariadb and psql log in, a wrong password is refused, a read-only user cannot write', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reprise-sql-e2e-'));
    dirs.push(dataDir);
    const userFile = join(dataDir, 'users');
    await writeFile(userFile, 'greptime_user=greptime_pwd\nviewer:readonly=look\n');
    const server = await start(join(dataDir, 'data'), ['--user-provider', `static_user_provider:file:${userFile}`]);
    const ok = await mariadb(server, `${QUICK_START_CREATE}\nSELECT count(*) FROM system_metrics;`, ['-u', 'greptime_user', '-pgreptime_pwd']);
    expect(ok.stderr).toBe('');
    expect(lines(ok.stdout)).toEqual(['count(*)', '0']);
    const wrong = await mariadb(server, 'SELECT 1;', ['-u', 'greptime_user', '-pnope']);
    expect(wrong.stderr).toMatch(/ERROR 1045 \(28000\).*greptime_user/);
    const viewer = await mariadb(server, "INSERT INTO system_metrics (host, idc, ts) VALUES ('a', 'b', 1);", ['-u', 'viewer', '-plook']);
    expect(viewer.stderr).toMatch(/ERROR 1142 .*read-only/);
    const pgEnv = { ...process.env, PGPASSWORD: 'greptime_pwd' };
    const pgOk = await new Promise<{ stdout: string; stderr: string }>((resolve) =>
      execFile('psql', ['-h', server.postgres.host, '-p', String(server.postgres.port), '-U', 'greptime_user', '-d', 'public', '-X', '-A', '-t', '-c', 'SELECT count(*) FROM system_metrics'], { env: pgEnv }, (_e, stdout, stderr) =>
        resolve({ stdout, stderr }),
      ),
    );
    expect(pgOk).toEqual({ stdout: '0\n', stderr: '' });
    const pgWrong = await new Promise<string>((resolve) =>
      execFile('psql', ['-h', server.postgres.host, '-p', String(server.postgres.port), '-U', 'greptime_user', '-d', 'public', '-c', 'SELECT 1'], { env: { ...pgEnv, PGPASSWORD: 'nope' } }, (_e, _o, stderr) =>
        resolve(stderr),
      ),
    );
    expect(pgWrong).toMatch(/password authentication failed for user "greptime_user"/);
    const http = await fetch(new URL('/v1/sql?sql=SELECT%201', server.url));
    expect(http.status).toBe(401);
    // Nothing without credentials: the clients' defaults (mariadb: the login name, no password; psql: none to send).
    const anonymous = await mariadb(server, 'SELECT 1;');
    expect(anonymous.stderr).toMatch(/ERROR 1045 \(28000\): Access denied/);
    const pgAnonymous = await new Promise<string>((resolve) =>
      execFile('psql', ['-h', server.postgres.host, '-p', String(server.postgres.port), '-U', 'greptime_user', '-d', 'public', '-w', '-c', 'SELECT 1'], { env: { ...process.env, PGPASSWORD: '' } }, (_e, _o, stderr) =>
        resolve(stderr),
      ),
    );
    expect(pgAnonymous).toMatch(/no password supplied|password authentication failed/);
    const pgViewer = await new Promise<string>((resolve) =>
      execFile('psql', ['-h', server.postgres.host, '-p', String(server.postgres.port), '-U', 'viewer', '-d', 'public', '-c', 'DROP TABLE system_metrics'], { env: { ...process.env, PGPASSWORD: 'look' } }, (_e, _o, stderr) =>
        resolve(stderr),
      ),
    );
    expect(pgViewer).toMatch(/ERROR: {2}user 'viewer' is read-only/);
  });
});
