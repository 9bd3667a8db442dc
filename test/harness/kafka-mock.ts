/**
 * A real Kafka-protocol cluster for tests, without a Kafka broker: librdkafka's
 * mock cluster driven by the small C program in ./kafka-mock/mock-cluster.c.
 * kafkajs talks to it over TCP exactly as it would to Kafka, and the test can
 * inject faults (broker down, leader moves, request errors, latency).
 *
 * The helper is compiled on first use into node_modules/.cache, keyed by a
 * hash of its source and of the librdkafka build flags, so it is built once
 * per machine and parallel test files never race on the binary.
 *
 * With KAFKA_BROKERS set (a comma list), `startTestKafka` hands out that real
 * cluster instead and no fault injection is available.
 *
 * The brokers listen on 127.0.0.1 unless `listenAddress` says otherwise. A
 * process in a namespace of a test network (test/harness/netns.ts) cannot
 * reach the root namespace's loopback, and running the mock in a namespace of
 * its own would not help (it would listen on that namespace's loopback), so
 * for such processes the mock listens on, and advertises, the network's
 * `rootIp`. librdkafka's mock has no setting for this; the helper moves its
 * bind (see kafka-mock/mock-cluster.c).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from './project-root.js';

const run = promisify(execFile);

const SOURCE = join(PROJECT_ROOT, 'test', 'harness', 'kafka-mock', 'mock-cluster.c');
const CACHE_DIR = join(PROJECT_ROOT, 'node_modules', '.cache', 'reprise-kafka-mock');
const INSTALL_HINT =
  'install librdkafka-dev: apt-get install -y librdkafka-dev (with gcc, libc6-dev and pkg-config)';

/** Kafka protocol API keys, for `pushErrors`/`clearErrors`. */
export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  ApiVersions: 18,
  CreateTopics: 19,
  DeleteRecords: 21,
  InitProducerId: 22,
} as const;

/**
 * A Kafka error, for fault injection: a protocol error code, or librdkafka's
 * name for one (e.g. 'NOT_LEADER_FOR_PARTITION'; '_TRANSPORT' makes the mock
 * broker drop the connection instead of answering).
 */
export type KafkaErrorSpec = number | string;

export interface KafkaMock {
  /** host:port of each broker; broker ids are 1..brokers.length, in this order. */
  readonly brokers: string[];
  /** Create a topic (the mock has no CreateTopics API). */
  createTopic(name: string, partitions?: number, replicationFactor?: number): Promise<void>;
  /** Close the broker's connections and refuse new ones (leaders do not move). */
  brokerDown(id: number): Promise<void>;
  brokerUp(id: number): Promise<void>;
  /** Make `id` the partition's leader (-1: leaderless). Creates the topic if needed. */
  setLeader(topic: string, partition: number, id: number): Promise<void>;
  /** Delay every response of the broker by `ms`. */
  setRtt(id: number, ms: number): Promise<void>;
  /** The next requests of `apiKey` (cluster-wide) fail with these errors, one each, in order. */
  pushErrors(apiKey: number, errors: readonly KafkaErrorSpec[]): Promise<void>;
  /** Drop the not yet used errors pushed for `apiKey`. */
  clearErrors(apiKey: number): Promise<void>;
  /** Metadata requests report this error for the topic (0 clears it). */
  topicError(topic: string, error: KafkaErrorSpec): Promise<void>;
  /** Shut the cluster down; idempotent. */
  stop(): Promise<void>;
}

export interface TestKafka {
  readonly brokers: string[];
  /** The mock cluster, or undefined when KAFKA_BROKERS points at a real one. */
  readonly mock: KafkaMock | undefined;
  stop(): Promise<void>;
}

export interface StartKafkaMockOptions {
  /** Number of brokers (default 3). */
  readonly brokers?: number;
  /**
   * The IPv4 address the brokers listen on and advertise (default 127.0.0.1),
   * e.g. a test network's `rootIp`, which its hosts and the test process both reach.
   */
  readonly listenAddress?: string;
}

