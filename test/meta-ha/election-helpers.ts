import { connect, type NatsConnection } from 'nats';
import { ElectionTestHooks, MetaElection, type DeposedEvent, type ElectedEvent, type MetaElectionOptions } from '../../src/meta/meta-election.js';
import { prng } from '../../bench/lib/cpu-lines.js';
import type { TestNatsCluster } from '../harness/nats-cluster.js';

const debug = process.env['ELECTION_DEBUG'] !== undefined;
const print = (obj: object, msg: string) => console.log(`${performance.now().toFixed(1)} ${msg} ${JSON.stringify(obj)}`);
/** Silent, or everything on stdout with ELECTION_DEBUG set. */
export const quiet = debug ? { info: print, warn: print, error: print } : { info() {}, warn() {}, error() {} };

export interface Candidate {
  readonly id: string;
  readonly nc: NatsConnection;
  readonly election: MetaElection;
  readonly hooks: ElectionTestHooks;
  readonly elected: ElectedEvent[];
  readonly deposed: DeposedEvent[];
}

export interface ElectionLog {
  /** Every elected event of every candidate, in the order they happened. */
  readonly elected: (ElectedEvent & { id: string })[];
  readonly deposed: (DeposedEvent & { id: string })[];
}

/**
 * Candidates on one bucket, each with its own connection (preferring server
 * i mod N, so they spread over the cluster), and a log of every event.
 */
export class Candidates {
  readonly all: Candidate[] = [];
  readonly log: ElectionLog = { elected: [], deposed: [] };
  private monitor: ReturnType<typeof setInterval> | undefined;
  /** Instants at which two candidates both held a valid lease. */
  readonly overlaps: string[] = [];
  samples = 0;

  constructor(
    private readonly cluster: TestNatsCluster,
    readonly bucket: string,
    private readonly defaults: Partial<MetaElectionOptions> = {},
  ) {}

  async add(id: string, options: Partial<MetaElectionOptions> = {}): Promise<Candidate> {
    const urls = this.cluster.urls;
    const first = this.all.length % urls.length;
    const nc = await connect({
      servers: [...urls.slice(first), ...urls.slice(0, first)],
      noRandomize: true,
      reconnectTimeWait: 100,
      reconnectJitter: 50,
      maxReconnectAttempts: -1,
      pingInterval: 1000,
      maxPingOut: 2,
      name: id,
    });
    const hooks = new ElectionTestHooks();
    const elected: ElectedEvent[] = [];
    const deposed: DeposedEvent[] = [];
    const election = await MetaElection.start({
      nc,
      bucket: this.bucket,
      candidateId: id,
      leaseMs: 1000,
      renewMs: 200,
      logger: quiet,
      testHooks: hooks,
      on: {
        elected: (e) => {
          elected.push(e);
          this.log.elected.push({ ...e, id });
        },
        deposed: (e) => {
          deposed.push(e);
          this.log.deposed.push({ ...e, id });
        },
      },
      ...this.defaults,
      ...options,
    });
    const candidate: Candidate = { id, nc, election, hooks, elected, deposed };
    this.all.push(candidate);
    return candidate;
  }

  leaders(): Candidate[] {
    return this.all.filter((c) => c.election.isLeader());
  }

  /** Sample every few ms: two candidates with a valid lease at one instant is an overlap. */
  startMonitor(everyMs = 2): void {
    this.monitor = setInterval(() => {
      this.samples++;
      const leading = this.all.filter((c) => c.election.isLeader() && c.election.leaseValidFor() > 0);
      if (leading.length > 1) this.overlaps.push(`${performance.now().toFixed(1)}: ${leading.map((c) => `${c.id}@${c.election.epoch()}`).join(', ')}`);
    }, everyMs);
  }

  /** Epochs of elected events in the order they happened: must strictly increase. */
  electedEpochs(): number[] {
    return [...this.log.elected].sort((a, b) => a.at - b.at).map((e) => e.epoch);
  }

  async close(): Promise<void> {
    clearInterval(this.monitor);
    for (const c of this.all) {
      c.hooks.thaw();
      await c.election.close({ resign: false }).catch(() => {});
      await c.nc.close().catch(() => {});
    }
  }
}

export function strictlyIncreasing(xs: readonly number[]): boolean {
  return xs.every((x, i) => i === 0 || x > xs[i - 1]!);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A seeded PRNG, so a failing schedule can be replayed (the simulation's). */
export { prng };
