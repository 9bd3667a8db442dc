/**
 * A parser for InfluxDB line protocol, written from its specification:
 *
 *   measurement[,tag=value...] field=value[,field=value...] [timestamp]
 *
 * - One point per line; blank lines and lines starting with `#` are skipped;
 *   a trailing `\r` is dropped.
 * - Measurement: a backslash escapes a comma or a space.
 * - Tag keys, tag values and field keys: a backslash escapes a comma, an
 *   equals sign or a space. Keys and values must not be empty.
 * - Field values: float (`1`, `-1.5`, `1e3`), integer (`1i`), unsigned
 *   (`1u`), boolean (`t`, `T`, `true`, `True`, `TRUE`, `f`, `F`, `false`,
 *   `False`, `FALSE`), string (`"..."`, a backslash escapes `"` and `\`).
 * - A backslash before any other character is kept as it is.
 * - Timestamp: an optional integer in the request's precision.
 * Errors name the line (1-based) and what is wrong with it.
 */

export type FieldValue =
  | { readonly type: 'float'; readonly value: number }
  | { readonly type: 'integer'; readonly value: bigint }
  | { readonly type: 'unsigned'; readonly value: bigint }
  | { readonly type: 'boolean'; readonly value: boolean }
  | { readonly type: 'string'; readonly value: string };

export interface Point {
  /** 1-based line number in the request body. */
  readonly line: number;
  readonly measurement: string;
  /** In the order written. */
  readonly tags: readonly (readonly [string, string])[];
  /** In the order written; a key given twice keeps its last value. */
  readonly fields: readonly (readonly [string, FieldValue])[];
  /** In the request's precision; absent means "now" (the server's clock). */
  readonly timestamp?: bigint;
}

export interface LineError {
  readonly line: number;
  readonly message: string;
}

export interface ParsedLines {
  readonly points: Point[];
  readonly errors: LineError[];
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
export const FLOAT_RE = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;
const INTEGER_RE = /^[-+]?\d+i$/;
const UNSIGNED_RE = /^\d+u$/;
const TIMESTAMP_RE = /^-?\d+$/;
export const BACKSLASH = 0x5c;
export const COMMA = 0x2c;
export const SPACE = 0x20;
export const EQUALS = 0x3d;
const TAB = 0x09;
const HASH = 0x23;
export const LOWER_I = 0x69;
export const LOWER_U = 0x75;
export const LOWER_E = 0x65;
export const QUOTE = 0x22;
export const TRUE: ReadonlySet<string> = new Set(['t', 'T', 'true', 'True', 'TRUE']);
export const FALSE: ReadonlySet<string> = new Set(['f', 'F', 'false', 'False', 'FALSE']);

class LineSyntaxError extends Error {}

/** The lines of a body past `maxLines` (blank lines and comments aside): parsing stops there. */
export class TooManyLinesError extends Error {
  constructor(readonly maxLines: number) {
    super(`more than ${maxLines} lines`);
  }
}

/**
 * Call `each` with every line of a body that holds a point (blank lines and
 * comments skipped, leading blanks and a trailing `\r` dropped) and its
 * 1-based number. Throws TooManyLinesError, having called `each` no more
 * than `maxLines` times, once the body holds more lines than that.
 */
export function eachLine(text: string, maxLines: number, each: (line: string, lineNo: number) => void): void {
  let start = 0;
  let lineNo = 0;
  let seen = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNo++;
    let raw = text.slice(start, end);
    start = end + 1;
    if (raw.endsWith('\r')) raw = raw.slice(0, -1);
    const first = raw.charCodeAt(0);
    const trimmed = first === SPACE || first === TAB ? raw.replace(/^[ \t]+/, '') : raw;
    if (trimmed === '' || trimmed.charCodeAt(0) === HASH || trimmed.trim() === '') continue;
    if (seen++ >= maxLines) throw new TooManyLinesError(maxLines);
    each(trimmed, lineNo);
    if (end === text.length) break;
  }
}

