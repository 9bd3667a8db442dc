/**
 * Seeded simulation of a whole cluster in one process: three meta replicas
 * (electing their leader on one MemoryElectionStore, each through a link of
 * its own) and N nodes on one InProcessNetwork, all sharing one
 * LocalLogStore as the WAL (each process through a "plug" that a crash
 * pulls) and one object-store directory.
 *
 * A schedule (a list of steps) is generated from a seed; `runSchedule` plays
 * it against a fresh cluster with real time and short timings, lets the
 * cluster settle and runs the checker; then it hands every shard to its hot
 * standby (so the followers' copies, built by reading the log, serve) and
 * checks the reads again. `shrink` looks for the shortest failing schedule
 * (prefixes, then removing single steps).
 *
 * Meta steps pick the leader more often than not: `meta_crash` (plug pulled,
 * election link down, connection gone, objects abandoned), `meta_shutdown`
 * (it resigns: the successor starts at once, within the node leases it
 * granted), `meta_stall` (a paused process: election frozen, appends and
 * messages held, all resumed at once), `meta_partition` (cut off from every
 * process and the election, still reaching the log), `meta_restart` (a
 * replica that is down comes back as a new incarnation). The meta checks
 * (meta-checks.ts): one marker and one elected replica per meta epoch,
 * leases that never overlap, no deposed leader's entry taking effect, and
 * every node's meta replica and the leader's state equal to the log's fold.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeta, type MetaProcess } from '../../src/api/meta-process.js';
import { Reprise } from '../../src/api/runtime.js';
import { RepriseError } from '../../src/errors.js';
import { MemoryElectionStore } from '../../src/meta/election-store.js';
import { ElectionTestHooks } from '../../src/meta/meta-election.js';
import type { ClusterMetaStatus } from '../../src/meta/meta-server.js';
import { metaTopicOf } from '../../src/meta/meta-view.js';
import type { AckObservation, TestFaults, TestHooks } from '../../src/testing/faults.js';
import { InProcessNetwork, type InProcessTransport } from '../../src/transport/in-process.js';
import { FsObjectStore } from '../../src/engine/fs-object-store.js';
import type { ObjectStore } from '../../src/engine/object-store.js';
import { LocalLogStore } from '../../src/wal/local-log-store.js';
import type { LogStore } from '../../src/wal/log-store.js';
import { readEntries } from '../../src/wal/shard-reader.js';
import { prng } from '../../bench/lib/cpu-lines.js';
import { withOverrides } from '../harness/tamper.js';
import { comparableOf, electionViolations, MetaLogReference, type ComparableMeta, type ElectionRecord } from './meta-checks.js';

// ------------------------------------------------------------------ PRNG


export { prng };

// ------------------------------------------------------------------ schedule

/**
 * One step. `pick` (in [0, 1)) chooses among the nodes eligible when the step
 * runs (live ones for most kinds, down ones for restart), so a step keeps a
 * meaning when shrinking removes others.
 */
export type Step =
  | { readonly kind: 'write'; readonly pick: number }
  | { readonly kind: 'read'; readonly pick: number }
  | { readonly kind: 'crash'; readonly pick: number }
  | { readonly kind: 'restart'; readonly pick: number }
  | { readonly kind: 'pause'; readonly pick: number; readonly ms: number }
  | { readonly kind: 'lose'; readonly pick: number }
  | { readonly kind: 'partition'; readonly pick: number; readonly ms: number }
  | { readonly kind: 'stall'; readonly pick: number; readonly ms: number }
  | { readonly kind: 'stale_flush'; readonly pick: number; readonly ms: number }
  | { readonly kind: 'meta_crash'; readonly pick: number }
  | { readonly kind: 'meta_restart'; readonly pick: number }
  | { readonly kind: 'meta_shutdown'; readonly pick: number }
  | { readonly kind: 'meta_stall'; readonly pick: number; readonly ms: number }
  | { readonly kind: 'meta_partition'; readonly pick: number; readonly ms: number }
  | { readonly kind: 'shutdown'; readonly pick: number }
  | { readonly kind: 'migrate'; readonly pick: number; readonly shard: number; readonly to: number }
  | { readonly kind: 'sleep'; readonly ms: number };

export type StepKind = Step['kind'];

const WEIGHTS: [StepKind, number][] = [
  ['write', 30],
  ['read', 8],
  ['crash', 5],
  ['restart', 6],
  ['pause', 5],
  ['lose', 6],
  ['partition', 3],
  // A stalled WAL append (disk or broker) on a node that meta meanwhile
  // declares dead: its append lands after the next leader's epoch marker.
  ['stall', 3],
  // Two leaders of a shard at once: a leader whose flush stalls in the
  // object store while meta moves its shards; the flush lands after the new
  // leaders have flushed (and pruned the log below it).
  ['stale_flush', 2],
  // Meta replicas (the leader more often than not, see LEADER_PICKS): a
  // crash, a clean stop (it resigns: the successor takes over at once, while
  // the leases it granted hold), a stall (a paused process: it wakes deposed,
  // with appends and replies in flight), a partition (it still reaches the
  // log); a replica that is down comes back as a new incarnation.
  ['meta_crash', 3],
  ['meta_restart', 3],
  ['meta_shutdown', 2],
  ['meta_stall', 3],
  ['meta_partition', 2],
  ['shutdown', 3],
  // A migration whose source is then cut off ends when meta declares the
  // source dead (MetaServer.migrate), and failover takes the shard over.
  ['migrate', 4],
  ['sleep', 8],
];

export function generateSchedule(seed: number, length = 24): Step[] {
  const random = prng(seed);
  const total = WEIGHTS.reduce((n, [, w]) => n + w, 0);
  const steps: Step[] = [];
  for (let i = 0; i < length; i++) {
    let r = random() * total;
    let kind: StepKind = 'write';
    for (const [k, w] of WEIGHTS) {
      if (w > 0 && (r -= w) < 0) {
        kind = k;
        break;
      }
    }
    const pick = random();
    switch (kind) {
      case 'pause':
        steps.push({ kind, pick, ms: 100 + Math.floor(random() * 500) });
        break;
      case 'partition':
        steps.push({ kind, pick, ms: 400 + Math.floor(random() * 600) });
        break;
      case 'stall':
      case 'stale_flush':
        steps.push({ kind, pick, ms: 200 + Math.floor(random() * 1300) });
        break;
      case 'meta_stall':
        steps.push({ kind, pick, ms: 100 + Math.floor(random() * 1100) });
        break;
      case 'meta_partition':
        steps.push({ kind, pick, ms: 300 + Math.floor(random() * 900) });
        break;
      case 'migrate':
        steps.push({ kind, pick, shard: random(), to: random() });
        break;
      case 'sleep':
        steps.push({ kind, ms: 20 + Math.floor(random() * 400) });
        break;
      default:
        steps.push({ kind, pick });
    }
  }
  return steps;
}