/** The cluster tests should use: KAFKA_BROKERS if set, else a fresh mock cluster. */
export async function startTestKafka(options: StartKafkaMockOptions = {}): Promise<TestKafka> {
  const real = process.env.KAFKA_BROKERS?.trim();
  if (real) {
    const brokers = real
      .split(',')
      .map((b) => b.trim())
      .filter((b) => b.length > 0);
    return { brokers, mock: undefined, stop: async () => undefined };
  }
  const mock = await startKafkaMock(options);
  return { brokers: mock.brokers, mock, stop: () => mock.stop() };
}

/** True when the tests run against a real cluster (KAFKA_BROKERS set). */
export function usingRealKafka(): boolean {
  return Boolean(process.env.KAFKA_BROKERS?.trim());
}

/** Start a mock cluster of `brokers` brokers (default 3), compiling the helper if needed. */
export async function startKafkaMock(options: StartKafkaMockOptions = {}): Promise<KafkaMock> {
  const brokerCount = options.brokers ?? 3;
  const listenAddress = options.listenAddress ?? '127.0.0.1';
  if (!Number.isInteger(brokerCount) || brokerCount < 1 || brokerCount > 100) {
    throw new Error(`startKafkaMock: brokers must be an integer in 1..100, got ${brokerCount}`);
  }
  if (!isIPv4(listenAddress)) throw new Error(`startKafkaMock: listenAddress must be an IPv4 address, got ${listenAddress}`);
  const binary = await buildHelper();
  const child = spawn(binary, [String(brokerCount), listenAddress], { stdio: ['pipe', 'pipe', 'pipe'] });
  return MockProcess.start(child, brokerCount);
}

// ---------------------------------------------------------------------------

let building: Promise<string> | undefined;