/** A line's point, or its error (naming the line). */
export function parseLineOrError(s: string, line: number): Point | LineError {
  try {
    return parseLine(s, line);
  } catch (err) {
    if (!(err instanceof LineSyntaxError)) throw err;
    return { line, message: `line ${line}: ${err.message}` };
  }
}

/**
 * Parse a request body: every good line's point, and an error for every bad
 * one. Throws TooManyLinesError, having built no more than `maxLines`
 * points, once the body holds more lines than that.
 */
export function parseLineProtocol(text: string, maxLines = Infinity): ParsedLines {
  const points: Point[] = [];
  const errors: LineError[] = [];
  eachLine(text, maxLines, (s, line) => {
    const parsed = parseLineOrError(s, line);
    if ('measurement' in parsed) points.push(parsed);
    else errors.push(parsed);
  });
  return { points, errors };
}

/** One line (no newline); throws on a syntax error. */
export function parseLine(s: string, line = 1): Point {
  let i = 0;
  const fail = (message: string): never => {
    throw new LineSyntaxError(message);
  };

  /** Scan to the first unescaped comma or space, or equals sign with `orEquals` (or the end); returns the raw slice. */
  const scan = (orEquals: boolean): string => {
    const from = i;
    while (i < s.length) {
      const c = s.charCodeAt(i);
      if (c === BACKSLASH && i + 1 < s.length) {
        i += 2;
        continue;
      }
      if (c === COMMA || c === SPACE || (orEquals && c === EQUALS)) break;
      i++;
    }
    return s.slice(from, i);
  };

  const measurement = unescape(scan(false), ', ');
  if (measurement === '') fail('missing measurement name');

  const tags: [string, string][] = [];
  while (s[i] === ',') {
    i++;
    const key = unescape(scan(true), ',= ');
    if (s[i] !== '=') fail(key === '' ? 'empty tag key' : `tag '${key}' has no value (expected ${key}=value)`);
    if (key === '') fail('empty tag key');
    i++;
    const value = unescape(scan(false), ',= ');
    if (value === '') fail(`tag '${key}' has an empty value`);
    // A line has a few tags: a scan is cheaper than a Set per line.
    for (const [k] of tags) if (k === key) fail(`tag '${key}' is given twice`);
    tags.push([key, value]);
  }
  if (s[i] !== ' ') fail(`missing fields (expected a space and then field=value after the ${tags.length ? 'tags' : 'measurement'})`);
  while (s[i] === ' ') i++;

  const fields: [string, FieldValue][] = [];
  for (;;) {
    const key = unescape(scan(true), ',= ');
    if (key === '') fail(i >= s.length && fields.length === 0 ? 'missing fields' : 'empty field key');
    if (s[i] !== '=') fail(`field '${key}' has no value (expected ${key}=value)`);
    i++;
    const value = fieldValue(key);
    // A key given again keeps its first place and takes the last value (a scan: a line has a few fields).
    let at = fields.length;
    for (let f = 0; f < fields.length; f++) if (fields[f]![0] === key) at = f;
    fields[at] = [key, value];
    if (s[i] === ',') {
      i++;
      continue;
    }
    break;
  }

  let timestamp: bigint | undefined;
  if (i < s.length) {
    if (s[i] !== ' ') fail(`unexpected '${s[i]}' after the fields`);
    while (s[i] === ' ') i++;
    const from = i;
    while (i < s.length && s.charCodeAt(i) !== SPACE) i += s.charCodeAt(i) === BACKSLASH && i + 1 < s.length ? 2 : 1;
    const token = s.slice(from, i);
    while (s[i] === ' ' || s[i] === '\t') i++;
    if (i < s.length) fail(`unexpected text after the timestamp: '${s.slice(i, i + 20)}'`);
    if (token !== '') {
      if (!TIMESTAMP_RE.test(token)) fail(`invalid timestamp '${token}' (expected an integer)`);
      timestamp = BigInt(token);
      if (timestamp < INT64_MIN || timestamp > INT64_MAX) fail(`timestamp ${token} is out of the int64 range`);
    }
  }
  return timestamp === undefined ? { line, measurement, tags, fields } : { line, measurement, tags, fields, timestamp };

  function fieldValue(key: string): FieldValue {
    if (s[i] === '"') {
      i++;
      let value = '';
      let from = i;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && (s[i + 1] === '"' || s[i + 1] === '\\')) {
          value += s.slice(from, i) + s[i + 1];
          i += 2;
          from = i;
          continue;
        }
        i++;
      }
      if (i >= s.length) fail(`field '${key}': string value has no closing quote`);
      value += s.slice(from, i);
      i++;
      if (i < s.length && s[i] !== ',' && s[i] !== ' ') fail(`field '${key}': unexpected '${s[i]}' after the closing quote`);
      return { type: 'string', value };
    }
    const from = i;
    while (i < s.length && s[i] !== ',' && s[i] !== ' ') i++;
    const token = s.slice(from, i);
    if (token === '') fail(`field '${key}' has an empty value`);
    // Classified by the last character first: most values are floats.
    const last = token.charCodeAt(token.length - 1);
    if (last !== LOWER_I && last !== LOWER_U && last !== LOWER_E && FLOAT_RE.test(token)) {
      const value = Number(token);
      if (!Number.isFinite(value)) fail(`field '${key}': float ${token} is out of range`);
      return { type: 'float', value };
    }
    if (INTEGER_RE.test(token)) {
      const value = BigInt(token.slice(0, -1).replace(/^\+/, ''));
      if (value < INT64_MIN || value > INT64_MAX) fail(`field '${key}': integer ${token} is out of the int64 range`);
      return { type: 'integer', value };
    }
    if (UNSIGNED_RE.test(token)) {
      const value = BigInt(token.slice(0, -1));
      if (value > UINT64_MAX) fail(`field '${key}': unsigned ${token} is out of the uint64 range`);
      return { type: 'unsigned', value };
    }
    if (TRUE.has(token)) return { type: 'boolean', value: true };
    if (FALSE.has(token)) return { type: 'boolean', value: false };
    if (FLOAT_RE.test(token)) {
      const value = Number(token);
      if (!Number.isFinite(value)) fail(`field '${key}': float ${token} is out of range`);
      return { type: 'float', value };
    }
    return fail(
      `field '${key}' has an invalid value '${token.length > 40 ? `${token.slice(0, 40)}…` : token}' ` +
        `(expected a float 1.5, an integer 1i, an unsigned 1u, a boolean t/f/true/false or a "string")`,
    );
  }
}

