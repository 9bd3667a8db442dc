import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestKafka, usingRealKafka, type TestKafka } from '../harness/kafka-mock.js';
import { ProcessGroup } from '../harness/cluster.js';
import { startNatsServer, type TestNatsServer } from '../harness/nats-server.js';
import { DIST_TABLE_CREATE, DIST_TABLE_INSERTS, DIST_TABLE_ROWS, mariadb, sqlServerOf, type SqlServer } from '../harness/sql-clients.js';
import { call } from '../harness/standalone.js';
import { until } from '../harness/wait.js';

/**
 * The GreptimeDB remote-WAL guide's dist_table walkthrough, verbatim,
 * through Debian's real `mariadb` client:
 * - `reprise standalone --wal kafka --brokers ...`: create, insert, select;
 *   SIGKILL, restart on the same data dir and Kafka topics, the same rows;
 * - a cluster of real processes (meta + 3 nodes over NATS, Kafka WAL):
 *   create and insert through one node's MySQL port, read through another's;
 *   SIGKILL the leader of a shard holding one of dist_table's regions, and
 *   every row (and an aggregate over them) through the survivors once it failed over.
 */

const NODE_IDS = ['n1', 'n2', 'n3'];
const SELECT = 'SELECT n, row_id FROM dist_table;';

