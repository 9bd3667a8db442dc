/**
 * The PostgreSQL wire protocol (v3) over SQL sessions.
 *
 * Why not pg-gateway: its 0.2.4 release (the only non-prerelease on npm)
 * never calls its `onQuery` hook: every Query message is logged with
 * console.log and answered "Queries not yet implemented" (tried on Node 20:
 * `psql -c 'select 1'` gets exactly that), so everything past the startup
 * would have to go through its raw `onMessage` escape hatch, framing
 * included. Its data handler is also an unserialised async function (a
 * second chunk arriving while a message is handled runs concurrently over the
 * same buffer), it logs with console.error, sends no BackendKeyData nor the
 * ParameterStatus messages clients read (client_encoding, DateStyle,
 * integer_datetimes, ...), and it imports pg-protocol's internal dist paths.
 * The part of the protocol a server needs is small, so it is written here:
 * framing (Framer), messages out (Out), and one serial message loop per
 * connection.
 *
 * Supported: SSLRequest and GSSENCRequest answered 'N' (psql's default
 * sslmode=prefer then goes on in plaintext); StartupMessage 3.0; trust (no
 * user provider) or md5 password authentication; the simple query protocol;
 * the extended protocol (Parse/Bind/Describe/Execute/Sync/Close/Flush) over
 * the session's prepare(): $n parameters in text format (and binary for
 * bool, int2/4/8, float4/8, text, timestamp), results in text format, row
 * limits (PortalSuspended); Terminate. The session does not say a
 * statement's columns before it runs, so Describe of a portal runs it (its
 * Execute then sends that result), and Describe of a prepared statement that
 * reads (SELECT, SHOW, ...) runs it too: without parameters it keeps the
 * result for the next Execute before Sync, with parameters it runs with nulls
 * only to learn the columns. Not supported: TLS, SCRAM, binary results, COPY,
 * function calls, CancelRequest (the connection that sends one is closed,
 * nothing is cancelled).
 */
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { RepriseError, isRepriseError, type ErrorCode } from '../errors.js';
import type { ColumnType, Value } from '../engine/schema.js';
import type { PreparedStatement, SqlColumn, SqlSession, SqlUser, StatementResult } from '../frontend/sql/types.js';
import { formatTimestamp } from '../frontend/sql/eval.js';
import { listen, type SqlProtocolOptions, type SqlProtocolServer } from './sql-protocol.js';
import { ANONYMOUS_USER } from './users.js';


/** A PostgreSQL ErrorResponse's fields. */
export interface PgError {
  readonly severity: 'ERROR' | 'FATAL';
  readonly code: string;
  readonly message: string;
}

const SQLSTATES: Partial<Record<ErrorCode, string>> = {
  SQL_SYNTAX: '42601', // syntax_error
  TABLE_NOT_FOUND: '42P01', // undefined_table
  TABLE_EXISTS: '42P07', // duplicate_table
  SQL_UNSUPPORTED: '0A000', // feature_not_supported
  FORBIDDEN: '42501', // insufficient_privilege
  UNAUTHENTICATED: '28P01', // invalid_password
  INVALID_ROW: '22023', // invalid_parameter_value
  INVALID_QUERY: '22023',
  INVALID_SCHEMA: '22023',
  INVALID_ARGUMENT: '22023',
  QUERY_TOO_LARGE: '54000', // program_limit_exceeded
};

/** The SQLSTATE and message a failure is sent with: RepriseError codes map to SQLSTATEs, anything else is XX000. */
export function pgErrorOf(err: unknown): PgError {
  if (err instanceof PgProtocolError) return { severity: 'ERROR', code: err.sqlState, message: err.message };
  if (isRepriseError(err)) return { severity: 'ERROR', code: SQLSTATES[err.code] ?? 'XX000', message: err.message };
  return { severity: 'ERROR', code: 'XX000', message: `internal error: ${err instanceof Error ? err.message : String(err)}` };
}