export function formatStep(step: Step): string {
  const { kind, ...rest } = step;
  const args = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v}`);
  return `${kind}(${args.join(', ')})`;
}

// ------------------------------------------------------------------ cluster

export interface SimOptions {
  readonly nodes?: number;
  /** Meta replicas (default 3). */
  readonly metas?: number;
  readonly shards?: number;
  readonly heartbeatMs?: number;
  readonly leaseMs?: number;
  readonly failureTimeoutMs?: number;
  /** Hot-standby followers per shard (meta's default is 1). */
  readonly followers?: number;
  /** Print each step as it runs. */
  readonly verbose?: boolean;
  /** Deliberate bugs every node of the run has (test/sim/faults.test.ts). */
  readonly faults?: TestFaults;
}

export interface SimResult {
  readonly seed: number;
  readonly steps: readonly Step[];
  /** Invariant violations; empty when the run passed. */
  readonly violations: string[];
  /** Regions not serving at the end, each with its recorded reason (not a violation). */
  readonly reasons: string[];
  /** Distinct acknowledged row keys (the registers count once each). */
  readonly acked: number;
  readonly ms: number;
}

const SCHEMA = {
  name: 'sim',
  columns: [
    { name: 'host', type: 'string', role: 'tag' },
    { name: 'v', type: 'float64', role: 'field' },
    { name: 'ts', type: 'timestamp', role: 'time' },
  ],
  partition: { column: 'host', bounds: ['h', 'p'] },
};
/** One host per partition: every write touches every region. */
const HOSTS = ['alpha', 'kilo', 'tango'];
const CLUSTER = 'sim';
const TOPIC_PREFIX = 'sim';

/**
 * A node's handle on the shared log. A crash pulls the plug: appends then
 * fail, as a killed process's unsynced appends never land. Appends take a
 * millisecond or two, like a disk sync, and the plug is checked after that.
 * A stall (`hold`) keeps the node's appends, in flight and new, from landing
 * until it ends, as a stalled disk or broker (or a process paused between
 * issuing an append and its completion) would; then they land, in order,
 * whatever happened to the cluster meanwhile.
 */
class LogPlug {
  dead = false;
  readonly log: LogStore;
  /** Appends do not land before this time (ms since the epoch). */
  private heldUntil = 0;
  constructor(store: LogStore) {
    const append = async (topic: string, records: readonly Uint8Array[]): Promise<number[]> => {
      await new Promise((r) => setTimeout(r, 1));
      for (let wait = this.heldUntil - Date.now(); wait > 0; wait = this.heldUntil - Date.now()) await new Promise((r) => setTimeout(r, wait));
      if (this.dead) throw new RepriseError('WAL_APPEND_FAILED', `simulated crash: append to '${topic}' lost`);
      return store.append(topic, records);
    };
    this.log = new Proxy(store, {
      get(target, prop) {
        if (prop === 'append') return append;
        if (prop === 'close') return async () => undefined;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  /** Hold this node's appends (in flight and new) until `ms` from now. */
  hold(ms: number): void {
    this.heldUntil = Math.max(this.heldUntil, Date.now() + ms);
  }
}

/**
 * A node's handle on the shared object-store directory. A stall (`hold`)
 * keeps its writes and deletes, in flight and new, from landing until then,
 * as a slow store or a process paused mid-flush would; a crash makes them
 * fail (a killed process's requests never arrive).
 */
class StorePlug {
  dead = false;
  readonly objects: ObjectStore;
  private heldUntil = 0;
  constructor(dir: string) {
    const store = new FsObjectStore(dir);
    const held =
      <A extends unknown[]>(op: (...args: A) => Promise<void>) =>
      async (...args: A): Promise<void> => {
        for (let wait = this.heldUntil - Date.now(); wait > 0; wait = this.heldUntil - Date.now()) await new Promise((r) => setTimeout(r, wait));
        if (this.dead) throw new RepriseError('STORE_WRITE_FAILED', 'simulated crash: object-store write lost');
        return op(...args);
      };
    this.objects = withOverrides(store, {
      put: held((key: string, data: Uint8Array) => store.put(key, data)),
      delete: held((key: string) => store.delete(key)),
      deletePrefix: held((prefix: string) => store.deletePrefix(prefix)),
    });
  }

  hold(ms: number): void {
    this.heldUntil = Math.max(this.heldUntil, Date.now() + ms);
  }
}

interface Incarnation {
  readonly name: string;
  readonly transport: InProcessTransport;
  readonly runtime: Reprise;
  readonly plug: LogPlug;
  readonly store: StorePlug;
  /** 'live', 'crashed' (cut off, abandoned, not yet closed) or 'closed'. */
  state: 'live' | 'crashed' | 'closed';
}

/** One incarnation of a meta replica (`meta-1#2`: replica meta-1, its second start), as the sim holds it. */
interface MetaIncarnation {
  /** The replica's id (its election candidate id), the same across its incarnations. */
  readonly id: string;
  /** This incarnation's transport name, as fault rules see it. */
  readonly name: string;
  readonly transport: InProcessTransport;
  readonly meta: MetaProcess;
  readonly plug: LogPlug;
  /** Its own connection to the election's key: a crash or a partition makes it unavailable. */
  readonly link: MemoryElectionStore;
  /** Its election's freeze and thaw (a stall). */
  readonly election: ElectionTestHooks;
  /** 'live', 'crashed' (cut off, abandoned, not yet closed) or 'closed' (shut down, or buried after a crash). */
  state: 'live' | 'crashed' | 'closed';
}

/** Transports of meta replicas are named `meta-<n>#<incarnation>`, nodes' `<id>#<incarnation>`. */
const isMetaName = (name: string) => name.startsWith('meta-');

/** A meta step picks the leader for picks below this, and any live replica above it (so the leader more often than not). */
const LEADER_PICKS = 0.6;

