import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The layering of ARCHITECTURE.md, read from the imports of src/: nothing
 * imports a layer above its own, and there are no import cycles (type-only
 * imports included: they are arrows a reader follows too).
 */

const SRC = resolve(dirname(new URL(import.meta.url).pathname), '../../../src');

/** Higher imports lower. Folders of one rank may import each other (without cycles). */
const RANK: Record<string, number> = {
  cli: 6,
  api: 5,
  frontend: 4,
  actors: 3,
  meta: 2,
  engine: 1,
  wal: 1,
  transport: 1,
  // Root files (errors.ts, deadline.ts) and the test hooks: below everything.
  '.': 0,
  testing: 0,
};

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Relative imports of a file (static, re-exports, dynamic), as paths of .ts files under src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/g), ...text.matchAll(/import\(\s*'([^']+)'\s*\)/g)].map((m) => m[1]!);
  return specifiers.filter((s) => s.startsWith('.')).map((s) => resolve(dirname(file), s.replace(/\.js$/, '.ts')));
}

const layerOf = (file: string) => {
  const rel = relative(SRC, file);
  return rel.includes('/') ? rel.slice(0, rel.indexOf('/')) : '.';
};

const graph = new Map(filesUnder(SRC).map((f) => [f, importsOf(f)]));
const name = (f: string) => relative(SRC, f);

describe('imports of src/', () => {
  it('every folder has a rank', () => {
    expect([...new Set([...graph.keys()].map(layerOf))].filter((l) => RANK[l] === undefined)).toEqual([]);
  });

  it('resolve to files that exist', () => {
    const missing = [...graph].flatMap(([f, deps]) => deps.filter((d) => !graph.has(d)).map((d) => `${name(f)} -> ${name(d)}`));
    expect(missing).toEqual([]);
  });

  it('never run up a layer', () => {
    const upward = [...graph].flatMap(([f, deps]) => deps.filter((d) => RANK[layerOf(d)]! > RANK[layerOf(f)]!).map((d) => `${name(f)} -> ${name(d)}`));
    expect(upward).toEqual([]);
  });

  it('form no cycle', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (f: string) => {
      state.set(f, 'open');
      stack.push(f);
      for (const d of graph.get(f) ?? []) {
        if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d].map(name).join(' -> '));
        else if (!state.has(d)) visit(d);
      }
      stack.pop();
      state.set(f, 'done');
    };
    for (const f of graph.keys()) if (!state.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });
});
