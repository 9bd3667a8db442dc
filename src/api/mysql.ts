/**
 * The MySQL wire protocol over SQL sessions, on mysql2's server-side
 * connection: the `mysql2` package does the handshake, reads the client's
 * handshake response, cuts the byte stream into packets and numbers the
 * packets written (its writePacket, writeOk, writeEof, writeTextRow).
 *
 * What this adds around mysql2:
 * - mysql_native_password verification against a UserProvider (mysql2 hands
 *   the scramble and the client's token to authCallback and checks nothing),
 *   with an AuthSwitchRequest for a client that offers another plugin (MySQL
 *   8's caching_sha2_password): mysql2's server side has no auth switch.
 * - Its own command dispatch: once a client is in, every packet is taken from
 *   mysql2's handlePacket before mysql2's dispatcher sees it. That dispatcher
 *   routes COM_QUERY text starting with SET or PREPARE to its 'stmt_prepare'
 *   event (the one of COM_STMT_PREPARE) and EXECUTE to 'stmt_execute', guesses
 *   COM_STMT_EXECUTE parameter types by scanning bytes, and never resets the
 *   sequence id between commands; here a response is numbered from its
 *   command's sequence id + 1, and commands run one at a time, in order.
 * - Its own ERR packets (mysql2's writeError leaves the SQLSTATE as `_____`,
 *   and clients print it: `ERROR 1146 (42S02): ...`) and column definitions
 *   (mysql2 encodes names in the column's charset, which is binary for
 *   numeric columns).
 * - Server-side prepared statements (COM_STMT_PREPARE / EXECUTE / CLOSE /
 *   RESET / SEND_LONG_DATA) over the session's prepare(), with binary
 *   parameters and binary result rows. The session does not say a statement's
 *   columns before it runs, so PREPARE_OK announces none and each execute
 *   sends its result set's columns (mysql2, libmysqlclient and
 *   Connector/J read them there). No cursors (COM_STMT_FETCH).
 *
 * One COM_QUERY may hold several statements (CLIENT_MULTI_STATEMENTS): the
 * session runs them in order and each result goes out as its statement
 * finishes, with SERVER_MORE_RESULTS_EXISTS on all but the last. When a
 * statement fails, its error follows the results before it and nothing
 * after it runs, as MySQL does.
 *
 * Not supported: COM_CHANGE_USER, COM_STMT_FETCH, TLS, compression.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import mysql2 from 'mysql2';
import { RepriseError, isRepriseError, type ErrorCode } from '../errors.js';
import type { ColumnType, Value } from '../engine/schema.js';
import type { PreparedStatement, SqlColumn, SqlSession, SqlUser, StatementResult } from '../frontend/sql/types.js';
import { formatTimestamp } from '../frontend/sql/eval.js';
import { listen, type SqlProtocolOptions, type SqlProtocolServer } from './sql-protocol.js';
import { ANONYMOUS_USER } from './users.js';


// Capability flags (mysql_com.h). No CLIENT_DEPRECATE_EOF: mysql2 writes EOF packets.
const CLIENT_LONG_PASSWORD = 0x1;
const CLIENT_FOUND_ROWS = 0x2;
const CLIENT_LONG_FLAG = 0x4;
const CLIENT_CONNECT_WITH_DB = 0x8;
const CLIENT_PROTOCOL_41 = 0x200;
const CLIENT_INTERACTIVE = 0x400;
const CLIENT_TRANSACTIONS = 0x2000;
const CLIENT_SECURE_CONNECTION = 0x8000;
const CLIENT_MULTI_STATEMENTS = 0x10000;
const CLIENT_MULTI_RESULTS = 0x20000;
const CLIENT_PS_MULTI_RESULTS = 0x40000;
const CLIENT_PLUGIN_AUTH = 0x80000;
const CLIENT_CONNECT_ATTRS = 0x100000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000;
const SERVER_CAPABILITIES =
  CLIENT_LONG_PASSWORD |
  CLIENT_FOUND_ROWS |
  CLIENT_LONG_FLAG |
  CLIENT_CONNECT_WITH_DB |
  CLIENT_PROTOCOL_41 |
  CLIENT_INTERACTIVE |
  CLIENT_TRANSACTIONS |
  CLIENT_SECURE_CONNECTION |
  CLIENT_MULTI_STATEMENTS |
  CLIENT_MULTI_RESULTS |
  CLIENT_PS_MULTI_RESULTS |
  CLIENT_PLUGIN_AUTH |
  CLIENT_CONNECT_ATTRS |
  CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

const SERVER_STATUS_AUTOCOMMIT = 0x2;
const SERVER_MORE_RESULTS_EXISTS = 0x8;

const UTF8MB4_GENERAL_CI = 45;
const BINARY_CHARSET = 63;

// Command bytes.
const COM_QUIT = 0x01;
const COM_INIT_DB = 0x02;
const COM_QUERY = 0x03;
const COM_FIELD_LIST = 0x04;
const COM_STATISTICS = 0x09;
const COM_DEBUG = 0x0d;
const COM_PING = 0x0e;
const COM_STMT_PREPARE = 0x16;
const COM_STMT_EXECUTE = 0x17;
const COM_STMT_SEND_LONG_DATA = 0x18;
const COM_STMT_CLOSE = 0x19;
const COM_STMT_RESET = 0x1a;
const COM_SET_OPTION = 0x1b;
const COM_CHANGE_USER = 0x11;
const COM_STMT_FETCH = 0x1c;
const COM_RESET_CONNECTION = 0x1f;

// Column types and flags.
const MYSQL_TYPE_TINY = 1;
const MYSQL_TYPE_DOUBLE = 5;
const MYSQL_TYPE_LONGLONG = 8;
const MYSQL_TYPE_DATETIME = 12;
const MYSQL_TYPE_VAR_STRING = 253;
const BINARY_FLAG = 0x80;
const NUM_FLAG = 0x8000;

interface ColumnSpec {
  readonly type: number;
  readonly charset: number;
  readonly length: number;
  readonly flags: number;
  readonly decimals: number;
}

const COLUMN_SPECS: Readonly<Record<ColumnType, ColumnSpec>> = {
  string: { type: MYSQL_TYPE_VAR_STRING, charset: UTF8MB4_GENERAL_CI, length: 262_140, flags: 0, decimals: 0 },
  float64: { type: MYSQL_TYPE_DOUBLE, charset: BINARY_CHARSET, length: 22, flags: BINARY_FLAG | NUM_FLAG, decimals: 31 },
  int64: { type: MYSQL_TYPE_LONGLONG, charset: BINARY_CHARSET, length: 20, flags: BINARY_FLAG | NUM_FLAG, decimals: 0 },
  bool: { type: MYSQL_TYPE_TINY, charset: BINARY_CHARSET, length: 1, flags: BINARY_FLAG | NUM_FLAG, decimals: 0 },
  timestamp: { type: MYSQL_TYPE_DATETIME, charset: BINARY_CHARSET, length: 23, flags: BINARY_FLAG, decimals: 3 },
};

/** A MySQL error: its number, SQLSTATE and message. */
export interface MysqlError {
  readonly errno: number;
  readonly sqlState: string;
  readonly message: string;
}

