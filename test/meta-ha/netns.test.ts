import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { connect, type NatsConnection, type StreamInfo } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKafkaMock, type KafkaMock } from '../harness/kafka-mock.js';
import { startNatsCluster, type TestNatsCluster, type TestNatsClusterServer } from '../harness/nats-cluster.js';
import { findExecutable, freePort } from '../harness/nats-server.js';
import { createTestNetwork, ROOT_HOST, type TestNetwork } from '../harness/netns.js';
import { PROJECT_ROOT } from '../harness/project-root.js';
import { until, waitUntil } from '../harness/wait.js';

/**
 * The network namespace harness (test/harness/netns.ts) with real processes:
 * hosts on a bridge, partitions by blackhole routes, a JetStream cluster with
 * one server per host, the Kafka mock reached from inside a host, and that
 * nothing outlives stop() or a killed test process.
 */
const LOADER = fileURLToPath(new URL('../harness/ts-loader.mjs', import.meta.url));
const NETNS_MODULE = pathToFileURL(fileURLToPath(new URL('../harness/netns.ts', import.meta.url))).href;
const IP = findExecutable('ip') ?? 'ip';
const run = promisify(execFile);

/** Replies with the address the connection came from, then closes: who reached it, seen from the server. */
const ECHO_SERVER = `
const [ip, port] = process.argv.slice(1);
require('net').createServer((s) => s.end(s.remoteAddress)).listen(Number(port), ip, () => console.log('listening'));`;

/** Prints `reply <text>` or `error <code>`; gives up after 2 s. */
const ECHO_CLIENT = `
const [ip, port] = process.argv.slice(1);
const s = require('net').connect({ host: ip, port: Number(port), timeout: 2000 });
let reply = '';
s.on('data', (d) => (reply += d));
s.on('end', () => console.log('reply ' + reply));
s.on('timeout', () => { console.log('error ETIMEDOUT'); s.destroy(); });
s.on('error', (e) => console.log('error ' + e.code));`;

/** Produces one message to `topic` through the bootstrap broker given; prints `sent`. */
const KAFKA_PRODUCER = `
const { Kafka, logLevel } = require('kafkajs');
const [broker, topic] = process.argv.slice(1);
const producer = new Kafka({ clientId: 'netns-test', brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 3 } }).producer();
producer.connect()
  .then(() => producer.send({ topic, messages: [{ value: 'from a host' }] }))
  .then(() => producer.disconnect())
  .then(() => console.log('sent'), (err) => { console.log('error ' + err.message); process.exitCode = 1; });`;

/** The first line the child prints on stdout. */
async function firstLine(child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([once(lines, 'line'), once(child, 'exit').then(() => [undefined])])) as [string | undefined];
  if (line === undefined) throw new Error(`the child exited (code ${child.exitCode}, signal ${child.signalCode}) before printing a line`);
  return line;
}

/** Everything the child prints on stdout, once it has exited. */
async function output(child: ChildProcess): Promise<{ stdout: string; code: number | null }> {
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  return { stdout: stdout.trim(), code };
}

/** Connect from the root namespace; the echo server's reply, or the error code. */
function askFromRoot(ip: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: ip, port, timeout: 2000 });
    let reply = '';
    socket.on('data', (d) => (reply += d));
    socket.on('end', () => resolve(`reply ${reply}`));
    socket.on('timeout', () => {
      socket.destroy();
      resolve('error ETIMEDOUT');
    });
    socket.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
  });
}