interface ShardView {
  id: number;
  leader: string | null;
  epoch: number;
}
interface MetaStatus {
  meta: { shards: ShardView[]; nodes: { id: string; alive: boolean }[] };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lines = (text: string): string[] => (text.trimEnd() === '' ? [] : text.trimEnd().split('\n'));
const SQL_ADDRS = ['--http-addr', '127.0.0.1:0', '--mysql-addr', '127.0.0.1:0', '--postgres-addr', '127.0.0.1:0'];

describe("the remote-WAL guide's dist_table in mariadb: Kafka WAL standalone, and a 3-node cluster through failover", () => {
  let kafka: TestKafka;
  let nats: TestNatsServer;
  let group: ProcessGroup;

  beforeAll(async () => {
    [kafka, nats] = await Promise.all([startTestKafka({ brokers: 3 }), startNatsServer({ jetstream: true })]);
    group = new ProcessGroup(kafka, nats, 'sqlwalk');
  });
  afterEach(async () => {
    await group?.stop();
  });
  afterAll(async () => {
    await nats?.stop();
    await kafka?.stop();
  });

  /** The last log lines of these processes, for a failure message. */
  const logsOf = (names: string[], n = 30) => names.map((name) => `--- ${name}\n${group.tail(name, n)}`).join('\n');

  it('standalone --wal kafka: the walkthrough verbatim, and the same 12 rows after kill -9 and a restart on the same data dir and topics', async () => {
    const dataDir = await group.tempDir('standalone');
    // One reprise across restarts: the same topics every start.
    const env = {
      REPRISE_WAL_TOPIC_PREFIX: `sqlwalk_standalone_${process.pid}_${Date.now().toString(36)}`,
      // The mock cluster cannot grant producer ids.
      REPRISE_WAL_IDEMPOTENT: String(usingRealKafka()),
    };
    const start = async (name: string) => {
      const started = await group.launch(name, ['standalone', '--data-dir', dataDir, ...SQL_ADDRS, '--wal', 'kafka', '--brokers', kafka.brokers.join(',')], env);
      return sqlServerOf(started, started.ready);
    };

    let server = await start('standalone');
    const status = (await call(server, 'GET', '/v1/status')).body;
    expect(status.wal.provider, JSON.stringify(status.wal)).toBe('kafka');
    const created = await mariadb(server, `${DIST_TABLE_CREATE}\n${DIST_TABLE_INSERTS}\n${SELECT}`);
    expect(created.stderr, logsOf(['standalone'])).toBe('');
    expect(created.code).toBe(0);
    expect(lines(created.stdout)).toEqual(DIST_TABLE_ROWS);

    server.child.kill('SIGKILL');
    expect((await server.exited).signal).toBe('SIGKILL');
    server = await start('standalone (restarted)');
    const again = await mariadb(server, SELECT);
    expect(again.stderr, logsOf(['standalone (restarted)'])).toBe('');
    expect(again.code).toBe(0);
    expect(lines(again.stdout)).toEqual(DIST_TABLE_ROWS);
  });

  it('3-node cluster: written through one node, read through another; after SIGKILL of a region leader every row through the survivors', async () => {
    const t0 = Date.now();
    const env = await group.clusterEnv();
    const meta = await group.launch('meta', ['meta', '--min-nodes', '3', '--http-addr', '127.0.0.1:0'], env);
    const nodes = new Map<string, SqlServer>();
    await Promise.all(
      NODE_IDS.map(async (id) => {
        const started = await group.launch(id, ['node', '--id', id, ...SQL_ADDRS], env);
        nodes.set(id, sqlServerOf(started, started.ready));
      }),
    );
    const all = ['meta', ...NODE_IDS];
    const metaView = async () => ((await (await fetch(new URL('/v1/cluster/status', meta.url))).json()) as MetaStatus).meta;

    // Placement: every shard led, one per node.
    const placed = await until(
      async () => {
        const view = await metaView();
        return view.shards.length === 3 && view.shards.every((s) => s.leader !== null && s.epoch > 0) ? view : undefined;
      },
      'every shard led',
      { timeoutMs: 15_000, everyMs: 50, ignoreErrors: true },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${logsOf(all)}`);
    });
    expect(new Set(placed.shards.map((s) => s.leader))).toEqual(new Set(NODE_IDS));
    const startedMs = Date.now() - t0;

    // Create and insert through n1's MySQL port, the guide's statements verbatim.
    const writer = nodes.get('n1')!;
    const created = await mariadb(writer, `${DIST_TABLE_CREATE}\n${DIST_TABLE_INSERTS}`);
    expect(created.stderr, logsOf(all)).toBe('');
    expect(created.code).toBe(0);
    expect(created.stdout).toBe('');

    // Read back through n2's: rows of regions other nodes lead are routed there.
    const reader = nodes.get('n2')!;
    const read = await mariadb(reader, SELECT);
    expect(read.stderr, logsOf(all)).toBe('');
    expect(lines(read.stdout)).toEqual(DIST_TABLE_ROWS);

    // dist_table's regions, their shards and those shards' leaders.
    const described = await call(writer, 'GET', '/v1/tables/dist_table');
    expect(described.status, JSON.stringify(described.body)).toBe(200);
    const regions = described.body.regions as { id: number; partition: number; shard: number }[];
    expect(regions.map((r) => r.partition)).toEqual([0, 1, 2]);
    const leaderOf = (r: { shard: number }) => placed.shards.find((s) => s.id === r.shard)!.leader!;
    // The victim: the leader of a region's shard, preferably neither node the client was connected to.
    const victimRegion =
      regions.find((r) => !['n1', 'n2'].includes(leaderOf(r))) ?? regions.find((r) => leaderOf(r) !== 'n1') ?? regions[0]!;
    const before = placed.shards.find((s) => s.id === victimRegion.shard)!;
    const victimId = before.leader!;
    const victim = nodes.get(victimId)!;
    const survivors = NODE_IDS.filter((id) => id !== victimId);
    // Read through a survivor other than the writer if there is one.
    const via = nodes.get(survivors.find((id) => id !== 'n1') ?? survivors[0]!)!;
    const viaId = survivors.find((id) => nodes.get(id) === via)!;

    victim.child.kill('SIGKILL');
    expect((await victim.exited).signal).toBe('SIGKILL');
    const killedAt = Date.now();

    // The SELECT, again and again while failover runs: it may fail, but never answer with other rows.
    const outcomes: string[] = [];
    const wrongAnswers: string[] = [];
    let answeredMs: number | undefined;
    while (answeredMs === undefined) {
      const attempt = await mariadb(via, SELECT);
      const got = lines(attempt.stdout);
      if (attempt.code === 0 && attempt.stderr === '') {
        if (JSON.stringify(got) === JSON.stringify(DIST_TABLE_ROWS)) answeredMs = Date.now() - killedAt;
        else wrongAnswers.push(`${Date.now() - killedAt} ms: ${JSON.stringify(got)}`);
      } else outcomes.push(`${Date.now() - killedAt} ms: exit ${attempt.code}: ${attempt.stderr.trim()}`);
      if (answeredMs === undefined) {
        expect(
          Date.now() - killedAt,
          `SELECT through ${viaId} never answered all 12 rows after SIGKILL of ${victimId} (shard ${before.id}, region ${victimRegion.id});\n` +
            `failed attempts: ${outcomes.slice(-5).join('\n')}\nwrong answers: ${wrongAnswers.slice(-5).join('\n')}\n${logsOf(all)}`,
        ).toBeLessThan(20_000);
        await sleep(100);
      }
    }
    expect(wrongAnswers, `SELECTs through ${viaId} that succeeded with rows other than the 12 during failover`).toEqual([]);

    // Meta's view: the shard moved to a survivor in a new epoch, the victim is dead.
    const moved = await until(
      async () => {
        const view = await metaView();
        const shard = view.shards.find((s) => s.id === before.id)!;
        const dead = view.nodes.find((n) => n.id === victimId)?.alive === false;
        return shard.leader !== null && shard.leader !== victimId && shard.epoch > before.epoch && dead ? shard : undefined;
      },
      `shard ${before.id} failed over from ${victimId}`,
      { timeoutMs: 15_000, everyMs: 50 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${logsOf(all)}`);
    });
    expect(survivors).toContain(moved.leader);

    // Every row and the aggregate over the whole table, through each survivor.
    for (const id of survivors) {
      const node = nodes.get(id)!;
      const rows = await mariadb(node, SELECT);
      expect(rows.stderr, `${id}\n${logsOf(all)}`).toBe('');
      expect(lines(rows.stdout), `SELECT through ${id}`).toEqual(DIST_TABLE_ROWS);
      const aggregate = await mariadb(node, 'SELECT count(*), sum(row_id) FROM dist_table;');
      expect(aggregate.stderr, `${id}\n${logsOf(all)}`).toBe('');
      expect(lines(aggregate.stdout), `aggregate through ${id}`).toEqual(['count(*)\tsum(row_id)', '12\t78']);
    }
    // ADMIN migrate_shard moves the shard back between the survivors and answers its procedure's id; procedure_state reads it.
    const target = survivors.find((id) => id !== moved.leader)!;
    const admin = nodes.get(survivors[0]!)!;
    // The failover's procedure may still be settling (one procedure per shard at a time): PROCEDURE_RUNNING is retried.
    let migrated = await mariadb(admin, `ADMIN migrate_shard(${before.id}, '${target}');`);
    for (const until = Date.now() + 15_000; /procedure running/.test(migrated.stderr) && Date.now() < until; ) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      migrated = await mariadb(admin, `ADMIN migrate_shard(${before.id}, '${target}');`);
    }
    expect(migrated.stderr, logsOf(all)).toBe('');
    const [, procedureId] = lines(migrated.stdout);
    expect(procedureId).toMatch(/^\d+$/);
    const state = await mariadb(admin, `ADMIN procedure_state(${procedureId});`);
    expect(state.stderr).toBe('');
    expect(JSON.parse(lines(state.stdout)[1]!)).toMatchObject({ status: 'Done', id: Number(procedureId), kind: 'migrate', shard: before.id, to: target });
    expect(lines((await mariadb(nodes.get(target)!, 'SELECT count(*) FROM dist_table;')).stdout)).toEqual(['count(*)', '12']);
    console.log(
      `dist_table on 3 nodes: cluster placed in ${startedMs} ms; SIGKILL of ${victimId} (shard ${before.id} -> ${moved.leader}, ` +
        `epoch ${before.epoch} -> ${moved.epoch}); SELECT through ${viaId} answered all 12 rows ${answeredMs} ms after it ` +
        `(${outcomes.length} failed attempts before${outcomes.length ? `: ${[...new Set(outcomes.map((o) => o.replace(/^\d+ ms: /, '')))].join(' | ')}` : ''})`,
    );
  });
});
