import { defineConfig } from 'vitest/config';

// Six projects: fast unit/contract/model tests, the seeded cluster simulation, the Kafka provider against
// a Kafka-protocol cluster, the transport against a real nats-server, meta
// high availability on a real nats-server cluster, and end-to-end suites that start real processes (slower, serialised).
// `npm test` runs them all.
export default defineConfig({
  test: {
    // Processes the suites start serve MySQL and PostgreSQL on free ports, not on the defaults (4002, 4003) all at once.
    env: { REPRISE_MYSQL_ADDR: '127.0.0.1:0', REPRISE_POSTGRES_ADDR: '127.0.0.1:0' },
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 30_000,
        },
      },
      {
        // The Kafka WAL provider against a real Kafka-protocol cluster:
        // librdkafka's mock cluster (test/harness/kafka-mock.ts), or the
        // cluster in KAFKA_BROKERS. One cluster per file, files one at a time.
        extends: true,
        test: {
          name: 'kafka',
          include: ['test/kafka/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        // The transport contract against the in-process transport and a real
        // nats-server (test/harness/nats-server.ts), plus crash/restart faults.
        extends: true,
        test: {
          name: 'transport',
          include: ['test/transport/**/*.test.ts'],
          testTimeout: 30_000,
          fileParallelism: false,
        },
      },
      {
        // Meta high availability on a real 3-server nats-server JetStream
        // cluster (test/harness/nats-cluster.ts): the leader election and its
        // faults. Files one at a time: the tests measure leases and takeovers.
        extends: true,
        test: {
          name: 'meta-ha',
          include: ['test/meta-ha/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        // The seeded cluster simulation (test/sim/cluster-sim.ts): fixed
        // seeds and the deliberate-bug checks; `npm run sim` runs more seeds.
        extends: true,
        test: {
          name: 'sim',
          include: ['test/sim/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