const MYSQL_ERRORS: Partial<Record<ErrorCode, readonly [number, string]>> = {
  SQL_SYNTAX: [1064, '42000'], // ER_PARSE_ERROR
  TABLE_NOT_FOUND: [1146, '42S02'], // ER_NO_SUCH_TABLE
  TABLE_EXISTS: [1050, '42S01'], // ER_TABLE_EXISTS_ERROR
  SQL_UNSUPPORTED: [1235, '42000'], // ER_NOT_SUPPORTED_YET
  FORBIDDEN: [1142, '42000'], // ER_TABLEACCESS_DENIED_ERROR
  UNAUTHENTICATED: [1045, '28000'], // ER_ACCESS_DENIED_ERROR
  INVALID_ROW: [1366, 'HY000'], // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD ("Incorrect value")
  INVALID_SCHEMA: [1063, '42000'], // ER_WRONG_FIELD_SPEC
  INVALID_ARGUMENT: [1210, 'HY000'], // ER_WRONG_ARGUMENTS
  INVALID_QUERY: [1105, 'HY000'], // ER_UNKNOWN_ERROR: the message says what
  QUERY_TOO_LARGE: [1104, '42000'], // ER_TOO_BIG_SELECT
};

/** The MySQL error a failure is sent as: RepriseError codes map to error numbers and SQLSTATEs, anything else is 1105 HY000. */
export function mysqlErrorOf(err: unknown): MysqlError {
  if (isRepriseError(err)) {
    const [errno, sqlState] = MYSQL_ERRORS[err.code] ?? [1105, 'HY000'];
    return { errno, sqlState, message: err.message };
  }
  return { errno: 1105, sqlState: 'HY000', message: `internal error: ${err instanceof Error ? err.message : String(err)}` };
}

