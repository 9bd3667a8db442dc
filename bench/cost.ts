import type { Row } from '../src/engine/schema.js';
import { decodeBody, tableMutationCodec } from '../src/engine/table/codec.js';
import { layoutOf } from '../src/engine/table/keys.js';
import { Memtable, RowBatch } from '../src/engine/table/memtable.js';
import { encodeEntry, EntryAssembler } from '../src/wal/codec.js';
import { collectGarbage, metricsRows, metricsSchema } from './lib/fixtures.js';
import { metric } from './lib/metric.js';
import type { Metric } from './lib/report.js';
import type { Suite, SuiteContext, SuiteResult } from './lib/suite.js';

/**
 * Where the CPU of one 100-row batch goes, step by step, with no I/O: the
 * steps the runtime adds on top of a raw append (validate and encode the
 * body, in one pass), next to the WAL frame encode and decode that raw
 * appends and the replay ceiling pay too, and the indexing a region does
 * later, off the write and replay paths (decode the queued body, insert
 * its rows into the memtable) when it is queried, flushed or idle. Each step
 * runs over the same batches; the memtable step inserts them round-robin
 * into 4 regions' memtables, which end up about as large as in the insert
 * benchmark.
 */

const ROWS = 100;
const REGIONS = 4;

type Step = 'validate_encode' | 'frame_encode' | 'frame_decode' | 'decode_body' | 'memtable_insert';
const STEPS: readonly { step: Step; name: string; note: string }[] = [
  { step: 'validate_encode', name: 'validate + encode body (preparePuts)', note: 'runtime insert only' },
  { step: 'frame_encode', name: 'encodeEntry (frame + CRC32C)', note: 'raw append pays this too' },
  { step: 'frame_decode', name: 'EntryAssembler.push (CRC32C + frame)', note: 'replay ceiling pays this too' },
  { step: 'decode_body', name: 'decodeBody', note: 'indexing (deferred: query, flush, idle), replayed and written entries' },
  { step: 'memtable_insert', name: 'memtable insert', note: 'indexing (deferred), as decodeBody' },
];

function timeIt(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

export const costSuite: Suite = {
  name: 'cost',
  description: 'CPU per 100-row batch of each step of the insert and replay paths and of indexing (no I/O)',
  async run(ctx: SuiteContext): Promise<SuiteResult> {
    const batches = ctx.options.quick ? 300 : 1000;
    const runs = Math.max(ctx.options.runs, 3);
    const schema = metricsSchema(REGIONS);
    const layout = layoutOf(schema);
    const samples = new Map<Step, number[]>(STEPS.map((s) => [s.step, []]));
    for (let run = -1; run < runs; run++) {
      // Fresh rows each run (unique keys, so every insert is a new key); run -1 warms up.
      const input: Row[][] = Array.from({ length: batches }, (_, b) => metricsRows(b % REGIONS, run + 1, Math.floor(b / REGIONS), ROWS));
      collectGarbage();
      let bodies: Uint8Array[] = [];
      let frames: Uint8Array[][] = [];
      let decoded: RowBatch[] = [];
      const t: Record<Step, number> = {
        validate_encode: timeIt(() => {
          bodies = input.map((rows) => tableMutationCodec.preparePuts(schema, rows).parts[0]!.mutation.body);
        }),
        frame_encode: timeIt(() => {
          frames = bodies.map((body, b) => encodeEntry({ kind: 'data', region: (b % REGIONS) + 1, epoch: 1, body }));
        }),
        frame_decode: timeIt(() => {
          const assembler = new EntryAssembler('cost');
          frames.forEach((records, id) => {
            if (!assembler.push({ id, data: records[0]! })) throw new Error('frame did not decode to an entry');
          });
        }),
        decode_body: timeIt(() => {
          decoded = bodies.map((body) => {
            const out = new RowBatch();
            const { op, rows } = decodeBody(layout, body, out);
            if (op !== 'put' || rows !== ROWS) throw new Error('expected a put of 100 rows');
            return out;
          });
        }),
        memtable_insert: timeIt(() => {
          const mems = Array.from({ length: REGIONS }, () => new Memtable(layout));
          decoded.forEach((batch, b) => mems[b % REGIONS]!.setRows(batch, ROWS, false));
        }),
      };
      if (run >= 0) for (const s of STEPS) samples.get(s.step)!.push((t[s.step] * 1000) / batches);
    }
    const metrics: Metric[] = STEPS.map((s) =>
      metric({
        id: `cost.${s.step}.us_per_batch`,
        suite: 'cost',
        name: `CPU per 100-row batch: ${s.name}`,
        unit: 'µs/batch',
        samples: samples.get(s.step)!,
        note: s.note,
      }),
    );
    const sum = (steps: Step[]) => steps.map((k) => metrics.find((m) => m.id === `cost.${k}.us_per_batch`)!.value).reduce((a, b) => a + b, 0);
    ctx.log(
      `cost: runtime insert CPU ~${sum(['validate_encode', 'frame_encode']).toFixed(0)} µs/batch ` +
        `(raw append ${sum(['frame_encode']).toFixed(0)}), replay ~${sum(['frame_decode']).toFixed(0)} µs/entry (ceiling the same), ` +
        `indexing later ~${sum(['decode_body', 'memtable_insert']).toFixed(0)} µs/entry`,
    );
    return { metrics, details: { batches, rowsPerBatch: ROWS, regions: REGIONS, rowsPerMemtable: (batches * ROWS) / REGIONS } };
  },
};