async function linkNames(): Promise<string[]> {
  return (JSON.parse((await run(IP, ['-j', 'link'])).stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
}

/** The network namespaces whose names start with `prefix-`. */
async function namespaces(prefix: string): Promise<string[]> {
  return (await run(IP, ['netns', 'list'])).stdout
    .split('\n')
    .map((line) => line.split(' ')[0]!)
    .filter((name) => name.startsWith(`${prefix}-`))
    .sort();
}

async function rootBlackholes(): Promise<string[]> {
  return (JSON.parse((await run(IP, ['-j', 'route', 'show', 'type', 'blackhole'])).stdout || '[]') as { dst: string }[]).map((r) => r.dst);
}

async function pidsIn(ns: string): Promise<number[]> {
  return (await run(IP, ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** A process state letter from /proc (R, S, T, Z, ...), or undefined once it is gone. */
function processState(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
  } catch {
    return undefined;
  }
}

/** Gone, or a zombie nobody reaped (the parent was killed): either way it runs no more. */
const exited = (pid: number) => processState(pid) === undefined || processState(pid) === 'Z';

describe('hosts on a bridge, partitioned by blackhole routes', () => {
  let network: TestNetwork;
  beforeAll(async () => {
    network = await createTestNetwork({ hosts: ['a', 'b'], prefix: 'rpt' });
  });
  afterAll(async () => {
    await network?.stop();
  });

  it('spawn runs the program itself inside the host: the child pid is the program, in the host namespace, and signals reach it', async () => {
    const child = network.spawn('a', process.execPath, ['-e', 'console.log("up"); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    expect(await firstLine(child)).toBe('up');
    const pid = child.pid!;
    expect(realpathSync(`/proc/${pid}/exe`)).toBe(realpathSync(process.execPath));
    expect(statSync(`/proc/${pid}/ns/net`).ino).toBe(statSync(`/run/netns/${network.host('a').ns}`).ino);
    expect(statSync(`/proc/${pid}/ns/net`).ino).not.toBe(statSync('/proc/self/ns/net').ino);
    process.kill(pid, 'SIGSTOP');
    await waitUntil(() => processState(pid) === 'T', 'the program to be stopped');
    process.kill(pid, 'SIGKILL');
    const [, signal] = await once(child, 'exit');
    expect(signal).toBe('SIGKILL');
  });

  it('partition(a, b) cuts b off from a within 2 s while the root namespace still reaches a; heal() restores it', async () => {
    const a = network.host('a');
    const b = network.host('b');
    const port = await freePort();
    const server = network.spawn('a', process.execPath, ['-e', ECHO_SERVER, a.ip, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const askFromB = async () => (await output(network.spawn('b', process.execPath, ['-e', ECHO_CLIENT, a.ip, String(port)]))).stdout;
    try {
      expect(await firstLine(server)).toBe('listening');
      expect(await askFromB()).toBe(`reply ${b.ip}`);
      expect(await askFromRoot(a.ip, port)).toBe(`reply ${network.rootIp}`);

      await network.partition(['a'], ['b']);
      const started = Date.now();
      expect(await askFromB()).toMatch(/^error /);
      expect(Date.now() - started).toBeLessThan(3000); // the client's 2 s, plus starting node
      expect(await askFromRoot(a.ip, port)).toBe(`reply ${network.rootIp}`);

      await network.heal();
      expect(await askFromB()).toBe(`reply ${b.ip}`);

      // The root namespace can be cut off too; b is not.
      await network.partition(['a'], [ROOT_HOST]);
      expect(await askFromRoot(a.ip, port)).toMatch(/^error /);
      expect(await askFromB()).toBe(`reply ${b.ip}`);
      await network.heal();
      expect(await askFromRoot(a.ip, port)).toBe(`reply ${network.rootIp}`);
    } finally {
      server.kill('SIGKILL');
      await network.heal();
    }
  });
});

describe('a 3-server JetStream cluster, one server per host', () => {
  const HOSTS = ['h0', 'h1', 'h2'];
  let network: TestNetwork;
  let cluster: TestNatsCluster;
  beforeAll(async () => {
    network = await createTestNetwork({ hosts: HOSTS, prefix: 'rptn' });
    cluster = await startNatsCluster({ inNetwork: { network, hosts: HOSTS } });
  });
  afterAll(async () => {
    await cluster?.stop();
    await network?.stop();
  });

  async function withNats<T>(urls: string[], fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
    const nc = await connect({ servers: urls, timeout: 1000, reconnect: false });
    try {
      return await fn(nc);
    } finally {
      await nc.close().catch(() => {});
    }
  }
  /** Whether JetStream answers an account info request (it has a meta leader) through these servers. */
  const jetStreamAnswers = (urls: string[]) =>
    withNats(urls, async (nc) => (await nc.jetstreamManager({ timeout: 1000 })).getAccountInfo()).then(
      () => true,
      () => false,
    );
  const streamInfo = (urls: string[], stream: string): Promise<StreamInfo | undefined> =>
    withNats(urls, async (nc) => (await nc.jetstreamManager({ timeout: 1000 })).streams.info(stream)).catch(() => undefined);
  const publishes = (urls: string[], subject: string) =>
    withNats(urls, (nc) => nc.jetstream({ timeout: 1000 }).publish(subject, 'x')).then(
      () => true,
      () => false,
    );
  const replicaOf = async (urls: string[], name: string) => (await streamInfo(urls, 'PART'))?.cluster?.replicas?.find((r) => r.name === name);
  const urlsOf = (servers: readonly TestNatsClusterServer[]) => servers.map((s) => s.url);

  it('each server runs inside its host and listens on its ip, which the root namespace reaches', async () => {
    for (const s of cluster.servers) {
      const host = network.host(s.host!);
      expect(s.url).toBe(`nats://${host.ip}:${s.server.port}`);
      const pids = await pidsIn(host.ns);
      expect(pids.map((pid) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim())).toEqual(['nats-server']);
      expect(await jetStreamAnswers([s.url])).toBe(true);
    }
  });

  it('a server cut off from the other two: they keep a meta leader and elect a new stream leader; after heal() the three are in step again', async () => {
    await withNats(cluster.urls, async (nc) => {
      await (await nc.jetstreamManager()).streams.add({ name: 'PART', subjects: ['part.>'], num_replicas: 3 });
      await nc.jetstream().publish('part.before', 'x');
    });
    const leader = await until(async () => (await streamInfo(cluster.urls, 'PART'))?.cluster?.leader, 'a leader of stream PART');
    const isolated = cluster.byName(leader);
    const rest = cluster.servers.filter((s) => s !== isolated);

    await network.partition([isolated.host!], rest.map((s) => s.host!));
    try {
      // The cut-off leader has no quorum for a write, ...
      expect(await publishes([isolated.url], 'part.cut')).toBe(false);
      // ... the other two elect a leader among themselves and take writes, JetStream answers through them,
      await waitUntil(() => publishes(urlsOf(rest), 'part.during'), 'a write through the two connected servers', { timeoutMs: 20_000, everyMs: 200 });
      const newLeader = await until(async () => (await streamInfo(urlsOf(rest), 'PART'))?.cluster?.leader, 'the leader of PART, seen by the two');
      expect(rest.map((s) => s.name)).toContain(newLeader);
      await waitUntil(() => jetStreamAnswers(urlsOf(rest)), 'JetStream to answer through the two', { timeoutMs: 10_000, everyMs: 200 });
      // ... and see the cut-off one fall behind.
      await waitUntil(async () => (await replicaOf(urlsOf(rest), isolated.name))?.current === false, `${isolated.name} to fall behind`, {
        timeoutMs: 10_000,
        everyMs: 200,
      });
    } finally {
      await network.heal();
    }

    for (const s of cluster.servers) {
      await waitUntil(() => jetStreamAnswers([s.url]), `JetStream to answer through ${s.name}`, { timeoutMs: 20_000, everyMs: 200 });
    }
    await waitUntil(
      async () => {
        const replicas = (await streamInfo(cluster.urls, 'PART'))?.cluster?.replicas ?? [];
        return replicas.length === 2 && replicas.every((r) => r.current && !r.offline);
      },
      'all three replicas of PART to be current',
      { timeoutMs: 20_000, everyMs: 200 },
    );
  });

  it('SIGKILL of a server inside its host, and a start on the same port: it rejoins', async () => {
    const s = cluster.servers[2]!;
    const host = network.host(s.host!);
    await cluster.kill(2);
    expect(await pidsIn(host.ns)).toEqual([]);
    await cluster.start(2);
    expect(s.url).toBe(`nats://${host.ip}:${s.server.port}`);
    await waitUntil(() => jetStreamAnswers([s.url]), `JetStream to answer through ${s.name}`, { timeoutMs: 20_000, everyMs: 200 });
  });
});

describe('the Kafka mock, listening on the root ip', () => {
  let network: TestNetwork;
  let mock: KafkaMock;
  beforeAll(async () => {
    network = await createTestNetwork({ hosts: ['k'], prefix: 'rptk' });
    mock = await startKafkaMock({ brokers: 2, listenAddress: network.rootIp });
  });
  afterAll(async () => {
    await mock?.stop();
    await network?.stop();
  });

  it('a process inside a host produces to it, through the bootstrap broker and the leader the brokers advertise', async () => {
    expect(mock.brokers).toHaveLength(2);
    for (const broker of mock.brokers) expect(broker.startsWith(`${network.rootIp}:`)).toBe(true);
    await mock.createTopic('netns', 1, 2);
    // Broker 2 leads: the producer must reach the address the mock advertises, not just the bootstrap one.
    await mock.setLeader('netns', 0, 2);
    const producer = network.spawn('k', process.execPath, ['-e', KAFKA_PRODUCER, mock.brokers[0]!, 'netns'], { cwd: PROJECT_ROOT });
    expect(await output(producer)).toEqual({ stdout: 'sent', code: 0 });

    const admin = new Kafka({ clientId: 'netns-test-root', brokers: mock.brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      expect((await admin.fetchTopicOffsets('netns')).map((p) => p.high)).toEqual(['1']);
    } finally {
      await admin.disconnect();
    }
  });
});

describe('teardown', () => {
  it('stop() kills what runs in the hosts and leaves no namespace, veth, bridge or route behind; a second stop() is a no-op', async () => {
    const linksBefore = await linkNames();
    const network = await createTestNetwork({ hosts: ['x', 'y'], prefix: 'rpts' });
    try {
      expect(await namespaces('rpts')).toEqual(['rpts-x', 'rpts-y']);
      const added = (await linkNames()).filter((name) => !linksBefore.includes(name));
      expect(added).toHaveLength(3); // the bridge and a veth per host

      const child = network.spawn('x', process.execPath, ['-e', 'console.log("up"); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'inherit'] });
      expect(await firstLine(child)).toBe('up');
      process.kill(child.pid!, 'SIGSTOP'); // stop() must kill a stopped process too
      await network.partition(['x'], ['y', ROOT_HOST]);
      expect((await rootBlackholes()).filter((dst) => dst === network.host('x').ip)).toHaveLength(1);

      const exit = once(child, 'exit');
      await network.stop();
      expect((await exit)[1]).toBe('SIGKILL');
      expect(await namespaces('rpts')).toEqual([]);
      expect((await linkNames()).filter((name) => added.includes(name))).toEqual([]);
      expect(await rootBlackholes()).not.toContain(network.host('x').ip);
      await network.stop();
    } finally {
      await network.stop();
    }
  });

  it('a second network on a prefix in use is refused', async () => {
    const network = await createTestNetwork({ hosts: ['x'], prefix: 'rpts' });
    try {
      await expect(createTestNetwork({ hosts: ['x'], prefix: 'rpts' })).rejects.toThrow(/in use by process/);
    } finally {
      await network.stop();
    }
  });

  it('what a killed test process left behind is removed by the next createTestNetwork with its prefix', async () => {
    const linksBefore = await linkNames();
    const script = `
      import { createTestNetwork } from ${JSON.stringify(NETNS_MODULE)};
      const network = await createTestNetwork({ hosts: ['z'], prefix: 'rptstale' });
      const inner = network.spawn('z', process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
      inner.once('spawn', () => console.log(inner.pid));`;
    const owner = spawn(process.execPath, ['--import', LOADER, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const inner = Number(await firstLine(owner));
    owner.kill('SIGKILL');
    await once(owner, 'exit');
    const leftLinks = (await linkNames()).filter((name) => !linksBefore.includes(name));
    expect(leftLinks).toHaveLength(2);
    expect(await namespaces('rptstale')).toEqual(['rptstale-z']);
    expect(exited(inner)).toBe(false);

    const network = await createTestNetwork({ hosts: ['z'], prefix: 'rptstale' });
    expect(exited(inner)).toBe(true);
    expect((await linkNames()).filter((name) => leftLinks.includes(name))).toEqual([]);
    await network.stop();
    expect(await namespaces('rptstale')).toEqual([]);
    expect(existsSync('/run/reprise-netns/rptstale.json')).toBe(false);
  });

  it('without root, createTestNetwork says what it needs', async () => {
    const script = `
      import { createTestNetwork } from ${JSON.stringify(NETNS_MODULE)};
      await createTestNetwork({ hosts: ['x'], prefix: 'rptuser' }).then(() => console.log('created'), (err) => console.log(err.message));`;
    const child = spawn(process.execPath, ['--import', LOADER, '--input-type=module', '-e', script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] });
    const { stdout } = await output(child);
    expect(stdout).toMatch(/^test networks need root \(uid 65534 here\).*CAP_NET_ADMIN/);
    expect(await namespaces('rptuser')).toEqual([]);
  });
});
