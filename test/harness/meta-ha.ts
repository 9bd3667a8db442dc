/**
 * What the meta high-availability tests (test/meta-ha/meta-replicas.test.ts)
 * and the cluster benchmark's meta failover share: a cluster of real
 * processes with several `reprise meta` replicas, continuous writers through
 * every node, and the checks each fault test ends with:
 * - every acknowledged write is readable exactly once;
 * - one meta leader per meta epoch: each epoch's marker is in the meta log once;
 * - one acknowledger per shard epoch: each (shard, epoch) was granted to one
 *   node, among the meta log entries that take effect (a deposed meta
 *   leader's entries after a newer marker are fenced, as every reader does).
 */
import { decode } from '@msgpack/msgpack';
import type { MetaEvent } from '../../src/meta/model.js';
import { metaTopicOf } from '../../src/meta/meta-view.js';
import { KafkaLogStore } from '../../src/wal/kafka/kafka-log-store.js';
import { EpochFence, readEntries } from '../../src/wal/shard-reader.js';
import { CLUSTER_HOSTS, type ProcessGroup } from './cluster.js';
import { usingRealKafka, type TestKafka } from './kafka-mock.js';
import { call, type Server } from './standalone.js';
import { until } from './wait.js';

export interface MemberView {
  id: string;
  state: string;
  epoch: number | null;
  leader: { id: string | null; epoch: number } | null;
  appliedEntryId: number;
}

/** The members a meta replica knows (itself and the peers that reported lately), from its HTTP status. */
export async function metaMembers(meta: Server): Promise<MemberView[]> {
  const response = await call(meta, 'GET', '/v1/cluster/status');
  return response.body.members as MemberView[];
}

/** Start meta replicas `ids` (each with --id and its own HTTP address). */
export async function startMetas(group: ProcessGroup, env: Record<string, string>, ids: readonly string[], args: readonly string[] = []): Promise<Map<string, Server>> {
  const metas = new Map<string, Server>();
  await Promise.all(ids.map(async (id) => metas.set(id, await group.launch(id, ['meta', '--id', id, '--http-addr', '127.0.0.1:0', ...args], env))));
  return metas;
}

export async function startNodes(group: ProcessGroup, env: Record<string, string>, ids: readonly string[]): Promise<Map<string, Server>> {
  const nodes = new Map<string, Server>();
  await Promise.all(ids.map(async (id) => nodes.set(id, await group.launch(id, ['node', '--id', id, '--http-addr', '127.0.0.1:0'], env))));
  return nodes;
}

/** Wait until meta, asked through `via`, has every shard led at an epoch (opened). */
export async function awaitShardsLed(via: Server): Promise<void> {
  await until(
    async () => {
      const status = (await call(via, 'GET', '/v1/cluster/status')).body as { meta: { shards: { leader: string | null; epoch: number }[] } };
      return status.meta.shards.every((s) => s.leader !== null && s.epoch > 0) || undefined;
    },
    'every shard led',
    { timeoutMs: 30_000, everyMs: 50, ignoreErrors: true },
  );
}

/**
 * Wait until the running replicas among `metas` agree on one leader that
 * says it leads, at an epoch above `above`; returns its id and epoch.
 */
export async function awaitMetaLeader(metas: ReadonlyMap<string, Server>, options: { above?: number; timeoutMs?: number; running?: (id: string) => boolean } = {}): Promise<{ id: string; epoch: number }> {
  const running = options.running ?? ((id: string) => metas.get(id)!.child.exitCode === null && metas.get(id)!.child.signalCode === null);
  return until(
    async () => {
      const views = await Promise.all([...metas].filter(([id]) => running(id)).map(([, server]) => metaMembers(server).then((m) => m, () => undefined)));
      if (views.some((v) => v === undefined)) return undefined;
      const selves = views.map((members, i) => members!.find((m) => m.id === [...metas.keys()].filter(running)[i])!);
      const leaders = selves.filter((m) => m.state === 'leading');
      if (leaders.length !== 1 || leaders[0]!.epoch === null || leaders[0]!.epoch <= (options.above ?? 0)) return undefined;
      const leader = { id: leaders[0]!.id, epoch: leaders[0]!.epoch };
      return selves.every((m) => m.leader?.id === leader.id && m.leader.epoch === leader.epoch) ? leader : undefined;
    },
    `one meta leader above epoch ${options.above ?? 0} that every running replica sees`,
    { timeoutMs: options.timeoutMs ?? 30_000, everyMs: 50, ignoreErrors: true },
  );
}

export interface WriteReport {
  readonly ok: number;
  readonly failures: string[];
  /** Latency of every acknowledged write, ms. */
  readonly latencies: number[];
  /** Keys (`host@ts`) of acknowledged rows. */
  readonly acked: Set<string>;
  /** Acknowledged writes sent at or after `at` and their latencies, e.g. the writes during a fault. */
  since(at: number): { sent: number; failed: number; slowerThan(ms: number): number; max: number };
}

/**
 * `loops` writers, each sending one row at a time to the nodes in turn (so
 * writes go through every node, and each node routes to every shard's
 * leader), until `stop`.
 */
