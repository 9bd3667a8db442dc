import { describe, expect, it } from 'vitest';
import { ByteLru } from '../../../src/engine/table/sst-cache.js';

const load = (v: number) => () => Promise.resolve(v);
const size = () => 10;

describe('ByteLru', () => {
  it('evicts the least recently used first once over its byte budget', async () => {
    const lru = new ByteLru<number>(30);
    for (const k of ['a', 'b', 'c']) await lru.get(k, load(1), size);
    await lru.get('a', load(2), size); // a is now the most recent: b is the oldest
    await lru.get('d', load(1), size);
    await Promise.resolve();
    expect(['a', 'b', 'c', 'd'].filter((k) => lru.has(k))).toEqual(['a', 'c', 'd']);
    expect(lru.bytes).toBe(30);
    expect(await lru.get('a', load(3), size)).toBe(1);
    expect(lru.hits).toBe(2);
    expect(lru.misses).toBe(4);
  });

  it('shares a load in flight, forgets a failed one, and evicts by prefix', async () => {
    const lru = new ByteLru<number>(100);
    let loads = 0;
    const slow = () => {
      loads++;
      return new Promise<number>((resolve) => setTimeout(() => resolve(7), 5));
    };
    expect(await Promise.all([lru.get('x', slow, size), lru.get('x', slow, size)])).toEqual([7, 7]);
    expect(loads).toBe(1);
    await expect(lru.get('bad', () => Promise.reject(new Error('boom')), size)).rejects.toThrow('boom');
    expect(lru.has('bad')).toBe(false);
    await lru.get('f#1', load(1), size);
    await lru.get('f#2', load(1), size);
    lru.evictPrefix('f#');
    expect(lru.has('f#1') || lru.has('f#2')).toBe(false);
    expect(lru.has('x')).toBe(true);
    expect(lru.bytes).toBe(10);
    // Eviction keeps working after its list was cut in the middle and at both ends.
    for (let i = 0; i < 50; i++) await lru.get(`k${i}`, load(i), size);
    expect(lru.bytes).toBe(100);
    expect(lru.has('k49') && lru.has('k40') && !lru.has('k39') && !lru.has('x')).toBe(true);
  });

  it('keeps nothing at capacity 0', async () => {
    const lru = new ByteLru<number>(0);
    await lru.get('a', load(1), size);
    expect(lru.has('a')).toBe(false);
    expect(lru.misses).toBe(1);
  });
});
