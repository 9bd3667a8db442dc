import { describe, expect, it } from 'vitest';
import { decodeMutation, tableMutationCodec } from '../../../src/engine/table/codec.js';
import { validateKeys, validateQuery, validateSchema, type ValidateRowsOptions } from '../../../src/engine/table/validate.js';
import { expectError, metrics } from './helpers.js';

const col = (name: string, type: string, role: string) => ({ name, type, role });
const base = () => ({
  name: 't',
  columns: [col('host', 'string', 'tag'), col('v', 'float64', 'field'), col('ts', 'timestamp', 'time')],
});

describe('validateSchema', () => {
  it('caps columns and partition bounds (issue 14, finding 13), naming the limit', async () => {
    const wide = (n: number) => ({ name: 'wide', columns: [{ name: 'host', type: 'string', role: 'tag' }, { name: 'ts', type: 'timestamp', role: 'time' }, ...Array.from({ length: n - 2 }, (_, i) => ({ name: `f${i}`, type: 'float64', role: 'field' }))] });
    expect(validateSchema(wide(1024)).columns).toHaveLength(1024);
    await expectError(() => validateSchema(wide(1025)), 'INVALID_SCHEMA', /1025 columns, more than the limit of 1024 \(maxColumns\)/);
    await expectError(() => validateSchema(wide(4), { maxColumns: 3, maxPartitionBounds: 1 }), 'INVALID_SCHEMA', /limit of 3/);
    const split = (n: number) => ({ ...metrics, partition: { column: 'host', bounds: Array.from({ length: n }, (_, i) => `h${String(i).padStart(5, '0')}`) } });
    expect(validateSchema(split(1023)).partition?.bounds).toHaveLength(1023);
    await expectError(() => validateSchema(split(1024)), 'INVALID_SCHEMA', /1024 bounds, more than the limit of 1023 \(maxPartitionBounds\)/);
  });

  it('accepts and copies a valid schema', () => {
    const input = JSON.parse(JSON.stringify(metrics));
    const schema = validateSchema(input);
    expect(schema).toEqual(metrics);
    expect(schema).not.toBe(input);
    expect(validateSchema(base())).toEqual(base());
  });

  it('accepts a table without tags: its primary key is the time alone (one series)', () => {
    const input = { name: 'uptime', columns: [col('v', 'float64', 'field'), col('ts', 'timestamp', 'time')] };
    expect(validateSchema(input)).toEqual(input);
  });

  it('accepts tags of every non-float type and empty bounds', () => {
    const input = {
      name: '_T1',
      columns: [col('a', 'int64', 'tag'), col('b', 'bool', 'tag'), col('c', 'timestamp', 'tag'), col('ts', 'timestamp', 'time')],
      partition: { column: 'a', bounds: [] },
    };
    expect(validateSchema(input).partition).toEqual({ column: 'a', bounds: [] });
  });

  const cases: [string, unknown, (string | RegExp)[]][] = [
    ['not an object', 'metrics', [/expected an object/]],
    ['bad table name', { ...base(), name: '1abc' }, ['1abc']],
    ['too long table name', { ...base(), name: 'a'.repeat(129) }, [/must match/]],
    ['unknown top-level key', { ...base(), partiton: {} }, ['"partiton"']],
    ['no columns', { ...base(), columns: [] }, [/columns must be a non-empty array/]],
    ['column not an object', { ...base(), columns: [...base().columns, 'x'] }, ['column 3']],
    ['bad column name', { ...base(), columns: [...base().columns, col('a-b', 'string', 'field')] }, ['column 3', '"a-b"']],
    ['duplicate column', { ...base(), columns: [...base().columns, col('host', 'string', 'field')] }, ['column "host"', /more than once/]],
    ['unknown type', { ...base(), columns: [...base().columns, col('x', 'float', 'field')] }, ['column "x"', '"float"']],
    ['unknown role', { ...base(), columns: [...base().columns, col('x', 'string', 'key')] }, ['column "x"', '"key"']],
    ['unknown column key', { ...base(), columns: [...base().columns, { ...col('x', 'string', 'field'), nullable: true }] }, ['column "x"', '"nullable"']],
    ['no time column', { ...base(), columns: [col('host', 'string', 'tag')] }, [/exactly one column must have role time, found 0/]],
    [
      'two time columns',
      { ...base(), columns: [...base().columns, col('ts2', 'timestamp', 'time')] },
      [/found 2/, '"ts", "ts2"'],
    ],
    ['time column not timestamp', { ...base(), columns: [col('host', 'string', 'tag'), col('ts', 'int64', 'time')] }, ['column "ts"', /timestamp/]],
    ['a column named __proto__', { ...base(), columns: [...base().columns, col('__proto__', 'string', 'field')] }, ['column 3', /is reserved/]],
    ['float tag', { ...base(), columns: [...base().columns, col('f', 'float64', 'tag')] }, ['column "f"', /float64/]],
    ['partition on unknown column', { ...base(), partition: { column: 'nope', bounds: [] } }, ['"nope"']],
    ['partition on a field', { ...base(), partition: { column: 'v', bounds: [] } }, ['partition column "v"', /tag/]],
    ['partition on time', { ...base(), partition: { column: 'ts', bounds: [1] } }, ['partition column "ts"', /tag/]],
    ['bounds not an array', { ...base(), partition: { column: 'host', bounds: 'f' } }, ['partition column "host"', /array/]],
    ['bound of the wrong type', { ...base(), partition: { column: 'host', bounds: ['f', 3] } }, ['partition column "host"', 'bound 1']],
    ['bounds not increasing', { ...base(), partition: { column: 'host', bounds: ['f', 'f'] } }, ['partition column "host"', /strictly increasing/, 'bound 1']],
    ['bounds decreasing', { ...base(), partition: { column: 'host', bounds: ['z', 'f'] } }, [/strictly increasing/]],
    ['unknown partition key', { ...base(), partition: { column: 'host', bounds: [], kind: 'hash' } }, ['"kind"']],
  ];
  for (const [what, input, patterns] of cases) {
    it(`rejects ${what} with INVALID_SCHEMA`, async () => {
      await expectError(() => validateSchema(input), 'INVALID_SCHEMA', ...patterns);
    });
  }

  it('names the table in its messages', async () => {
    await expectError(() => validateSchema({ ...base(), name: 'cpu', columns: [col('v', 'float64', 'field')] }), 'INVALID_SCHEMA', 'table "cpu"');
  });
});