/** A protocol-level error with its own SQLSTATE (08P01 protocol_violation, ...). */
class PgProtocolError extends Error {
  constructor(
    readonly sqlState: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A Bind parameter as a session value. Text: a string, or a number / boolean
 * when Parse typed it int2/int4/int8/float4/float8/numeric/bool (untyped text
 * stays a string: the session coerces it next to a column). Binary: those
 * types, text/varchar, and timestamp/timestamptz (as epoch ms).
 */
export function paramValue(bytes: Buffer, format: number, oid: number, index: number): Value {
  const what = `parameter $${index + 1}`;
  if (format === 0) {
    const text = bytes.toString('utf8');
    if (oid === 16) return /^(t|true|y|yes|on|1)$/i.test(text) ? true : /^(f|false|n|no|off|0)$/i.test(text) ? false : text;
    if (NUMERIC_OIDS.has(oid) && text.trim() !== '' && Number.isFinite(Number(text))) return Number(text);
    return text;
  }
  if (format !== 1) throw new PgProtocolError('08P01', `${what}: unknown format code ${format}`);
  const size = (n: number): void => {
    if (bytes.length !== n) throw new PgProtocolError('22P03', `${what}: binary value of ${bytes.length} bytes for a ${n}-byte type`);
  };
  switch (oid) {
    case 16:
      size(1);
      return bytes[0] !== 0;
    case 21:
      size(2);
      return bytes.readInt16BE(0);
    case 23:
      size(4);
      return bytes.readInt32BE(0);
    case 20:
      size(8);
      return Number(bytes.readBigInt64BE(0));
    case 700:
      size(4);
      return bytes.readFloatBE(0);
    case 701:
      size(8);
      return bytes.readDoubleBE(0);
    case 1114:
    case 1184:
      size(8); // microseconds since 2000-01-01
      return Number(bytes.readBigInt64BE(0) / 1000n) + PG_EPOCH_MS;
    case 0:
    case 25:
    case 1043:
      return bytes.toString('utf8');
    default:
      throw new RepriseError('SQL_UNSUPPORTED', `${what}: binary format for type OID ${oid} is not supported: send it as text`);
  }
}

const NUMERIC_OIDS = new Set([20, 21, 23, 700, 701, 1700]);
const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

interface PgType {
  readonly oid: number;
  readonly size: number;
}

const PG_TYPES: Readonly<Record<ColumnType, PgType>> = {
  string: { oid: 25, size: -1 }, // text
  float64: { oid: 701, size: 8 }, // float8
  int64: { oid: 20, size: 8 }, // int8
  bool: { oid: 16, size: 1 }, // bool
  timestamp: { oid: 1114, size: 8 }, // timestamp (without time zone), UTC
};

/** How a value reads in PostgreSQL's text format (null is SQL NULL): bools 't'/'f', timestamps 'YYYY-MM-DD HH:MM:SS.mmm' UTC. */
export function pgText(type: ColumnType, value: Value): string | null {
  if (value === null || value === undefined) return null;
  switch (type) {
    case 'bool':
      return value === true || value === 1 ? 't' : value === false || value === 0 ? 'f' : String(value);
    case 'timestamp':
      return typeof value === 'number' ? formatTimestamp(value) : String(value);
    case 'float64':
      if (typeof value !== 'number') return String(value);
      if (Number.isNaN(value)) return 'NaN';
      if (!Number.isFinite(value)) return value > 0 ? 'Infinity' : '-Infinity';
      return String(value).replace(/e([+-])(\d)$/, 'e$10$2'); // 1e-7 -> 1e-07, as PostgreSQL prints it
    default:
      return String(value);
  }
}

/** What an md5-authenticating client sends: 'md5' + md5hex(md5hex(password + user) + salt). */
export function pgMd5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user, 'utf8').digest('hex');
  return `md5${createHash('md5').update(Buffer.concat([Buffer.from(inner, 'latin1'), salt])).digest('hex')}`;
}

// ---------------------------------------------------------------------------
// Command tags.

/** The CommandComplete tag for a statement's result: `SELECT n`, `INSERT 0 n`, `DELETE n`, `CREATE TABLE`, ... */
export function commandTag(result: StatementResult): string {
  if (result.kind === 'rows') {
    const rows = result.columns.length === 0 ? 0 : Math.max(0, ...result.data.map((values) => values.length));
    return result.command === 'SHOW' ? 'SHOW' : `SELECT ${rows}`;
  }
  if (result.command === 'INSERT') return `INSERT 0 ${result.affectedRows}`;
  if (result.command === 'DELETE') return `DELETE ${result.affectedRows}`;
  return result.command;
}

// ---------------------------------------------------------------------------
// Messages out.

/** Builds backend messages into one buffer per flush. */
class Out {
  private parts: Buffer[] = [];
  private bytes = 0;

  get size(): number {
    return this.bytes;
  }