class Cluster {
  readonly network: InProcessNetwork;
  readonly nodes = new Map<string, Incarnation>();
  private readonly incarnations = new Map<string, number>();
  /** The meta replicas' current incarnations, by id. */
  readonly metas = new Map<string, MetaIncarnation>();
  /** Every meta incarnation's election events, in the order they happened. */
  readonly elections: ElectionRecord[] = [];
  private readonly timers = new Set<Promise<void>>();
  private readonly rules = new Set<{ remove(): void }>();
  log: string[] = [];

  constructor(
    private readonly store: LocalLogStore,
    private readonly objectStoreDir: string,
    private readonly options: Required<Omit<SimOptions, 'verbose' | 'faults'>>,
    random: () => number,
    /** Given to every node: the run's faults, and the checker's acknowledgement log. */
    private readonly testHooks: TestHooks,
  ) {
    this.network = new InProcessNetwork({ random });
  }

  /** The meta election's key, shared by every meta of this cluster (each incarnation connects to it). */
  private readonly election = new MemoryElectionStore({ name: 'sim' });

  /** Start replica `id` (again: a new incarnation, with the same id). Resolves once it follows or leads. */
  async startMeta(id: string): Promise<MetaIncarnation> {
    const name = this.incarnationName(id);
    const transport = this.network.transport({ cluster: CLUSTER, name });
    const plug = new LogPlug(this.store);
    const link = this.election.connect(name);
    const election = new ElectionTestHooks();
    const o = this.options;
    const faults = this.testHooks.faults;
    const meta = await startMeta({
      id,
      transport,
      wal: { provider: 'local', topicPrefix: TOPIC_PREFIX },
      log: plug.log,
      shards: o.shards,
      logger: false,
      heartbeatMs: o.heartbeatMs,
      leaseMs: o.leaseMs,
      failureTimeoutMs: o.failureTimeoutMs,
      minNodes: o.nodes,
      followers: o.followers,
      election: { store: link, leaseMs: o.leaseMs },
      testHooks: { ...(faults ? { faults } : {}), election, onMetaElection: (e) => this.elections.push({ incarnation: name, ...e }) },
    });
    const inc: MetaIncarnation = { id, name, transport, meta, plug, link, election, state: 'live' };
    this.metas.set(id, inc);
    return inc;
  }

