/**
 * The MySQL and PostgreSQL protocol servers driven by the real clients
 * (Debian's mariadb-client and postgresql-client) as child processes, over
 * a canned SQL session factory: the protocols are under test, not SQL.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startMysqlServer } from '../../../src/api/mysql.js';
import { startPostgresServer } from '../../../src/api/postgres.js';
import type { SqlProtocolServer } from '../../../src/api/sql-protocol.js';
import { parseUserProvider, type UserProvider } from '../../../src/api/users.js';
import { RepriseError, type ErrorCode } from '../../../src/errors.js';
import type { Value } from '../../../src/engine/schema.js';
import type { SqlDialect, SqlSessionFactory, SqlUser, StatementOutput, StatementResult } from '../../../src/frontend/sql/types.js';

const logger = pino({ level: 'silent' });
const MARIADB = existsSync('/usr/bin/mariadb') ? 'mariadb' : 'mysql';
const TS = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

// ---------------------------------------------------------------------------
// A canned session factory: each session answers a few statements.

interface Opened {
  readonly dialect: SqlDialect;
  readonly user: SqlUser;
  readonly database: string | undefined;
}

/** The canned sessions' statements: split at every ';', `--` comments dropped. */
const split = (sql: string): string[] =>
  sql
    .replace(/--[^\n]*/g, '')
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s !== '');
/** A canned statement's command: its first word, two for CREATE and DROP (as PostgreSQL tags them). */
const commandOf = (statement: string): string => {
  const words = statement.toUpperCase().split(/\s+/);
  return words[0] === 'CREATE' || words[0] === 'DROP' ? words.slice(0, 2).join(' ') : words[0]!;
};

