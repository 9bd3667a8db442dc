/**
 * Integers a JSON text wrote beyond ±(2^53-1), as written. JSON.parse rounds
 * them to the nearest double, so an error quoting the parsed value would
 * quote a number the client never sent: the HTTP API's JSON parser records
 * the text of each such number against the object or array holding it, and
 * validation quotes that text (see show in table/validate.ts). Held weakly:
 * a record lives as long as the parsed body.
 */
const written = new WeakMap<object, Map<string, string>>();

export function recordWrittenNumber(holder: object, key: string, text: string): void {
  let byKey = written.get(holder);
  if (byKey === undefined) written.set(holder, (byKey = new Map()));
  byKey.set(key, text);
}

/** Forget what an earlier occurrence of a key (a duplicate in the JSON object) recorded. */
export function forgetWrittenNumber(holder: object, key: string): void {
  written.get(holder)?.delete(key);
}

/** The text `holder[key]` was written as, if it was an integer JSON.parse rounded. */
export function writtenNumber(holder: object, key: string | number): string | undefined {
  return written.get(holder)?.get(String(key));
}