/** How a value reads in a MySQL text row (null is SQL NULL): bools as 1/0, timestamps as 'YYYY-MM-DD HH:MM:SS.mmm' UTC. */
export function mysqlText(type: ColumnType, value: Value): string | null {
  if (value === null || value === undefined) return null;
  switch (type) {
    case 'bool':
      return value === true || value === 1 ? '1' : value === false || value === 0 ? '0' : String(value);
    case 'timestamp':
      return typeof value === 'number' ? formatTimestamp(value) : String(value);
    default:
      return String(value);
  }
}

/** The mysql_native_password token a client sends: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))). Empty for an empty password. */
export function nativePasswordToken(password: string, scramble: Buffer): Buffer {
  if (password === '') return Buffer.alloc(0);
  const sha1 = (...parts: Buffer[]): Buffer => {
    const hash = createHash('sha1');
    for (const part of parts) hash.update(part);
    return hash.digest();
  };
  const stage1 = sha1(Buffer.from(password, 'utf8'));
  const mix = sha1(scramble, sha1(stage1));
  for (let i = 0; i < stage1.length; i++) stage1[i] = stage1[i]! ^ mix[i]!;
  return stage1;
}

/** Whether a client's mysql_native_password token matches `password` for this scramble. */
export function verifyNativePassword(password: string, scramble: Buffer, token: Buffer): boolean {
  const expected = nativePasswordToken(password, scramble);
  return expected.length === token.length && timingSafeEqual(expected, token);
}

// ---------------------------------------------------------------------------
// mysql2 internals this module relies on (its typings leave the server side untyped).
interface Mysql2Packet {
  sequenceId: number;
  numPackets: number;
  buffer: Buffer;
  start: number;
  end: number;
}

interface AuthParams {
  user: string;
  database: string | undefined;
  address: string | undefined;
  authPluginData1: Buffer;
  authPluginData2: Buffer;
  authToken: Buffer;
}

interface ServerConnection {
  stream: net.Socket;
  sequenceId: number;
  /** Where mysql2's packet parser hands every packet: overridden per connection (see the module comment). */
  handlePacket(packet?: Mysql2Packet): void;
  clientHelloReply?: { clientFlags: number; encoding?: string; authPluginName?: string; user: string };
  on(event: string, listener: (...args: never[]) => void): void;
  serverHandshake(args: {
    protocolVersion: number;
    serverVersion: string;
    connectionId: number;
    statusFlags: number;
    characterSet: number;
    capabilityFlags: number;
    authCallback: (params: AuthParams, cb: (err: Error | null, mysqlError?: { message: string; code: number }) => void) => void;
  }): void;
  writePacket(packet: RawPacket): void;
  writeOk(args?: { affectedRows?: number; serverStatus?: number; message?: string }): void;
  writeEof(warnings?: number, statusFlags?: number): void;
  writeTextRow(values: (string | null)[]): void;
  close(): void;
}

interface Mysql2Module {
  Connection: new (options: { config: unknown }) => ServerConnection;
  ConnectionConfig: new (options: { stream: net.Socket; isServer: true }) => unknown;
}

/** A packet mysql2's writePacket accepts: 4 header bytes (filled in with the length and sequence id) then the payload. */
class RawPacket {
  constructor(readonly buffer: Buffer) {}
  length(): number {
    return this.buffer.length;
  }
  writeHeader(sequenceId: number): void {
    this.buffer.writeUIntLE(this.buffer.length - 4, 0, 3);
    this.buffer[3] = sequenceId;
  }
}

