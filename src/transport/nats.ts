/**
 * The NATS transport: request/reply with NATS's `no_responders` status (a
 * request nobody serves fails at once, not after its timeout), queue groups,
 * subjects `reprise.<cluster>.…` so clusters can share a server.
 *
 * Connection loss: the client reconnects on its own (by default forever,
 * every 250 ms ± 100 ms) and re-establishes every subscription, so served
 * subjects come back without the caller doing anything. While disconnected:
 * - a request waits for the connection to come back, within its own
 *   timeout, then goes out; if the connection is still down when the timeout
 *   runs out it fails with UNAVAILABLE ("not sent", so safe to retry);
 * - a request already sent when the connection drops has an unknown outcome:
 *   it fails with TIMEOUT unless its reply still arrives;
 * - publishes are dropped (events are at most once).
 * After the reconnect a responder may not yet be back: UNAVAILABLE (no
 * responder) until it is. Callers that can retry pass `retries`.
 */
import {
  ErrorCode as NatsErrorCode,
  Events,
  connect,
  type ConnectionOptions,
  type Msg,
  NatsError,
  type NatsConnection,
  type Subscription as NatsSubscriptionHandle,
} from 'nats';
import { RepriseError } from '../errors.js';
import {
  DEFAULT_MAX_PAYLOAD_BYTES,
  RunningHandlers,
  answerRequest,
  checkQueue,
  checkRequestOptions,
  checkSubject,
  decodeReply,
  deliverEvent,
  encodePayload,
  noResponders,
  stderrLogger,
  subjectOf,
  timedOut,
  tooLarge,
  transportClosed,
  withRetries,
  type EventHandler,
  type RequestHandler,
  type RequestOptions,
  type Subscription,
  type SubscriptionOptions,
  type Transport,
  type TransportLogger,
} from './transport.js';

export interface NatsTransportOptions {
  /** NATS server URLs, e.g. `nats://127.0.0.1:4222` (or `host:port`). */
  readonly servers: string | readonly string[];
  /** The cluster this transport's subjects belong to. */
  readonly cluster: string;
  /** Connection name shown by the server's monitoring (e.g. `reprise-node-3`). */
  readonly name?: string;
  readonly user?: string;
  readonly pass?: string;
  readonly token?: string;
  /** Reconnect after a connection loss (default true). */
  readonly reconnect?: boolean;
  /** Attempts per server before giving up; -1 (the default) never gives up. */
  readonly maxReconnectAttempts?: number;
  /** Wait between attempts on one server (default 250). */
  readonly reconnectTimeWaitMs?: number;
  /** Random extra wait, up to this, so clients do not reconnect in lockstep (default 100). */
  readonly reconnectJitterMs?: number;
  /** How long connecting to one server may take (default 5000). */
  readonly connectTimeoutMs?: number;
  /** Ping the server this often to notice a silent connection loss (default 10000). */
  readonly pingIntervalMs?: number;
  /** Unanswered pings before the connection counts as lost (default 2). */
  readonly maxPingOut?: number;
  readonly logger?: TransportLogger;
  /** Further `nats` connection options, as they are (TLS, authenticator, …); the keys above win. */
  readonly nats?: ConnectionOptions;
}

function isNatsError(err: unknown): err is NatsError {
  return err instanceof NatsError;
}

function serverList(servers: string | readonly string[]): string[] {
  return typeof servers === 'string' ? [servers] : [...servers];
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: RepriseError) => void;
}

export class NatsTransport implements Transport {
  readonly cluster: string;
  readonly name: string;
  private readonly logger: TransportLogger;
  private readonly subscriptions = new Set<NatsSubscription>();
  private readonly pending = new Set<(err: RepriseError) => void>();
  private readonly waiters = new Set<Waiter>();
  private isConnected = true;
  private disconnectedAt = 0;
  private disconnects = 0;
  private reconnects = 0;
  private lostForGood: RepriseError | undefined;
  private closing: Promise<void> | undefined;
  private readonly statusIterator: AsyncIterable<{ type: string; data: unknown }>;
  private readonly statusLoop: Promise<void>;

