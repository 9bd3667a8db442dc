import { forgetWrittenNumber, recordWrittenNumber } from '../engine/written-numbers.js';
import { RepriseError } from '../errors.js';

/** Only an integer literal of 16 digits or more can be beyond ±(2^53-1). */
const LONG_DIGITS = /\d{16}/;
const LONG_INTEGER = /^-?\d{16,}$/;

/**
 * A JSON request body. Empty (or blank) is no body, undefined: routes whose
 * body is optional (query, flush, drop) take it as {}, the others say what
 * they need; clients that always send Content-Type: application/json send
 * such bodies. Valid JSON with a "__proto__" or "constructor" key is JSON:
 * JSON.parse makes them own properties (no prototype changes), validation
 * then names them as unknown keys or columns, and no name may be __proto__.
 * Integers beyond ±(2^53-1), which JSON.parse rounds, are recorded as written
 * so that an error quotes what the client sent.
 */
export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new RepriseError('MALFORMED_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (LONG_DIGITS.test(text)) {
    try {
      recordRoundedIntegers(text, value);
    } catch {
      // Nested deeper than this walk's stack (JSON.parse is iterative): errors then quote the rounded value.
    }
  }
  return value;
}

/**
 * Walk valid JSON text alongside its parsed value and record each integer
 * literal JSON.parse rounded against the object or array holding it. A key
 * given twice holds its last value, so each occurrence overwrites (or
 * forgets) what an earlier one recorded.
 */
function recordRoundedIntegers(text: string, root: unknown): void {
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
  };
  const stringToken = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return text.slice(start, i);
  };
  const walk = (holder: object | undefined, key: string, value: unknown): void => {
    skipSpace();
    const container = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
    const c = text[i];
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      skipSpace();
      if (text[i] === close) {
        i++;
        return;
      }
      for (let n = 0; ; n++) {
        skipSpace();
        let k = String(n);
        if (c === '{') {
          k = JSON.parse(stringToken()) as string;
          skipSpace();
          i++; // ':'
        }
        walk(container, k, container?.[k]);
        skipSpace();
        if (text[i++] === close) return; // else ','
      }
    }
    if (c === '"') {
      stringToken();
      return;
    }
    const start = i;
    while (i < text.length && !',]} \t\n\r'.includes(text[i]!)) i++;
    if (holder === undefined) return;
    const token = text.slice(start, i);
    if (LONG_INTEGER.test(token) && !Number.isSafeInteger(Number(token))) recordWrittenNumber(holder, key, token);
    else forgetWrittenNumber(holder, key);
  };
  walk(undefined, '', root);
}