  liveMetas(): MetaIncarnation[] {
    return [...this.metas.values()].filter((m) => m.state === 'live').sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  downMetas(): string[] {
    return [...this.metas.values()].filter((m) => m.state !== 'live').map((m) => m.id).sort();
  }

  /** The live replica that leads: the highest epoch, should a deposed one not have noticed yet (a stall). */
  metaLeader(): MetaIncarnation | undefined {
    let leader: MetaIncarnation | undefined;
    let epoch = -1;
    for (const m of this.liveMetas()) {
      if (!m.meta.member.server) continue;
      const e = m.meta.member.status().epoch ?? 0;
      if (e > epoch) [leader, epoch] = [m, e];
    }
    return leader;
  }

  /** The replica a meta step acts on (see LEADER_PICKS). */
  pickMeta(pick: number): MetaIncarnation | undefined {
    const leader = this.metaLeader();
    if (pick < LEADER_PICKS && leader) return leader;
    return choose(this.liveMetas(), pick < LEADER_PICKS ? pick / LEADER_PICKS : (pick - LEADER_PICKS) / (1 - LEADER_PICKS));
  }

  /** Meta's view (nodes, shards, procedures) from whichever replica leads, waiting up to `timeoutMs` for one. */
  async metaStatus(timeoutMs = 10_000): Promise<ClusterMetaStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const server = this.metaLeader()?.meta.member.server;
      if (server) return server.status();
      if (Date.now() >= deadline) {
        const members = [...this.metas.values()].map((m) => `${m.name} ${m.state}/${m.meta.member.state}`).join(', ');
        throw new Error(`no meta replica leads after ${timeoutMs} ms (${members})`);
      }
      await sleep(20);
    }
  }

  /**
   * A meta replica crashes: its log plug is pulled, its election link goes
   * down, and its connection is gone, as NATS drops a dead client's
   * subscriptions at once (requests then find no responder rather than a
   * silent one), with what it still had in flight dropped. Its objects are
   * abandoned: no resignation, nothing closed (buryMeta, later).
   */
  crashMeta(inc: MetaIncarnation): void {
    inc.state = 'crashed';
    inc.plug.dead = true;
    inc.link.makeUnavailable();
    this.network.faults.drop((m) => m.from === inc.name || m.to === inc.name);
    void inc.transport.close().catch(() => undefined);
  }

  /** Close a crashed incarnation's abandoned objects (its link stays down, so no resignation gets through). */
  async buryMeta(inc: MetaIncarnation): Promise<void> {
    if (inc.state !== 'crashed') return;
    inc.state = 'closed';
    await Promise.race([inc.meta.close().catch(() => undefined), sleep(2_000)]);
  }

  /** A replica that is down starts again: a new incarnation with the same id. */
  async restartMeta(id: string): Promise<void> {
    const inc = this.metas.get(id)!;
    await this.buryMeta(inc);
    await this.startMeta(id);
  }

  /** A clean stop: the replica resigns if it leads (its successor takes over at once) and closes. */
  async shutdownMeta(inc: MetaIncarnation): Promise<void> {
    inc.state = 'closed';
    await inc.meta.close();
    await inc.transport.close();
  }

  /**
   * The replica stops doing anything for `ms`, as a paused process: its
   * election freezes, its log appends (in flight and new) are held, and
   * every message to or from it is held until the end, when all of it goes
   * on at once: a deposed leader wakes with appends and replies in flight.
   */
  stallMeta(inc: MetaIncarnation, ms: number): void {
    const until = Date.now() + ms;
    inc.election.freeze();
    inc.plug.hold(ms);
    const held = this.network.faults.delay((m) => m.from === inc.name || m.to === inc.name, () => Math.max(0, until - Date.now()));
    this.temporary({ remove: () => (held.remove(), inc.election.thaw()) }, ms, inc.id);
  }

  /** The replica is cut off from every other process and from the election's key for `ms`; it still reaches the log ("Kafka"). */
  partitionMeta(inc: MetaIncarnation, ms: number): void {
    const cut = this.network.faults.drop((m) => m.from === inc.name || m.to === inc.name);
    inc.link.makeUnavailable();
    const heal = () => {
      cut.remove();
      if (inc.state === 'live') inc.link.makeAvailable();
    };
    this.temporary({ remove: heal }, ms, inc.id);
  }

  /** `<id>#<n>` for the n-th start of node or meta replica `id`: its transport's name, as fault rules see it. */
  private incarnationName(id: string): string {
    const n = (this.incarnations.get(id) ?? 0) + 1;
    this.incarnations.set(id, n);
    return `${id}#${n}`;
  }

  async join(nodeId: string): Promise<Incarnation> {
    const name = this.incarnationName(nodeId);
    const transport = this.network.transport({ cluster: CLUSTER, name });
    const plug = new LogPlug(this.store);
    const objects = new StorePlug(this.objectStoreDir);
    const runtime = await Reprise.join({
      nodeId,
      transport,
      wal: { provider: 'local', topicPrefix: TOPIC_PREFIX },
      log: plug.log,
      objectStoreDir: this.objectStoreDir,
      objects: objects.objects,
      heartbeatMs: this.options.heartbeatMs,
      routing: { requestTimeoutMs: 1_500, deadlineMs: 10_000 },
      logger: false,
      testHooks: this.testHooks,
    });
    const inc: Incarnation = { name, transport, runtime, plug, store: objects, state: 'live' };
    this.nodes.set(nodeId, inc);
    return inc;
  }

  live(): [string, Incarnation][] {
    return [...this.nodes].filter(([, n]) => n.state === 'live').sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }

  down(): string[] {
    return [...this.nodes].filter(([, n]) => n.state !== 'live').map(([id]) => id).sort();
  }

  /** Nodes some fault currently cuts off from meta (pause, partition, lost message), and meta replicas stalled or cut off, with a count. */
  readonly impaired = new Map<string, number>();

  /** A fault that lasts `ms` (in the background), or until the run ends; `node` (or meta replica) counts as impaired meanwhile. */
  temporary(rule: { remove(): void }, ms: number, node?: string): void {
    this.rules.add(rule);
    if (node) this.impaired.set(node, (this.impaired.get(node) ?? 0) + 1);
    const done = new Promise<void>((resolve) =>
      setTimeout(() => {
        rule.remove();
        this.rules.delete(rule);
        if (node) {
          const n = (this.impaired.get(node) ?? 1) - 1;
          if (n > 0) this.impaired.set(node, n);
          else this.impaired.delete(node);
        }
        resolve();
      }, ms),
    );
    this.timers.add(done);
    void done.then(() => this.timers.delete(done));
  }

  /** Work that runs on while the schedule goes on (migrations); awaited before settling. */
  background(work: Promise<void>): void {
    this.timers.add(work);
    void work.then(() => this.timers.delete(work));
  }

  /** Wait for every temporary fault to end and every background operation to finish. */
  async quiesce(): Promise<void> {
    await Promise.all([...this.timers]);
  }

  /** Flush one node's shards (Reprise.flush asks every leader, and one that crashed meanwhile would hold it for a minute). */
  async flushNode(nodeId: string): Promise<void> {
    const inc = this.nodes.get(nodeId)!;
    await inc.transport.request(inc.transport.subject('node', nodeId, 'flush'), {}, { timeoutMs: 5_000 });
  }

  /** Cut the node off, pull its log plug, and abandon it (closed later, without flush). */
  crash(nodeId: string): void {
    const inc = this.nodes.get(nodeId)!;
    inc.plug.dead = true;
    inc.store.dead = true;
    inc.state = 'crashed';
    const name = inc.name;
    this.network.faults.drop((m) => m.from === name || m.to === name);
  }

  /** Close a crashed incarnation: its connection is gone first, then the process, without flush. */
  async bury(nodeId: string): Promise<void> {
    const inc = this.nodes.get(nodeId);
    if (!inc || inc.state !== 'crashed') return;
    inc.state = 'closed';
    await inc.transport.close();
    await inc.runtime.close({ flush: false });
    inc.store.objects.close?.();
  }

  async shutdown(nodeId: string): Promise<void> {
    const inc = this.nodes.get(nodeId)!;
    inc.state = 'closed';
    await inc.runtime.close();
    await inc.transport.close();
    inc.store.objects.close?.();
  }

  async close(): Promise<void> {
    for (const rule of [...this.rules]) rule.remove();
    for (const [id, inc] of this.nodes) {
      if (inc.state === 'crashed') await this.bury(id).catch(() => undefined);
      else if (inc.state === 'live') {
        inc.state = 'closed';
        await inc.runtime.close({ flush: false }).catch(() => undefined);
        await inc.transport.close().catch(() => undefined);
        inc.store.objects.close?.();
      }
    }
    for (const inc of this.metas.values()) {
      if (inc.state === 'crashed') await this.buryMeta(inc);
      else if (inc.state === 'live') {
        inc.state = 'closed';
        await Promise.race([inc.meta.close().catch(() => undefined), sleep(5_000)]);
        await inc.transport.close().catch(() => undefined);
      }
    }
  }
}

// ------------------------------------------------------------------ run

const DEFAULTS: Required<Omit<SimOptions, 'verbose' | 'faults'>> = { nodes: 3, metas: 3, shards: 3, heartbeatMs: 50, leaseMs: 200, failureTimeoutMs: 300, followers: 1 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await condition()) return true;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

function choose<T>(items: readonly T[], pick: number): T | undefined {
  return items.length === 0 ? undefined : items[Math.min(items.length - 1, Math.floor(pick * items.length))];
}

const keyOf = (host: string, ts: number) => `${host}@${ts}`;

/**
 * Every write also upserts one register row per host (host@REGISTER_TS, the
 * same key each time) with the write's number as its value, so that the
 * order in which entries are applied is visible to a reader: a reader that
 * applies an entry out of its place in the log (a deposed leader's entry
 * let through after the newer epoch's writes) reads an older value.
 */
const REGISTER_TS = 1;

/** One write the schedule issued: its number (the registers' value), when it started and, if acknowledged, when (performance.now()). */
interface WriteRecord {
  readonly seq: number;
  readonly front: string;
  readonly start: number;
  end?: number;
}

