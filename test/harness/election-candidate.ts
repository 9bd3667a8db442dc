/**
 * One MetaElection candidate in its own process, for tests that stop it for
 * real (SIGSTOP/SIGCONT) or kill it. Run with
 *   node --import ./test/harness/ts-loader.mjs test/harness/election-candidate.ts '<json options>'
 * where the options are { servers, bucket, candidateId, leaseMs, renewMs,
 * actEveryMs?, actMarginMs? }. It prints one JSON object per line on stdout:
 * `ready`, `elected`, `deposed`, `leaderChanged`, and `act` each time it would
 * act as leader (every actEveryMs, only while isLeader() and
 * leaseValidFor(actMarginMs) > 0: the check the meta makes before acting).
 * Each line has `t`, wall-clock ms (performance.timeOrigin + now(), with
 * fractions), and `mono`, its monotonic clock. It exits when stdin closes.
 */
import { connect } from 'nats';
import { MetaElection } from '../../src/meta/meta-election.js';

interface Options {
  servers: string[];
  bucket: string;
  candidateId: string;
  leaseMs: number;
  renewMs: number;
  actEveryMs?: number;
  actMarginMs?: number;
}

const options = JSON.parse(process.argv[2] ?? '{}') as Options;
const print = (line: object) => process.stdout.write(`${JSON.stringify({ t: performance.timeOrigin + performance.now(), mono: performance.now(), ...line })}\n`);
const logger = { info() {}, warn() {}, error: (obj: object, msg: string) => process.stderr.write(`${msg} ${JSON.stringify(obj)}\n`) };

const nc = await connect({ servers: options.servers, reconnectTimeWait: 100, maxReconnectAttempts: -1, name: options.candidateId });
const election = await MetaElection.start({
  nc,
  bucket: options.bucket,
  candidateId: options.candidateId,
  leaseMs: options.leaseMs,
  renewMs: options.renewMs,
  logger,
  on: {
    elected: (e) => print({ type: 'elected', ...e }),
    deposed: (e) => print({ type: 'deposed', ...e }),
    leaderChanged: (info) => print({ type: 'leaderChanged', ...info }),
  },
});
const act = setInterval(() => {
  if (election.isLeader() && election.leaseValidFor(options.actMarginMs ?? 50) > 0) print({ type: 'act', epoch: election.epoch() });
}, options.actEveryMs ?? 20);
print({ type: 'ready' });

process.stdin.resume();
process.stdin.on('end', async () => {
  clearInterval(act);
  await election.close({ resign: false });
  await nc.close();
  process.exit(0);
});
