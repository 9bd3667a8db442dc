/**
 * `npm run kafka-mock`: librdkafka's mock Kafka cluster (the one the tests
 * use) as a process of its own, for trying a cluster on one machine without
 * Docker. It prints the bootstrap servers and runs until SIGINT or SIGTERM.
 * Its brokers keep everything in memory, about the last 5 MB of each
 * partition: a playground, not a Kafka.
 */
import { startKafkaMock } from './kafka-mock.js';

const brokers = Number(process.argv[2] ?? 3);
const mock = await startKafkaMock({ brokers });
// The mock cannot grant producer ids, so reprise's idempotent producer must be off.
process.stdout.write(
  `Kafka mock cluster of ${brokers} brokers; for reprise:\n` +
    `export REPRISE_WAL_PROVIDER=kafka REPRISE_WAL_IDEMPOTENT=false REPRISE_WAL_BROKER_ENDPOINTS=${mock.brokers.join(',')}\n`,
);
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  void mock.stop().then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