/** Builds one packet's payload. */
class PacketBuilder {
  private readonly parts: Buffer[] = [Buffer.alloc(4)];
  int1(n: number): this {
    this.parts.push(Buffer.from([n & 0xff]));
    return this;
  }
  int2(n: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(n & 0xffff);
    this.parts.push(b);
    return this;
  }
  int4(n: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n >>> 0);
    this.parts.push(b);
    return this;
  }
  lenencInt(n: number): this {
    if (n < 251) return this.int1(n);
    if (n < 0x10000) return this.int1(0xfc).int2(n);
    if (n < 0x1000000) {
      const b = Buffer.alloc(4);
      b[0] = 0xfd;
      b.writeUIntLE(n, 1, 3);
      this.parts.push(b);
      return this;
    }
    const b = Buffer.alloc(9);
    b[0] = 0xfe;
    b.writeBigUInt64LE(BigInt(n), 1);
    this.parts.push(b);
    return this;
  }
  lenencString(s: string): this {
    const bytes = Buffer.from(s, 'utf8');
    this.lenencInt(bytes.length);
    this.parts.push(bytes);
    return this;
  }
  string(s: string): this {
    this.parts.push(Buffer.from(s, 'utf8'));
    return this;
  }
  raw(bytes: Buffer): this {
    this.parts.push(bytes);
    return this;
  }
  /** The payload alone, without the header. */
  payload(): Buffer {
    return Buffer.concat(this.parts.slice(1));
  }
  build(): RawPacket {
    return new RawPacket(Buffer.concat(this.parts));
  }
}

function errorPacket(error: MysqlError): RawPacket {
  return new PacketBuilder().int1(0xff).int2(error.errno).string(`#${error.sqlState}`).string(error.message).build();
}

function columnPacket(column: SqlColumn): RawPacket {
  const spec = COLUMN_SPECS[column.type] ?? COLUMN_SPECS.string;
  return new PacketBuilder()
    .lenencString('def')
    .lenencString('') // schema
    .lenencString('') // table
    .lenencString('') // org_table
    .lenencString(column.name)
    .lenencString(column.name)
    .int1(0x0c)
    .int2(spec.charset)
    .int4(spec.length)
    .int1(spec.type)
    .int2(spec.flags)
    .int1(spec.decimals)
    .int2(0)
    .build();
}


/** Reads a command packet's payload field by field; a field past the end is a malformed packet. */
class PayloadReader {
  offset = 0;
  constructor(readonly payload: Buffer) {}
  /** Bytes not read yet. */
  remaining(): number {
    return this.payload.length - this.offset;
  }
  private need(n: number): void {
    if (this.offset + n > this.payload.length) throw new RepriseError('INVALID_ARGUMENT', 'malformed packet: a field runs past its end');
  }
  int1(): number {
    this.need(1);
    return this.payload[this.offset++]!;
  }
  int2(): number {
    this.need(2);
    const n = this.payload.readUInt16LE(this.offset);
    this.offset += 2;
    return n;
  }
  int4(): number {
    this.need(4);
    const n = this.payload.readUInt32LE(this.offset);
    this.offset += 4;
    return n;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const b = this.payload.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }
  lenencInt(): number {
    const first = this.int1();
    if (first < 0xfb) return first;
    if (first === 0xfc) return this.int2();
    if (first === 0xfd) return this.bytes(3).readUIntLE(0, 3);
    if (first === 0xfe) return Number(this.bytes(8).readBigUInt64LE(0));
    throw new RepriseError('INVALID_ARGUMENT', 'malformed packet: bad length-encoded integer');
  }
  rest(): Buffer {
    return this.bytes(this.payload.length - this.offset);
  }
}

// Binary protocol parameter types (field_types.h).
const T_DECIMAL = 0x00;
const T_TINY = 0x01;
const T_SHORT = 0x02;
const T_LONG = 0x03;
const T_FLOAT = 0x04;
const T_DOUBLE = 0x05;
const T_NULL = 0x06;
const T_TIMESTAMP = 0x07;
const T_LONGLONG = 0x08;
const T_INT24 = 0x09;
const T_DATE = 0x0a;
const T_DATETIME = 0x0c;
const T_YEAR = 0x0d;
const STRING_TYPES = new Set([T_DECIMAL, 0x0f, 0x10, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe]);

