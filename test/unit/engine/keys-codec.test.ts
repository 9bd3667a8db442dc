import { encode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import type { TableSchema } from '../../../src/engine/schema.js';
import { decodeMutation, preparePutValues, tableMutationCodec } from '../../../src/engine/table/codec.js';
import { compareValues, layoutOf, rowKeyComparator, toValues } from '../../../src/engine/table/keys.js';
import { expectError, metrics } from './helpers.js';

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

  it('round-trips puts as column-ordered arrays', () => {
    const body = tableMutationCodec.preparePut(metrics, rows).body;
    const m = decodeMutation(metrics, body);
    expect(m).toEqual({ op: 'put', rows: rows.map((r) => toValues(layoutOf(metrics), r)) });
  });

  it('prepares a put from RowValues: its body is the msgpack of { op, rows }, its decoded form the rows themselves', () => {
    const values = rows.map((r) => toValues(layoutOf(metrics), r));
    const prepared = preparePutValues(values);
    expect(prepared.decoded).toEqual({ op: 'put', rows: values });
    expect((prepared.decoded as { rows: unknown }).rows).toBe(values);
    expect(prepared.body).toEqual(encode({ op: 'put', rows: values }));
    expect(decodeMutation(metrics, prepared.body)).toEqual({ op: 'put', rows: values });
    expect(tableMutationCodec.preparePut(metrics, rows).body).toEqual(prepared.body);
    expect(tableMutationCodec.prepareDelete(metrics, [{ host: 'a', idc: 'x', ts: 5 }]).body).toEqual(encode({ op: 'delete', keys: [['a', 'x', 5]] }));
  });

  it('round-trips deletes as tombstone rows', () => {
    const body = tableMutationCodec.prepareDelete(metrics, [{ host: 'a', idc: 'x', ts: 5 }]).body;
    expect(decodeMutation(metrics, body)).toEqual({ op: 'delete', keys: [['a', 'x', null, null, null, 5]] });
  });

  it('is compact: no column names in the body', () => {
    const body = tableMutationCodec.preparePut(metrics, rows).body;
    expect(Buffer.from(body).includes('host')).toBe(false);
  });

  const bad: [string, Uint8Array][] = [
    ['garbage', new Uint8Array([0xc1, 0xff, 0x00])],
    ['a non-map', encode([1, 2])],
    ['an unknown op', encode({ op: 'upsert', rows: [] })],
    ['a put without rows', encode({ op: 'put' })],
    ['a row of the wrong width', encode({ op: 'put', rows: [['a', 'x', 1, 1, true]] })],
    ['a mistyped value', encode({ op: 'put', rows: [['a', 'x', 'hot', 1, true, 5]] })],
    ['a null tag', encode({ op: 'put', rows: [[null, 'x', 1, 1, true, 5]] })],
    ['a key of the wrong width', encode({ op: 'delete', keys: [['a', 5]] })],
    ['a truncated body', tableMutationCodec.preparePut(metrics, rows).body.subarray(0, 10)],
  ];
  for (const [what, body] of bad) {
    it(`rejects ${what} with INVALID_ARGUMENT`, async () => {
      await expectError(() => decodeMutation(metrics, body), 'INVALID_ARGUMENT', 'table "system_metrics"');
    });
  }
});