  message(type: string, body: Buffer = Buffer.alloc(0)): void {
    const head = Buffer.alloc(5);
    head.write(type, 0, 'latin1');
    head.writeInt32BE(body.length + 4, 1);
    this.parts.push(head, body);
    this.bytes += 5 + body.length;
  }

  raw(bytes: Buffer): void {
    this.parts.push(bytes);
    this.bytes += bytes.length;
  }

  take(): Buffer {
    const all = Buffer.concat(this.parts);
    this.parts = [];
    this.bytes = 0;
    return all;
  }

  authentication(kind: number, extra?: Buffer): void {
    const body = Buffer.alloc(4);
    body.writeInt32BE(kind);
    this.message('R', extra ? Buffer.concat([body, extra]) : body);
  }

  parameterStatus(name: string, value: string): void {
    this.message('S', Buffer.concat([cstring(name), cstring(value)]));
  }

  backendKeyData(pid: number, secret: number): void {
    const body = Buffer.alloc(8);
    body.writeInt32BE(pid, 0);
    body.writeInt32BE(secret, 4);
    this.message('K', body);
  }

  readyForQuery(): void {
    this.message('Z', Buffer.from('I', 'latin1'));
  }

  error(error: PgError): void {
    this.message(
      'E',
      Buffer.concat([
        Buffer.from('S', 'latin1'),
        cstring(error.severity),
        Buffer.from('V', 'latin1'),
        cstring(error.severity),
        Buffer.from('C', 'latin1'),
        cstring(error.code),
        Buffer.from('M', 'latin1'),
        cstring(error.message),
        Buffer.alloc(1),
      ]),
    );
  }

  rowDescription(columns: readonly SqlColumn[]): void {
    const parts: Buffer[] = [int16(columns.length)];
    for (const column of columns) {
      const type = PG_TYPES[column.type] ?? PG_TYPES.string;
      const field = Buffer.alloc(18);
      field.writeInt32BE(0, 0); // table oid
      field.writeInt16BE(0, 4); // column number
      field.writeInt32BE(type.oid, 6);
      field.writeInt16BE(type.size, 10);
      field.writeInt32BE(-1, 12); // type modifier
      field.writeInt16BE(0, 16); // text format
      parts.push(cstring(column.name), field);
    }
    this.message('T', Buffer.concat(parts));
  }

  dataRow(values: readonly (string | null)[]): void {
    const parts: Buffer[] = [int16(values.length)];
    for (const value of values) {
      if (value === null) {
        parts.push(int32(-1));
      } else {
        const bytes = Buffer.from(value, 'utf8');
        parts.push(int32(bytes.length), bytes);
      }
    }
    this.message('D', Buffer.concat(parts));
  }

  commandComplete(tag: string): void {
    this.message('C', cstring(tag));
  }
}

function cstring(s: string): Buffer {
  return Buffer.concat([Buffer.from(s.replace(/\0/g, ''), 'utf8'), Buffer.alloc(1)]);
}

function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

// ---------------------------------------------------------------------------
// Messages in.

/** A frontend message: the startup-phase ones have no type byte (type ''). */
interface Message {
  readonly type: string;
  readonly body: Buffer;
}

/** Reads a message body field by field. */
class Reader {
  private offset = 0;
  constructor(private readonly body: Buffer) {}
  int16(): number {
    const n = this.body.readInt16BE(this.offset);
    this.offset += 2;
    return n;
  }
  int32(): number {
    const n = this.body.readInt32BE(this.offset);
    this.offset += 4;
    return n;
  }
  cstring(): string {
    const end = this.body.indexOf(0, this.offset);
    if (end < 0) throw new RepriseError('INVALID_ARGUMENT', 'malformed message: unterminated string');
    const s = this.body.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    if (this.offset + n > this.body.length) throw new RepriseError('INVALID_ARGUMENT', 'malformed message: field past its end');
    const b = this.body.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }
}

const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Cuts the byte stream into messages: first the length-prefixed startup packets, then type + length messages. */
class Framer {
  private buffer: Buffer = Buffer.alloc(0);
  startup = true;

