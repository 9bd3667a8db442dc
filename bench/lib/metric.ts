import type { Metric } from './report.js';
import { median } from './stats.js';

export interface MetricSpec {
  readonly id: string;
  readonly suite: string;
  readonly name: string;
  readonly unit: string;
  readonly samples: readonly number[];
  /** Reference samples measured in the same runs (paired by index) and the reference's name. */
  readonly versus?: { readonly of: string; readonly samples: readonly number[]; readonly target?: number; readonly lowerIsBetter?: boolean };
  readonly note?: string;
}

/** The median of the samples and, when a reference is given, the median of the paired ratios. */
export function metric(spec: MetricSpec): Metric {
  const { versus } = spec;
  let ratio: Metric['ratio'];
  if (versus) {
    const n = Math.min(spec.samples.length, versus.samples.length);
    const ratios: number[] = [];
    for (let i = 0; i < n; i++) {
      ratios.push(versus.lowerIsBetter ? versus.samples[i]! / spec.samples[i]! : spec.samples[i]! / versus.samples[i]!);
    }
    ratio = {
      of: versus.of,
      value: median(ratios),
      samples: ratios,
      ...(versus.target !== undefined ? { target: versus.target } : {}),
    };
  }
  return {
    id: spec.id,
    suite: spec.suite,
    name: spec.name,
    value: median(spec.samples),
    unit: spec.unit,
    samples: [...spec.samples],
    ...(ratio ? { ratio } : {}),
    ...(spec.note !== undefined ? { note: spec.note } : {}),
  };
}