function cannedSessions(): { factory: SqlSessionFactory; opened: Opened[]; executed: string[] } {
  const opened: Opened[] = [];
  const executed: string[] = [];
  const factory: SqlSessionFactory = ({ dialect, user, database }) => {
    opened.push({ dialect, user, database });
    let current = database ?? 'public';
    const answer = async (statement: string, params: readonly Value[] = []): Promise<StatementOutput> => {
      let m: RegExpExecArray | null;
      if (statement.startsWith('echo')) return { kind: 'rows', columns: [{ name: 'v', type: 'string' }], data: [params.map((v) => `${typeof v}:${v}`)] };
      if (/^select 1$/i.test(statement)) return { kind: 'rows', columns: [{ name: 'one', type: 'int64' }], data: [[1]] };
      if (statement === 'select types' || statement.startsWith('select types where')) {
        return {
          kind: 'rows',
          columns: [
            { name: 's', type: 'string' },
            { name: 'f', type: 'float64' },
            { name: 'i', type: 'int64' },
            { name: 'b', type: 'bool' },
            { name: 't', type: 'timestamp' },
          ],
          data: [
            ['hello', 'wörld', null],
            [1.5, -0.25, null],
            [-42, 9007199254740991, null],
            [true, false, null],
            [TS, 0, null],
          ],
        };
      }
      if (statement === 'select empty') return { kind: 'rows', columns: [{ name: 'a', type: 'string' }, { name: 'b', type: 'int64' }], data: [[], []] };
      if (statement === 'SELECT DATABASE()') return { kind: 'rows', columns: [{ name: 'DATABASE()', type: 'string' }], data: [[current]] };
      if (statement === 'whoami') return { kind: 'rows', columns: [{ name: 'user', type: 'string' }, { name: 'mode', type: 'string' }, { name: 'db', type: 'string' }], data: [[user.name], [user.mode], [current]] };
      if (/^insert\b/i.test(statement)) return { kind: 'affected', affectedRows: 3 };
      if (/^delete\b/i.test(statement)) return { kind: 'affected', affectedRows: 2 };
      if (/^create table\b/i.test(statement)) return { kind: 'affected', affectedRows: 0 };
      if ((m = /^use `?([^`]*)`?$/i.exec(statement))) {
        if (m[1] === 'nodb') throw new RepriseError('NOT_FOUND', "database 'nodb' not found");
        current = m[1]!;
        return { kind: 'affected', affectedRows: 0 };
      }
      if ((m = /^sleep (\d+)$/.exec(statement))) {
        await sleep(Number(m[1]));
        return { kind: 'rows', columns: [{ name: 'slept', type: 'int64' }], data: [[Number(m[1])]] };
      }
      if ((m = /^error ([A-Z_]+)$/.exec(statement))) throw new RepriseError(m[1] as ErrorCode, `boom ${m[1]}`);
      if (statement === 'crash') throw new TypeError('kaput');
      if (statement.startsWith('SELECT name AS "Column"')) {
        // psql's \gdesc asks the server to name the type OIDs it was described: echo the OIDs.
        const described = [...statement.matchAll(/\('([^']*)', '(\d+)'::pg_catalog\.oid, -1\)/g)];
        return { kind: 'rows', columns: [{ name: 'Column', type: 'string' }, { name: 'Type', type: 'string' }], data: [described.map((d) => d[1]!), described.map((d) => `oid ${d[2]}`)] };
      }
      throw new RepriseError('SQL_SYNTAX', `no canned answer for '${statement}'`);
    };
    return {
      dialect,
      get database() {
        return current;
      },
      execute(sql, params = []) {
        return this.prepare(sql).execute(params);
      },
      close() {},
      prepare(sql) {
        if (sql.startsWith('bad')) throw new RepriseError('SQL_SYNTAX', `SQL syntax error at line 1, column 1: found 'bad'`);
        const params = Math.max(0, ...[...sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])), (sql.match(/\?/g) ?? []).length);
        const statements = split(sql).map((statement) => ({ command: commandOf(statement), reads: /^(select|show|desc|describe)\b/i.test(statement) }));
        return {
          statements,
          params,
          async execute(values, onResult) {
            executed.push(sql);
            const results: StatementResult[] = [];
            for (const statement of split(sql)) {
              const result: StatementResult = { ...(await answer(statement, values)), command: commandOf(statement) };
              await onResult?.(result, results.length);
              results.push(result);
            }
            return results;
          },
        };
      },
    };
  };
  return { factory, opened, executed };
}

// ---------------------------------------------------------------------------
// Clients.

interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { env: { ...process.env, ...options.env }, timeout: options.timeoutMs ?? 10_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(options.input ?? '');
  });
}

/** mariadb in batch mode (tab-separated, NULL as NULL), no option files. (Its -e turns --force off: give --force after -e.) */
function mariadb(port: number, args: readonly string[], user = 'someone', password?: string): Promise<Ran> {
  return run(MARIADB, ['--no-defaults', '-h', '127.0.0.1', '-P', String(port), '-u', user, ...(password !== undefined ? [`-p${password}`] : []), '--batch', '--raw', ...args]);
}

/** The error lines of a mariadb run (with --force it echoes each failing statement on stderr too). */
function errorsOf(ran: Ran): string[] {
  return ran.stderr.split('\n').filter((line) => line.startsWith('ERROR'));
}

/** psql unaligned, tuples only, no psqlrc, never prompting. */
function psql(port: number, args: readonly string[], options: { user?: string; password?: string; input?: string; db?: string } = {}): Promise<Ran> {
  return run('psql', ['-X', '-w', '-At', '-h', '127.0.0.1', '-p', String(port), '-U', options.user ?? 'someone', '-d', options.db ?? 'public', ...args], {
    env: { PGPASSWORD: options.password ?? '', PGCONNECT_TIMEOUT: '5', PGAPPNAME: 'reprise-test' },
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
}

const ERROR_CASES: readonly { code: ErrorCode | 'crash'; mysql: string; pg: string }[] = [
  { code: 'SQL_SYNTAX', mysql: '1064 (42000)', pg: '42601' },
  { code: 'TABLE_NOT_FOUND', mysql: '1146 (42S02)', pg: '42P01' },
  { code: 'TABLE_EXISTS', mysql: '1050 (42S01)', pg: '42P07' },
  { code: 'SQL_UNSUPPORTED', mysql: '1235 (42000)', pg: '0A000' },
  { code: 'FORBIDDEN', mysql: '1142 (42000)', pg: '42501' },
  { code: 'UNAUTHENTICATED', mysql: '1045 (28000)', pg: '28P01' },
  { code: 'INVALID_ROW', mysql: '1366 (HY000)', pg: '22023' },
  { code: 'INVALID_QUERY', mysql: '1105 (HY000)', pg: '22023' },
  { code: 'INVALID_SCHEMA', mysql: '1063 (42000)', pg: '22023' },
  { code: 'INVALID_ARGUMENT', mysql: '1210 (HY000)', pg: '22023' },
  { code: 'TIMEOUT', mysql: '1105 (HY000)', pg: 'XX000' },
  { code: 'crash', mysql: '1105 (HY000)', pg: 'XX000' },
];
const errorStatement = (code: string): string => (code === 'crash' ? 'crash' : `error ${code}`);
const errorMessage = (code: string): string => (code === 'crash' ? 'internal error: kaput' : `boom ${code}`);

let dir: string;
let users: UserProvider;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-sql-protocols-'));
  const file = join(dir, 'users');
  await writeFile(file, '# test users\nalice=s3cret\nreader:readonly=r3ad\n');
  users = parseUserProvider(`static_user_provider:file:${file}`);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function mysqlServer(withUsers: boolean) {
  const canned = cannedSessions();
  const server: SqlProtocolServer = await startMysqlServer({ host: '127.0.0.1', port: 0, sessions: canned.factory, logger, ...(withUsers ? { users } : {}) });
  servers.push(server);
  return { ...canned, server, port: server.address.port };
}

async function postgresServer(withUsers: boolean) {
  const canned = cannedSessions();
  const server: SqlProtocolServer = await startPostgresServer({ host: '127.0.0.1', port: 0, sessions: canned.factory, logger, ...(withUsers ? { users } : {}) });
  servers.push(server);
  return { ...canned, server, port: server.address.port };
}

// ---------------------------------------------------------------------------

describe('MySQL protocol (mariadb client)', () => {
  it('without a user provider, anyone is the anonymous rw user with a mysql session', async () => {
    const { port, opened } = await mysqlServer(false);
    const ran = await mariadb(port, ['-e', 'whoami'], 'whoever', 'whatever');
    expect(ran.stderr).toBe('');
    expect(ran.stdout).toBe('user\tmode\tdb\nanonymous\trw\tpublic\n');
    expect(opened).toEqual([{ dialect: 'mysql', user: { name: 'anonymous', mode: 'rw' }, database: undefined }]);
  });

  it('authenticates mysql_native_password against the user file and passes the mode on', async () => {
    const { port, opened } = await mysqlServer(true);
    const ok = await mariadb(port, ['-e', 'whoami'], 'alice', 's3cret');
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toBe('user\tmode\tdb\nalice\trw\tpublic\n');
    const reader = await mariadb(port, ['-e', 'whoami'], 'reader', 'r3ad');
    expect(reader.stdout).toBe('user\tmode\tdb\nreader\tro\tpublic\n');
    expect(opened.map((o) => o.user)).toEqual([
      { name: 'alice', mode: 'rw' },
      { name: 'reader', mode: 'ro' },
    ]);

    for (const [user, password] of [['alice', 'wrong'], ['alice', undefined], ['reader', 's3cret'], ['mallory', 's3cret']] as const) {
      const denied = await mariadb(port, ['-e', 'whoami'], user, password);
      expect(denied.code, `${user}/${password}`).toBe(1);
      expect(denied.stdout).toBe('');
      expect(denied.stderr).toMatch(new RegExp(`^ERROR 1045 \\(28000\\): Access denied for user '${user}'@'127\\.0\\.0\\.1' \\(using password: ${password === undefined ? 'NO' : 'YES'}\\)`));
    }
    expect(opened).toHaveLength(2); // no session for a refused client
  });

  it('sends each type as the client prints it, with its column definition', async () => {
    const { port } = await mysqlServer(false);
    const batch = await mariadb(port, ['-e', 'select types']);
    expect(batch.stderr).toBe('');
    expect(batch.stdout).toBe('s\tf\ti\tb\tt\nhello\t1.5\t-42\t1\t2024-01-02 03:04:05.678\nwörld\t-0.25\t9007199254740991\t0\t1970-01-01 00:00:00.000\nNULL\tNULL\tNULL\tNULL\tNULL\n');

    const info = await mariadb(port, ['--table', '--column-type-info', '-e', 'select types; select empty']);
    expect(info.stderr).toBe('');
    const types = [...info.stdout.matchAll(/^Field +\d+: +`(\w+)`[\s\S]*?^Type: +(\w+)[\s\S]*?^Decimals: +(\d+)/gm)].map((m) => `${m[1]} ${m[2]} ${m[3]}`);
    // A result without rows still sends its columns.
    expect(types).toEqual(['s VAR_STRING 0', 'f DOUBLE 31', 'i LONGLONG 0', 'b TINY 0', 't DATETIME 3', 'a VAR_STRING 0', 'b LONGLONG 0']);
    expect(info.stdout).toMatch(/Collation: +utf8mb4_general_ci \(45\)/);
  });

  it('answers affected rows with an OK packet', async () => {
    const { port } = await mysqlServer(false);
    const ran = await mariadb(port, ['-vv', '-e', 'insert into t values (1); delete from t; create table x (a int)']);
    expect(ran.stderr).toBe('');
    expect(ran.stdout.match(/Query OK, \d+ rows? affected/g)).toEqual(['Query OK, 3 rows affected', 'Query OK, 2 rows affected', 'Query OK, 0 rows affected']);
  });

  it('maps each error code to its MySQL error and SQLSTATE, and the connection goes on', async () => {
    const { port, opened } = await mysqlServer(false);
    const script = ERROR_CASES.map((c) => `${errorStatement(c.code)}; select 1`).join('; ');
    const ran = await mariadb(port, ['-e', script, '--force']);
    // With --force the client echoes each failing statement on stderr, then its error.
    expect(errorsOf(ran)).toEqual(ERROR_CASES.map((c) => `ERROR ${c.mysql} at line 1: ${errorMessage(c.code)}`));
    expect(ran.stdout).toBe('one\n1\n'.repeat(ERROR_CASES.length));
    expect(opened).toHaveLength(1); // one connection throughout
  });

  it('runs the database named at connect and COM_INIT_DB as USE, and refuses an unknown one at connect', async () => {
    const { port, executed } = await mysqlServer(false);
    const ran = await mariadb(port, ['-D', 'metrics', '-e', 'whoami; use logs; whoami']);
    expect(ran.stderr).toBe('');
    expect(ran.stdout).toBe('user\tmode\tdb\nanonymous\trw\tmetrics\nuser\tmode\tdb\nanonymous\trw\tlogs\n');
    // The client's `use` asks SELECT DATABASE() first, then sends COM_INIT_DB.
    expect(executed).toEqual(['USE `metrics`', 'whoami', 'SELECT DATABASE()', 'USE `logs`', 'whoami']);
    const refused = await mariadb(port, ['-D', 'nodb', '-e', 'whoami']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^ERROR 1105 \(HY000\): database 'nodb' not found/);
  });

  it('sends every result of a multi-statement COM_QUERY, the error of a failing one, and stays in step', async () => {
    const { port, executed } = await mysqlServer(false);
    // With another delimiter the client sends 'a; b; c' as one COM_QUERY (CLIENT_MULTI_STATEMENTS).
    const script = 'delimiter //\nselect 1; insert into t; select empty; select types//\nselect 1; error TABLE_NOT_FOUND; select types//\nwhoami//\n';
    const ran = await mariadb(port, ['-e', script, '--force']);
    expect(executed).toEqual(['select 1; insert into t; select empty; select types', 'select 1; error TABLE_NOT_FOUND; select types', 'whoami']);
    expect(errorsOf(ran)).toEqual(['ERROR 1146 (42S02) at line 3: boom TABLE_NOT_FOUND']);
    // The failing text's first result is sent before its error, as MySQL does.
    expect(ran.stdout).toBe(
      'one\n1\n' +
        's\tf\ti\tb\tt\nhello\t1.5\t-42\t1\t2024-01-02 03:04:05.678\nwörld\t-0.25\t9007199254740991\t0\t1970-01-01 00:00:00.000\nNULL\tNULL\tNULL\tNULL\tNULL\n' +
        'one\n1\n' +
        'user\tmode\tdb\nanonymous\trw\tpublic\n',
    );
  });

  it('routes SET and PREPARE text to the session like any statement', async () => {
    const { port, executed } = await mysqlServer(false);
    const ran = await mariadb(port, ['-e', 'SET NAMES utf8mb4; PREPARE s FROM "select 1"; select 1', '--force']);
    expect(executed).toEqual(['SET NAMES utf8mb4', 'PREPARE s FROM "select 1"', 'select 1']);
    expect(errorsOf(ran)).toEqual(["ERROR 1064 (42000) at line 1: no canned answer for 'SET NAMES utf8mb4'", 'ERROR 1064 (42000) at line 1: no canned answer for \'PREPARE s FROM "select 1"\'']);
    expect(ran.stdout).toBe('one\n1\n');
  });

  it('serves many clients at once, each in its own session', async () => {
    const { port, opened } = await mysqlServer(true);
    const runs = await Promise.all(
      Array.from({ length: 24 }, (_, i) => (i % 6 === 5 ? mariadb(port, ['-e', 'error SQL_SYNTAX; sleep 30; whoami', '--force'], 'alice', 's3cret') : mariadb(port, ['-e', `sleep ${20 + (i % 4) * 10}; whoami`], i % 2 ? 'alice' : 'reader', i % 2 ? 's3cret' : 'r3ad'))),
    );
    for (const [i, ran] of runs.entries()) {
      const user = i % 6 === 5 || i % 2 ? 'alice\trw' : 'reader\tro';
      expect(ran.stdout, `client ${i}`).toMatch(new RegExp(`^slept\\n\\d+\\nuser\\tmode\\tdb\\n${user}\\tpublic\\n$`));
    }
    expect(opened).toHaveLength(24);
  });

  it('close() ends open connections and stops listening', async () => {
    const { server, port } = await mysqlServer(false);
    const busy = mariadb(port, ['-e', 'sleep 3000']);
    await sleep(300);
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(1500);
    const ended = await busy;
    expect(ended.code).not.toBe(0);
    expect(ended.stderr).toMatch(/Lost connection|server has gone away/);
    const refused = await mariadb(port, ['-e', 'select 1']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/ERROR 2002|Can't connect/);
  });
});

describe('PostgreSQL protocol (psql)', () => {
  it('without a user provider trusts anyone as the anonymous rw user, passing the startup database', async () => {
    const { port, opened } = await postgresServer(false);
    const ran = await psql(port, ['-c', 'whoami'], { user: 'whoever', db: 'metrics' });
    expect(ran.stderr).toBe('');
    expect(ran.stdout).toBe('anonymous|rw|metrics\n');
    expect(opened).toEqual([{ dialect: 'postgres', user: { name: 'anonymous', mode: 'rw' }, database: 'metrics' }]);
  });

  it('authenticates md5 against the user file, passes the mode on, and refuses a wrong password with 28P01', async () => {
    const { port, opened } = await postgresServer(true);
    expect((await psql(port, ['-c', 'whoami'], { user: 'alice', password: 's3cret' })).stdout).toBe('alice|rw|public\n');
    expect((await psql(port, ['-c', 'whoami'], { user: 'reader', password: 'r3ad' })).stdout).toBe('reader|ro|public\n');
    expect(opened.map((o) => o.user)).toEqual([
      { name: 'alice', mode: 'rw' },
      { name: 'reader', mode: 'ro' },
    ]);
    for (const [user, password] of [['alice', 'wrong'], ['reader', 's3cret'], ['mallory', 's3cret']] as const) {
      const denied = await psql(port, ['-v', 'VERBOSITY=verbose', '-c', 'whoami'], { user, password });
      expect(denied.code, `${user}/${password}`).toBe(2);
      expect(denied.stdout).toBe('');
      expect(denied.stderr).toMatch(new RegExp(`failed: FATAL: {2}password authentication failed for user "${user}"\n$`));
    }
    const none = await psql(port, ['-c', 'whoami'], { user: 'alice' });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no password supplied/);
    expect(opened).toHaveLength(2);
  });

  it('answers an SSL request with N: prefer falls back to plaintext, require fails', async () => {
    const { port } = await postgresServer(false);
    const required = await run('psql', ['-X', '-w', '-At', `host=127.0.0.1 port=${port} user=u dbname=public sslmode=require`, '-c', 'select 1']);
    expect(required.code).toBe(2);
    expect(required.stderr).toMatch(/server does not support SSL, but SSL was required/);
    const preferred = await run('psql', ['-X', '-w', '-At', `host=127.0.0.1 port=${port} user=u dbname=public sslmode=prefer`, '-c', 'select 1']);
    expect(preferred.stdout).toBe('1\n');
  });

  it('sends each type as the client prints it, with its type OID', async () => {
    const { port } = await postgresServer(false);
    const values = await psql(port, ['-c', 'select types']);
    expect(values.stderr).toBe('');
    expect(values.stdout).toBe('hello|1.5|-42|t|2024-01-02 03:04:05.678\nwörld|-0.25|9007199254740991|f|1970-01-01 00:00:00.000\n||||\n');
    // \gdesc prepares and describes the statement (extended protocol), then asks the server to name the OIDs.
    const described = await psql(port, [], { input: 'select types \\gdesc\nselect empty \\gdesc\n' });
    expect(described.stderr).toBe('');
    expect(described.stdout).toBe('s|oid 25\nf|oid 701\ni|oid 20\nb|oid 16\nt|oid 1114\na|oid 25\nb|oid 20\n');
    // A result without rows still describes its columns.
    const empty = await run('psql', ['-X', '-w', '-h', '127.0.0.1', '-p', String(port), '-U', 'u', '-d', 'public', '-c', 'select empty']);
    expect(empty.stdout).toBe(' a | b \n---+---\n(0 rows)\n\n');
  });

  it('names command tags from the statement, and answers an empty query', async () => {
    const { port, executed } = await postgresServer(false);
    const ran = await psql(port, [], { input: 'insert into t values (1);\ndelete from t;\ncreate table x (a int);\nselect 1;\n' });
    expect(ran.stderr).toBe('');
    expect(ran.stdout).toBe('INSERT 0 3\nDELETE 2\nCREATE TABLE\n1\n');
    for (const blank of [';', ' ; ;', '-- nothing']) {
      const empty = await psql(port, ['-c', blank]);
      expect(empty.code, blank).toBe(0);
      expect(empty.stdout + empty.stderr, blank).toBe('');
    }
    // The blank ones reach the session too (it parses them to nothing).
    expect(executed.filter((sql) => split(sql).length > 0)).toEqual(['insert into t values (1);', 'delete from t;', 'create table x (a int);', 'select 1;']);
  });

  it('maps each error code to its SQLSTATE, and the connection goes on', async () => {
    const { port, opened } = await postgresServer(false);
    const script = ERROR_CASES.map((c) => `${errorStatement(c.code)};\nselect 1;\n`).join('');
    const ran = await psql(port, ['-v', 'VERBOSITY=verbose'], { input: script });
    expect(ran.stderr.trim().split('\n')).toEqual(ERROR_CASES.map((c) => `ERROR:  ${c.pg}: ${errorMessage(c.code)}`));
    expect(ran.stdout).toBe('1\n'.repeat(ERROR_CASES.length));
    expect(opened).toHaveLength(1);
  });

  it('sends the results of a multi-statement query, or the error of a failing one', async () => {
    const { port } = await postgresServer(false);
    // psql 15 prints every result of a -c string.
    expect((await psql(port, ['-c', 'insert into t; select types; whoami'])).stdout).toBe(
      'INSERT 0 3\nhello|1.5|-42|t|2024-01-02 03:04:05.678\nwörld|-0.25|9007199254740991|f|1970-01-01 00:00:00.000\n||||\nanonymous|rw|public\n',
    );
    const failing = await psql(port, ['-v', 'VERBOSITY=verbose', '-c', 'select 1; error TABLE_EXISTS; select 1']);
    expect(failing.code).toBe(1);
    expect(failing.stderr).toBe('ERROR:  42P07: boom TABLE_EXISTS\n');
    // The result before the failing statement is sent first, as PostgreSQL does; nothing after it runs.
    expect(failing.stdout).toBe('1\n');
  });

  it('serves many clients at once, each in its own session', async () => {
    const { port, opened } = await postgresServer(true);
    const runs = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        psql(port, [], { input: i % 6 === 5 ? 'error SQL_SYNTAX;\nsleep 30;\nwhoami;\n' : `sleep ${20 + (i % 4) * 10};\nwhoami;\n`, user: i % 2 ? 'alice' : 'reader', password: i % 2 ? 's3cret' : 'r3ad' }),
      ),
    );
    for (const [i, ran] of runs.entries()) expect(ran.stdout, `client ${i}`).toMatch(new RegExp(`^\\d+\\n${i % 2 ? 'alice\\|rw' : 'reader\\|ro'}\\|public\\n$`));
    expect(opened).toHaveLength(24);
  });

  it('close() tells open connections and stops listening', async () => {
    const { server, port } = await postgresServer(false);
    const busy = psql(port, ['-c', 'sleep 3000']);
    await sleep(300);
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(1500);
    const ended = await busy;
    expect(ended.code).not.toBe(0);
    expect(ended.stderr).toMatch(/terminating connection due to administrator command/);
    const refused = await psql(port, ['-c', 'select 1']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/Connection refused/);
  });
});

// ---------------------------------------------------------------------------
// The extended query protocol, spoken by hand (psql only uses it for \gdesc).

interface PgMessage {
  readonly type: string;
  readonly body: Buffer;
}

class RawPg {
  private buffer = Buffer.alloc(0);
  private readonly messages: PgMessage[] = [];
  private waiting: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= 5 && this.buffer.length >= 1 + this.buffer.readInt32BE(1)) {
        const length = this.buffer.readInt32BE(1);
        this.messages.push({ type: String.fromCharCode(this.buffer[0]!), body: this.buffer.subarray(5, 1 + length) });
        this.buffer = this.buffer.subarray(1 + length);
      }
      this.waiting?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
  }

  /** Connects and sends a StartupMessage for `user`. */
  static async start(port: number, user = 'u'): Promise<RawPg> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const client = new RawPg(socket);
    const params = Buffer.from(`user\0${user}\0database\0public\0\0`);
    const startup = Buffer.alloc(8);
    startup.writeInt32BE(8 + params.length, 0);
    startup.writeInt32BE(196608, 4);
    socket.write(Buffer.concat([startup, params]));
    return client;
  }

  static async connect(port: number): Promise<RawPg> {
    const client = await RawPg.start(port);
    await client.untilReady();
    return client;
  }

  async next(): Promise<PgMessage | undefined> {
    while (this.messages.length === 0) {
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
    return this.messages.shift();
  }

  send(type: string, ...fields: (Buffer | string | number)[]): void {
    const body = Buffer.concat(fields.map((f) => (typeof f === 'string' ? Buffer.from(`${f}\0`) : typeof f === 'number' ? Buffer.from([(f >> 8) & 0xff, f & 0xff]) : f)));
    const head = Buffer.alloc(5);
    head.write(type, 0, 'latin1');
    head.writeInt32BE(body.length + 4, 1);
    this.socket.write(Buffer.concat([head, body]));
  }

  /** Messages up to and including the next ReadyForQuery. */
  async untilReady(): Promise<PgMessage[]> {
    for (;;) {
      const z = this.messages.findIndex((m) => m.type === 'Z');
      if (z >= 0) return this.messages.splice(0, z + 1);
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
  }

  end(): void {
    this.socket.end();
  }
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

function fieldOf(body: Buffer, field: string): string | undefined {
  for (const part of body.toString('utf8').split('\0')) if (part.startsWith(field)) return part.slice(1);
  return undefined;
}

function rowDescription(body: Buffer): string[] {
  const columns: string[] = [];
  let offset = 2;
  for (let i = 0; i < body.readInt16BE(0); i++) {
    const end = body.indexOf(0, offset);
    columns.push(`${body.toString('utf8', offset, end)}:${body.readInt32BE(end + 7)}`);
    offset = end + 19;
  }
  return columns;
}

function dataRow(body: Buffer): (string | null)[] {
  const values: (string | null)[] = [];
  let offset = 2;
  for (let i = 0; i < body.readInt16BE(0); i++) {
    const length = body.readInt32BE(offset);
    offset += 4;
    values.push(length < 0 ? null : body.toString('utf8', offset, offset + length));
    offset += Math.max(0, length);
  }
  return values;
}

describe('PostgreSQL extended query protocol (raw)', () => {
  it('asks for an md5 password, refuses a wrong one with FATAL 28P01 and closes, accepts the right one', async () => {
    const { port } = await postgresServer(true);
    const { createHash } = await import('node:crypto');
    const md5 = (data: Buffer | string) => createHash('md5').update(data).digest('hex');
    const login = async (password: string) => {
      const pg = await RawPg.start(port, 'alice');
      const request = (await pg.next())!;
      expect(request.type).toBe('R');
      expect(request.body.readInt32BE(0)).toBe(5); // AuthenticationMD5Password
      const salt = request.body.subarray(4, 8);
      pg.send('p', `md5${md5(Buffer.concat([Buffer.from(md5(password + 'alice')), salt]))}`);
      return pg;
    };
    const wrong = await login('wrong');
    const refusal = (await wrong.next())!;
    expect(refusal.type).toBe('E');
    expect([fieldOf(refusal.body, 'S'), fieldOf(refusal.body, 'C'), fieldOf(refusal.body, 'M')]).toEqual(['FATAL', '28P01', 'password authentication failed for user "alice"']);
    expect(await wrong.next()).toBeUndefined(); // closed

    const right = await login('s3cret');
    const welcome = await right.untilReady();
    expect(welcome[0]!.type).toBe('R');
    expect(welcome[0]!.body.readInt32BE(0)).toBe(0); // AuthenticationOk
    expect(welcome.map((m) => m.type).join('')).toMatch(/^RS+KZ$/);
    right.end();
  });

  it('runs a parameterless statement through Parse/Bind/Describe/Execute/Sync, with a row limit', async () => {
    const { port, executed } = await postgresServer(false);
    const pg = await RawPg.connect(port);
    pg.send('P', '', 'select types', 0);
    pg.send('B', '', '', 0, 0, 0);
    pg.send('D', Buffer.from('P'), '');
    pg.send('E', '', int32(2));
    pg.send('E', '', int32(0));
    pg.send('S');
    const messages = await pg.untilReady();
    expect(messages.map((m) => m.type).join('')).toBe('12TDDsDCZ');
    expect(rowDescription(messages[2]!.body)).toEqual(['s:25', 'f:701', 'i:20', 'b:16', 't:1114']);
    expect(messages.filter((m) => m.type === 'D').map((m) => dataRow(m.body))).toEqual([
      ['hello', '1.5', '-42', 't', '2024-01-02 03:04:05.678'],
      ['wörld', '-0.25', '9007199254740991', 'f', '1970-01-01 00:00:00.000'],
      [null, null, null, null, null],
    ]);
    expect(messages[7]!.body.toString()).toBe('SELECT 3\0');

    pg.send('P', 'ins', 'insert into t values (1)', 0);
    pg.send('D', Buffer.from('S'), 'ins');
    pg.send('B', '', 'ins', 0, 0, 0);
    pg.send('E', '', int32(0));
    pg.send('S');
    const insert = await pg.untilReady();
    expect(insert.map((m) => m.type).join('')).toBe('1tn2CZ');
    expect(insert[4]!.body.toString()).toBe('INSERT 0 3\0');
    expect(executed).toEqual(['select types', 'insert into t values (1)']); // each ran once
    pg.end();
  });

  it('binds parameters in text and binary format, as Parse typed them', async () => {
    const { port } = await postgresServer(false);
    const pg = await RawPg.connect(port);
    const value = (v: string | Buffer | null) => (v === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(v)), Buffer.from(v)]));
    pg.send('P', 'e', 'echo $1, $2, $3, $4', 4, int32(20), int32(0), int32(16), int32(0));
    pg.send('D', Buffer.from('S'), 'e');
    pg.send('B', '', 'e', 1, 0, 4, value('42'), value('hi'), value('t'), value(null), 0);
    pg.send('E', '', int32(0));
    const int8 = Buffer.alloc(8);
    int8.writeBigInt64BE(7n);
    const ts = Buffer.alloc(8);
    ts.writeBigInt64BE(BigInt(TS - Date.UTC(2000, 0, 1)) * 1000n); // microseconds since 2000-01-01
    pg.send('P', 'b', 'echo $1, $2', 2, int32(20), int32(1114));
    pg.send('B', '', 'b', 1, 1, 2, value(int8), value(ts), 0);
    pg.send('E', '', int32(0));
    // A read with parameters is described by running it with nulls.
    pg.send('P', 'r', 'select types where s = $1', 0);
    pg.send('D', Buffer.from('S'), 'r');
    pg.send('S');
    const messages = await pg.untilReady();
    expect(messages.map((m) => m.type).join('')).toBe('1tn2DDDDC12DDC1tTZ');
    expect(rowDescription(messages[messages.length - 2]!.body)).toEqual(['s:25', 'f:701', 'i:20', 'b:16', 't:1114']);
    const description = messages[1]!.body;
    expect([description.readInt16BE(0), description.readInt32BE(2), description.readInt32BE(6), description.readInt32BE(10), description.readInt32BE(14)]).toEqual([4, 20, 25, 16, 25]);
    expect(messages.filter((m) => m.type === 'D').map((m) => dataRow(m.body)[0])).toEqual(['number:42', 'string:hi', 'boolean:true', 'object:null', 'number:7', `number:${TS}`]);
    pg.end();
  });

  it('answers a bad Parse, a wrong parameter count or a binary result format with an error, skips to Sync and stays usable', async () => {
    const { port } = await postgresServer(false);
    const pg = await RawPg.connect(port);
    pg.send('P', '', 'bad statement', 0);
    pg.send('B', '', '', 0, 0, 0);
    pg.send('E', '', int32(0));
    pg.send('S');
    const badParse = await pg.untilReady();
    expect(badParse.map((m) => m.type).join('')).toBe('EZ');
    expect(fieldOf(badParse[0]!.body, 'C')).toBe('42601');

    pg.send('P', '', 'echo $1', 0);
    pg.send('B', '', '', 0, 0, 0);
    pg.send('E', '', int32(0));
    pg.send('S');
    const refused = await pg.untilReady();
    expect(refused.map((m) => m.type).join('')).toBe('1EZ');
    expect(fieldOf(refused[1]!.body, 'C')).toBe('08P01');
    expect(fieldOf(refused[1]!.body, 'M')).toBe('bind message supplies 0 parameters, but prepared statement "" requires 1');

    pg.send('P', '', 'select 1', 0);
    pg.send('B', '', '', 0, 0, 1, 1);
    pg.send('S');
    const binary = await pg.untilReady();
    expect(binary.map((m) => m.type).join('')).toBe('1EZ');
    expect(fieldOf(binary[1]!.body, 'C')).toBe('0A000');

    pg.send('P', '', 'error TABLE_NOT_FOUND', 0);
    pg.send('B', '', '', 0, 0, 0);
    pg.send('E', '', int32(0));
    pg.send('S');
    const failed = await pg.untilReady();
    expect(failed.map((m) => m.type).join('')).toBe('12EZ');
    expect(fieldOf(failed[2]!.body, 'C')).toBe('42P01');

    pg.send('Q', 'select 1');
    const ok = await pg.untilReady();
    expect(ok.map((m) => m.type).join('')).toBe('TDCZ');
    expect(dataRow(ok[1]!.body)).toEqual(['1']);
    pg.end();
  });
});

// ---------------------------------------------------------------------------
// MySQL packets by hand: sequence ids, status flags and the scramble, which the mariadb client does not check.

class RawMysql {
  private buffer = Buffer.alloc(0);
  private readonly packets: { seq: number; payload: Buffer }[] = [];
  private waiting: (() => void) | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= 4 && this.buffer.length >= 4 + this.buffer.readUIntLE(0, 3)) {
        const length = this.buffer.readUIntLE(0, 3);
        this.packets.push({ seq: this.buffer[3]!, payload: this.buffer.subarray(4, 4 + length) });
        this.buffer = this.buffer.subarray(4 + length);
      }
      this.waiting?.();
    });
    socket.on('close', () => this.waiting?.());
  }

  async next(): Promise<{ seq: number; payload: Buffer }> {
    while (this.packets.length === 0) {
      if (this.socket.destroyed) throw new Error('connection closed');
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
    return this.packets.shift()!;
  }

  /** Packets up to the end of one response: OK or ERR, or a result set's second EOF. */
  async response(): Promise<{ seq: number; payload: Buffer }[]> {
    const packets = [await this.next()];
    const first = packets[0]!.payload[0]!;
    if (first === 0x00 || first === 0xff) return packets;
    let eofs = 0;
    while (eofs < 2) {
      const packet = await this.next();
      packets.push(packet);
      if (packet.payload[0] === 0xfe && packet.payload.length < 9) eofs++;
      if (packet.payload[0] === 0xff) break;
    }
    return packets;
  }

  write(seq: number, payload: Buffer): void {
    const head = Buffer.alloc(4);
    head.writeUIntLE(payload.length, 0, 3);
    head[3] = seq;
    this.socket.write(Buffer.concat([head, payload]));
  }

  command(code: number, text = ''): void {
    this.write(0, Buffer.concat([Buffer.from([code]), Buffer.from(text)]));
  }
}

/** Logs in by hand; with another plugin than mysql_native_password, sends a junk token and answers the server's auth switch. */
async function rawMysqlLogin(
  port: number,
  user: string,
  password: string,
  plugin = 'mysql_native_password',
): Promise<{ client: RawMysql; socket: net.Socket; ok: { seq: number; payload: Buffer }; switchRequest?: { seq: number; payload: Buffer } }> {
  const socket = net.connect(port, '127.0.0.1');
  const client = new RawMysql(socket);
  const hello = (await client.next()).payload;
  const versionEnd = hello.indexOf(0, 1);
  const part1 = hello.subarray(versionEnd + 5, versionEnd + 13);
  const part2 = hello.subarray(versionEnd + 32, versionEnd + 44);
  const scramble = Buffer.concat([part1, part2]);
  const { createHash } = await import('node:crypto');
  const sha1 = (...parts: Buffer[]) => parts.reduce((h, p) => h.update(p), createHash('sha1')).digest();
  const stage1 = sha1(Buffer.from(password));
  const mix = sha1(scramble, sha1(stage1));
  const token = Buffer.from(stage1.map((b, i) => b ^ mix[i]!));
  const flags = 0x200 | 0x8000 | 0x10000 | 0x20000 | 0x80000; // PROTOCOL_41, SECURE_CONNECTION, MULTI_STATEMENTS, MULTI_RESULTS, PLUGIN_AUTH
  const head = Buffer.alloc(32);
  head.writeUInt32LE(flags, 0);
  head.writeUInt32LE(1 << 24, 4);
  head[8] = 45;
  if (plugin === 'mysql_native_password') {
    client.write(1, Buffer.concat([head, Buffer.from(`${user}\0`), Buffer.from([token.length]), token, Buffer.from(`${plugin}\0`)]));
    return { client, socket, ok: await client.next() };
  }
  client.write(1, Buffer.concat([head, Buffer.from(`${user}\0`), Buffer.from([32]), Buffer.alloc(32, 7), Buffer.from(`${plugin}\0`)]));
  const switchRequest = await client.next();
  expect(switchRequest.payload.equals(Buffer.concat([Buffer.from([0xfe]), Buffer.from('mysql_native_password\0'), scramble, Buffer.from([0])]))).toBe(true);
  client.write(switchRequest.seq + 1, token);
  return { client, socket, ok: await client.next(), switchRequest };
}

describe('MySQL protocol (raw packets)', () => {
  it('verifies the scramble, numbers every response from 1 and flags all but the last result of a multi-statement query', async () => {
    const { port } = await mysqlServer(true);
    const denied = await rawMysqlLogin(port, 'alice', 'wrong');
    expect(denied.ok.payload[0]).toBe(0xff);
    expect(denied.ok.payload.subarray(3, 9).toString()).toBe('#28000');
    denied.socket.destroy();

    const { client, socket, ok } = await rawMysqlLogin(port, 'alice', 's3cret');
    expect(ok).toMatchObject({ seq: 2 });
    expect(ok.payload[0]).toBe(0x00);
    for (let round = 0; round < 2; round++) {
      client.command(0x03, 'select 1');
      const result = await client.response();
      expect(result.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5]); // column count, column, EOF, row, EOF
    }
    client.command(0x0e); // COM_PING
    expect((await client.response()).map((p) => [p.seq, p.payload[0]])).toEqual([[1, 0x00]]);

    client.command(0x03, 'select 1; insert into t; select empty');
    const eofStatus = (packets: { payload: Buffer }[]): number => packets[packets.length - 1]!.payload.readUInt16LE(3);
    const rows1 = await client.response();
    expect(eofStatus(rows1) & 0x08).toBe(0x08); // SERVER_MORE_RESULTS_EXISTS
    const affected = await client.response();
    expect([...affected[0]!.payload.subarray(0, 3)]).toEqual([0x00, 3, 0]); // OK, 3 rows, insert id 0
    expect(affected[0]!.payload.readUInt16LE(3) & 0x08).toBe(0x08);
    const rows3 = await client.response();
    expect(rows3.map((p) => p.seq)).toEqual([7, 8, 9, 10, 11]); // column count, 2 columns, EOF, no rows, EOF
    expect(eofStatus(rows3) & 0x08).toBe(0);

    // A failing statement: the results before it (flagged, more follows), then its error, numbered on.
    client.command(0x03, 'select 1; error TABLE_EXISTS');
    const first = await client.response();
    expect(first.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5]); // column count, column, EOF, row, EOF
    expect(eofStatus(first) & 0x08).toBe(0x08);
    const failed = await client.response();
    expect(failed.map((p) => p.seq)).toEqual([6]);
    const error = failed[0]!;
    expect(error.payload[0]).toBe(0xff);
    expect(error.payload.readUInt16LE(1)).toBe(1050);
    expect(error.payload.subarray(3).toString()).toBe('#42S01boom TABLE_EXISTS');
    socket.destroy();
  });

  it('prepares, executes with and without newly bound types, sends long data and closes statements', async () => {
    const { port } = await mysqlServer(false);
    const { client, socket } = await rawMysqlLogin(port, 'x', '');
    client.command(0x16, 'echo ?, ?'); // COM_STMT_PREPARE
    const prepareOk = await client.next();
    expect(prepareOk.seq).toBe(1);
    const id = prepareOk.payload.readUInt32LE(1);
    expect([prepareOk.payload[0], prepareOk.payload.readUInt16LE(5), prepareOk.payload.readUInt16LE(7)]).toEqual([0x00, 0, 2]); // OK, 0 columns, 2 params
    const paramDefs = [await client.next(), await client.next(), await client.next()];
    expect(paramDefs.map((p) => p.seq)).toEqual([2, 3, 4]);
    expect(paramDefs[2]!.payload[0]).toBe(0xfe);

    const int8 = (n: number) => {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(n));
      return b;
    };
    const execute = (bound: boolean, values: Buffer) => {
      const statementId = Buffer.alloc(4);
      statementId.writeUInt32LE(id);
      const types = bound ? Buffer.from([1, 0x08, 0x00, 0xfd, 0x00]) : Buffer.from([0]); // new-params-bound flag; LONGLONG, VAR_STRING
      // COM_STMT_EXECUTE, statement id, flags 0, iteration count 1, null bitmap, types, values
      client.write(0, Buffer.concat([Buffer.from([0x17]), statementId, Buffer.from([0, 1, 0, 0, 0, 0]), types, values]));
    };
    const binaryRows = async () => {
      const packets = await client.response();
      expect(packets[0]!.payload[0]).toBe(1); // one column
      return packets.slice(3, -1).map((p) => p.payload.subarray(2 + 1, 3 + p.payload[2]!).toString()); // after header byte and null bitmap: lenenc string
    };
    execute(true, Buffer.concat([int8(5), Buffer.from([2]), Buffer.from('ab')]));
    expect(await binaryRows()).toEqual(['number:5', 'string:ab']);
    execute(false, Buffer.concat([int8(-6), Buffer.from([1]), Buffer.from('c')]));
    expect(await binaryRows()).toEqual(['number:-6', 'string:c']);

    // COM_STMT_SEND_LONG_DATA for parameter 1 (no answer), then an execute that leaves that value out.
    const longData = Buffer.alloc(7);
    longData[0] = 0x18;
    longData.writeUInt32LE(id, 1);
    longData.writeUInt16LE(1, 5);
    client.write(0, Buffer.concat([longData, Buffer.from('long ')]));
    client.write(0, Buffer.concat([longData, Buffer.from('data')]));
    execute(false, int8(7));
    expect(await binaryRows()).toEqual(['number:7', 'string:long data']);

    const close = Buffer.alloc(5);
    close[0] = 0x19; // COM_STMT_CLOSE: no answer
    close.writeUInt32LE(id, 1);
    client.write(0, close);
    execute(false, Buffer.concat([int8(8), Buffer.from([1]), Buffer.from('d')]));
    const unknown = await client.response();
    expect(unknown.map((p) => p.seq)).toEqual([1]);
    expect(unknown[0]!.payload.readUInt16LE(1)).toBe(1210);
    expect(unknown[0]!.payload.subarray(9).toString()).toMatch(/unknown prepared statement handler/);
    socket.destroy();
  });

  it('switches a client that offers caching_sha2_password to mysql_native_password', async () => {
    const { port, opened } = await mysqlServer(true);
    const { client, socket, ok, switchRequest } = await rawMysqlLogin(port, 'reader', 'r3ad', 'caching_sha2_password');
    expect(switchRequest?.seq).toBe(2);
    expect(ok.seq).toBe(4);
    expect(ok.payload[0]).toBe(0x00);
    client.command(0x03, 'whoami');
    const result = await client.response();
    expect(result.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(opened.map((o) => o.user)).toEqual([{ name: 'reader', mode: 'ro' }]);
    socket.destroy();

    const wrong = await rawMysqlLogin(port, 'reader', 'nope', 'caching_sha2_password');
    expect(wrong.ok.payload[0]).toBe(0xff);
    expect(wrong.ok.payload.readUInt16LE(1)).toBe(1045);
    wrong.socket.destroy();
  });
});

describe('MySQL prepared statements (mysql2 client)', () => {
  it('prepares with the session, binds binary parameters and answers binary rows', async () => {
    const { port, opened } = await mysqlServer(true);
    const mysql = (await import('mysql2/promise')).default;
    const conn = await mysql.createConnection({ host: '127.0.0.1', port, user: 'reader', password: 'r3ad', timezone: 'Z', supportBigNumbers: true });
    try {
      const [echoed] = await conn.execute('echo ?, ?, ?, ?, ?, ?', [42, 1.5, 'hï', true, null, new Date(TS)]);
      expect((echoed as { v: string }[]).map((r) => r.v)).toEqual(['number:42', 'number:1.5', 'string:hï', 'number:1', 'object:null', `number:${TS}`]);
      const [rows, fields] = await conn.execute('select types');
      expect(rows).toEqual([
        { s: 'hello', f: 1.5, i: -42, b: 1, t: new Date(TS) },
        { s: 'wörld', f: -0.25, i: 9007199254740991, b: 0, t: new Date(0) },
        { s: null, f: null, i: null, b: null, t: null },
      ]);
      expect((fields as { name: string; columnType: number }[]).map((f) => [f.name, f.columnType])).toEqual([
        ['s', 253],
        ['f', 5],
        ['i', 8],
        ['b', 1],
        ['t', 12],
      ]);
      const [affected] = await conn.execute('insert into t values (?)', [1]);
      expect(affected).toMatchObject({ affectedRows: 3 });
      await expect(conn.execute('bad statement')).rejects.toMatchObject({ errno: 1064, sqlState: '42000' });
      await expect(conn.execute('error TABLE_NOT_FOUND')).rejects.toMatchObject({ errno: 1146, sqlState: '42S02', message: 'boom TABLE_NOT_FOUND' });
      // The same statement again: mysql2 executes the statement it prepared before.
      const [again] = await conn.execute('echo ?, ?, ?, ?, ?, ?', [7, 2.5, 'x', false, null, new Date(0)]);
      expect((again as { v: string }[]).map((r) => r.v)).toEqual(['number:7', 'number:2.5', 'string:x', 'number:0', 'object:null', 'number:0']);
      const [text] = await conn.query('whoami');
      expect(text).toEqual([{ user: 'reader', mode: 'ro', db: 'public' }]);
    } finally {
      await conn.end();
    }
    expect(opened).toHaveLength(1);
  });
});
