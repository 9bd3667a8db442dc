import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatLine, parseLine, parseLineProtocol, type FieldValue, type Point } from '../../../src/api/line-protocol.js';

const ok = (line: string) => parseLine(line, 1);
const error = (text: string) => parseLineProtocol(text).errors.map((e) => e.message);

describe('line protocol parser', () => {
  it('parses measurement, tags, every field type and the timestamp', () => {
    expect(ok('cpu,host=h1,idc=a usage=1.5,count=3i,big=18446744073709551615u,up=t,name="x y",neg=-2e3 1667446797450000000')).toEqual({
      line: 1,
      measurement: 'cpu',
      tags: [
        ['host', 'h1'],
        ['idc', 'a'],
      ],
      fields: [
        ['usage', { type: 'float', value: 1.5 }],
        ['count', { type: 'integer', value: 3n }],
        ['big', { type: 'unsigned', value: 18446744073709551615n }],
        ['up', { type: 'boolean', value: true }],
        ['name', { type: 'string', value: 'x y' }],
        ['neg', { type: 'float', value: -2000 }],
      ],
      timestamp: 1667446797450000000n,
    });
    expect(ok('m v=1').fields).toEqual([['v', { type: 'float', value: 1 }]]);
    expect(ok('m v=1').timestamp).toBeUndefined();
    expect(ok('m v=-1i -5').timestamp).toBe(-5n);
    for (const t of ['t', 'T', 'true', 'True', 'TRUE']) expect(ok(`m b=${t}`).fields[0]![1]).toEqual({ type: 'boolean', value: true });
    for (const f of ['f', 'F', 'false', 'False', 'FALSE']) expect(ok(`m b=${f}`).fields[0]![1]).toEqual({ type: 'boolean', value: false });
    for (const x of ['1.', '.5', '+1', '1e+21', '-0']) expect(ok(`m v=${x}`).fields[0]![1].type).toBe('float');
  });

  it('follows the escaping rules', () => {
    // Measurement: comma and space.
    expect(ok('my\\ cpu\\,x,t=1 v=1').measurement).toBe('my cpu,x');
    expect(ok('a=b v=1').measurement).toBe('a=b');
    // Tag keys, tag values, field keys: comma, equals sign and space.
    expect(ok('m,k\\ 1\\=\\,=v\\ 1\\,\\=x f\\ 1\\==1').tags).toEqual([['k 1=,', 'v 1,=x']]);
    expect(ok('m,k\\ 1\\=\\,=v f\\ 1\\==1').fields[0]![0]).toBe('f 1=');
    // An unescaped equals sign in a tag value is kept.
    expect(ok('m,k=a=b v=1').tags).toEqual([['k', 'a=b']]);
    // Strings: quote and backslash escaped; commas, spaces and equals signs as they are.
    expect(ok('m s="a \\"b\\" c\\\\d, e=f"').fields[0]![1]).toEqual({ type: 'string', value: 'a "b" c\\d, e=f' });
    // Any other backslash stays.
    expect(ok('m,k=a\\b s="x\\ny"').tags[0]![1]).toBe('a\\b');
    expect(ok('m,k=a\\b s="x\\ny"').fields[0]![1]).toEqual({ type: 'string', value: 'x\\ny' });
  });

  it('skips blank and comment lines, numbers lines from 1, drops \\r', () => {
    const { points, errors } = parseLineProtocol('# header\n\ncpu v=1\r\n   \nmem v=2\n');
    expect(errors).toEqual([]);
    expect(points.map((p) => [p.line, p.measurement])).toEqual([
      [3, 'cpu'],
      [5, 'mem'],
    ]);
  });

  it('names the line and the problem', () => {
    expect(error('ok v=1\ncpu')).toEqual(['line 2: missing fields (expected a space and then field=value after the measurement)']);
    expect(error('cpu,host v=1')[0]).toBe("line 1: tag 'host' has no value (expected host=value)");
    expect(error('cpu,host= v=1')[0]).toBe("line 1: tag 'host' has an empty value");
    expect(error('cpu,=x v=1')[0]).toBe('line 1: empty tag key');
    expect(error('cpu,a=1,a=2 v=1')[0]).toBe("line 1: tag 'a' is given twice");
    expect(error(',a=1 v=1')[0]).toBe('line 1: missing measurement name');
    expect(error('cpu v')[0]).toBe("line 1: field 'v' has no value (expected v=value)");
    expect(error('cpu v=')[0]).toBe("line 1: field 'v' has an empty value");
    expect(error('cpu v=abc')[0]).toMatch(/^line 1: field 'v' has an invalid value 'abc' \(expected a float/);
    expect(error('cpu v=NaN')[0]).toMatch(/invalid value 'NaN'/);
    expect(error('cpu v=1e999')[0]).toBe("line 1: field 'v': float 1e999 is out of range");
    expect(error('cpu v=9223372036854775808i')[0]).toBe("line 1: field 'v': integer 9223372036854775808i is out of the int64 range");
    expect(error('cpu v=-1u')[0]).toMatch(/invalid value '-1u'/);
    expect(error('cpu v="abc')[0]).toBe("line 1: field 'v': string value has no closing quote");
    expect(error('cpu v="a"b')[0]).toBe("line 1: field 'v': unexpected 'b' after the closing quote");
    expect(error('cpu v=1 12x')[0]).toBe("line 1: invalid timestamp '12x' (expected an integer)");
    expect(error('cpu v=1 1 2')[0]).toBe("line 1: unexpected text after the timestamp: '2'");
    expect(error('cpu v=1,')[0]).toBe('line 1: empty field key');
    // Bad lines do not stop the good ones.
    const parsed = parseLineProtocol('a v=1\nb v=\nc v=3');
    expect(parsed.points.map((p) => p.line)).toEqual([1, 3]);
    expect(parsed.errors.map((e) => e.line)).toEqual([2]);
  });

  // ---- properties: any point (that line protocol can represent) survives format -> parse.

  // Keys and tag values: no backslashes (a trailing one cannot be escaped) and no newlines.
  const name = fc.string({ minLength: 1, maxLength: 12, unit: fc.constantFrom('a', 'Z', '0', '_', ',', '=', ' ', '"', 'é', '#', '-') });
  const measurement = name.filter((s) => !s.startsWith('#') && !s.startsWith(' '));
  const fieldValue: fc.Arbitrary<FieldValue> = fc.oneof(
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((value) => ({ type: 'float' as const, value: Object.is(value, -0) ? 0 : value })),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((value) => ({ type: 'integer' as const, value })),
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((value) => ({ type: 'unsigned' as const, value })),
    fc.boolean().map((value) => ({ type: 'boolean' as const, value })),
    fc.string({ maxLength: 20, unit: fc.constantFrom('a', ' ', ',', '=', '"', '\\', 'ü', '\t') }).map((value) => ({ type: 'string' as const, value })),
  );
  const point: fc.Arbitrary<Omit<Point, 'line'>> = fc.record(
    {
      measurement,
      tags: fc.uniqueArray(fc.tuple(name, name), { maxLength: 4, selector: ([k]) => k }),
      fields: fc.uniqueArray(fc.tuple(name, fieldValue), { minLength: 1, maxLength: 4, selector: ([k]) => k }),
      timestamp: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    },
    { requiredKeys: ['measurement', 'tags', 'fields'] },
  );

  it('property: format then parse gives the point back', () => {
    fc.assert(
      fc.property(point, (p) => {
        expect(parseLine(formatLine(p), 1)).toEqual({ line: 1, ...p });
      }),
      { numRuns: 500 },
    );
  });

  it('property: many points in one body, line numbers preserved, never a throw on garbage', () => {
    fc.assert(
      fc.property(fc.array(point, { maxLength: 20 }), (points) => {
        const parsed = parseLineProtocol(points.map(formatLine).join('\n'));
        expect(parsed.errors).toEqual([]);
        expect(parsed.points).toEqual(points.map((p, i) => ({ line: i + 1, ...p })));
      }),
      { numRuns: 100 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (text) => {
        const parsed = parseLineProtocol(text);
        for (const e of parsed.errors) expect(e.message).toMatch(new RegExp(`^line ${e.line}: `));
      }),
      { numRuns: 500 },
    );
  });
});