/** One COM_STMT_EXECUTE parameter as a session value (binary protocol; a date-time as epoch ms, read as UTC). */
function binaryParam(reader: PayloadReader, type: number, unsigned: boolean, index: number): Value {
  switch (type) {
    case T_NULL:
      return null;
    case T_TINY: {
      const n = reader.int1();
      return unsigned || n < 0x80 ? n : n - 0x100;
    }
    case T_SHORT:
    case T_YEAR: {
      const n = reader.int2();
      return unsigned || n < 0x8000 ? n : n - 0x10000;
    }
    case T_LONG:
    case T_INT24: {
      const b = reader.bytes(4);
      return unsigned ? b.readUInt32LE(0) : b.readInt32LE(0);
    }
    case T_LONGLONG: {
      const b = reader.bytes(8);
      return Number(unsigned ? b.readBigUInt64LE(0) : b.readBigInt64LE(0));
    }
    case T_FLOAT:
      return reader.bytes(4).readFloatLE(0);
    case T_DOUBLE:
      return reader.bytes(8).readDoubleLE(0);
    case T_DATE:
    case T_DATETIME:
    case T_TIMESTAMP: {
      const length = reader.int1();
      const b = reader.bytes(length);
      if (length === 0) return null; // the zero date
      const year = b.readUInt16LE(0);
      const [month, day] = [b[2]!, b[3]!];
      const [hour, minute, second] = length >= 7 ? [b[4]!, b[5]!, b[6]!] : [0, 0, 0];
      const micros = length >= 11 ? b.readUInt32LE(7) : 0;
      const date = new Date(0);
      date.setUTCFullYear(year, month - 1, day); // not Date.UTC: it reads years 0..99 as 1900..1999
      date.setUTCHours(hour, minute, second, Math.floor(micros / 1000));
      return date.getTime();
    }
    default:
      if (STRING_TYPES.has(type)) return reader.bytes(reader.lenencInt()).toString('utf8');
      throw new RepriseError('SQL_UNSUPPORTED', `parameter ${index + 1}: binary parameter type 0x${type.toString(16)} is not supported`);
  }
}

function binaryRowPacket(columns: readonly SqlColumn[], data: readonly (readonly Value[])[], row: number): RawPacket {
  const bitmap = Buffer.alloc(Math.floor((columns.length + 7 + 2) / 8));
  const values: Buffer[] = [];
  columns.forEach((column, c) => {
    const value = data[c]?.[row] ?? null;
    if (value === null) {
      bitmap[Math.floor((c + 2) / 8)]! |= 1 << ((c + 2) % 8);
      return;
    }
    values.push(binaryValue(column.type, value));
  });
  return new PacketBuilder().int1(0x00).raw(bitmap).raw(Buffer.concat(values)).build();
}

function binaryValue(type: ColumnType, value: Exclude<Value, null>): Buffer {
  switch (type) {
    case 'float64': {
      const b = Buffer.alloc(8);
      b.writeDoubleLE(Number(value));
      return b;
    }
    case 'int64': {
      const b = Buffer.alloc(8);
      const n = Number(value);
      b.writeBigInt64LE(Number.isFinite(n) ? BigInt(Math.trunc(n)) : 0n);
      return b;
    }
    case 'bool':
      return Buffer.from([value === true || value === 1 ? 1 : 0]);
    case 'timestamp': {
      const date = new Date(typeof value === 'number' ? value : Number.NaN);
      if (Number.isNaN(date.getTime())) return Buffer.from([0]);
      const b = Buffer.alloc(12);
      b[0] = 11;
      b.writeUInt16LE(date.getUTCFullYear(), 1);
      b[3] = date.getUTCMonth() + 1;
      b[4] = date.getUTCDate();
      b[5] = date.getUTCHours();
      b[6] = date.getUTCMinutes();
      b[7] = date.getUTCSeconds();
      b.writeUInt32LE(date.getUTCMilliseconds() * 1000, 8);
      return b;
    }
    default: {
      const bytes = Buffer.from(String(value), 'utf8');
      return Buffer.concat([new PacketBuilder().lenencInt(bytes.length).payload(), bytes]);
    }
  }
}

function quoteIdentifier(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}

const mysql = mysql2 as unknown as Mysql2Module;

let nextConnectionId = 1;

/** A server-side prepared statement of one connection. */
interface Statement {
  readonly prepared: PreparedStatement;
  /** Parameter types (type byte, unsigned flag) as the last COM_STMT_EXECUTE that sent them bound them. */
  types: { type: number; unsigned: boolean }[] | undefined;
  /** COM_STMT_SEND_LONG_DATA chunks by parameter, until the next execute or reset. */
  readonly longData: Map<number, Buffer[]>;
}

