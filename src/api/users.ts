/**
 * The static user provider, as GreptimeDB has it (docs: user-guide/
 * deployments-administration/authentication/static.md; source:
 * src/auth/src/user_provider/static_user_provider.rs):
 *
 *   static_user_provider:file:<path>            one user a line
 *   static_user_provider:cmd:<entry>[,<entry>]  the same entries inline
 *
 * An entry is `<user>=<password>` or `<user>:<mode>=<password>`, mode one of
 * rw / readwrite (the default), ro / readonly, wo / writeonly (any case). In
 * a file, blank lines and lines starting with `#` are skipped and each line
 * is trimmed. A password may carry the `plain:` prefix (`alice=plain:secret`
 * is the password `secret`), as GreptimeDB 1.1+ reads it.
 *
 * Where GreptimeDB silently skips a line it cannot read (no `=`, two `=`), or
 * lets a later duplicate win, this provider refuses to start instead: a typo
 * in a user file should not lock a user out without a word. Hashed verifiers
 * (`pbkdf2_sha256:`, `mysql_native_password:`, `pg_scram_sha256:`) are refused
 * too: the wire protocols here verify MySQL native-password scrambles and
 * PostgreSQL md5 hashes, and both need the plaintext password.
 *
 * Errors never echo a line's text (it holds a password): they name the spec
 * or file, the line (or inline entry) number and, where it parsed, the user.
 */
import { readFileSync, statSync } from 'node:fs';
import { createHash, timingSafeEqual } from 'node:crypto';
import { RepriseError } from '../errors.js';
import type { SqlUser, UserMode } from '../frontend/sql/types.js';

/** Who may connect, with what password and mode. Plaintext passwords: MySQL native password and PostgreSQL md5 verify against them. */
export interface UserProvider {
  /** The user's plaintext password, or undefined for an unknown user. */
  passwordOf(user: string): string | undefined;
  /** The user's mode, or undefined for an unknown user. */
  modeOf(user: string): UserMode | undefined;
  /** The user, when `password` is theirs (compared in constant time); undefined otherwise. */
  authenticate(user: string, password: string): SqlUser | undefined;
}

/** One user of a static provider. */
export interface StaticUser {
  readonly name: string;
  readonly password: string;
  readonly mode: UserMode;
}

/** The user every client is when no user provider is configured. */
export const ANONYMOUS_USER: SqlUser = Object.freeze({ name: 'anonymous', mode: 'rw' });

const PREFIX = 'static_user_provider:';

const MODES: Readonly<Record<string, UserMode>> = {
  rw: 'rw',
  readwrite: 'rw',
  ro: 'ro',
  readonly: 'ro',
  wo: 'wo',
  writeonly: 'wo',
};

const UNSUPPORTED_VERIFIERS = ['pbkdf2_sha256:', 'mysql_native_password:', 'pg_scram_sha256:'];

const USAGE = "expected 'static_user_provider:file:<path>' or 'static_user_provider:cmd:<user>[:<mode>]=<password>[,...]'";

function invalid(message: string, details?: Record<string, unknown>): RepriseError {
  return new RepriseError('INVALID_ARGUMENT', message, details);
}

/** A provider over the given users (names unique, passwords non-empty). */
export function staticUserProvider(users: readonly StaticUser[]): UserProvider {
  const byName = new Map<string, StaticUser>();
  for (const user of users) {
    if (byName.has(user.name)) throw invalid(`user '${user.name}' is given twice`);
    byName.set(user.name, Object.freeze({ ...user }));
  }
  const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
  return {
    passwordOf: (name) => byName.get(name)?.password,
    modeOf: (name) => byName.get(name)?.mode,
    authenticate(name, password) {
      const user = byName.get(name);
      // Compare digests: equal lengths, so timingSafeEqual applies whatever was typed.
      const ok = timingSafeEqual(digest(user?.password ?? ''), digest(password));
      return user !== undefined && ok ? { name: user.name, mode: user.mode } : undefined;
    },
  };
}

/**
 * The user provider a spec names: `static_user_provider:file:<path>` or
 * `static_user_provider:cmd:<user>=<password>,...`. Throws INVALID_ARGUMENT
 * naming the spec, file, line or entry at fault.
 */
