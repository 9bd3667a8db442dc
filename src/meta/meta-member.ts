import type { Logger } from 'pino';
import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { RepriseError } from '../errors.js';
import type { ProcedurePause, TestFaults } from '../testing/faults.js';
import type { Subscription, Transport } from '../transport/transport.js';
import type { LogStore } from '../wal/log-store.js';
import type { DeposedEvent, ElectedEvent, ElectionStats, LeaderInfo } from './meta-election.js';
import { metaMemberMachine, type MetaMemberState } from './meta-member-machine.js';
import { MetaReplica } from './meta-replica.js';
import { MetaServer, type MetaServerOptions } from './meta-server.js';
import { MetaService } from './meta-service.js';
import type { MetaMemberStatus } from './model.js';
import { metaTopicOf } from './meta-view.js';

/** What a member needs of the meta election (MetaElection). */
export interface Election {
  isLeader(): boolean;
  /** The epoch this candidate leads at now, or undefined. */
  epoch(): number | undefined;
  leader(): LeaderInfo | undefined;
  stats(): Readonly<ElectionStats>;
  close(options?: { resign?: boolean }): Promise<void>;
  resign(): Promise<void>;
}

/** Starts the election once the member knows the newest meta epoch in the log (takeovers win epochs above it). */
export type ElectionStarter = (minEpoch: number, on: { elected(e: ElectedEvent): void; deposed(e: DeposedEvent): void }) => Promise<Election>;

export interface MetaMemberOptions {
  /** This replica's name, unique among the cluster's metas (the election's candidate id). */
  readonly id: string;
  readonly log: LogStore;
  readonly topicPrefix: string;
  readonly transport: Transport;
  readonly logger: Logger;
  readonly startElection: ElectionStarter;
  /** Shards (WAL topics) created when the first leader starts. */
  readonly numShards?: number;
  readonly server?: Partial<MetaServerOptions>;
  /** Tests only: pauses in meta's procedures. */
  readonly procedurePause?: ProcedurePause;
  /** Tests only: deliberate bugs (src/testing/faults.ts). */
  readonly faults?: TestFaults;
}

/** Peers' reports arrive every MEMBER_REPORT_MS; one older than MEMBER_STALE_MS is dropped. */
const MEMBER_REPORT_MS = 1_000;
const MEMBER_STALE_MS = 3_500;

/**
 * One meta replica: its machine (meta-member-machine.ts) and the effects
 * it runs. Following, it holds a MetaReplica tailing the meta log; elected,
 * it opens the MetaService from that replica's state (marker first) and the
 * MetaServer on the transport, both told to act only while the election
 * lease holds at the epoch it won; deposed, it closes them and tails the log
 * again. Every member reports its status on `reprise.<cluster>.meta_member`
 * and keeps its peers' last reports, so any of them can show all.
 */
export class MetaMember {
  private readonly actor: Actor<typeof metaMemberMachine>;
  private election: Election | undefined;
  private replica: MetaReplica | undefined;
  private service: MetaService | undefined;
  private serverValue: MetaServer | undefined;
  /** Effects run one after another: a step-down waits for a takeover it interrupted, and closes what that opened. */
  private effects: Promise<unknown> = Promise.resolve();
  private readonly peers = new Map<string, { status: MetaMemberStatus; at: number }>();
  private reportTimer: NodeJS.Timeout | undefined;
  private reportSubscription: Subscription | undefined;
  /** Leadership changes this member has seen itself through (won, lost), and its takeovers' durations. */
  readonly counters = { takeovers: 0, stepDowns: 0, lastTakeoverMs: 0 };

  constructor(private readonly options: MetaMemberOptions) {
    this.actor = createActor(
      metaMemberMachine.provide({
        actors: {
          follow: fromPromise(() => this.serialised(() => this.follow())),
          takeOver: fromPromise<void, { epoch: number }>(({ input }) => this.serialised(() => this.takeOver(input.epoch))),
          stepDown: fromPromise(() => this.serialised(() => this.stepDown())),
          stop: fromPromise(() => this.serialised(() => this.shutdown())),
        },
      }),
    );
    this.actor.subscribe((snapshot) => {
      options.logger.debug({ member: options.id, state: snapshot.value }, `meta replica '${options.id}' is ${String(snapshot.value)}`);
    });
  }

  /** Start following and campaigning; resolves once the replica has caught up with the log (following or leading). */
  async start(): Promise<void> {
    this.reportSubscription = await this.options.transport.subscribe(this.options.transport.subject('meta_member'), (status: MetaMemberStatus) => {
      if (status.id !== this.options.id) this.peers.set(status.id, { status, at: Date.now() });
    });
    this.reportTimer = setInterval(() => void this.report(), MEMBER_REPORT_MS);
    this.actor.start();
    const snapshot = await waitForState(this.actor, ['following', 'leading', 'failed', 'stopped']);
    if (snapshot === 'failed') throw new RepriseError('UNAVAILABLE', `meta replica '${this.options.id}' failed to start: ${this.actor.getSnapshot().context.error}`);
  }

  /** Resolves once this member leads (for a single replica, and tests); rejects if it stops first. */
  async leading(timeoutMs = 30_000): Promise<MetaServer> {
    const state = await waitForState(this.actor, ['leading', 'failed', 'stopped'], timeoutMs);
    if (state !== 'leading' || !this.serverValue) throw new RepriseError('UNAVAILABLE', `meta replica '${this.options.id}' is ${state}, not leading`);
    return this.serverValue;
  }

  get state(): MetaMemberState {
    return this.actor.getSnapshot().value as MetaMemberState;
  }

  /** The server while this member leads. */
  get server(): MetaServer | undefined {
    return this.state === 'leading' ? this.serverValue : undefined;
  }

