import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, ROWS, startServer, SYSTEM_METRICS, type Server } from '../harness/standalone.js';
import { startTestKafka, usingRealKafka, type TestKafka } from '../harness/kafka-mock.js';

/** The README's Kafka line, as a user runs it: `reprise standalone --wal kafka --brokers ...`, then kill -9. */
describe('reprise standalone --wal kafka (real process, Kafka-protocol cluster)', () => {
  let kafka: TestKafka;
  let dataDir: string;
  // One reprise cluster across restarts: the same topics every start.
  const topicPrefix = `standalone_${process.pid}_${Date.now().toString(36)}`;
  const servers: Server[] = [];
  beforeAll(async () => {
    kafka = await startTestKafka({ brokers: 3 });
    dataDir = await mkdtemp(join(tmpdir(), 'reprise-standalone-kafka-'));
  });
  afterAll(async () => {
    for (const s of servers) s.child.kill('SIGKILL');
    await kafka?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const start = async () => {
    const server = await startServer(
      dataDir,
      {
        REPRISE_WAL_TOPIC_PREFIX: topicPrefix,
        // The mock cluster cannot grant producer ids.
        REPRISE_WAL_IDEMPOTENT: String(usingRealKafka()),
      },
      ['--wal', 'kafka', '--brokers', kafka.brokers.join(',')],
    );
    servers.push(server);
    return server;
  };

  it('serves the walkthrough on the Kafka WAL and has every row back after kill -9', async () => {
    let server = await start();
    expect((await call(server, 'POST', '/v1/tables', SYSTEM_METRICS)).status).toBe(201);
    expect((await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS)).body).toEqual({ written: ROWS.length });
    const before = (await call(server, 'POST', '/v1/tables/system_metrics/query', {})).body.rows;
    expect(before).toHaveLength(ROWS.length);
    const status = (await call(server, 'GET', '/v1/status')).body;
    expect(status.wal.provider).toBe('kafka');

    server.child.kill('SIGKILL');
    await server.exited;
    server = await start();
    const again = await call(server, 'POST', '/v1/tables/system_metrics/query', {});
    expect(again.body.rows, JSON.stringify(again.body)).toEqual(before);
    server.child.kill('SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
  });
});