/** Remove the backslash of each escaped char in `special`; other backslashes stay. */
function unescape(raw: string, special: string): string {
  if (!raw.includes('\\')) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '\\' && i + 1 < raw.length && special.includes(raw[i + 1]!)) {
      out += raw[i + 1];
      i++;
    } else {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------- writing (tests, docs)

const escapeWith = (special: string) => (s: string) => s.replace(new RegExp(`[${special.replace(/[\\\]^-]/g, '\\$&')}]`, 'g'), (c) => `\\${c}`);
export const escapeMeasurement = escapeWith(', ');
export const escapeKey = escapeWith(',= ');

/** The line of a point (the inverse of parseLine for points it can represent). */
export function formatLine(p: Omit<Point, 'line'>): string {
  const tags = p.tags.map(([k, v]) => `,${escapeKey(k)}=${escapeKey(v)}`).join('');
  const fields = p.fields
    .map(([k, v]) => {
      const value =
        v.type === 'string'
          ? `"${v.value.replace(/[\\"]/g, (c) => `\\${c}`)}"`
          : v.type === 'integer'
            ? `${v.value}i`
            : v.type === 'unsigned'
              ? `${v.value}u`
              : String(v.value);
      return `${escapeKey(k)}=${value}`;
    })
    .join(',');
  return `${escapeMeasurement(p.measurement)}${tags} ${fields}${p.timestamp === undefined ? '' : ` ${p.timestamp}`}`;
}