  /** Leader changes and election time, as this member's election saw them. */
  electionStats(): Readonly<ElectionStats> | undefined {
    return this.election?.stats();
  }

  status(): MetaMemberStatus {
    const snapshot = this.actor.getSnapshot();
    const leader = this.election?.leader();
    return {
      id: this.options.id,
      state: snapshot.value as string,
      epoch: snapshot.context.leadingEpoch ?? null,
      leader: leader ? { id: leader.leaderId, epoch: leader.epoch } : null,
      appliedEntryId: this.service?.appliedEntryId ?? this.replica?.appliedEntryId ?? -1,
      error: snapshot.context.error ?? null,
    };
  }

  /** This member and the peers that reported lately, by id. */
  members(): MetaMemberStatus[] {
    const now = Date.now();
    const all = [this.status()];
    for (const [id, { status, at }] of this.peers) {
      if (now - at > MEMBER_STALE_MS) this.peers.delete(id);
      else all.push(status);
    }
    return all.sort((a, b) => a.id.localeCompare(b.id));
  }

  async stop(): Promise<void> {
    clearInterval(this.reportTimer);
    await this.reportSubscription?.close().catch(() => undefined);
    if (this.actor.getSnapshot().status === 'active') this.actor.send({ type: 'STOP' });
    await waitForState(this.actor, ['stopped', 'failed'], Infinity);
    // A failed member has not run its stop effect.
    await this.serialised(() => this.shutdown());
  }

  // ------------------------------------------------------------ effects

  private serialised<T>(effect: () => Promise<T>): Promise<T> {
    const result = this.effects.then(effect, effect);
    this.effects = result.catch(() => undefined);
    return result;
  }

  private async follow(): Promise<void> {
    // The first meta of a new cluster finds no log yet.
    await this.options.log.createTopic(metaTopicOf(this.options.topicPrefix));
    this.replica = await MetaReplica.open(this.options.log, this.options.topicPrefix);
    this.election ??= await this.options.startElection(this.replica.metaEpoch, {
      elected: (e) => this.actor.send({ type: 'ELECTED', epoch: e.epoch }),
      deposed: (e) => this.actor.send({ type: 'DEPOSED', reason: e.detail ? `${e.reason}: ${e.detail}` : e.reason }),
    });
  }

  /** Whether this member may act at `epoch`: its election lease holds at that epoch, by the clock. */
  private leadsAt(epoch: number): boolean {
    return this.election?.isLeader() === true && this.election.epoch() === epoch;
  }

  private async takeOver(epoch: number): Promise<void> {
    const started = performance.now();
    const { logger, id } = this.options;
    const leading = () => this.leadsAt(epoch);
    if (!leading()) throw new RepriseError('NOT_LEADER', `meta replica '${id}' no longer leads at epoch ${epoch}`);
    const from = this.replica;
    this.replica = undefined;
    this.service = await MetaService.open(
      this.options.log,
      {
        topicPrefix: this.options.topicPrefix,
        ...(this.options.numShards !== undefined ? { numShards: this.options.numShards } : {}),
        logger,
        epoch,
        leading,
        ...(this.options.procedurePause ? { procedurePause: this.options.procedurePause } : {}),
        ...(this.options.faults ? { faults: this.options.faults } : {}),
      },
      from,
    );
    // A create table cut short by a crash (or a deposed leader) never became visible: roll it back.
    await this.service.rollBackIncompleteCreates(logger);
    this.serverValue = await MetaServer.start(this.service, this.options.transport, logger, this.options.server, {
      leading,
      members: () => this.members(),
      ...(this.options.procedurePause ? { procedurePause: this.options.procedurePause } : {}),
      ...(this.options.faults ? { faults: this.options.faults } : {}),
    });
    this.counters.takeovers++;
    this.counters.lastTakeoverMs = performance.now() - started;
    logger.info({ member: id, epoch, ms: Math.round(this.counters.lastTakeoverMs) }, `meta replica '${id}' leads at epoch ${epoch}`);
  }

  private async closeLeader(): Promise<void> {
    const server = this.serverValue;
    const service = this.service;
    this.serverValue = undefined;
    this.service = undefined;
    await server?.close().catch((err: unknown) => this.options.logger.warn({ err }, 'closing the meta server failed'));
    await service?.close().catch((err: unknown) => this.options.logger.warn({ err }, 'closing the meta service failed'));
  }

  private async stepDown(): Promise<void> {
    const wasLeading = this.service !== undefined;
    await this.closeLeader();
    // A takeover that failed leaves this replica elected: give the lease up so another one leads.
    if (this.election?.isLeader()) await this.election.resign().catch(() => undefined);
    await this.replica?.close();
    this.replica = undefined;
    if (wasLeading) this.counters.stepDowns++;
    this.options.logger.warn({ member: this.options.id, reason: this.actor.getSnapshot().context.error }, `meta replica '${this.options.id}' stepped down: following`);
    await this.follow();
  }

  private async shutdown(): Promise<void> {
    await this.closeLeader();
    await this.election?.close({ resign: true }).catch(() => undefined);
    this.election = undefined;
    await this.replica?.close();
    this.replica = undefined;
  }

  private async report(): Promise<void> {
    await this.options.transport.publish(this.options.transport.subject('meta_member'), this.status()).catch(() => undefined);
  }
}

/** Resolves with the state once the member is in one of `states` (rejects after `timeoutMs`). */
async function waitForState(actor: Actor<typeof metaMemberMachine>, states: readonly MetaMemberState[], timeoutMs = Infinity): Promise<MetaMemberState> {
  const snapshot = await waitFor(actor, (s) => states.includes(s.value as MetaMemberState), { timeout: timeoutMs });
  return snapshot.value as MetaMemberState;
}