/** Play `steps` from `seed` against a fresh cluster, settle, check. Never throws for a violation: it is in the result. */
export async function runSchedule(seed: number, steps: readonly Step[], simOptions: SimOptions = {}): Promise<SimResult> {
  const started = Date.now();
  const { faults = {}, ...overrides } = simOptions;
  const options = { ...DEFAULTS, ...overrides };
  const verbose = simOptions.verbose ?? false;
  const dir = await mkdtemp(join(tmpdir(), 'reprise-sim-'));
  const store = await LocalLogStore.open(join(dir, 'wal'));
  const acks: AckObservation[] = [];
  const cluster = new Cluster(store, join(dir, 'objects'), options, prng(seed ^ 0x5eed), { faults, onAck: (ack) => acks.push(ack) });
  const violations: string[] = [];
  const reasons: string[] = [];
  /** Every acknowledged write's rows, by key. */
  const acked = new Set<string>();
  /** Every row ever attempted (acknowledged or not). */
  const attempted = new Set<string>();
  let ts = 1_000;
  const t0 = performance.now();
  const say = (line: string) => {
    if (verbose) console.log(`[seed ${seed} ${Math.round(performance.now() - t0)} ms] ${line}`);
  };
  const at = (t: number) => `${Math.round(t - t0)} ms`;
  const writes = new Map<number, WriteRecord>();

  /** A write of three new rows and the three registers through `front`; resolves (never rejects) once it is acknowledged or refused. */
  const write = async ([frontId, front]: [string, Incarnation], what = 'write'): Promise<void> => {
    const record: WriteRecord = { seq: writes.size + 1, front: frontId, start: performance.now() };
    writes.set(record.seq, record);
    const rows = [...HOSTS.map((host) => ({ host, v: ts, ts: ts++ })), ...HOSTS.map((host) => ({ host, v: record.seq, ts: REGISTER_TS }))];
    for (const r of rows) attempted.add(keyOf(r.host, r.ts));
    try {
      await front.runtime.insert('sim', rows);
      record.end = performance.now();
      for (const r of rows) acked.add(keyOf(r.host, r.ts));
    } catch (err) {
      say(`  ${what} #${record.seq} through ${frontId} not acknowledged: ${(err as Error).message}`);
    }
  };

  /**
   * Registers read at `readStart`: each holds the number of a write, and no
   * write acknowledged before the read that started after that write was
   * acknowledged may be hidden by it (it came later in the log). A write not
   * acknowledged may land at any time (it may be in flight), so it is never
   * judged stale.
   */
  const checkRegisters = (rows: Record<string, unknown>[], readStart: number, where: string) => {
    for (const host of HOSTS) {
      const row = rows.find((r) => r.host === host && Number(r.ts) === REGISTER_TS);
      // A register an acknowledged write set and nobody reads is a missing row: the row check reports it.
      if (!row) continue;
      const value = Number(row.v);
      const read = writes.get(value);
      if (!read) {
        violations.push(`${where}: register ${keyOf(host, REGISTER_TS)} reads ${value}, which no write wrote`);
        continue;
      }
      if (read.end === undefined) continue;
      let newer: WriteRecord | undefined;
      for (const w of writes.values()) {
        if (w.end !== undefined && w.end < readStart && w.start > read.end && (!newer || w.seq > newer.seq)) newer = w;
      }
      if (newer) {
        violations.push(
          `${where}: register ${keyOf(host, REGISTER_TS)} reads write #${read.seq} (acknowledged at ${at(read.end)}) instead of write #${newer.seq} ` +
            `(started at ${at(newer.start)}, after it, acknowledged at ${at(newer.end!)}): a stale value, an older entry applied after a newer one`,
        );
      }
    }
  };

  /** The final read: every acknowledged row readable exactly once, nothing never written, no stale register. */
  const checkFinalRead = async (front: Reprise, where: string) => {
    const prefix = where ? `${where}: ` : '';
    const readStart = performance.now();
    let rows: Record<string, unknown>[];
    try {
      rows = await front.query('sim');
    } catch (err) {
      violations.push(`${prefix}final query failed: ${(err as Error).message}`);
      return;
    }
    const counts = new Map<string, number>();
    for (const r of rows) {
      const k = keyOf(String(r.host), Number(r.ts));
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    const missing = [...acked].filter((k) => !counts.has(k));
    const doubled = [...acked].filter((k) => (counts.get(k) ?? 0) > 1);
    const invented = [...counts.keys()].filter((k) => !attempted.has(k));
    if (missing.length) violations.push(`${prefix}${missing.length} acknowledged row(s) not readable, e.g. ${missing.slice(0, 5).join(', ')}`);
    if (doubled.length) violations.push(`${prefix}${doubled.length} acknowledged row(s) read more than once, e.g. ${doubled.slice(0, 5).join(', ')}`);
    if (invented.length) violations.push(`${prefix}${invented.length} row(s) read that were never written, e.g. ${invented.slice(0, 5).join(', ')}`);
    checkRegisters(rows, readStart, where || 'final read');
  };

  /** Every shard led by a live node on which it and its regions serve. */
  const settle = () =>
    waitUntil(async () => {
      const liveIds = new Set(cluster.live().map(([id]) => id));
      return (await cluster.metaStatus(0)).shards.every((s) => {
        if (s.leader === null || !liveIds.has(s.leader)) return false;
        const shard = cluster.nodes.get(s.leader)!.runtime.status().nodes[0]!.shards.find((x) => x.id === s.id);
        return shard !== undefined && shard.state === 'serving' && shard.regions.every((r) => r.state === 'serving');
      });
    }, 10_000);
  try {
    await Promise.all(Array.from({ length: options.metas }, (_, i) => cluster.startMeta(`meta-${i + 1}`)));
    await cluster.metaStatus();
    const ids = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    await Promise.all(ids.map((id) => cluster.join(id)));
    const placed = await waitUntil(async () => (await cluster.metaStatus(0)).shards.every((s) => s.leader !== null), 10_000);
    if (!placed) throw new Error('setup: shards were never placed');
    await cluster.live()[0]![1].runtime.createTable(SCHEMA);

    for (const [i, step] of steps.entries()) {
      say(`step ${i}: ${formatStep(step)}`);
      const live = cluster.live();
      switch (step.kind) {
        case 'write': {
          const front = choose(live, step.pick);
          if (!front) break;
          await write(front);
          break;
        }
        case 'read': {
          const front = choose(live, step.pick);
          if (!front) break;
          const before = new Set(acked);
          const readStart = performance.now();
          try {
            const rows = await front[1].runtime.query('sim');
            const seen = new Set(rows.map((r) => keyOf(String(r.host), Number(r.ts))));
            const missing = [...before].filter((k) => !seen.has(k));
            if (missing.length > 0) violations.push(`step ${i} read through ${front[0]}: ${missing.length} acknowledged row(s) missing, e.g. ${missing.slice(0, 3).join(', ')}`);
            checkRegisters(rows, readStart, `step ${i} read through ${front[0]}`);
          } catch (err) {
            say(`  read through ${front[0]} failed: ${(err as Error).message}`);
          }
          break;
        }
        case 'crash': {
          // Keep one live node: someone must be able to lead the shards.
          if (live.length <= 1) break;
          const victim = choose(live, step.pick)!;
          cluster.crash(victim[0]);
          break;
        }
        case 'restart': {
          const id = choose(cluster.down(), step.pick);
          if (!id) break;
          await cluster.bury(id);
          await cluster.join(id);
          break;
        }
        case 'pause': {
          const node = choose(live, step.pick);
          if (!node) break;
          const name = node[1].name;
          cluster.temporary(cluster.network.faults.drop((m) => m.from === name || m.to === name), step.ms, node[0]);
          break;
        }
        case 'lose': {
          const node = choose(live, step.pick);
          if (!node) break;
          const name = node[1].name;
          // The next message to or from the node within 300 ms is lost.
          cluster.temporary(cluster.network.faults.drop((m) => m.from === name || m.to === name, { times: 1 }), 300, node[0]);
          break;
        }
        case 'partition': {
          // Cut the node off from meta (its lease runs out and its shards
          // move) while the link to it stays up but slow: writes reach it
          // late, after the failover.
          const node = choose(live, step.pick);
          if (!node) break;
          const name = node[1].name;
          cluster.temporary(cluster.network.faults.drop((m) => (m.from === name && isMetaName(m.to)) || (isMetaName(m.from) && m.to === name)), step.ms, node[0]);
          cluster.temporary(cluster.network.faults.delay((m) => m.to === name && m.kind === 'request' && m.subject.endsWith('.write'), Math.floor(step.ms * 0.8)), step.ms);
          break;
        }
        case 'stall': {
          // The node's WAL appends stall for `ms` (a stalled disk or broker,
          // or the process paused between sending an append and its
          // completion) while its link to meta is cut as long: its lease
          // lapses and meta moves its shards (failure timeout 300 ms), whose
          // new leaders append their epoch markers; then the held appends
          // land, with the old epoch, after those markers. A write sent
          // through the node as the stall begins passes the lease check
          // (still valid) and is held, and so are appends of writes that
          // other fronts send it before meta moves its shards. Readers must
          // drop the late entries; no write is acknowledged from them.
          const node = choose(live, step.pick);
          if (!node) break;
          const name = node[1].name;
          node[1].plug.hold(step.ms);
          cluster.temporary(cluster.network.faults.drop((m) => (m.from === name && isMetaName(m.to)) || (isMetaName(m.from) && m.to === name)), step.ms, node[0]);
          cluster.background(write(node, 'write sent into the stall'));
          break;
        }
        case 'stale_flush': {
          // A leader starts a flush whose object-store writes stall for
          // `ms` (a slow store, or the process paused mid-flush) while its
          // link to meta is cut as long: its lease lapses and meta moves its
          // shards (failure timeout 300 ms). Their new leaders open them,
          // take the writes of the steps that follow and flush them, which
          // prunes the log below what they flushed; then the stalled flush
          // lands, with the old leader's older view of the regions. The
          // manifests must not go back to it (issue 17: GreptimeDB #2289).
          const node = choose(live, step.pick);
          if (!node) break;
          const [id, inc] = node;
          inc.store.hold(step.ms);
          cluster.temporary(cluster.network.faults.drop((m) => (m.from === inc.name && isMetaName(m.to)) || (isMetaName(m.from) && m.to === inc.name)), step.ms, id);
          cluster.background(cluster.flushNode(id).then(() => say(`  the stalled flush of ${id} landed`), (err: unknown) => say(`  the stalled flush of ${id} failed: ${(err as Error).message}`)));
          cluster.background(
            (async () => {
              // Before the stall ends: the new leaders flush what they took meanwhile.
              await sleep(Math.max(0, step.ms - 150));
              for (const [other] of cluster.live()) {
                if (other !== id) await cluster.flushNode(other).catch((err: unknown) => say(`  flush of ${other} failed: ${(err as Error).message}`));
              }
            })(),
          );
          break;
        }
        case 'meta_crash': {
          // Keep one meta replica up: someone must be able to lead meta.
          if (cluster.liveMetas().length <= 1) break;
          const meta = cluster.pickMeta(step.pick)!;
          say(`  ${meta.name} crashes${meta === cluster.metaLeader() ? ' (the leader)' : ''}`);
          cluster.crashMeta(meta);
          break;
        }
        case 'meta_restart': {
          const id = choose(cluster.downMetas(), step.pick);
          if (!id) break;
          await cluster.restartMeta(id);
          break;
        }
        case 'meta_shutdown': {
          if (cluster.liveMetas().length <= 1) break;
          const meta = cluster.pickMeta(step.pick)!;
          say(`  ${meta.name} shuts down${meta === cluster.metaLeader() ? ' (the leader)' : ''}`);
          await cluster.shutdownMeta(meta);
          break;
        }
        case 'meta_stall': {
          const meta = cluster.pickMeta(step.pick);
          if (!meta) break;
          say(`  ${meta.name} stalls${meta === cluster.metaLeader() ? ' (the leader)' : ''}`);
          cluster.stallMeta(meta, step.ms);
          break;
        }
        case 'meta_partition': {
          const meta = cluster.pickMeta(step.pick);
          if (!meta) break;
          say(`  ${meta.name} is cut off${meta === cluster.metaLeader() ? ' (the leader)' : ''}`);
          cluster.partitionMeta(meta, step.ms);
          break;
        }
        case 'migrate': {
          // A planned migration asked through a live node, to another live
          // node; it runs in the background. Only while the leader is
          // reachable: meta keeps asking a leader that is unreachable but
          // not declared dead for up to 60 s, and meta's shutdown waits for
          // it (see the report).
          const front = choose(live, step.pick);
          if (!front) break;
          const shard = Math.min(options.shards - 1, Math.floor(step.shard * options.shards));
          const leader = (await cluster.metaStatus()).shards.find((s) => s.id === shard)?.leader;
          if (!leader || cluster.nodes.get(leader)?.state !== 'live' || cluster.impaired.has(leader)) break;
          const to = choose(live.filter(([id]) => id !== leader), step.to);
          if (!to) break;
          cluster.background(
            front[1].runtime.migrateShard(shard, to[0]).then(
              (r) => say(`  shard ${shard} migrated ${r.from} -> ${r.to} in ${r.ms} ms`),
              (err: unknown) => say(`  migration of shard ${shard} to ${to[0]} failed: ${(err as Error).message}`),
            ),
          );
          break;
        }
        case 'shutdown': {
          if (live.length <= 1) break;
          const node = choose(live, step.pick)!;
          await cluster.shutdown(node[0]);
          break;
        }
        case 'sleep':
          await sleep(step.ms);
          break;
      }
    }

    // ---- settle: faults end, every shard led by a live node that serves it.
    await cluster.quiesce();
    cluster.network.faults.clear();
    for (const id of cluster.down()) {
      // Crashed incarnations are dropped by rule; re-cut them (clear() removed the rule).
      const inc = cluster.nodes.get(id)!;
      if (inc.state === 'crashed') cluster.network.faults.drop((m) => m.from === inc.name || m.to === inc.name);
    }
    for (const inc of cluster.metas.values()) if (inc.state === 'crashed') cluster.network.faults.drop((m) => m.from === inc.name || m.to === inc.name);
    const settled = await settle();
    say(`settled: ${settled}`);
    if (process.env.SIM_DEBUG) { console.log(JSON.stringify(await cluster.metaStatus(), null, 1)); for (const [id, n] of cluster.live()) console.log(id, JSON.stringify(n.runtime.status().nodes[0]!.shards.map((s) => [s.id, s.state, s.epoch, s.error]))); }

    // ---- check 3: every region serving, or a recorded reason.
    const liveIds = new Set(cluster.live().map(([id]) => id));
    for (const s of (await cluster.metaStatus()).shards) {
      if (s.leader === null || !liveIds.has(s.leader)) {
        violations.push(`shard ${s.id}: meta's leader is ${s.leader === null ? 'nobody' : `'${s.leader}', which is not live`} after settling`);
        continue;
      }
      const shard = cluster.nodes.get(s.leader)!.runtime.status().nodes[0]!.shards.find((x) => x.id === s.id);
      if (!shard) {
        violations.push(`shard ${s.id}: its leader '${s.leader}' does not hold it after settling`);
        continue;
      }
      for (const region of shard.regions) {
        if (region.state === 'serving') continue;
        const reason = region.error ?? shard.error;
        if (reason) reasons.push(`region ${region.id} (shard ${s.id} on ${s.leader}) is ${region.state}: ${reason}`);
        else violations.push(`region ${region.id} (shard ${s.id} on ${s.leader}) is ${region.state} with no recorded reason`);
      }
      if (shard.state !== 'serving' && shard.regions.length === 0) {
        if (shard.error) reasons.push(`shard ${s.id} on ${s.leader} is ${shard.state}: ${shard.error}`);
        else violations.push(`shard ${s.id} on ${s.leader} is ${shard.state} with no recorded reason`);
      }
    }

    if (process.env.SIM_DEBUG) {
      // Each shard's log as it is now (id:kind epoch region), and each write's timing.
      for (let sh = 0; sh < options.shards; sh++) {
        const topic = `${TOPIC_PREFIX}_${sh}`;
        const { earliest } = await store.bounds(topic);
        const out: string[] = [];
        for await (const e of readEntries(store, topic, earliest)) out.push(`${e.id}:${e.kind[0]}${e.epoch}${e.kind === 'data' ? `r${e.region}` : ''}`);
        console.log(`TOPIC ${topic} from ${earliest}: ${out.join(' ')}`);
      }
      for (const w of writes.values()) console.log(`WRITE #${w.seq} via ${w.front} ${at(w.start)} -> ${w.end === undefined ? '-' : at(w.end)}`);
    }
    // ---- check 1: every acknowledged write readable exactly once (and nothing never written), no stale register.
    const front = cluster.live()[0]![1].runtime;
    await checkFinalRead(front, '');

    // ---- the hot standbys: hand every shard to its follower (a planned
    // migration: no flush, the follower is promoted with what its replay and
    // tail applied) and read everything again. A follower's copy is built by
    // reading the log (replay, then tail), which a leader that only wrote
    // never does: this is where entries a reader should have dropped show.
    const handed = await handToStandbys(cluster, front, say);
    if (handed > 0) {
      const again = await settle();
      say(`settled after handing ${handed} shard(s) to their standbys: ${again}`);
      await checkFinalRead(cluster.live()[0]![1].runtime, `after handing ${handed} shard(s) to their standbys`);
    }

    // ---- check 4: meta. The meta log as every reader must fold it: one
    // marker per meta epoch, no deposed leader's entry taking effect; each
    // node's replica and the leader's own state equal to that fold at the
    // entry each has applied; one replica elected per meta epoch, and no two
    // leaders' leases overlapping.
    const readers = await metaReaders(cluster, store, violations);
    const reference = await MetaLogReference.read(store, TOPIC_PREFIX, new Set(readers.map((r) => r.entryId)));
    say(`  meta log: ${reference.lastId + 1} entries, ${reference.fencedEntries} of a deposed leader fenced, ${reference.markers.size} epochs, ${cluster.elections.filter((e) => e.kind === 'elected').length} elections`);
    violations.push(...reference.violations());
    for (const r of readers) {
      const disagreement = reference.disagreement(r.name, r.entryId, r.state, r.fenced);
      if (disagreement) violations.push(disagreement);
    }
    violations.push(...electionViolations(cluster.elections));

    // ---- check 2: one node per (shard, epoch), and it is the node meta
    // granted that epoch to (by an entry that takes effect: no node acted on
    // a deposed meta leader's grant).
    const topics = new Map(reference.shards().map((s) => [s.id, s.topic]));
    // ---- check 3: no acknowledged entry is fenced (after a newer epoch's marker, so no reader ever applies it).
    for (const [shard, topic] of topics) {
      const markers: { id: number; epoch: number }[] = [];
      const { earliest } = await store.bounds(topic);
      for await (const entry of readEntries(store, topic, earliest)) if (entry.kind === 'epoch') markers.push({ id: entry.id, epoch: entry.epoch });
      for (const a of acks) {
        if (a.shard !== shard || a.entryId < 0) continue;
        const fence = markers.find((m) => m.id < a.entryId && m.epoch > a.epoch);
        if (fence) violations.push(`shard ${shard}: entry ${a.entryId} acknowledged by '${a.node}' at epoch ${a.epoch} follows the epoch ${fence.epoch} marker (entry ${fence.id}): it is fenced, never applied`);
      }
    }
    const ackers = new Map<string, Set<string>>();
    for (const a of acks) {
      const k = `${a.shard}/${a.epoch}`;
      if (!ackers.has(k)) ackers.set(k, new Set());
      ackers.get(k)!.add(a.node);
    }
    for (const [k, nodes] of ackers) {
      const [shard, epoch] = k.split('/');
      if (nodes.size > 1) violations.push(`shard ${shard} epoch ${epoch}: writes acknowledged by ${nodes.size} nodes (${[...nodes].join(', ')})`);
      const owners = [...(reference.grants.get(k) ?? [])];
      for (const n of nodes) {
        if (!owners.includes(n)) violations.push(`shard ${shard} epoch ${epoch}: '${n}' acknowledged writes but meta granted that epoch to ${owners.length ? owners.map((o) => `'${o}'`).join(' and ') : 'nobody'}`);
      }
    }
  } catch (err) {
    violations.push(`run aborted: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await cluster.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
  return { seed, steps, violations, reasons, acked: acked.size, ms: Date.now() - started };
}

/** A reader of the meta log at the end of a run: what it has applied and what it holds. */
interface MetaReader {
  readonly name: string;
  readonly entryId: number;
  readonly state: ComparableMeta;
  /** Entries its fence dropped (a node's replica, which folded the log from its start). */
  readonly fenced?: number;
}

/**
 * Every live node's meta replica, once caught up with the meta log's end
 * (a replica that does not within 5 s is a violation), and the meta
 * leader's own state, all taken at one instant.
 */
async function metaReaders(cluster: Cluster, store: LogStore, violations: string[]): Promise<MetaReader[]> {
  const leader = await cluster.metaStatus();
  const end = async () => (await store.bounds(metaTopicOf(TOPIC_PREFIX))).next - 1;
  const caughtUp = await waitUntil(async () => {
    const last = await end();
    return cluster.live().every(([, n]) => n.runtime.metaView().appliedEntryId >= last);
  }, 5_000);
  if (!caughtUp) {
    const last = await end();
    for (const [id, n] of cluster.live()) {
      const applied = n.runtime.metaView().appliedEntryId;
      if (applied < last) violations.push(`node ${id}'s meta replica is at entry ${applied} after settling, the meta log ends at ${last}`);
    }
  }
  const leading = cluster.metaLeader();
  const status = leading?.meta.member.server?.status() ?? leader;
  const readers: MetaReader[] = [
    { name: `the meta leader (${leading?.name ?? 'gone'})`, entryId: status.entryId, state: { shards: status.shards, procedures: status.procedures, nodes: status.nodes.map((n) => n.id) } },
  ];
  for (const [id, n] of cluster.live()) {
    const view = n.runtime.metaView();
    readers.push({ name: `node ${id}'s meta replica`, entryId: view.appliedEntryId, state: comparableOf(view), fenced: view.fencedEntries });
  }
  return readers;
}

/**
 * Hand each shard whose follower is live and following to it (one planned
 * migration at a time, through `front`), once the procedures under way (a
 * rebalance) have finished, or after 5 s: a shard whose procedure still
 * runs then is left where it is (meta keeps asking a source it cannot
 * reach, but has not declared dead, for up to 60 s). Returns how many shards
 * were handed over.
 */
async function handToStandbys(cluster: Cluster, front: Reprise, say: (line: string) => void): Promise<number> {
  if (!(await waitUntil(async () => (await cluster.metaStatus(0)).procedures.length === 0, 5_000))) {
    say(`  procedures still running: ${(await cluster.metaStatus()).procedures.map((p) => `${p.kind} #${p.id} of shard ${p.shard} (${p.state})`).join(', ')}`);
  }
  let handed = 0;
  for (const { id } of (await cluster.metaStatus()).shards) {
    const status = await cluster.metaStatus();
    const shard = status.shards.find((s) => s.id === id)!;
    const live = new Map(cluster.live());
    const to = shard.followers.find((f) => f !== shard.leader && live.has(f));
    if (!to || shard.leader === null || !live.has(shard.leader)) continue;
    if (status.procedures.some((p) => p.shard === id)) {
      say(`  shard ${id}: a procedure is running on it; not handed over`);
      continue;
    }
    const following = await waitUntil(() => live.get(to)!.runtime.status().nodes[0]!.shards.some((s) => s.id === id && s.state === 'following'), 5_000);
    if (!following) {
      say(`  shard ${id}: follower '${to}' is not following; not handed over`);
      continue;
    }
    try {
      const r = await front.migrateShard(id, to);
      say(`  shard ${id} handed to its standby: ${r.from} -> ${r.to} in ${r.ms} ms`);
      handed++;
    } catch (err) {
      say(`  shard ${id} not handed to its standby '${to}': ${(err as Error).message}`);
    }
  }
  return handed;
}

export async function runSeed(seed: number, length = 24, options: SimOptions = {}): Promise<SimResult> {
  return runSchedule(seed, generateSchedule(seed, length), options);
}

/**
 * The shortest failing schedule found within `budgetMs`: the shortest failing
 * prefix, then single steps removed while it still fails. A schedule counts
 * as failing if a run of it reports any violation.
 */
export async function shrink(result: SimResult, budgetMs = 120_000, options: SimOptions = {}): Promise<SimResult> {
  const deadline = Date.now() + budgetMs;
  let best = result;
  const fails = async (steps: readonly Step[]) => {
    const r = await runSchedule(result.seed, steps, options);
    return r.violations.length > 0 ? r : undefined;
  };
  // Prefixes, shortest first (binary search would assume monotony; real time is noisy).
  for (let n = 0; n < best.steps.length && Date.now() < deadline; n++) {
    const r = await fails(best.steps.slice(0, n));
    if (r) {
      best = r;
      break;
    }
  }
  // Remove single steps, from the end.
  for (let i = best.steps.length - 1; i >= 0 && Date.now() < deadline; i--) {
    const candidate = best.steps.filter((_, j) => j !== i);
    const r = await fails(candidate);
    if (r) best = r;
  }
  return best;
}

export function report(result: SimResult): string {
  return [
    `seed ${result.seed}: ${result.violations.length} violation(s), ${result.acked} acknowledged rows, ${result.ms} ms`,
    ...result.violations.map((v) => `  ! ${v}`),
    `  schedule (${result.steps.length} steps):`,
    ...result.steps.map((s, i) => `    ${i}: ${formatStep(s)}`),
  ].join('\n');
}