describe('row validation (tableMutationCodec.preparePuts validates as it encodes)', () => {
  const row = { host: 'a', idc: 'x', cpu: 0.5, mem: 10, up: true, ts: 1000 };
  const prepare = (input: unknown, opts?: ValidateRowsOptions) => tableMutationCodec.preparePuts(metrics, input, opts);
  /** The rows a valid input becomes (every body decoded, in partition order), or the error's code, message and details. */
  const outcome = (input: unknown, opts?: ValidateRowsOptions): unknown => {
    try {
      const { count, parts } = prepare(input, opts);
      return { count, parts: parts.map((p) => ({ partition: p.partition, rows: (decodeMutation(metrics, p.mutation.body) as { rows: unknown }).rows })) };
    } catch (err) {
      const e = err as { code: string; message: string; details: unknown };
      return { code: e.code, message: e.message, details: e.details };
    }
  };
  /** Each row object with its keys in reverse order: rows the in-order path passes on to the general one. */
  const reversed = (input: unknown): unknown =>
    Array.isArray(input)
      ? input.map((r) => (r !== null && typeof r === 'object' && Object.getPrototypeOf(r) === Object.prototype ? Object.fromEntries(Object.entries(r).reverse()) : r))
      : input;

  it('encodes rows as values in schema column order, missing fields null, one body per partition', () => {
    expect(outcome([{ ts: 5, up: false, idc: 'y', host: 'b' }, row, { ...row, host: 'g' }])).toEqual({
      count: 3,
      parts: [
        { partition: 0, rows: [['b', 'y', null, null, false, 5], ['a', 'x', 0.5, 10, true, 1000]] },
        { partition: 1, rows: [['g', 'x', 0.5, 10, true, 1000]] },
      ],
    });
    expect(outcome([])).toEqual({ count: 0, parts: [] });
  });

  it('accepts, rejects and encodes a row alike whatever the order of its keys', () => {
    const inputs: unknown[] = [
      [row],
      [row, [1, 2]],
      [row, { ...row, disk: 1 }],
      [{ ...row, cpu: 'bad', disk: 1 }], // an unknown column is reported before a bad value
      [{ disk: 1, ...row }],
      [{ ...row, idc: undefined }],
      [{ ...row, host: null }],
      [row, row, { host: 'a', idc: 'x' }],
      [{ ...row, host: 5 }],
      [{ ...row, cpu: Infinity }],
      [{ ...row, mem: 1.5 }],
      [{ ...row, up: 1 }],
      [{ ...row, ts: -1 }],
      [new Date()],
      [Object.assign(Object.create(null), row)],
      [Object.assign(Object.create(null), row, { x: 1 })],
      [Object.create(row)],
      [{ ...row, cpu: undefined, mem: null }],
      // eslint-disable-next-line no-sparse-arrays
      [row, , row],
      [{ ...row, constructor: 1 }],
      [{ ...row, host: 'é😀\ud800' }],
      [{ ...row, host: 'x'.repeat(300) }],
    ];
    for (const input of inputs) expect(outcome(reversed(input)), JSON.stringify(input)).toEqual(outcome(input));
    for (const input of inputs.filter((i) => !('code' in (outcome(i) as object)))) {
      const bodies = (i: unknown) => prepare(i).parts.map((p) => Buffer.from(p.mutation.body).toString('hex'));
      expect(bodies(reversed(input))).toEqual(bodies(input));
    }
    for (const opts of [{ requireAll: true }]) {
      for (const input of [[{ host: 'a', idc: 'x', cpu: 1, mem: 1, ts: 1 }], [{ ...row, up: undefined }], [{ ...row, up: null }]]) {
        expect(outcome(reversed(input), opts)).toEqual(outcome(input, opts));
      }
    }
  });

  it('ignores inherited enumerable keys as Object.keys does, and reads inherited values as before', () => {
    const proto = Object.prototype as Record<string, unknown>;
    try {
      proto.extra = 1;
      expect(outcome([row])).toEqual(outcome([{ ...row }]));
      expect((outcome([row]) as { count: number }).count).toBe(1);
      proto.cpu = 0.75;
      expect(outcome([{ host: 'a', idc: 'x', ts: 1 }])).toEqual({ count: 1, parts: [{ partition: 0, rows: [['a', 'x', 0.75, null, null, 1]] }] });
    } finally {
      delete proto.extra;
      delete proto.cpu;
    }
  });

  const cases: [string, unknown, (string | RegExp)[]][] = [
    ['a non-array', row, [/rows must be an array/]],
    ['a non-object row', [row, [1, 2]], ['row 1', /expected an object/]],
    ['an unknown column', [row, { ...row, disk: 1 }], ['row 1', 'column "disk"']],
    ['a missing tag', [{ ...row, idc: undefined }], ['row 0', 'column "idc"', /required/]],
    ['a null tag', [{ ...row, host: null }], ['row 0', 'column "host"']],
    ['a missing time', [row, row, { host: 'a', idc: 'x' }], ['row 2', 'column "ts"']],
    ['a non-string string', [{ ...row, host: 5 }], ['row 0', 'column "host"', /string/]],
    ['a non-finite float', [{ ...row, cpu: Infinity }], ['column "cpu"', /finite/]],
    ['NaN', [{ ...row, cpu: NaN }], ['column "cpu"']],
    ['a string float', [{ ...row, cpu: '0.5' }], ['column "cpu"', '"0.5"']],
    ['a fractional int', [{ ...row, mem: 1.5 }], ['column "mem"', /integer/]],
    ['an unsafe int', [{ ...row, mem: 2 ** 53 }], ['column "mem"']],
    ['a non-boolean bool', [{ ...row, up: 1 }], ['column "up"', /boolean/]],
    ['a negative timestamp', [{ ...row, ts: -1 }], ['column "ts"', /non-negative/]],
    ['a date string timestamp', [{ ...row, ts: '2024-01-01' }], ['column "ts"']],
    ['a class instance', [new Date()], ['row 0']],
  ];
  for (const [what, input, patterns] of cases) {
    it(`rejects ${what} with INVALID_ROW`, async () => {
      await expectError(() => prepare(input), 'INVALID_ROW', 'table "system_metrics"', ...patterns);
    });
  }

  it('with requireAll, rejects a missing field but accepts an explicit null', async () => {
    await expectError(() => prepare([{ host: 'a', idc: 'x', cpu: 1, mem: 1, ts: 1 }], { requireAll: true }), 'INVALID_ROW', 'row 0', 'column "up"');
    expect(outcome([{ ...row, up: null }], { requireAll: true })).toEqual({ count: 1, parts: [{ partition: 0, rows: [['a', 'x', 0.5, 10, null, 1000]] }] });
  });
});

