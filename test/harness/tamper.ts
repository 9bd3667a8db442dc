import { readFile, writeFile } from 'node:fs/promises';

/** Ways a test tampers with real parts: members replaced, files damaged. */

/**
 * `target` with some members replaced (a store whose puts fail, a log whose
 * reads wait): everything else is the target's own, bound to it.
 */
export function withOverrides<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(t, prop) {
      if (Object.prototype.hasOwnProperty.call(overrides, prop)) return (overrides as Record<PropertyKey, unknown>)[prop];
      const value: unknown = Reflect.get(t, prop, t);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(t) : value;
    },
  });
}

/**
 * Flip bytes in every column chunk of an SST (between Parquet's magic and
 * the engine's index, which sits before the footer): damage found when a
 * chunk is read, not when the SST is opened.
 */
export async function damageColumnChunks(path: string): Promise<void> {
  const bytes = await readFile(path);
  const trailerAt = bytes.length - 8 - bytes.readUInt32LE(bytes.length - 8) - 12;
  const indexStart = trailerAt - bytes.readUInt32LE(trailerAt);
  for (let at = 4; at < indexStart; at += 3) bytes[at] ^= 0xff;
  await writeFile(path, bytes);
}
