import { Decoder, encode } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TableSchema } from '../../../src/engine/schema.js';
import { decodeMutation, tableMutationCodec } from '../../../src/engine/table/codec.js';
import { compareValues, layoutOf, rowKeyComparator, toValues } from '../../../src/engine/table/keys.js';
import { deleteBody, expectError, metrics, putBody } from './helpers.js';

describe('primary key order', () => {
  it('orders values: null first, numbers numerically, strings by code unit, false < true', () => {
    expect(compareValues(null, 'a')).toBeLessThan(0);
    expect(compareValues('a', null)).toBeGreaterThan(0);
    expect(compareValues(null, null)).toBe(0);
    expect(compareValues(2, 10)).toBeLessThan(0);
    expect(compareValues('10', '2')).toBeLessThan(0);
    expect(compareValues('Z', 'a')).toBeLessThan(0);
    expect(compareValues('\uffff', '\u{1f600}')).toBeGreaterThan(0); // code units, not code points
    expect(compareValues(false, true)).toBeLessThan(0);
  });

  it('compares by tags in schema order, then time, ignoring fields', () => {
    const schema: TableSchema = {
      name: 't',
      columns: [
        { name: 'v', type: 'float64', role: 'field' },
        { name: 'ts', type: 'timestamp', role: 'time' },
        { name: 'b', type: 'int64', role: 'tag' },
        { name: 'a', type: 'string', role: 'tag' },
      ],
    };
    const layout = layoutOf(schema);
    expect(layout.keyIdx).toEqual([2, 3, 1]);
    const rows = [
      { v: 1, ts: 5, b: 2, a: 'x' },
      { v: 2, ts: 1, b: 2, a: 'x' },
      { v: 3, ts: 9, b: 1, a: 'z' },
      { v: 4, ts: 0, b: 2, a: 'a' },
    ];
    const sorted = rows.map((r) => toValues(layout, r)).sort(layout.compare);
    expect(sorted.map((r) => r[0])).toEqual([3, 4, 2, 1]);
    expect(layout.compare(toValues(layout, { v: 1, ts: 5, b: 2, a: 'x' }), toValues(layout, { v: 9, ts: 5, b: 2, a: 'x' }))).toBe(0);
    expect([...rows].sort(rowKeyComparator(schema)).map((r) => r.v)).toEqual([3, 4, 2, 1]);
  });
});