describe('validateKeys', () => {
  it('keeps exactly the primary key columns', () => {
    expect(validateKeys(metrics, [{ host: 'a', idc: 'x', ts: 5 }])).toEqual([{ host: 'a', idc: 'x', ts: 5 }]);
  });

  const cases: [string, unknown, (string | RegExp)[]][] = [
    ['a non-array', {}, [/keys must be an array/]],
    ['a field column', [{ host: 'a', idc: 'x', ts: 5, cpu: 1 }], ['key 0', 'field column "cpu"']],
    ['an unknown column', [{ host: 'a', idc: 'x', ts: 5, zone: 1 }], ['key 0', 'column "zone"']],
    ['a missing tag', [{ host: 'a', idc: 'x', ts: 5 }, { host: 'a', ts: 5 }], ['key 1', 'column "idc"']],
    ['a missing time', [{ host: 'a', idc: 'x' }], ['key 0', 'column "ts"']],
    ['a mistyped value', [{ host: 'a', idc: 'x', ts: 'now' }], ['key 0', 'column "ts"']],
  ];
  for (const [what, input, patterns] of cases) {
    it(`rejects ${what} with INVALID_ROW`, async () => {
      await expectError(() => validateKeys(metrics, input), 'INVALID_ROW', ...patterns);
    });
  }
});

