/**
 * Real network partitions for tests: each host of a test network is a Linux
 * network namespace, joined to the root namespace (where the test process
 * runs) by a veth pair on a bridge:
 *
 *   root namespace: bridge rpb<tag>, rootIp 10.X.Y.1/24 (a /24 no route here uses)
 *   host i:         namespace <prefix>-<host>, eth0 10.X.Y.(i+2)/24, lo up,
 *                   default route via rootIp
 *
 * Hosts reach each other and the root namespace over the bridge; the root
 * namespace reaches every host's ip directly. A server in the root namespace
 * that hosts should reach listens on 0.0.0.0 or `rootIp` (127.0.0.1 is every
 * namespace's own loopback).
 *
 * `partition` adds blackhole routes to the other side's /32 addresses, on
 * both sides: a new connection fails at once (EINVAL), and an open one stalls
 * without a reset, as on a cut link. `heal` removes them.
 *
 * Servers go in hosts with `startNatsServer`/`startNatsCluster`'s
 * `inNetwork`; `startKafkaMock({ listenAddress: network.rootIp })` is a Kafka
 * the hosts reach (see kafka-mock.ts for why it stays in the root namespace).
 *
 * Needs root (network namespaces, a bridge and veth pairs: CAP_SYS_ADMIN and
 * CAP_NET_ADMIN) and iproute2's `ip`. What a network created is recorded in
 * /run/reprise-netns/<prefix>.json before it is created, so that a test killed
 * midway leaves nothing behind for long: the next `createTestNetwork` with the
 * same prefix removes it first (`cleanupStale`). One network per prefix at a
 * time.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findExecutable } from './nats-server.js';
import { waitUntil } from './wait.js';

export interface TestHost {
  readonly name: string;
  /** Its network namespace, `<prefix>-<name>`. */
  readonly ns: string;
  readonly ip: string;
}

export interface TestNetwork {
  readonly hosts: ReadonlyMap<string, TestHost>;
  /** The bridge's address in the root namespace: where hosts reach a server of the test process. */
  readonly rootIp: string;
  /** The host named `name`; throws for an unknown one. */
  host(name: string): TestHost;
  /**
   * child_process.spawn of `command` inside the host (`ip netns exec`). `ip`
   * execs the program in place, so `child.pid` is the program's own pid and
   * a signal to it (SIGKILL, SIGSTOP) reaches the program.
   */
  spawn(host: string, command: string, args?: readonly string[], options?: SpawnOptions): ChildProcess;
  /**
   * Every host of `sideA` can no longer reach any host of `sideB`, and back.
   * `ROOT_HOST` ('root') names the root namespace, to cut a host off from
   * the test process and from servers it runs.
   */
  partition(sideA: readonly string[], sideB: readonly string[]): Promise<void>;
  /** Remove every blackhole route `partition` added. */
  heal(): Promise<void>;
  /** Kill the processes inside the hosts, delete namespaces, veths, bridge and routes. Idempotent. */
  stop(): Promise<void>;
}

export interface CreateTestNetworkOptions {
  /** Host names: lowercase letters and digits, at most 12 characters, not 'root'. */
  readonly hosts: readonly string[];
  /** Namespace names are `<prefix>-<host>` (default 'rpn'): lowercase letters and digits, at most 12 characters. */
  readonly prefix?: string;
}

/** The name `partition` gives the root namespace. */
export const ROOT_HOST = 'root';

const STATE_DIR = '/run/reprise-netns';
const NAME = /^[a-z0-9]{1,12}$/;
/** What ip says of a link, namespace or route that is not there. */
const MISSING = /Cannot find device|No such file|No such process/;

/** What a network created, written before it is created: what `cleanupStale` removes. */
interface NetworkRecord {
  readonly owner: number;
  /** 10.X.Y: the network's /24. */
  readonly subnet: string;
  readonly bridge: string;
  /** The veths' root-namespace ends, one per host, in host order. */
  readonly veths: readonly string[];
  readonly namespaces: readonly string[];
}

