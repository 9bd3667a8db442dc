import type { ColumnarRows } from '../engine/schema.js';

/** Characters of JSON per chunk a streamed result is written in. */
const CHUNK_CHARS = 64 * 1024;

/**
 * `{"rows":[...]}` of a columnar result, as JSON.stringify would write it
 * for its rows as objects (keys in column order, undefined values left
 * out), in chunks of about CHUNK_CHARS: no string of the whole answer is
 * ever made, so a result past V8's string length limit (about 512 MiB) is
 * sent rather than failing with "Invalid string length", and none of the
 * row objects exists at once.
 */
export function* jsonRowChunks(result: ColumnarRows): Generator<string> {
  const { columns, data } = result;
  const keys = columns.map((name) => `${JSON.stringify(name)}:`);
  const n = data.length === 0 ? 0 : data[0]!.length;
  let chunk = '{"rows":[';
  for (let r = 0; r < n; r++) {
    let row = r === 0 ? '{' : ',{';
    let first = true;
    for (let c = 0; c < columns.length; c++) {
      const value = JSON.stringify(data[c]![r]);
      if (value === undefined) continue;
      row += first ? keys[c]! + value : `,${keys[c]!}${value}`;
      first = false;
    }
    chunk += `${row}}`;
    if (chunk.length >= CHUNK_CHARS) {
      yield chunk;
      chunk = '';
    }
  }
  yield `${chunk}]}`;
}

/** Results of more rows than this are streamed in chunks; smaller ones are sent whole, with a Content-Length. */
export const STREAMED_RESULT_ROWS = 4096;
