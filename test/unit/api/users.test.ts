import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANONYMOUS_USER, parseUserProvider, staticUserProvider } from '../../../src/api/users.js';
import { RepriseError } from '../../../src/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-users-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function userFile(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

function refusal(spec: string): RepriseError {
  try {
    parseUserProvider(spec);
  } catch (err) {
    expect(err).toBeInstanceOf(RepriseError);
    expect((err as RepriseError).code).toBe('INVALID_ARGUMENT');
    return err as RepriseError;
  }
  throw new Error(`'${spec}' was accepted`);
}

describe('static user provider: files', () => {
  it('reads users, permission modes in every spelling, comments, blank lines, CRLF and the plain: prefix', async () => {
    const path = await userFile(
      'users',
      [
        '# GreptimeDB format',
        'admin=admin_pwd',
        '',
        '  alice:readonly=aaa  ',
        'bob:writeonly=bbb\r',
        'viewer:ro=viewer_pwd',
        'editor:rw=editor_pwd',
        'writer:WO=w',
        'ops:ReadWrite=o:p:s',
        'carol=plain:c4rol',
        'user name:ReadOnly=spaced',
      ].join('\n'),
    );
    const users = parseUserProvider(`static_user_provider:file:${path}`);
    const expected: [string, string, string][] = [
      ['admin', 'admin_pwd', 'rw'],
      ['alice', 'aaa', 'ro'],
      ['bob', 'bbb', 'wo'],
      ['viewer', 'viewer_pwd', 'ro'],
      ['editor', 'editor_pwd', 'rw'],
      ['writer', 'w', 'wo'],
      ['ops', 'o:p:s', 'rw'],
      ['carol', 'c4rol', 'rw'],
      ['user name', 'spaced', 'ro'],
    ];
    for (const [name, password, mode] of expected) {
      expect(users.passwordOf(name), name).toBe(password);
      expect(users.modeOf(name), name).toBe(mode);
      expect(users.authenticate(name, password), name).toEqual({ name, mode });
    }
    expect(users.passwordOf('nobody')).toBeUndefined();
    expect(users.modeOf('nobody')).toBeUndefined();
  });

  it('authenticates only the right password of a known user', async () => {
    const users = parseUserProvider(`static_user_provider:file:${await userFile('auth', 'alice=secret\n')}`);
    expect(users.authenticate('alice', 'secret')).toEqual({ name: 'alice', mode: 'rw' });
    expect(users.authenticate('alice', 'Secret')).toBeUndefined();
    expect(users.authenticate('alice', 'secret ')).toBeUndefined();
    expect(users.authenticate('alice', '')).toBeUndefined();
    expect(users.authenticate('bob', 'secret')).toBeUndefined();
    expect(users.authenticate('', '')).toBeUndefined();
  });

  it('names the file for a missing file, a directory and a file without users', async () => {
    const missing = join(dir, 'no-such-file');
    expect(refusal(`static_user_provider:file:${missing}`).message).toBe(`user provider file '${missing}' does not exist`);
    expect(refusal(`static_user_provider:file:${dir}`).message).toBe(`user provider file '${dir}' is not a file`);
    const empty = await userFile('empty', '# nobody\n\n');
    expect(refusal(`static_user_provider:file:${empty}`).message).toMatch(new RegExp(`^user provider file '${empty}' lists no users`));
  });

  it('names file and line for a malformed line, without echoing the password', async () => {
    const cases: [string, RegExp][] = [
      ['ok=1\nalice\n', /line 2: expected '<user>\[:<mode>\]=<password>' with one '=' \(found no '='\)/],
      ['ok=1\n\n# c\nalice=se=cret\n', /line 4: .*found more than one '='/],
      ['=secret\n', /line 1: no user name before '='/],
      ['alice:admin=secret\n', /line 1: user 'alice': unknown permission mode 'admin'/],
      ['alice=\n', /line 1: user 'alice' has an empty password/],
      ['alice=plain:\n', /line 1: user 'alice' has an empty password/],
      ['bob=pbkdf2_sha256:4096:73616c74:c5e4\n', /line 1: user 'bob': password verifier 'pbkdf2_sha256' is not supported/],
      ['bob=mysql_native_password:6bb4837eb74329105ee4568dda7dc67ed2ca2ad9\n', /verifier 'mysql_native_password' is not supported/],
    ];
    for (const [i, [text, pattern]] of cases.entries()) {
      const path = await userFile(`bad-${i}`, text);
      const err = refusal(`static_user_provider:file:${path}`);
      expect(err.message, text).toMatch(new RegExp(`^user provider file '${path}': `));
      expect(err.message, text).toMatch(pattern);
      expect(err.message, text).not.toMatch(/se=cret|secret/);
    }
  });

  it('refuses a user given twice, naming both lines', async () => {
    const path = await userFile('dup', 'alice=a\nbob=b\n\nalice:ro=c\n');
    expect(refusal(`static_user_provider:file:${path}`).message).toBe(`user provider file '${path}': line 4: user 'alice' is already given at line 1`);
  });
});

describe('static user provider: specs', () => {
  it('reads inline users (static_user_provider:cmd)', () => {
    const users = parseUserProvider('static_user_provider:cmd:greptime_user=greptime_pwd,reader:readonly=r,w:wo=x');
    expect(users.authenticate('greptime_user', 'greptime_pwd')).toEqual({ name: 'greptime_user', mode: 'rw' });
    expect(users.authenticate('reader', 'r')).toEqual({ name: 'reader', mode: 'ro' });
    expect(users.modeOf('w')).toBe('wo');
  });

  it('names the entry of a malformed or duplicate inline user', () => {
    expect(refusal('static_user_provider:cmd:a=1,b').message).toMatch(/^user provider static_user_provider:cmd: entry 2: expected/);
    expect(refusal('static_user_provider:cmd:a=1,a=2').message).toBe("user provider static_user_provider:cmd: entry 2: user 'a' is already given at entry 1");
    expect(refusal('static_user_provider:cmd:').message).toMatch(/no users given/);
  });

  it('refuses specs that are not a static user provider, without echoing inline passwords', () => {
    expect(refusal('static_user_provider:ldap:x').message).toMatch(/^user provider 'static_user_provider:ldap': unknown option 'ldap'/);
    expect(refusal('static_user_provider:file:').message).toMatch(/no file named/);
    expect(refusal('static_user_provider').message).toMatch(/expected 'static_user_provider:file:<path>'/);
    expect(refusal('watch_file_user_provider:/etc/users').message).toMatch(/^user provider 'watch_file_user_provider' is not supported/);
    const other = refusal('my_provider:cmd:alice=hunter2');
    expect(other.message).toMatch(/is not a static user provider/);
    expect(other.message).not.toMatch(/hunter2/);
  });

  it('builds providers in code, and refuses duplicates there too', () => {
    const users = staticUserProvider([{ name: 'a', password: 'p', mode: 'ro' }]);
    expect(users.authenticate('a', 'p')).toEqual({ name: 'a', mode: 'ro' });
    expect(() => staticUserProvider([{ name: 'a', password: 'p', mode: 'ro' }, { name: 'a', password: 'q', mode: 'rw' }])).toThrow(/user 'a' is given twice/);
    expect(ANONYMOUS_USER).toEqual({ name: 'anonymous', mode: 'rw' });
  });
});
