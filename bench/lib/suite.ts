import type { Metric } from './report.js';

export interface BenchOptions {
  readonly quick: boolean;
  /** Repetitions of each measurement (the median is reported). */
  readonly runs: number;
  /** Duration of one timed insert-throughput run, ms. */
  readonly insertMs: number;
  /** Sequential single-row inserts per latency run. */
  readonly latencyOps: number;
  /** Data entries in the replay log with 100-row entries. */
  readonly replayEntries: number;
  /** Data entries in the replay log with 1-row entries. */
  readonly replaySmallEntries: number;
  /** peer: series loaded into both systems (5 per host). */
  readonly peerSeries: number;
  /** peer: points per series, 10 s apart. */
  readonly peerPoints: number;
  /** peer: timed runs of each query shape per system. */
  readonly peerRuns: number;
  /** peer: rows of each ingest run (one fresh server per system and client count; 0 skips the ingest phase). */
  readonly peerIngestRows: number;
  /** peer: rounds of the ingest runs (each system, each client count), medians reported. */
  readonly peerIngestRounds: number;
  /** objects: rows flushed at once over 4 regions. */
  readonly objectsRows: number;
  /** objects: rows of the region scanned and opened on promotion (4 SSTs). */
  readonly objectsScanRows: number;
}

export interface SuiteContext {
  readonly options: BenchOptions;
  /** Progress lines to stderr (the table goes to stdout). */
  log(message: string): void;
}

export interface SuiteResult {
  readonly metrics: Metric[];
  /** Anything else worth keeping in the JSON (per-run details, sizes). */
  readonly details: Record<string, unknown>;
  /** Extra tables printed after the main one (e.g. a side-by-side comparison). */
  readonly tables?: readonly string[];
}

export interface Suite {
  readonly name: string;
  readonly description: string;
  /** Runs only when named in --only (slow, or needs software installed beside reprise). */
  readonly optIn?: boolean;
  run(ctx: SuiteContext): Promise<SuiteResult>;
}