  push(chunk: Buffer): Message[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const messages: Message[] = [];
    for (;;) {
      const head = this.startup ? 4 : 5;
      if (this.buffer.length < head) break;
      const length = this.buffer.readInt32BE(head - 4);
      if (length < 4 || length > MAX_MESSAGE_BYTES) throw new RepriseError('INVALID_ARGUMENT', `invalid message length ${length}`);
      const total = head - 4 + length;
      if (this.buffer.length < total) break;
      const type = this.startup ? '' : String.fromCharCode(this.buffer[0]!);
      messages.push({ type, body: Buffer.from(this.buffer.subarray(head, total)) });
      this.buffer = this.buffer.subarray(total);
      // A StartupMessage (protocol 3.x) ends the startup phase; SSL, GSS and cancel requests do not.
      if (this.startup && messages[messages.length - 1]!.body.length >= 4) {
        const code = messages[messages.length - 1]!.body.readInt32BE(0);
        if (code >> 16 === 3) this.startup = false;
      }
    }
    return messages;
  }
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

interface Prepared {
  /** The session's prepared statement (undefined for an empty query). */
  readonly prepared: PreparedStatement | undefined;
  /** The parameter type OIDs Parse named (0: unspecified). */
  readonly types: readonly number[];
  /** The result a Describe of this parameterless statement ran it for, for the next Execute of it (until Sync). */
  described?: StatementResult;
}

interface Portal {
  readonly statement: Prepared;
  readonly params: readonly Value[];
  result?: StatementResult;
  /** Rows already sent (Execute with a row limit). */
  sent: number;
  done: boolean;
}

// ---------------------------------------------------------------------------

/** Starts a PostgreSQL protocol server: one SQL session (dialect 'postgres') per connection. */
export async function startPostgresServer(options: SqlProtocolOptions): Promise<SqlProtocolServer> {
  const log = options.logger.child({ component: 'postgres' });
  const serverVersion = options.serverVersion ?? '16.0 (reprise)';
  const sockets = new Map<net.Socket, () => void>();
  let closing = false;
  let nextPid = 1;

  const server = net.createServer((socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.on('error', (err) => log.debug({ err }, 'postgres connection error'));
    try {
      const shutdown = serveConnection(socket, nextPid++);
      sockets.set(socket, shutdown);
      socket.on('close', () => sockets.delete(socket));
    } catch (err) {
      log.error({ err }, 'postgres connection setup failed');
      socket.destroy();
    }
  });

  /** Serves one connection; answers a function that ends it (for close()). */
  function serveConnection(socket: net.Socket, pid: number): () => void {
    const clog = log.child({ pid, remote: socket.remoteAddress });
    const framer = new Framer();
    const inbox: Message[] = [];
    const out = new Out();
    const salt = randomBytes(4);
    const secret = randomInt(0, 0x7fffffff);
    let phase: 'startup' | 'password' | 'ready' | 'closed' = 'startup';
    let startupUser = '';
    let database: string | undefined;
    let session: SqlSession | undefined;
    // The session's last results stop counting against the result budget once the client is gone.
    socket.once('close', () => session?.close());
    let skipToSync = false; // after an error in the extended protocol, until Sync
    const prepared = new Map<string, Prepared>();
    const portals = new Map<string, Portal>();
    let running = false;
    let applicationName = '';

    const live = (): boolean => phase !== 'closed' && socket.writable && !socket.destroyed;

    const flush = async (): Promise<void> => {
      if (out.size === 0) return;
      const bytes = out.take();
      if (!live()) return;
      if (!socket.write(bytes) && live()) await Promise.race([once(socket, 'drain'), once(socket, 'close')]);
    };
    const flushIfLarge = async (): Promise<void> => {
      if (out.size >= 64 * 1024) await flush();
    };

    const fatal = async (error: Omit<PgError, 'severity'>): Promise<void> => {
      out.error({ severity: 'FATAL', ...error });
      await flush();
      phase = 'closed';
      socket.end();
    };

    const fail = (err: unknown): void => {
      if (!isRepriseError(err) && !(err instanceof PgProtocolError)) clog.error({ err }, 'postgres statement failed unexpectedly');
      out.error(pgErrorOf(err));
    };

    const writeRows = async (result: StatementResult & { kind: 'rows' }, from: number, limit: number): Promise<number> => {
      const { columns, data } = result;
      const total = columns.length === 0 ? 0 : Math.max(0, ...data.map((values) => values.length));
      const end = limit > 0 ? Math.min(total, from + limit) : total;
      for (let r = from; r < end && live(); r++) {
        out.dataRow(columns.map((column, c) => pgText(column.type, data[c]?.[r] ?? null)));
        await flushIfLarge();
      }
      return end;
    };

    // --- startup and authentication ---

    const openSession = async (user: SqlUser): Promise<void> => {
      try {
        session = options.sessions({ dialect: 'postgres', user, ...(database !== undefined ? { database } : {}) });
      } catch (err) {
        if (!isRepriseError(err)) clog.error({ err }, 'postgres session could not open');
        const { code, message } = pgErrorOf(err);
        await fatal({ code, message });
        return;
      }
      phase = 'ready';
      out.authentication(0); // AuthenticationOk
      const parameters: [string, string][] = [
        ['server_version', serverVersion],
        ['server_encoding', 'UTF8'],
        ['client_encoding', 'UTF8'],
        ['DateStyle', 'ISO, MDY'],
        ['IntervalStyle', 'postgres'],
        ['TimeZone', 'UTC'],
        ['integer_datetimes', 'on'],
        ['standard_conforming_strings', 'on'],
        ['is_superuser', 'off'],
        ['session_authorization', user.name],
        ['application_name', applicationName],
      ];
      for (const [name, value] of parameters) out.parameterStatus(name, value);
      out.backendKeyData(pid, secret);
      out.readyForQuery();
      await flush();
      clog.debug({ user: user.name, database }, 'postgres session open');
    };

    const onStartup = async (body: Buffer): Promise<void> => {
      const reader = new Reader(body);
      const code = reader.int32();
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        out.raw(Buffer.from('N', 'latin1'));
        await flush();
        return;
      }
      if (code === CANCEL_REQUEST) {
        phase = 'closed';
        socket.end();
        return;
      }
      if (code >> 16 !== 3) {
        await fatal({ code: '0A000', message: `unsupported frontend protocol ${code >> 16}.${code & 0xffff}: server supports 3.0` });
        return;
      }
      const parameters: Record<string, string> = {};
      for (;;) {
        const name = reader.cstring();
        if (name === '') break;
        parameters[name] = reader.cstring();
      }
      startupUser = parameters['user'] ?? '';
      database = parameters['database'];
      applicationName = parameters['application_name'] ?? '';
      if (startupUser === '') {
        await fatal({ code: '28000', message: 'no PostgreSQL user name specified in startup packet' });
        return;
      }
      if (!options.users) {
        await openSession(ANONYMOUS_USER);
        return;
      }
      phase = 'password';
      out.authentication(5, salt); // AuthenticationMD5Password
      await flush();
    };

    const onPassword = async (body: Buffer): Promise<void> => {
      const users = options.users!;
      const sent = new Reader(body).cstring();
      const password = users.passwordOf(startupUser);
      const expected = Buffer.from(pgMd5Password(startupUser, password ?? randomBytes(16).toString('hex'), salt), 'latin1');
      const given = Buffer.from(sent, 'utf8');
      if (password === undefined || expected.length !== given.length || !timingSafeEqual(expected, given)) {
        clog.info({ user: startupUser }, `postgres: password authentication failed for user '${startupUser}'`);
        await fatal({ code: '28P01', message: `password authentication failed for user "${startupUser}"` });
        return;
      }
      await openSession({ name: startupUser, mode: users.modeOf(startupUser) ?? 'rw' });
    };

    // --- simple query protocol ---

    const onQuery = async (body: Buffer): Promise<void> => {
      const sql = new Reader(body).cstring();
      try {
        // Each result goes out as its statement finishes: a failing one's error follows the results before it.
        const statement = session!.prepare(sql);
        if (statement.statements.length === 0) out.message('I'); // EmptyQueryResponse
        await statement.execute([], async (result) => {
          if (!live()) return;
          if (result.kind === 'rows') {
            out.rowDescription(result.columns);
            await writeRows(result, 0, 0);
          }
          out.commandComplete(commandTag(result));
          await flushIfLarge();
        });
      } catch (err) {
        fail(err);
      }
      out.readyForQuery();
      await flush();
    };

    // --- extended query protocol (text results) ---

    const unsupported = (message: string): RepriseError => new RepriseError('SQL_UNSUPPORTED', message);

    const onParse = (body: Buffer): void => {
      const reader = new Reader(body);
      const name = reader.cstring();
      const sql = reader.cstring();
      const types = Array.from({ length: reader.int16() }, () => reader.int32());
      if (name !== '' && prepared.has(name)) throw new RepriseError('INVALID_ARGUMENT', `prepared statement "${name}" already exists`);
      const statement = session!.prepare(sql);
      if (statement.statements.length > 1) throw new RepriseError('SQL_SYNTAX', 'cannot insert multiple commands into a prepared statement');
      prepared.set(name, { types, prepared: statement.statements.length === 0 ? undefined : statement });
      out.message('1'); // ParseComplete
    };

    const onBind = (body: Buffer): void => {
      const reader = new Reader(body);
      const portalName = reader.cstring();
      const statementName = reader.cstring();
      const statement = prepared.get(statementName);
      if (!statement) throw new RepriseError('INVALID_ARGUMENT', `prepared statement "${statementName}" does not exist`);
      const formats = Array.from({ length: reader.int16() }, () => reader.int16());
      const count = reader.int16();
      const wanted = statement.prepared?.params ?? 0;
      if (count !== wanted) throw new PgProtocolError('08P01', `bind message supplies ${count} parameters, but prepared statement "${statementName}" requires ${wanted}`);
      const params: Value[] = [];
      for (let i = 0; i < count; i++) {
        const length = reader.int32();
        const format = formats.length === 1 ? formats[0]! : (formats[i] ?? 0);
        params.push(length < 0 ? null : paramValue(reader.bytes(length), format, statement.types[i] ?? 0, i));
      }
      const resultFormats = reader.int16();
      for (let i = 0; i < resultFormats; i++) if (reader.int16() !== 0) throw unsupported('binary result format is not supported: ask for text');
      if (portalName !== '' && portals.has(portalName)) throw new RepriseError('INVALID_ARGUMENT', `portal "${portalName}" already exists`);
      portals.set(portalName, { statement, params, sent: 0, done: false });
      out.message('2'); // BindComplete
    };

    /** Runs a portal's statement once (or takes the result Describe ran it for). */
    const resultOf = async (portal: Portal): Promise<StatementResult | undefined> => {
      if (portal.result !== undefined || portal.statement.prepared === undefined) return portal.result;
      if (portal.statement.described !== undefined) {
        portal.result = portal.statement.described;
        portal.statement.described = undefined;
        return portal.result;
      }
      const results = await portal.statement.prepared.execute(portal.params);
      portal.result = results[results.length - 1];
      return portal.result;
    };

    const describeResult = (result: StatementResult | undefined): void => {
      if (result?.kind === 'rows') out.rowDescription(result.columns);
      else out.message('n'); // NoData
    };

    const onDescribe = async (body: Buffer): Promise<void> => {
      const reader = new Reader(body);
      const kind = String.fromCharCode(reader.bytes(1)[0]!);
      const name = reader.cstring();
      if (kind === 'S') {
        const statement = prepared.get(name);
        if (!statement) throw new RepriseError('INVALID_ARGUMENT', `prepared statement "${name}" does not exist`);
        const count = statement.prepared?.params ?? 0;
        // ParameterDescription: the types Parse named, text for the others (their values then arrive as strings and the session coerces them).
        out.message('t', Buffer.concat([int16(count), ...Array.from({ length: count }, (_, i) => int32(statement.types[i] || 25))]));
        if (statement.prepared === undefined || statement.prepared.statements[0]?.reads !== true) {
          out.message('n');
          return;
        }
        // The columns are only known by running it: a parameterless read keeps its result for the next Execute; with
        // parameters it runs with nulls just for its columns (NoData when that fails).
        if (count === 0) {
          statement.described = (await statement.prepared.execute([])).at(-1);
          describeResult(statement.described);
        } else {
          describeResult(await statement.prepared.execute(Array.from({ length: count }, () => null)).then((results) => results.at(-1), () => undefined));
        }
        return;
      }
      const portal = portals.get(name);
      if (!portal) throw new RepriseError('INVALID_ARGUMENT', `portal "${name}" does not exist`);
      describeResult(await resultOf(portal));
    };

    const onExecute = async (body: Buffer): Promise<void> => {
      const reader = new Reader(body);
      const name = reader.cstring();
      const limit = reader.int32();
      const portal = portals.get(name);
      if (!portal) throw new RepriseError('INVALID_ARGUMENT', `portal "${name}" does not exist`);
      if (portal.statement.prepared === undefined) {
        out.message('I');
        return;
      }
      const result = await resultOf(portal);
      if (result === undefined) {
        out.message('I');
        return;
      }
      if (portal.done) {
        out.commandComplete(commandTag(result.kind === 'rows' ? { ...result, data: result.columns.map(() => []) } : result));
        return;
      }
      if (result.kind === 'rows') {
        const total = result.columns.length === 0 ? 0 : Math.max(0, ...result.data.map((values) => values.length));
        portal.sent = await writeRows(result, portal.sent, limit);
        if (portal.sent < total) {
          out.message('s'); // PortalSuspended
          return;
        }
      }
      portal.done = true;
      out.commandComplete(commandTag(result));
    };

    const onClose = (body: Buffer): void => {
      const reader = new Reader(body);
      const kind = String.fromCharCode(reader.bytes(1)[0]!);
      const name = reader.cstring();
      if (kind === 'S') prepared.delete(name);
      else portals.delete(name);
      out.message('3'); // CloseComplete
    };

    const onSync = (): void => {
      skipToSync = false;
      portals.clear(); // the implicit transaction ends: its portals go
      for (const statement of prepared.values()) statement.described = undefined; // a later Execute runs it afresh
      out.readyForQuery();
    };

    const handle = async (message: Message): Promise<void> => {
      if (phase === 'startup') return onStartup(message.body);
      if (phase === 'password') {
        if (message.type !== 'p') return fatal({ code: '08P01', message: `expected a password message, got '${message.type}'` });
        return onPassword(message.body);
      }
      if (phase !== 'ready') return;
      switch (message.type) {
        case 'Q':
          skipToSync = false;
          return onQuery(message.body);
        case 'X':
          phase = 'closed';
          socket.end();
          return;
        case 'S':
          onSync();
          return flush();
        case 'H':
          return flush();
        case 'P':
        case 'B':
        case 'D':
        case 'E':
        case 'C':
          if (skipToSync) return;
          try {
            if (message.type === 'P') onParse(message.body);
            else if (message.type === 'B') onBind(message.body);
            else if (message.type === 'D') await onDescribe(message.body);
            else if (message.type === 'E') await onExecute(message.body);
            else onClose(message.body);
          } catch (err) {
            fail(err);
            skipToSync = true;
          }
          await flushIfLarge();
          return;
        case 'd':
        case 'c':
        case 'f':
          return; // COPY data outside a COPY: ignored, as PostgreSQL does
        case 'F':
          out.error({ severity: 'ERROR', code: '0A000', message: 'function calls are not supported' });
          out.readyForQuery();
          return flush();
        default:
          return fatal({ code: '08P01', message: `invalid frontend message type '${message.type}'` });
      }
    };

    const pump = async (): Promise<void> => {
      if (running) return;
      running = true;
      try {
        while (inbox.length > 0 && phase !== 'closed') {
          const message = inbox.shift()!;
          try {
            await handle(message);
          } catch (err) {
            if (phase !== 'ready') {
              clog.debug({ err }, 'postgres startup failed');
              await fatal({ code: '08P01', message: err instanceof Error ? err.message : String(err) });
              continue;
            }
            clog.error({ err, type: message.type }, 'postgres message failed unexpectedly');
            out.error(pgErrorOf(err));
            if (message.type === 'Q') out.readyForQuery();
            await flush();
          }
          if (inbox.length < 64 && socket.isPaused()) socket.resume();
        }
      } finally {
        running = false;
      }
    };

    socket.on('data', (chunk: Buffer) => {
      if (phase === 'closed') return;
      try {
        inbox.push(...framer.push(chunk));
      } catch (err) {
        clog.debug({ err }, 'postgres protocol violation');
        inbox.length = 0;
        void fatal({ code: '08P01', message: err instanceof Error ? err.message : String(err) });
        return;
      }
      if (inbox.length >= 256) socket.pause();
      pump().catch((err: unknown) => clog.error({ err }, 'postgres message loop failed'));
    });

    return () => {
      if (phase === 'closed') {
        socket.destroy();
        return;
      }
      if (phase === 'ready') out.error({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' });
      phase = 'closed';
      const bytes = out.take();
      if (socket.writable) socket.end(bytes);
      else socket.destroy();
    };
  }

  await listen(server, options.host, options.port);
  server.on('error', (err) => log.error({ err }, 'postgres server error'));
  const bound = server.address() as net.AddressInfo;
  const address = { host: bound.address, port: bound.port };
  log.info(address, `PostgreSQL protocol on ${address.host}:${address.port}`);

  return {
    address,
    async close() {
      if (closing) return;
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const [socket, shutdown] of sockets) {
        shutdown();
        setTimeout(() => socket.destroy(), 500).unref();
      }
      await closed;
    },
  };
}