export function startWriters(nodes: readonly Server[], options: { loops?: number; table?: string; ts0?: number } = {}) {
  const table = options.table ?? 'system_metrics';
  const acked = new Set<string>();
  const failures: { at: number; what: string }[] = [];
  const writes: { at: number; ms: number }[] = [];
  let ts = options.ts0 ?? 1_700_000_000_000;
  let writing = true;
  const loops = Array.from({ length: options.loops ?? 6 }, async (_, i) => {
    for (let n = 0; writing; n++) {
      const via = nodes[(i + n) % nodes.length]!;
      const row = { host: CLUSTER_HOSTS[(i + n) % CLUSTER_HOSTS.length]!, ts: ts++, cpu_util: n };
      const at = Date.now();
      const response = await call(via, 'POST', `/v1/tables/${table}/rows`, [row]).catch((err: unknown) => ({ status: 0, body: { error: { code: String(err) } } }));
      if (response.status === 200) {
        acked.add(`${row.host}@${row.ts}`);
        writes.push({ at, ms: Date.now() - at });
      } else {
        failures.push({ at, what: `${response.status} ${JSON.stringify(response.body).slice(0, 300)}` });
      }
    }
  });
  return {
    async stop(): Promise<WriteReport> {
      writing = false;
      await Promise.all(loops);
      return {
        ok: writes.length,
        failures: failures.map((f) => f.what),
        latencies: writes.map((w) => w.ms),
        acked,
        since: (at) => {
          const after = writes.filter((w) => w.at >= at);
          return {
            sent: after.length + failures.filter((f) => f.at >= at).length,
            failed: failures.filter((f) => f.at >= at).length,
            slowerThan: (ms) => after.filter((w) => w.ms > ms).length,
            max: Math.max(0, ...after.map((w) => w.ms)),
          };
        },
      };
    },
  };
}

/** The keys of every row of the table, read through `via`; throws if any is read twice. */
export async function readKeys(via: Server, table = 'system_metrics'): Promise<Set<string>> {
  const response = await call(via, 'POST', `/v1/tables/${table}/query`, {});
  if (response.status !== 200) throw new Error(`query failed: ${JSON.stringify(response.body)}`);
  const keys = (response.body.rows as { host: string; ts: number }[]).map((r) => `${r.host}@${r.ts}`);
  const once = new Set(keys);
  if (once.size !== keys.length) throw new Error(`${keys.length - once.size} rows read more than once`);
  return once;
}

export interface MetaLogFacts {
  /** Epoch -> how many markers of it the meta log holds. */
  readonly markersPerEpoch: Map<number, number>;
  /** `shard:epoch` -> the nodes granted it (entries that take effect only). */
  readonly grants: Map<string, Set<string>>;
  /** Entries of a deposed meta leader, dropped by the fence. */
  readonly fenced: number;
}

/** Read the cluster's meta log from Kafka as every reader folds it. */
export async function readMetaLog(kafka: TestKafka, topicPrefix: string): Promise<MetaLogFacts> {
  const store = await KafkaLogStore.open({ brokers: kafka.brokers, clientId: 'reprise-test', idempotent: usingRealKafka() });
  const markersPerEpoch = new Map<number, number>();
  const grants = new Map<string, Set<string>>();
  const fence = new EpochFence();
  let fenced = 0;
  try {
    for await (const entry of readEntries(store, metaTopicOf(topicPrefix), 0)) {
      if (entry.kind === 'epoch') markersPerEpoch.set(entry.epoch, (markersPerEpoch.get(entry.epoch) ?? 0) + 1);
      if (!fence.admit(entry)) {
        fenced++;
        continue;
      }
      if (entry.kind !== 'data') continue;
      const event = decode(entry.body) as MetaEvent;
      if (event.type !== 'leader_granted') continue;
      const key = `${event.shard}:${event.epoch}`;
      grants.set(key, new Set([...(grants.get(key) ?? []), event.node]));
    }
  } finally {
    await store.close();
  }
  return { markersPerEpoch, grants, fenced };
}

/** The checks every meta fault test ends with; returns what broke (empty: nothing). */
export async function invariantViolations(kafka: TestKafka, topicPrefix: string, via: Server, acked: ReadonlySet<string>): Promise<string[]> {
  const problems: string[] = [];
  const keys = await readKeys(via).catch((err: Error) => (problems.push(err.message), new Set<string>()));
  const missing = [...acked].filter((k) => !keys.has(k));
  if (missing.length > 0) problems.push(`${missing.length} acknowledged rows are not readable, e.g. ${missing.slice(0, 5).join(', ')}`);
  const log = await readMetaLog(kafka, topicPrefix);
  for (const [epoch, n] of log.markersPerEpoch) if (n !== 1) problems.push(`meta epoch ${epoch} has ${n} markers: more than one leader`);
  for (const [key, nodes] of log.grants) if (nodes.size !== 1) problems.push(`shard epoch ${key} was granted to ${[...nodes].join(', ')}`);
  return problems;
}
