import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import { isRepriseError, type ErrorCode } from '../../../src/errors.js';
import type { TableSchema } from '../../../src/engine/schema.js';

/** system_metrics(host, idc, cpu, mem, up, ts), partitioned on host at "f" and "z". */
export const metrics: TableSchema = {
  name: 'system_metrics',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'idc', type: 'string', role: 'tag' },
    { name: 'cpu', type: 'float64', role: 'field' },
    { name: 'mem', type: 'int64', role: 'field' },
    { name: 'up', type: 'bool', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['f', 'z'] },
};

const dirs: string[] = [];

/** A fresh directory under the OS temp dir, removed after the test. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'reprise-engine-'));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Assert that `fn` throws (or rejects with) a RepriseError of `code` whose message matches every pattern. */
export async function expectError(fn: () => unknown, code: ErrorCode, ...patterns: (string | RegExp)[]): Promise<void> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${code}`).toBeDefined();
  if (!isRepriseError(caught, code)) throw new Error(`expected RepriseError ${code}, got ${String(caught)}`);
  for (const p of patterns) expect(caught.message).toMatch(p);
}