/** Starts a MySQL protocol server: one SQL session (dialect 'mysql') per connection. */
export async function startMysqlServer(options: SqlProtocolOptions): Promise<SqlProtocolServer> {
  const log = options.logger.child({ component: 'mysql' });
  const serverVersion = options.serverVersion ?? '8.0.36-reprise';
  const sockets = new Set<net.Socket>();
  const startedAt = Date.now();
  let closing = false;

  const server = net.createServer((socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', (err) => log.debug({ err }, 'mysql connection error'));
    socket.setNoDelay(true);
    try {
      serveConnection(socket);
    } catch (err) {
      log.error({ err }, 'mysql connection setup failed');
      socket.destroy();
    }
  });

  function serveConnection(socket: net.Socket): void {
    const connectionId = nextConnectionId++ % 0x1_0000_0000;
    const remote = socket.remoteAddress ?? 'unknown';
    const clog = log.child({ connection: connectionId, remote });
    const conn = new mysql.Connection({ config: new mysql.ConnectionConfig({ stream: socket, isServer: true }) });
    let session: SqlSession | undefined;
    let queue: Promise<void> = Promise.resolve();
    let questions = 0;
    const statements = new Map<number, Statement>();
    let nextStatementId = 1;
    /** Set while an AuthSwitchRequest waits for its answer. */
    let awaitingSwitch: ((token: Buffer) => void) | undefined;

    conn.on('error', (err: Error) => clog.debug({ err }, 'mysql connection closed'));
    // The session's last results stop counting against the result budget once the client is gone.
    socket.once('close', () => session?.close());

    const live = (): boolean => socket.writable && !socket.destroyed;
    const send = (packet: RawPacket): void => {
      if (live()) conn.writePacket(packet);
    };
    const ok = (affectedRows = 0, status = SERVER_STATUS_AUTOCOMMIT): void => {
      if (live()) conn.writeOk({ affectedRows, serverStatus: status });
    };
    const eof = (status = SERVER_STATUS_AUTOCOMMIT): void => {
      if (live()) conn.writeEof(0, status);
    };
    const fail = (err: unknown): void => {
      if (!isRepriseError(err)) clog.error({ err }, 'mysql command failed unexpectedly');
      send(errorPacket(mysqlErrorOf(err)));
    };
    const drain = async (): Promise<void> => {
      if (socket.writableNeedDrain && live()) await Promise.race([once(socket, 'drain'), once(socket, 'close')]);
    };

    /** Sends one result, text rows for COM_QUERY and binary rows for COM_STMT_EXECUTE; `more`: another result follows. */
    const writeResult = async (result: StatementResult, more: boolean, binary: boolean): Promise<void> => {
      if (!live()) return;
      const status = SERVER_STATUS_AUTOCOMMIT | (more ? SERVER_MORE_RESULTS_EXISTS : 0);
      if (result.kind === 'affected') {
        ok(result.affectedRows, status);
        return;
      }
      const { columns, data } = result;
      send(new PacketBuilder().lenencInt(columns.length).build());
      for (const column of columns) send(columnPacket(column));
      eof();
      const rowCount = columns.length === 0 ? 0 : Math.max(...data.map((values) => values.length));
      // Rows go out in batches of 256 packets per socket write (corked), not one write each.
      socket.cork();
      try {
        for (let r = 0; r < rowCount && live(); r++) {
          if (binary) send(binaryRowPacket(columns, data, r));
          else if (live()) conn.writeTextRow(columns.map((column, c) => mysqlText(column.type, data[c]?.[r] ?? null)));
          if (r % 256 === 255) {
            socket.uncork();
            await drain();
            socket.cork();
          }
        }
        eof(status);
      } finally {
        socket.uncork();
      }
    };

    /**
     * Runs a prepared text and sends each result as its statement finishes,
     * flagging all but the last: a failing statement's error then follows
     * the results before it (the caller sends it), as MySQL does.
     */
    const runAndSend = async (prepared: PreparedStatement, params: readonly Value[], binary: boolean): Promise<void> => {
      const count = prepared.statements.length;
      if (count === 0) {
        send(errorPacket({ errno: 1065, sqlState: '42000', message: 'Query was empty' }));
        return;
      }
      await prepared.execute(params, (result, i) => writeResult(result, i < count - 1, binary));
    };

    const statementOf = (reader: PayloadReader): [number, Statement] => {
      const id = reader.int4();
      const statement = statements.get(id);
      if (!statement) throw new RepriseError('INVALID_ARGUMENT', `unknown prepared statement handler (${id}) given to mysqld_stmt_execute`);
      return [id, statement];
    };

    const prepare = (sql: string): void => {
      const prepared = session!.prepare(sql);
      const id = nextStatementId++;
      statements.set(id, { prepared, types: undefined, longData: new Map() });
      // PREPARE_OK: no columns announced (the session knows them only once the statement runs).
      send(new PacketBuilder().int1(0x00).int4(id).int2(0).int2(prepared.params).int1(0).int2(0).build());
      if (prepared.params > 0) {
        for (let i = 0; i < prepared.params; i++) send(columnPacket({ name: '?', type: 'string' }));
        eof();
      }
    };

    const execute = async (reader: PayloadReader): Promise<void> => {
      const [, statement] = statementOf(reader);
      const flags = reader.int1();
      if (flags & 0x07) throw new RepriseError('SQL_UNSUPPORTED', 'cursors (COM_STMT_EXECUTE with a cursor type) are not supported');
      reader.int4(); // iteration count, always 1
      const count = statement.prepared.params;
      const values: Value[] = [];
      if (count > 0) {
        if (reader.remaining() === 0) throw new RepriseError('INVALID_ARGUMENT', `the statement takes ${count} parameter${count === 1 ? '' : 's'}, none were sent`);
        const nulls = reader.bytes(Math.floor((count + 7) / 8));
        if (reader.int1() === 1) {
          statement.types = Array.from({ length: count }, () => {
            const type = reader.int1();
            return { type, unsigned: (reader.int1() & 0x80) !== 0 };
          });
        }
        const types = statement.types;
        if (!types) throw new RepriseError('INVALID_ARGUMENT', 'COM_STMT_EXECUTE without parameter types');
        for (let i = 0; i < count; i++) {
          const long = statement.longData.get(i);
          if (long) values.push(Buffer.concat(long).toString('utf8'));
          else if (nulls[Math.floor(i / 8)]! & (1 << (i % 8))) values.push(null);
          else values.push(binaryParam(reader, types[i]!.type, types[i]!.unsigned, i));
        }
      }
      statement.longData.clear();
      questions++;
      await runAndSend(statement.prepared, values, true);
    };

    /** One command: its payload (command byte first) and the sequence id its response starts at. */
    const run = async (payload: Buffer, sequenceId: number): Promise<void> => {
      if (!live()) return;
      conn.sequenceId = sequenceId;
      const reader = new PayloadReader(payload);
      const command = reader.int1();
      const text = (): string => reader.rest().toString(conn.clientHelloReply?.encoding === 'latin1' ? 'latin1' : 'utf8');
      try {
        switch (command) {
          case COM_QUERY: {
            const sql = text();
            clog.debug({ sql }, 'mysql query');
            questions++;
            await runAndSend(session!.prepare(sql), [], false);
            break;
          }
          case COM_INIT_DB:
            await session!.execute(`USE ${quoteIdentifier(text())}`);
            ok();
            break;
          case COM_PING:
          case COM_DEBUG:
            ok();
            break;
          case COM_RESET_CONNECTION:
            statements.clear();
            ok();
            break;
          case COM_QUIT:
            socket.end();
            break;
          case COM_FIELD_LIST:
          case COM_SET_OPTION:
            eof();
            break;
          case COM_STATISTICS:
            send(new PacketBuilder().string(`Uptime: ${Math.floor((Date.now() - startedAt) / 1000)}  Threads: ${sockets.size}  Questions: ${questions}`).build());
            break;
          case COM_STMT_PREPARE:
            prepare(text());
            break;
          case COM_STMT_EXECUTE:
            await execute(reader);
            break;
          case COM_STMT_SEND_LONG_DATA: {
            // No response, not even an error.
            const statement = statements.get(reader.int4());
            const param = reader.int2();
            if (statement) statement.longData.set(param, [...(statement.longData.get(param) ?? []), Buffer.from(reader.rest())]);
            break;
          }
          case COM_STMT_CLOSE:
            statements.delete(reader.int4()); // no response
            break;
          case COM_STMT_RESET:
            statementOf(reader)[1].longData.clear();
            ok();
            break;
          case COM_STMT_FETCH:
            throw new RepriseError('SQL_UNSUPPORTED', 'cursors (COM_STMT_FETCH) are not supported');
          case COM_CHANGE_USER:
            throw new RepriseError('SQL_UNSUPPORTED', 'COM_CHANGE_USER is not supported: open a new connection');
          default:
            send(errorPacket({ errno: 1047, sqlState: '08S01', message: `unknown command 0x${command.toString(16).padStart(2, '0')}` }));
        }
      } catch (err) {
        fail(err);
      }
    };

    // Every packet passes here first (mysql2's parser calls connection.handlePacket): until the client is in,
    // mysql2 runs the handshake; an auth switch answer and, once in, every command are taken from it.
    const dispatch = conn.handlePacket.bind(conn);
    conn.handlePacket = (packet) => {
      if (packet === undefined || (session === undefined && awaitingSwitch === undefined)) return dispatch(packet);
      const payload = Buffer.from(packet.buffer.subarray(packet.start + 4, packet.end));
      const next = (packet.sequenceId + packet.numPackets) % 256;
      if (awaitingSwitch !== undefined) {
        conn.sequenceId = next;
        const resolve = awaitingSwitch;
        awaitingSwitch = undefined;
        resolve(payload);
        return;
      }
      queue = queue.then(() => run(payload, next)).catch((err: unknown) => clog.error({ err }, 'mysql command queue failed'));
    };

    const refuse = (error: MysqlError): void => {
      send(errorPacket(error));
      conn.close();
    };

    /** Asks a client that offered another plugin (MySQL 8's caching_sha2_password) for a mysql_native_password token over the same scramble. */
    const switchToNativePassword = (scramble: Buffer): Promise<Buffer | undefined> =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          awaitingSwitch = undefined;
          resolve(undefined);
          socket.destroy();
        }, 10_000);
        timer.unref();
        awaitingSwitch = (token) => {
          clearTimeout(timer);
          resolve(token);
        };
        socket.once('close', () => resolve(undefined));
        send(new PacketBuilder().int1(0xfe).string('mysql_native_password').int1(0).raw(scramble).int1(0).build());
      });

    /** The session for a client's handshake response, or undefined when it was refused (and told why). */
    const authenticate = async (params: AuthParams): Promise<SqlSession | undefined> => {
      let token = Buffer.isBuffer(params.authToken) ? params.authToken : Buffer.from(params.authToken ?? '');
      const userName = params.user ?? '';
      let user: SqlUser = ANONYMOUS_USER;
      if (options.users) {
        const password = options.users.passwordOf(userName);
        const scramble = Buffer.concat([params.authPluginData1, params.authPluginData2]);
        const plugin = conn.clientHelloReply?.authPluginName;
        if (plugin !== undefined && plugin !== '' && plugin !== 'mysql_native_password') {
          const switched = await switchToNativePassword(scramble);
          if (switched === undefined) return undefined;
          token = switched;
        }
        if (password === undefined || !verifyNativePassword(password, scramble, token)) {
          clog.info({ user: userName, plugin }, `mysql: access denied for user '${userName}'`);
          refuse({ errno: 1045, sqlState: '28000', message: `Access denied for user '${userName}'@'${remote}' (using password: ${token.length > 0 ? 'YES' : 'NO'})` });
          return undefined;
        }
        user = { name: userName, mode: options.users.modeOf(userName) ?? 'rw' };
      }
      try {
        const opened = options.sessions({ dialect: 'mysql', user });
        if (params.database) await opened.execute(`USE ${quoteIdentifier(params.database)}`);
        return opened;
      } catch (err) {
        if (!isRepriseError(err)) clog.error({ err }, 'mysql session could not open');
        refuse(mysqlErrorOf(err));
        return undefined;
      }
    };

    conn.serverHandshake({
      protocolVersion: 10,
      serverVersion,
      connectionId,
      statusFlags: SERVER_STATUS_AUTOCOMMIT,
      characterSet: UTF8MB4_GENERAL_CI,
      capabilityFlags: SERVER_CAPABILITIES,
      authCallback: (params, cb) => {
        authenticate(params).then(
          (opened) => {
            if (opened === undefined || !live()) return;
            cb(null); // mysql2 writes the OK packet
            session = opened; // from here on, packets are commands
          },
          (err: unknown) => {
            clog.error({ err }, 'mysql authentication failed unexpectedly');
            refuse(mysqlErrorOf(err));
          },
        );
      },
    });
  }

  await listen(server, options.host, options.port);
  server.on('error', (err) => log.error({ err }, 'mysql server error'));
  const bound = server.address() as net.AddressInfo;
  const address = { host: bound.address, port: bound.port };
  log.info(address, `MySQL protocol on ${address.host}:${address.port}`);

  return {
    address,
    async close() {
      if (closing) return;
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) {
        socket.end();
        setTimeout(() => socket.destroy(), 500).unref();
      }
      await closed;
    },
  };
}
