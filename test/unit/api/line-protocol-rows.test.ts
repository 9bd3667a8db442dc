import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lineAsRow, toRow, type Precision } from '../../../src/api/line-protocol-rows.js';
import { parseLineOrError } from '../../../src/api/line-protocol.js';
import type { TableSchema } from '../../../src/engine/schema.js';

// lineAsRow writes the common line of an existing table straight into its
// row; every other line takes the general path (parseLine, then toRow). It
// must never give a row the general path would not give, byte for byte and
// key for key: lines are generated from pieces that are each valid or not.

const SCHEMA: TableSchema = {
  name: 'cpu',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'dc', type: 'string', role: 'tag' },
    { name: 'usage', type: 'float64', role: 'field' },
    { name: 'count', type: 'int64', role: 'field' },
    { name: 'up', type: 'bool', role: 'field' },
    { name: 'note', type: 'string', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
};
const NOW = 1_767_225_600_123;

/** The general path's row for a line, or undefined where it gives an error. */
function general(line: string, precision: Precision): Record<string, unknown> | undefined {
  const p = parseLineOrError(line, 1);
  if (!('measurement' in p) || p.measurement !== 'cpu') return undefined;
  const row = toRow(p, SCHEMA, precision, NOW);
  return typeof row === 'string' ? undefined : row;
}

const pick = <T>(...xs: T[]) => fc.constantFrom(...xs);
/** Mostly what collectors send, sometimes anything else. */
const often = <T>(usual: fc.Arbitrary<T>, odd: fc.Arbitrary<T>) => fc.oneof({ arbitrary: usual, weight: 6 }, { arbitrary: odd, weight: 1 });
const tagPart = often(
  fc.tuple(pick('host', 'dc'), pick('a', 'h1', 'eu-1', 'b=c', 'é')).map(([k, v]) => `,${k}=${v}`),
  fc.oneof(fc.tuple(pick('zone', 'usage', '', 'host'), pick('x\\ y', '', 'a')).map(([k, v]) => `,${k}=${v}`), pick(',host', ',=a', ',host=a,host=b')),
);
const goodValue = { usage: pick('1', '-1.5', '+2.25', '1e3', '.5', '5.', '1E-2'), count: pick('3i', '-0i', '+7i', '007i', '123456789012345i'), up: pick('t', 'T', 'true', 'FALSE', 'f'), note: pick('"s"', '"a b,c=d"', '""') };
const oddValue = pick('NaN', 'inf', '1e400', '--1', '1234567890123456i', '9007199254740993i', '3u', 'yes', '"q\\"x"', '"back\\\\"', '"open', '', '1', '2i', 't', '"s"');
const fieldPart = often(
  fc.constantFrom(...(Object.keys(goodValue) as (keyof typeof goodValue)[])).chain((k) => goodValue[k].map((v) => `${k}=${v}`)),
  fc.tuple(pick('usage', 'count', 'up', 'note', 'host', 'ts', 'other', ''), oddValue).map(([k, v]) => `${k}=${v}`),
);
const timestamp = often(
  pick('', ' 0', ' 1', ' 999999', ' 1000000', ' 1767225600000', ' 1767225600000000000', ' 9223372036854775807', ' 9007199254740991', ' 9007199254740992'),
  pick(' 9223372036854775808', ' -5', ' 12a', '  5', ' 5 ', ' 5\t', ' 99999999999999999999', ' '),
);
const line = fc
  .tuple(fc.array(tagPart, { maxLength: 3 }), often(pick(' '), pick('  ', ',', '')), fc.array(fieldPart, { minLength: 1, maxLength: 4 }), timestamp)
  .map(([tags, gap, fields, ts]) => `cpu${tags.join('')}${gap}${fields.join(',')}${ts}`);
const precision = pick<Precision>('ns', 'us', 'ms', 's', 'm', 'h');

describe('lineAsRow: the common line written straight into its row', () => {
  it('gives a row only where the general path gives the same row, keys in the same order (property)', () => {
    let direct = 0;
    fc.assert(
      fc.property(line, precision, (text, prec) => {
        const row = lineAsRow(text, 3, SCHEMA, prec, NOW);
        if (row === undefined) return;
        direct++;
        const expected = general(text, prec);
        expect(expected, `the general path refuses '${text}' (${prec}), the direct one gave ${JSON.stringify(row)}`).toBeDefined();
        expect(Object.entries(row)).toEqual(Object.entries(expected!));
        expect(Object.is(row.count, -0)).toBe(false);
      }),
      { numRuns: 5000 },
    );
    // The generator reaches the direct path, not only the general one.
    expect(direct).toBeGreaterThan(200);
  });

  it('takes the lines collectors send', () => {
    const line = 'cpu,host=h1,dc=eu usage=1.5,count=3i,up=true,note="x y" 1767225600000000000';
    expect(lineAsRow(line, 3, SCHEMA, 'ns', NOW)).toEqual({ host: 'h1', dc: 'eu', usage: 1.5, count: 3, up: true, note: 'x y', ts: 1_767_225_600_000 });
    expect(lineAsRow('cpu usage=2', 3, SCHEMA, 'ms', NOW)).toEqual({ host: '', dc: '', usage: 2, count: null, up: null, note: null, ts: NOW });
  });

  it('leaves escapes, repeats, unknown columns and other types to the general path', () => {
    for (const text of ['cpu,host=a\\ b usage=1', 'cpu,host=a,host=b usage=1', 'cpu,zone=a usage=1', 'cpu usage=1,usage=2', 'cpu usage=1u', 'cpu note=1', 'cpu usage=1 -5', 'cpu  usage=1']) {
      expect(lineAsRow(text, 3, SCHEMA, 'ms', NOW), text).toBeUndefined();
    }
  });
});