/** Prefixes this process has a network on now. */
const liveHere = new Set<string>();

const execFileAsync = promisify(execFile);

let ipPath: string | undefined;
function ipBinary(): string {
  ipPath ??= findExecutable('ip');
  if (!ipPath) throw new Error("test networks need iproute2's `ip`, not found on PATH nor in /usr/sbin: apt-get install -y iproute2");
  return ipPath;
}

/** Run `ip args...` (in namespace `ns` if given); its stdout, or an error with ip's message. */
async function ip(args: readonly string[], ns?: string): Promise<string> {
  const argv = ns ? ['-n', ns, ...args] : [...args];
  try {
    return (await execFileAsync(ipBinary(), argv)).stdout;
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim() || (err as Error).message;
    throw new Error(`ip ${argv.join(' ')}: ${detail}`, { cause: err });
  }
}

/** Like `ip`, but a thing already gone is no error (teardown is idempotent). */
async function ipUnlessMissing(args: readonly string[], ns?: string): Promise<void> {
  try {
    await ip(args, ns);
  } catch (err) {
    if (!MISSING.test((err as Error).message)) throw err;
  }
}

function recordPath(prefix: string): string {
  return join(STATE_DIR, `${prefix}.json`);
}

function readRecord(prefix: string): NetworkRecord | undefined {
  try {
    return JSON.parse(readFileSync(recordPath(prefix), 'utf8')) as NetworkRecord;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The processes running in namespace `ns` (none if it is gone). */
async function pidsIn(ns: string): Promise<number[]> {
  let out = '';
  try {
    out = await ip(['netns', 'pids', ns]);
  } catch (err) {
    if (!MISSING.test((err as Error).message)) throw err;
  }
  return out.split(/\s+/).filter(Boolean).map(Number);
}

/** SIGKILL everything running in `ns` (stopped processes too, and what they fork meanwhile) until nothing is left. */
async function killProcessesIn(ns: string): Promise<void> {
  const killAll = async () => {
    const pids = await pidsIn(ns);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Exited meanwhile.
      }
    }
    return pids.length === 0;
  };
  await waitUntil(killAll, `the processes in network namespace ${ns} to exit`, { timeoutMs: 5000, everyMs: 20 });
}

/** Delete what `record` lists, and the root namespace's blackhole routes into its subnet. */
async function removeNetwork(prefix: string, record: NetworkRecord): Promise<void> {
  await Promise.all(record.namespaces.map(killProcessesIn));
  const blackholes = JSON.parse((await ip(['-j', 'route', 'show', 'type', 'blackhole'])) || '[]') as { dst: string }[];
  for (const { dst } of blackholes.filter((r) => r.dst.startsWith(`${record.subnet}.`))) {
    await ipUnlessMissing(['route', 'del', 'blackhole', dst]);
  }
  // A veth goes with its namespace, but only once the kernel has cleaned the
  // namespace up, later: deleting its root end removes both ends now.
  for (const link of [...record.veths, record.bridge]) await ipUnlessMissing(['link', 'del', link]);
  for (const ns of record.namespaces) await ipUnlessMissing(['netns', 'del', ns]);
  rmSync(recordPath(prefix), { force: true });
}

/**
 * Remove what a network with this prefix left behind: one whose process
 * died (a test killed midway), or one this process failed to stop. Throws if
 * a live process still uses the prefix.
 */
export async function cleanupStale(prefix: string): Promise<void> {
  const record = readRecord(prefix);
  if (!record) return;
  const inUse = record.owner === process.pid ? liveHere.has(prefix) : isAlive(record.owner);
  if (inUse) {
    throw new Error(`a test network with prefix ${prefix} is in use by process ${record.owner} (${recordPath(prefix)}); give this one another prefix`);
  }
  await removeNetwork(prefix, record);
}