describe('table mutation codec', () => {
  const rows = [
    { host: 'a', idc: 'x', cpu: 0.25, mem: 2 ** 40, up: true, ts: 1_700_000_000_000 },
    { host: 'b', idc: 'y', cpu: null, mem: -3, up: null, ts: 0 },
  ];
  const values = rows.map((r) => toValues(layoutOf(metrics), r));

  it('round-trips puts as column-ordered arrays', () => {
    expect(decodeMutation(metrics, putBody(metrics, rows))).toEqual({ op: 'put', rows: values });
  });

  it('writes the msgpack of { op, rows } and of { op, keys }, one body per partition, and no decoded form', () => {
    const { count, parts } = tableMutationCodec.preparePuts(metrics, rows);
    expect(count).toBe(2);
    expect(parts).toEqual([{ partition: 0, mutation: { body: encode({ op: 'put', rows: values }) } }]);
    expect(tableMutationCodec.prepareDeletes(metrics, [{ host: 'a', idc: 'x', ts: 5 }]).parts).toEqual([
      { partition: 0, mutation: { body: encode({ op: 'delete', keys: [['a', 'x', 5]] }) } },
    ]);
  });

  it('splits a write over partitions in the order of their first rows, each keeping its rows in order', () => {
    const hosts = ['g', 'a', 'zz', 'h', 'b', 'z'];
    const input = hosts.map((host, i) => ({ ...rows[0], host, ts: i }));
    const byPartition = (p: number) => input.filter((r) => (r.host < 'f' ? 0 : r.host < 'z' ? 1 : 2) === p).map((r) => toValues(layoutOf(metrics), r));
    const { count, parts } = tableMutationCodec.preparePuts(metrics, input);
    expect(count).toBe(6);
    expect(parts.map((p) => p.partition)).toEqual([1, 0, 2]);
    for (const { partition, mutation } of parts) expect(mutation.body).toEqual(encode({ op: 'put', rows: byPartition(partition) }));
    const keys = input.map(({ host, idc, ts }) => ({ host, idc, ts }));
    const deletes = tableMutationCodec.prepareDeletes(metrics, keys);
    expect(deletes.count).toBe(6);
    expect(deletes.parts.map((p) => [p.partition, decodeMutation(metrics, p.mutation.body)])).toEqual(
      [1, 0, 2].map((p) => [p, { op: 'delete', keys: byPartition(p).map((r) => [r[0], r[1], null, null, null, r[5]]) }]),
    );
  });

  it('round-trips deletes as tombstone rows', () => {
    expect(decodeMutation(metrics, deleteBody(metrics, [{ host: 'a', idc: 'x', ts: 5 }]))).toEqual({ op: 'delete', keys: [['a', 'x', null, null, null, 5]] });
  });

  it('is compact: no column names in the body', () => {
    expect(Buffer.from(putBody(metrics, rows)).includes('host')).toBe(false);
  });

  it('decodes bodies written by other msgpack encoders: any key order, ignored keys, wider formats', () => {
    expect(decodeMutation(metrics, encode({ rows: values, op: 'put' }))).toEqual({ op: 'put', rows: values });
    expect(decodeMutation(metrics, encode({ v: [1, { a: 2 }], keys: [['a', 'x', 5]], op: 'delete', rows: 'ignored' }))).toEqual({
      op: 'delete',
      keys: [['a', 'x', null, null, null, 5]],
    });
    // { op: 'put', rows: [['ab', 'x', 1.5 (float32), 7 (int64), false, 5 (uint64)]] } in non-minimal formats, with a map16 and array16s.
    const wide = Uint8Array.from([
      0xde, 0x00, 0x02, 0xd9, 0x02, ...Buffer.from('op'), 0xda, 0x00, 0x03, ...Buffer.from('put'), 0xa4, ...Buffer.from('rows'),
      0xdc, 0x00, 0x01, 0xdd, 0x00, 0x00, 0x00, 0x06, 0xdb, 0x00, 0x00, 0x00, 0x02, ...Buffer.from('ab'), 0xa1, 0x78,
      0xca, 0x3f, 0xc0, 0x00, 0x00, 0xd3, 0, 0, 0, 0, 0, 0, 0, 7, 0xc2, 0xcf, 0, 0, 0, 0, 0, 0, 0, 5,
    ]);
    expect(decodeMutation(metrics, wide)).toEqual({ op: 'put', rows: [['ab', 'x', 1.5, 7, false, 5]] });
  });

  it('decodes what @msgpack/msgpack encodes, values at every format boundary (property)', () => {
    const str = fc.string({ unit: 'binary', maxLength: 300 });
    const row = fc.tuple(
      str,
      str,
      fc.option(fc.double({ noNaN: true, noDefaultInfinity: true }), { nil: null }),
      fc.option(fc.maxSafeInteger(), { nil: null }),
      fc.option(fc.boolean(), { nil: null }),
      fc.maxSafeNat(),
    );
    fc.assert(
      fc.property(fc.array(row, { maxLength: 20 }), (rs) => {
        const expected = new Decoder().decode(encode({ op: 'put', rows: rs }));
        expect(decodeMutation(metrics, encode({ op: 'put', rows: rs }))).toEqual(expected);
      }),
    );
  });

  const bad: [string, Uint8Array][] = [
    ['garbage', new Uint8Array([0xc1, 0xff, 0x00])],
    ['a non-map', encode([1, 2])],
    ['an unknown op', encode({ op: 'upsert', rows: [] })],
    ['a put without rows', encode({ op: 'put' })],
    ['a delete without keys', encode({ op: 'delete', rows: [] })],
    ['a row of the wrong width', encode({ op: 'put', rows: [['a', 'x', 1, 1, true]] })],
    ['a mistyped value', encode({ op: 'put', rows: [['a', 'x', 'hot', 1, true, 5]] })],
    ['a null tag', encode({ op: 'put', rows: [[null, 'x', 1, 1, true, 5]] })],
    ['an unsafe integer', encode({ op: 'put', rows: [['a', 'x', 1, 2 ** 60, true, 5]] })],
    ['a bin value', encode({ op: 'put', rows: [['a', 'x', 1, 1, new Uint8Array(2), 5]] })],
    ['a nested array', encode({ op: 'put', rows: [['a', 'x', [1], 1, true, 5]] })],
    ['a key of the wrong width', encode({ op: 'delete', keys: [['a', 5]] })],
    ['a truncated body', putBody(metrics, rows).subarray(0, 10)],
    ['trailing bytes', Uint8Array.from([...putBody(metrics, rows), 0x00])],
  ];
  for (const [what, body] of bad) {
    it(`rejects ${what} with INVALID_ARGUMENT`, async () => {
      await expectError(() => decodeMutation(metrics, body), 'INVALID_ARGUMENT', 'table "system_metrics"');
    });
  }
});
