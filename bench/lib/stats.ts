/** Small statistics helpers. All inputs are plain arrays of numbers. */

export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Linear-interpolated quantile (q in [0, 1]); NaN for an empty input. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function max(xs: readonly number[]): number {
  return xs.reduce((m, x) => (x > m ? x : m), Number.NEGATIVE_INFINITY);
}

export function min(xs: readonly number[]): number {
  return xs.reduce((m, x) => (x < m ? x : m), Number.POSITIVE_INFINITY);
}

/** Relative spread (max - min) / median, to show how noisy a measurement was. */
export function spread(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = median(xs);
  return m === 0 ? 0 : (max(xs) - min(xs)) / m;
}
