import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, expect, it } from 'vitest';

const run = promisify(execFile);

let dir: string | undefined;
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

// The README's cluster walkthrough kills node n2 with pkill -f (issue 14,
// smaller list: its pattern matched nothing when the node ran under npx).
it('the README\'s kill step matches node n2 as npx and as node bin/reprise.js run it, and no other node', async () => {
  const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
  const pattern = /^pkill -9 -f '([^']+)'/m.exec(readme)?.[1];
  expect(pattern).toBeDefined();
  dir = await mkdtemp(join(tmpdir(), 'reprise-readme-'));
  // Stand-ins with the command lines of the real processes: npx runs node_modules/.bin/reprise.
  const sleeper = 'setTimeout(() => {}, 60_000);';
  for (const path of ['node_modules/.bin/reprise', 'bin/reprise.js']) {
    await mkdir(join(dir, path, '..'), { recursive: true });
    await writeFile(join(dir, path), sleeper);
  }
  const start = (script: string, id: string) => {
    const child = spawn(process.execPath, [join(dir!, script), 'node', '--id', id, '--data-dir', '/tmp/objects', '--http-addr', '127.0.0.1:4002'], { stdio: 'ignore' });
    children.push(child);
    return child.pid!;
  };
  const npx = start('node_modules/.bin/reprise', 'n2');
  const direct = start('bin/reprise.js', 'n2');
  const others = [start('node_modules/.bin/reprise', 'n3'), start('bin/reprise.js', 'n20')];
  await new Promise((resolve) => setTimeout(resolve, 200));
  // pgrep, not pkill: other processes on this machine may match the pattern too.
  const { stdout } = await run('pgrep', ['-f', pattern!]).catch((err: { stdout: string }) => ({ stdout: err.stdout }));
  const matched = new Set(stdout.split('\n').filter(Boolean).map(Number));
  expect(matched.has(npx)).toBe(true);
  expect(matched.has(direct)).toBe(true);
  for (const pid of others) expect(matched.has(pid)).toBe(false);
});