/** Parse `a.b.c.d[/len]` into a 32-bit number and a prefix length. */
function parseCidr(cidr: string): { addr: number; len: number } {
  const [address, len] = cidr.split('/');
  const addr = address!.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
  return { addr, len: len === undefined ? 32 : Number(len) };
}

function sameNetwork(a: number, b: number, len: number): boolean {
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  return ((a & mask) >>> 0) === ((b & mask) >>> 0);
}

/** A 10.X.Y /24 that no IPv4 route of the root namespace (any table) overlaps, as `10.X.Y`. */
async function pickSubnet(): Promise<string> {
  const routes = JSON.parse(await ip(['-j', '-4', 'route', 'show', 'table', 'all'])) as { dst: string }[];
  const used = routes.filter((r) => r.dst !== 'default').map((r) => parseCidr(r.dst));
  for (let attempt = 0; attempt < 100; attempt++) {
    const x = randomInt(64, 251);
    const y = randomInt(0, 256);
    const base = parseCidr(`10.${x}.${y}.0`).addr;
    if (!used.some((r) => sameNetwork(base, r.addr, Math.min(24, r.len)))) return `10.${x}.${y}`;
  }
  throw new Error('createTestNetwork: found no free 10.64-250.x.0/24 subnet for the bridge');
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      `test networks need root (uid ${process.getuid?.()} here): they create network namespaces, a bridge and veth pairs ` +
        '(CAP_SYS_ADMIN and CAP_NET_ADMIN); run the tests as root, in a container with --privileged or --cap-add SYS_ADMIN --cap-add NET_ADMIN',
    );
  }
}

async function addNamespace(ns: string): Promise<void> {
  try {
    await ip(['netns', 'add', ns]);
  } catch (err) {
    throw new Error(
      `cannot create network namespace ${ns}: ${(err as Error).message}. Test networks need root with CAP_SYS_ADMIN and ` +
        'CAP_NET_ADMIN and a writable /run/netns (in a container: --privileged, or --cap-add SYS_ADMIN --cap-add NET_ADMIN)',
      { cause: err },
    );
  }
}

/** One end of a partition: a host's namespace, or the root namespace (ns undefined). */
interface Side {
  readonly ns: string | undefined;
  readonly ip: string;
}