export function parseUserProvider(spec: string): UserProvider {
  if (!spec.startsWith(PREFIX)) {
    const kind = spec.split(':')[0] ?? '';
    if (kind === 'watch_file_user_provider') throw invalid(`user provider '${kind}' is not supported (only static_user_provider): ${USAGE}`);
    throw invalid(`user provider '${redactSpec(spec)}' is not a static user provider: ${USAGE}`);
  }
  const rest = spec.slice(PREFIX.length);
  const colon = rest.indexOf(':');
  const option = colon < 0 ? rest : rest.slice(0, colon);
  const value = colon < 0 ? undefined : rest.slice(colon + 1);
  if (option === 'file') {
    if (value === undefined || value === '') throw invalid(`user provider '${spec}': no file named: ${USAGE}`);
    return staticUserProvider(parseUserFile(value));
  }
  if (option === 'cmd') {
    if (value === undefined || value.trim() === '') throw invalid(`user provider 'static_user_provider:cmd': no users given: ${USAGE}`);
    return staticUserProvider(parseEntries(value.split(',').map((text, i) => ({ text, where: `entry ${i + 1}` })), 'user provider static_user_provider:cmd'));
  }
  throw invalid(`user provider '${PREFIX}${option}': unknown option '${option}': ${USAGE}`);
}

/** The users a user file lists (see the module comment for its format). */
export function parseUserFile(path: string): StaticUser[] {
  const source = `user provider file '${path}'`;
  let text: string;
  try {
    if (!statSync(path).isFile()) throw invalid(`${source} is not a file`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof RepriseError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw invalid(code === 'ENOENT' ? `${source} does not exist` : `${source} cannot be read: ${(err as Error).message}`, { path });
  }
  const lines = text
    .split('\n')
    .map((line, i) => ({ text: line.trim(), where: `line ${i + 1}` }))
    .filter((line) => line.text !== '' && !line.text.startsWith('#'));
  return parseEntries(lines, source);
}

function parseEntries(entries: readonly { text: string; where: string }[], source: string): StaticUser[] {
  const users: StaticUser[] = [];
  const seen = new Map<string, string>();
  for (const { text, where } of entries) {
    const user = parseEntry(text, `${source}: ${where}`);
    const first = seen.get(user.name);
    if (first !== undefined) throw invalid(`${source}: ${where}: user '${user.name}' is already given at ${first}`);
    seen.set(user.name, where);
    users.push(user);
  }
  if (users.length === 0) throw invalid(`${source} lists no users: expected lines '<user>[:<mode>]=<password>'`);
  return users;
}

function parseEntry(text: string, at: string): StaticUser {
  const parts = text.split('=');
  if (parts.length !== 2) {
    throw invalid(`${at}: expected '<user>[:<mode>]=<password>' with one '=' (${parts.length === 1 ? "found no '='" : "found more than one '=': a password cannot contain '='"})`);
  }
  const [userPart, rawPassword] = parts as [string, string];
  const colon = userPart.indexOf(':');
  const name = colon < 0 ? userPart : userPart.slice(0, colon);
  if (name === '') throw invalid(`${at}: no user name before '='`);
  let mode: UserMode = 'rw';
  if (colon >= 0) {
    const word = userPart.slice(colon + 1);
    const known = MODES[word.toLowerCase()];
    if (known === undefined) throw invalid(`${at}: user '${name}': unknown permission mode '${word}' (expected rw, readwrite, ro, readonly, wo or writeonly)`);
    mode = known;
  }
  const verifier = UNSUPPORTED_VERIFIERS.find((prefix) => rawPassword.startsWith(prefix));
  if (verifier !== undefined) {
    throw invalid(
      `${at}: user '${name}': password verifier '${verifier.slice(0, -1)}' is not supported: the MySQL and PostgreSQL protocols here need the plaintext password (write '<password>' or 'plain:<password>')`,
    );
  }
  const password = rawPassword.startsWith('plain:') ? rawPassword.slice('plain:'.length) : rawPassword;
  if (password === '') throw invalid(`${at}: user '${name}' has an empty password`);
  return { name, password, mode };
}

/** A spec for an error message, without what might be inline passwords. */
function redactSpec(spec: string): string {
  return spec.includes('=') ? `${spec.slice(0, spec.indexOf(':') + 1)}...` : spec;
}