describe('validateQuery', () => {
  it('accepts equality, range conditions, timeRange, columns and limit', () => {
    const q = {
      where: { host: 'a', idc: { gte: 'b', lt: 'c' }, ts: { gt: 5 } },
      timeRange: { from: 0, to: 100 },
      columns: ['ts', 'cpu'],
      limit: 3,
    };
    expect(validateQuery(metrics, q)).toEqual(q);
    expect(validateQuery(metrics, {})).toEqual({});
    expect(validateQuery(metrics, undefined)).toEqual({});
  });

  const cases: [string, unknown, (string | RegExp)[]][] = [
    ['a non-object', [], [/expected an object/]],
    ['an unknown key', { orderBy: 'ts' }, ['"orderBy"']],
    ['where on an unknown column', { where: { zone: 'a' } }, ['column "zone"']],
    ['where on a field', { where: { cpu: 1 } }, ['column "cpu"', /field/]],
    ['a mistyped equality', { where: { host: 1 } }, ['column "host"', /string/]],
    ['a null equality', { where: { host: null } }, ['column "host"']],
    ['a mistyped range bound', { where: { ts: { gt: 'yesterday' } } }, ['column "ts"', 'gt']],
    ['an unknown operator', { where: { host: { like: 'a%' } } }, ['column "host"', '"like"']],
    ['an empty condition', { where: { host: {} } }, ['column "host"', /empty/]],
    ['a non-object where', { where: 'host = a' }, [/where must be an object/]],
    ['a non-numeric timeRange', { timeRange: { from: '0' } }, ['timeRange.from']],
    ['an unknown timeRange key', { timeRange: { until: 5 } }, ['"until"']],
    ['an unknown projected column', { columns: ['host', 'disk'] }, ['"disk"']],
    ['a duplicated projected column', { columns: ['host', 'host'] }, ['"host"', /twice/]],
    ['empty columns', { columns: [] }, [/non-empty/]],
    ['a zero limit', { limit: 0 }, ['limit', '0']],
    ['a fractional limit', { limit: 1.5 }, ['limit']],
  ];
  for (const [what, input, patterns] of cases) {
    it(`rejects ${what} with INVALID_QUERY`, async () => {
      await expectError(() => validateQuery(metrics, input), 'INVALID_QUERY', 'table "system_metrics"', ...patterns);
    });
  }
});