class Network implements TestNetwork {
  readonly hosts: ReadonlyMap<string, TestHost>;
  readonly rootIp: string;
  /** Blackhole routes added, by `<ns or root> <dst>`. */
  private readonly blackholes = new Map<string, { readonly from: Side; readonly dst: string }>();
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly prefix: string,
    private readonly record: NetworkRecord,
    hosts: readonly TestHost[],
  ) {
    this.hosts = new Map(hosts.map((h) => [h.name, h]));
    this.rootIp = `${record.subnet}.1`;
  }

  host(name: string): TestHost {
    const host = this.hosts.get(name);
    if (!host) throw new Error(`no host named ${name} in this test network (${[...this.hosts.keys()].join(', ')})`);
    return host;
  }

  spawn(host: string, command: string, args: readonly string[] = [], options: SpawnOptions = {}): ChildProcess {
    return spawn(ipBinary(), ['netns', 'exec', this.host(host).ns, command, ...args], options);
  }

  async partition(sideA: readonly string[], sideB: readonly string[]): Promise<void> {
    const both = sideA.filter((name) => sideB.includes(name));
    if (both.length > 0) throw new Error(`partition: ${both.join(', ')} cannot be on both sides`);
    const a = sideA.map((name) => this.side(name));
    const b = sideB.map((name) => this.side(name));
    for (const x of a) {
      for (const y of b) {
        await this.blackhole(x, y.ip);
        await this.blackhole(y, x.ip);
      }
    }
  }

  async heal(): Promise<void> {
    for (const [key, { from, dst }] of this.blackholes) {
      await ip(['route', 'del', 'blackhole', `${dst}/32`], from.ns);
      this.blackholes.delete(key);
    }
  }

  stop(): Promise<void> {
    // Even if removal fails midway, the record stays for the next cleanupStale, which may then take it.
    this.stopping ??= removeNetwork(this.prefix, this.record).finally(() => {
      this.blackholes.clear();
      liveHere.delete(this.prefix);
    });
    return this.stopping;
  }

  /** Create the bridge, then each host: its namespace, its veth on the bridge, its address and routes. */
  async build(): Promise<void> {
    const { bridge, veths } = this.record;
    await ip(['link', 'add', bridge, 'type', 'bridge']);
    await ip(['addr', 'add', `${this.rootIp}/24`, 'dev', bridge]);
    await ip(['link', 'set', bridge, 'up']);
    // allSettled: a failed host must not leave the others still building while stop() removes them.
    const built = await Promise.allSettled(
      [...this.hosts.values()].map(async (host, i) => {
        const veth = veths[i]!;
        await addNamespace(host.ns);
        // The host's end is created inside the namespace, so every host can call it eth0.
        await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
        await ip(['link', 'set', veth, 'master', bridge, 'up']);
        await ip(['link', 'set', 'lo', 'up'], host.ns);
        await ip(['addr', 'add', `${host.ip}/24`, 'dev', 'eth0'], host.ns);
        await ip(['link', 'set', 'eth0', 'up'], host.ns);
        await ip(['route', 'add', 'default', 'via', this.rootIp], host.ns);
      }),
    );
    const failed = built.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private side(name: string): Side {
    if (name === ROOT_HOST) return { ns: undefined, ip: this.rootIp };
    const host = this.host(name);
    return { ns: host.ns, ip: host.ip };
  }

  private async blackhole(from: Side, dst: string): Promise<void> {
    const key = `${from.ns ?? ROOT_HOST} ${dst}`;
    if (this.blackholes.has(key)) return;
    await ip(['route', 'add', 'blackhole', `${dst}/32`], from.ns);
    this.blackholes.set(key, { from, dst });
  }
}

/** Create a test network: a bridge in the root namespace and one namespace per host on it. */
export async function createTestNetwork(options: CreateTestNetworkOptions): Promise<TestNetwork> {
  const prefix = options.prefix ?? 'rpn';
  const names = options.hosts;
  if (!NAME.test(prefix)) throw new Error(`createTestNetwork: prefix ${JSON.stringify(prefix)} is not 1-12 lowercase letters and digits`);
  for (const name of names) {
    if (!NAME.test(name) || name === ROOT_HOST) throw new Error(`createTestNetwork: host name ${JSON.stringify(name)} is not 1-12 lowercase letters and digits other than 'root'`);
  }
  if (new Set(names).size !== names.length) throw new Error(`createTestNetwork: host names repeat: ${names.join(', ')}`);
  if (names.length < 1 || names.length > 250) throw new Error(`createTestNetwork: 1 to 250 hosts, got ${names.length}`);
  requireRoot();
  await cleanupStale(prefix);

  // Interface names have at most 15 characters: short names and a per-network tag.
  const tag = randomBytes(2).toString('hex');
  const subnet = await pickSubnet();
  const hosts = names.map((name, i): TestHost => ({ name, ns: `${prefix}-${name}`, ip: `${subnet}.${i + 2}` }));
  const record: NetworkRecord = {
    owner: process.pid,
    subnet,
    bridge: `rpb${tag}`,
    veths: names.map((_, i) => `rpv${tag}${i}`),
    namespaces: hosts.map((h) => h.ns),
  };
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(recordPath(prefix), JSON.stringify(record));
  liveHere.add(prefix);

  const network = new Network(prefix, record, hosts);
  try {
    await network.build();
  } catch (err) {
    await network.stop().catch(() => {});
    throw err;
  }
  return network;
}
