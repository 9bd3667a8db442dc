import type { ColumnarRows } from '../engine/schema.js';

/** Characters of JSON per chunk a streamed result is written in. */
const CHUNK_CHARS = 64 * 1024;

/** Distinct strings per column whose JSON is remembered: tags repeat in every row of their series. */
const REMEMBERED_STRINGS = 4096;

/**
 * `{"rows":[...]}` of a columnar result, as JSON.stringify would write it
 * for its rows as objects (keys in column order, undefined values left
 * out), in chunks of about CHUNK_CHARS: no string of the whole answer is
 * ever made, so a result past V8's string length limit (about 512 MiB) is
 * sent rather than failing with "Invalid string length", and none of the
 * row objects exists at once. Numbers are written by numberJson and a
 * string's JSON is computed once per column: JSON.stringify per value was
 * half the time of a 1,800-row answer.
 */
export function* jsonRowChunks(result: ColumnarRows): Generator<string> {
  const { columns, data } = result;
  const keys = columns.map((name) => `${JSON.stringify(name)}:`);
  const strings = columns.map(() => new Map<string, string>());
  const n = data.length === 0 ? 0 : data[0]!.length;
  let parts: string[] = ['{"rows":['];
  let chars = 0;
  for (let r = 0; r < n; r++) {
    let row = r === 0 ? '{' : ',{';
    let first = true;
    for (let c = 0; c < columns.length; c++) {
      const v = data[c]![r];
      let value: string;
      if (typeof v === 'number') value = numberJson(v);
      else if (typeof v === 'string') {
        const known = strings[c]!;
        const remembered = known.get(v);
        if (remembered !== undefined) value = remembered;
        else {
          value = JSON.stringify(v);
          if (known.size < REMEMBERED_STRINGS) known.set(v, value);
        }
      } else if (v === undefined) continue;
      else value = JSON.stringify(v);
      row += first ? keys[c]! + value : `,${keys[c]!}${value}`;
      first = false;
    }
    row += '}';
    parts.push(row);
    chars += row.length;
    if (chars >= CHUNK_CHARS) {
      yield parts.join('');
      parts = [];
      chars = 0;
    }
  }
  parts.push(']}');
  yield parts.join('');
}

/**
 * A number as JSON writes it. One with at most two decimals (a reading
 * rounded to hundredths, as most gauges are) is written from the integer
 * 100 v, about twice as fast as String(v): below 1e15 that integer has at
 * most 15 digits, so v is the only double such a decimal names and that
 * decimal, trailing zero dropped, is the shortest form String would give.
 */
function numberJson(v: number): string {
  if (Number.isInteger(v)) return String(v);
  if (!Number.isFinite(v)) return 'null';
  const k = Math.round(v * 100);
  if (k / 100 !== v || k >= 1e15 || k <= -1e15) return String(v);
  const a = k < 0 ? -k : k;
  const frac = a % 100;
  const int = (a - frac) / 100;
  const s = frac % 10 === 0 ? `${int}.${frac / 10}` : `${int}.${frac < 10 ? '0' : ''}${frac}`;
  return k < 0 ? `-${s}` : s;
}

/** Results of more rows than this are streamed in chunks; smaller ones are sent whole, with a Content-Length. */
export const STREAMED_RESULT_ROWS = 4096;