/** Path of the compiled helper, building it once per source/library version. */
function buildHelper(): Promise<string> {
  building ??= (async () => {
    const source = await readFile(SOURCE);
    let flags: string[];
    let version: string;
    try {
      const cflags = (await run('pkg-config', ['--cflags', '--libs', 'rdkafka'])).stdout;
      version = (await run('pkg-config', ['--modversion', 'rdkafka'])).stdout.trim();
      flags = cflags.split(/\s+/).filter((f) => f.length > 0);
    } catch (err) {
      throw new Error(`the Kafka mock cluster needs librdkafka's headers and pkg-config: ${INSTALL_HINT}`, {
        cause: err,
      });
    }
    const hash = createHash('sha256').update(source).update('\0').update(flags.join(' ')).update('\0').update(version);
    const binary = join(CACHE_DIR, `mock-cluster-${hash.digest('hex').slice(0, 16)}`);
    if (await exists(binary)) return binary;

    await mkdir(CACHE_DIR, { recursive: true });
    // Compile to a private name, then rename: another test process building
    // the same source at the same time either wins or is replaced by an
    // identical file, and nobody ever runs a half-written binary.
    const temp = `${binary}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await run('gcc', ['-std=c11', '-D_POSIX_C_SOURCE=200809L', '-O1', '-Wall', '-o', temp, SOURCE, ...flags]);
      await rename(temp, binary);
    } catch (err) {
      await rm(temp, { force: true });
      const e = err as { code?: string; stderr?: string; message: string };
      const detail = e.code === 'ENOENT' ? 'gcc not found' : (e.stderr?.trim() || e.message);
      throw new Error(`cannot build the Kafka mock cluster helper (${detail}): ${INSTALL_HINT}`, { cause: err });
    }
    return binary;
  })();
  // A failed build is retried by the next caller rather than cached.
  building.catch(() => (building = undefined));
  return building;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

interface Pending {
  readonly command: string;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

const STDERR_KEEP = 4096;

/**
 * One running helper process: writes commands, matches reply lines in order.
 * Invalid arguments reject like failed commands.
 */
class MockProcess implements KafkaMock {
  readonly brokers: string[];
  private readonly child: ChildProcess;
  private readonly brokerCount: number;
  private readonly pending: Pending[] = [];
  private stderr = '';
  private exited = false;
  private readonly exit: Promise<void>;
  private stopping: Promise<void> | undefined;

  private constructor(
    child: ChildProcess,
    brokerCount: number,
    brokers: string[],
    lines: AsyncIterator<string>,
    exit: Promise<void>,
  ) {
    this.child = child;
    this.brokerCount = brokerCount;
    this.brokers = brokers;
    this.exit = exit;
    void this.readReplies(lines);
  }

  static async start(child: ChildProcess, brokerCount: number): Promise<KafkaMock> {
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    const onStderr = (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_KEEP));
    child.stderr!.on('data', onStderr);
    const exit = new Promise<void>((res) => child.once('exit', () => res()));
    const spawned = new Promise<void>((res, rej) => {
      child.once('spawn', res);
      child.once('error', rej);
    });
    await spawned;

    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const first = await Promise.race([lines.next(), exit.then(() => undefined)]);
    if (!first || first.done) {
      await exit;
      throw new Error(`the Kafka mock cluster exited before it was ready (exit ${child.exitCode}): ${stderr.trim()}`);
    }
    let bootstrap: string;
    try {
      bootstrap = (JSON.parse(first.value) as { bootstrap: string }).bootstrap;
    } catch {
      child.kill('SIGKILL');
      throw new Error(`the Kafka mock cluster printed an unexpected first line: ${first.value}`);
    }
    const mock = new MockProcess(child, brokerCount, bootstrap.split(','), lines, exit);
    child.stderr!.off('data', onStderr);
    mock.stderr = stderr;
    child.stderr!.on('data', (chunk: string) => (mock.stderr = (mock.stderr + chunk).slice(-STDERR_KEEP)));
    return mock;
  }

  async createTopic(name: string, partitions = 1, replicationFactor = Math.min(3, this.brokerCount)): Promise<void> {
    return this.send('create_topic', word(name), partitions, replicationFactor);
  }

  async brokerDown(id: number): Promise<void> {
    return this.send('broker_down', id);
  }

  async brokerUp(id: number): Promise<void> {
    return this.send('broker_up', id);
  }

  async setLeader(topic: string, partition: number, id: number): Promise<void> {
    return this.send('leader', word(topic), partition, id);
  }

  async setRtt(id: number, ms: number): Promise<void> {
    return this.send('rtt', id, ms);
  }

  async pushErrors(apiKey: number, errors: readonly KafkaErrorSpec[]): Promise<void> {
    if (errors.length === 0) return;
    return this.send('push_errors', apiKey, errors.length, ...errors.map((e) => word(String(e))));
  }

  async clearErrors(apiKey: number): Promise<void> {
    return this.send('clear_errors', apiKey);
  }

  async topicError(topic: string, error: KafkaErrorSpec): Promise<void> {
    return this.send('topic_error', word(topic), word(String(error)));
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (!this.exited) {
        // EOF on stdin is the helper's signal to shut down cleanly.
        this.child.stdin!.end();
        const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
        await this.exit;
        clearTimeout(timer);
      }
    })();
    return this.stopping;
  }

  private send(...words: (string | number)[]): Promise<void> {
    const command = words.join(' ');
    return new Promise<void>((resolve, reject) => {
      if (this.exited || this.stopping) {
        reject(new Error(`Kafka mock cluster: cannot run "${command}": the cluster is stopped`));
        return;
      }
      this.pending.push({ command, resolve, reject });
      this.child.stdin!.write(`${command}\n`);
    });
  }

  private async readReplies(lines: AsyncIterator<string>): Promise<void> {
    try {
      for (let r = await lines.next(); !r.done; r = await lines.next()) {
        const waiter = this.pending.shift();
        if (!waiter) continue;
        let reply: { ok: boolean; error?: string };
        try {
          reply = JSON.parse(r.value) as { ok: boolean; error?: string };
        } catch {
          waiter.reject(new Error(`Kafka mock cluster: unexpected reply to "${waiter.command}": ${r.value}`));
          continue;
        }
        if (reply.ok) waiter.resolve();
        else waiter.reject(new Error(`Kafka mock cluster: ${waiter.command}: ${reply.error ?? 'failed'}`));
      }
    } catch {
      // stdout closed abruptly: handled below like an exit.
    }
    await this.exit;
    this.exited = true;
    for (const waiter of this.pending.splice(0)) {
      waiter.reject(
        new Error(
          `Kafka mock cluster exited (code ${this.child.exitCode}) before answering "${waiter.command}": ` +
            this.stderr.trim(),
        ),
      );
    }
  }
}

/** A command word: no whitespace, or the helper would split it. */
function word(s: string): string {
  if (s.length === 0 || /\s/.test(s)) throw new Error(`Kafka mock cluster: invalid name ${JSON.stringify(s)}`);
  return s;
}