  private constructor(
    readonly nc: NatsConnection,
    options: NatsTransportOptions,
  ) {
    this.cluster = options.cluster;
    this.name = options.name ?? 'reprise';
    this.logger = options.logger ?? stderrLogger;
    this.statusIterator = nc.status();
    this.statusLoop = this.watchStatus();
    void nc.closed().then((err) => this.onConnectionClosed(err));
  }

  /**
   * Connect to NATS. Fails with UNAVAILABLE naming the servers if none can be
   * reached (no waiting for a server to appear).
   */
  static async connect(options: NatsTransportOptions): Promise<NatsTransport> {
    subjectOf(options.cluster, 'check'); // validates the cluster name
    const servers = serverList(options.servers);
    const connectionOptions: ConnectionOptions = {
      ...options.nats,
      servers,
      name: options.name ?? options.nats?.name ?? `reprise-${options.cluster}`,
      reconnect: options.reconnect ?? options.nats?.reconnect ?? true,
      maxReconnectAttempts: options.maxReconnectAttempts ?? options.nats?.maxReconnectAttempts ?? -1,
      reconnectTimeWait: options.reconnectTimeWaitMs ?? options.nats?.reconnectTimeWait ?? 250,
      reconnectJitter: options.reconnectJitterMs ?? options.nats?.reconnectJitter ?? 100,
      timeout: options.connectTimeoutMs ?? options.nats?.timeout ?? 5000,
      pingInterval: options.pingIntervalMs ?? options.nats?.pingInterval ?? 10_000,
      maxPingOut: options.maxPingOut ?? options.nats?.maxPingOut ?? 2,
    };
    if (options.user !== undefined) connectionOptions.user = options.user;
    if (options.pass !== undefined) connectionOptions.pass = options.pass;
    if (options.token !== undefined) connectionOptions.token = options.token;
    let nc: NatsConnection;
    try {
      nc = await connect(connectionOptions);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new RepriseError('UNAVAILABLE', `cannot connect to NATS at ${servers.join(', ')}: ${reason}`, { servers }, { cause: err });
    }
    return new NatsTransport(nc, { ...options, name: connectionOptions.name! });
  }

  get maxPayloadBytes(): number {
    return this.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD_BYTES;
  }

  /** Whether the connection to NATS is up right now. */
  get connected(): boolean {
    return this.isConnected && !this.closing && !this.lostForGood;
  }

  /** The server this transport is (or was last) connected to. */
  get server(): string {
    return this.nc.getServer();
  }

  subject(...parts: string[]): string {
    return subjectOf(this.cluster, ...parts);
  }

  async request<Req = unknown, Res = unknown>(subject: string, payload: Req, options: RequestOptions): Promise<Res> {
    this.checkOpen(`request to ${String(subject)}`);
    checkSubject(subject, this.cluster, false);
    const resolved = checkRequestOptions(subject, options);
    const data = encodePayload(`request to ${subject}`, payload);
    if (data.length > this.maxPayloadBytes) throw tooLarge(`the request to ${subject}`, data.length, this.maxPayloadBytes);
    return withRetries(subject, resolved, () => this.closing !== undefined, () => this.attempt(subject, data, resolved.timeoutMs)) as Promise<Res>;
  }

  private attempt(subject: string, data: Uint8Array, timeoutMs: number): Promise<unknown> {
    this.checkOpen(`request to ${subject}`);
    return new Promise((resolve, reject) => {
      let done = false;
      const fail = (err: RepriseError) => {
        if (done) return;
        done = true;
        this.pending.delete(fail);
        reject(err);
      };
      this.pending.add(fail);
      void (async () => {
        const deadline = Date.now() + timeoutMs;
        try {
          if (!this.connected) await this.waitForConnection(subject, deadline, timeoutMs);
          const disconnectsBefore = this.disconnects;
          const remaining = Math.max(1, deadline - Date.now());
          let msg: Msg;
          try {
            msg = await this.nc.request(subject, data, { timeout: remaining });
          } catch (err) {
            throw this.requestError(err, subject, timeoutMs, this.disconnects !== disconnectsBefore);
          }
          const value = decodeReply(subject, msg.data);
          if (done) return;
          done = true;
          this.pending.delete(fail);
          resolve(value);
        } catch (err) {
          fail(err instanceof RepriseError ? err : new RepriseError('INTERNAL', String(err), { subject }, { cause: err }));
        }
      })();
    });
  }

  private requestError(err: unknown, subject: string, timeoutMs: number, connectionDropped: boolean): RepriseError {
    if (!isNatsError(err)) return err instanceof RepriseError ? err : new RepriseError('INTERNAL', String(err), { subject }, { cause: err });
    switch (err.code) {
      case NatsErrorCode.NoResponders:
        return noResponders(subject);
      case NatsErrorCode.Timeout:
        return timedOut(subject, timeoutMs, connectionDropped ? 'the connection to NATS dropped while it waited' : undefined);
      case NatsErrorCode.ConnectionClosed:
      case NatsErrorCode.ConnectionDraining:
        return this.lostForGood ?? transportClosed(`request to ${subject}: the NATS connection is closed`);
      case NatsErrorCode.MaxPayloadExceeded:
        return new RepriseError('REQUEST_TOO_LARGE', `request to ${subject}: ${err.message}`, { subject }, { cause: err });
      default:
        return new RepriseError('UNAVAILABLE', `request to ${subject} failed: ${err.message} (${err.code})`, { subject }, { cause: err });
    }
  }

  private waitForConnection(subject: string, deadline: number, timeoutMs: number): Promise<void> {
    if (this.lostForGood) return Promise.reject(this.lostForGood);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(
          new RepriseError(
            'UNAVAILABLE',
            `request to ${subject} not sent: the connection to NATS (${this.server}) has been down for ${Date.now() - this.disconnectedAt} ms ` +
              `and did not come back within the request's ${timeoutMs} ms`,
            { subject, timeoutMs, server: this.server },
          ),
        );
      }, Math.max(0, deadline - Date.now()));
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.add(waiter);
    });
  }

  serve<Req = unknown, Res = unknown>(
    subject: string,
    handler: RequestHandler<Req, Res>,
    options: SubscriptionOptions = {},
  ): Promise<Subscription> {
    return this.open(subject, false, options, (msg, running) => {
      running.track(
        answerRequest(handler as RequestHandler<never, unknown>, msg.data, { subject: msg.subject }, this.maxPayloadBytes).then((reply) => {
          if (reply && msg.reply) msg.respond(reply);
        }),
      );
    });
  }

  async publish<T = unknown>(subject: string, payload: T): Promise<void> {
    this.checkOpen(`publish to ${String(subject)}`);
    checkSubject(subject, this.cluster, false);
    const data = encodePayload(`event on ${subject}`, payload);
    if (data.length > this.maxPayloadBytes) throw tooLarge(`the event on ${subject}`, data.length, this.maxPayloadBytes);
    if (!this.connected) return; // at most once: a publish while disconnected would be lost anyway
    try {
      this.nc.publish(subject, data);
    } catch (err) {
      throw this.requestError(err, subject, 0, false);
    }
  }

  subscribe<T = unknown>(subject: string, handler: EventHandler<T>, options: SubscriptionOptions = {}): Promise<Subscription> {
    return this.open(subject, true, options, (msg, running) => {
      running.track(deliverEvent(handler as EventHandler<never>, msg.data, { subject: msg.subject }, this.logger));
    });
  }

  private async open(
    subject: string,
    pattern: boolean,
    options: SubscriptionOptions,
    onMessage: (msg: Msg, running: RunningHandlers) => void,
  ): Promise<Subscription> {
    this.checkOpen(`${pattern ? 'subscribe' : 'serve'} ${String(subject)}`);
    checkSubject(subject, this.cluster, pattern);
    const queue = checkQueue(options.queue);
    const running = new RunningHandlers();
    const handle = this.nc.subscribe(subject, {
      ...(queue === undefined ? {} : { queue }),
      callback: (err, msg) => {
        if (err) {
          this.logger.error({ subject, err: err.message }, `subscription ${subject} failed: ${err.message}`);
          return;
        }
        onMessage(msg, running);
      },
    });
    const sub = new NatsSubscription(subject, handle, running, this, (s) => this.subscriptions.delete(s));
    this.subscriptions.add(sub);
    // Resolve once the server has the subscription. While disconnected the
    // client sends it on reconnect, so there is nothing to wait for.
    if (this.connected) await this.nc.flush().catch(() => {});
    return sub;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = transportClosed(`${this.name} closed while a request waited`);
      for (const fail of [...this.pending]) fail(closed);
      for (const waiter of [...this.waiters]) waiter.reject(closed);
      this.waiters.clear();
      await Promise.all([...this.subscriptions].map((s) => s.close()));
      if (!this.nc.isClosed()) await this.nc.close().catch(() => {});
      // The client does not end status iterators when it closes: end ours.
      (this.statusIterator as { stop?: () => void }).stop?.();
      await this.statusLoop;
    })();
    return this.closing;
  }

  /** @internal */
  async flushIfConnected(): Promise<void> {
    if (this.connected) await this.nc.flush().catch(() => {});
  }

  private checkOpen(what: string): void {
    if (this.closing) throw transportClosed(`${what} on ${this.name}, which is closed`);
    if (this.lostForGood) throw this.lostForGood;
  }

  private async watchStatus(): Promise<void> {
    for await (const status of this.statusIterator) {
      switch (status.type) {
        case Events.Disconnect:
          if (this.isConnected) {
            this.isConnected = false;
            this.disconnectedAt = Date.now();
            this.disconnects++;
            this.logger.warn({ server: status.data }, `${this.name}: disconnected from NATS ${String(status.data)}, reconnecting`);
          }
          break;
        case Events.Reconnect: {
          const downMs = Date.now() - this.disconnectedAt;
          this.isConnected = true;
          this.reconnects++;
          this.logger.info({ server: status.data, downMs }, `${this.name}: reconnected to NATS ${String(status.data)} after ${downMs} ms`);
          for (const waiter of [...this.waiters]) waiter.resolve();
          this.waiters.clear();
          break;
        }
        case Events.LDM:
          this.logger.warn({ server: status.data }, `${this.name}: NATS server ${String(status.data)} entered lame duck mode`);
          break;
        case Events.Error:
          this.logger.error({ err: String(status.data) }, `${this.name}: NATS error: ${String(status.data)}`);
          break;
        default:
          break;
      }
    }
  }

  private onConnectionClosed(err: void | Error): void {
    this.isConnected = false;
    if (this.closing) return;
    // Closed without close(): the client gave up reconnecting (or was refused).
    const reason = err ? err.message : 'closed by the client library';
    this.lostForGood = new RepriseError('CLOSED', `the NATS connection of ${this.name} is closed for good: ${reason}`, undefined, { cause: err });
    this.logger.error({ err: reason }, this.lostForGood.message);
    for (const fail of [...this.pending]) fail(this.lostForGood);
    for (const waiter of [...this.waiters]) waiter.reject(this.lostForGood);
    this.waiters.clear();
  }

  /** Connection statistics: disconnects and reconnects since connect. */
  get stats(): { disconnects: number; reconnects: number } {
    return { disconnects: this.disconnects, reconnects: this.reconnects };
  }
}

class NatsSubscription implements Subscription {
  private closing: Promise<void> | undefined;

  constructor(
    readonly subject: string,
    private readonly handle: NatsSubscriptionHandle,
    private readonly running: RunningHandlers,
    private readonly transport: NatsTransport,
    private readonly onClosed: (s: NatsSubscription) => void,
  ) {}

  close(): Promise<void> {
    this.closing ??= (async () => {
      // Drain: unsubscribe, and handle what the server already sent us.
      try {
        if (this.transport.connected) await this.handle.drain();
        else this.handle.unsubscribe();
      } catch {
        try {
          this.handle.unsubscribe();
        } catch {
          // the connection is gone; nothing more to unsubscribe from
        }
      }
      await this.running.idle();
      await this.transport.flushIfConnected(); // replies of the last handlers out
      this.onClosed(this);
    })();
    return this.closing;
  }
}
