/**
 * The in-process transport: the same semantics as NATS, inside one process,
 * for the embedded runtime and for deterministic tests.
 *
 * An `InProcessNetwork` plays the NATS server: transports created on it (one
 * per meta, node or client, as each would hold its own NATS connection) reach
 * each other's subscriptions. Like NATS:
 * - every message is msgpack-encoded and decoded per receiver, so nothing is
 *   shared by reference;
 * - delivery is asynchronous (a macrotask later, in send order);
 * - a message goes to every matching subscription without a queue group and
 *   to one member of each matching queue group (chosen with `random`);
 * - a request that matches no subscription at all fails at once with
 *   UNAVAILABLE; one whose reply does not come in time fails with TIMEOUT;
 *   both with the same messages as `NatsTransport`.
 *
 * `network.faults` (for tests and simulation only) drops or delays messages
 * chosen by a predicate over their kind, subject, sender and receiver.
 */
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
  subjectMatches,
  subjectOf,
  timedOut,
  tooLarge,
  transportClosed,
  withRetries,
  type EventHandler,
  type MessageInfo,
  type RequestHandler,
  type RequestOptions,
  type Subscription,
  type SubscriptionOptions,
  type Transport,
  type TransportLogger,
} from './transport.js';

// ---------------------------------------------------------------- faults

/** One message about to be delivered, as fault predicates see it. */
export interface FaultMessage {
  /** `request` and `event` go to a subscriber; `reply` goes back to a requester. */
  readonly kind: 'request' | 'reply' | 'event';
  /** The subject the request or event was sent to (for a reply: the request's subject). */
  readonly subject: string;
  /** The `name` of the sending transport. */
  readonly from: string;
  /** The `name` of the receiving transport. */
  readonly to: string;
}

export type FaultPredicate = (message: FaultMessage) => boolean;

export interface FaultRule {
  /** How many messages this rule has dropped or delayed so far. */
  readonly matched: number;
  /** Stop applying this rule. */
  remove(): void;
}

export interface FaultOptions {
  /** Apply to this many matching messages, then remove the rule. Default: no limit. */
  readonly times?: number;
}

interface Rule {
  readonly predicate: FaultPredicate;
  readonly delayMs: number | ((message: FaultMessage) => number) | 'drop';
  remaining: number;
  matched: number;
}

/**
 * Message faults for tests and seeded simulation, never for production: each
 * message about to be delivered (one per receiving subscription, and each
 * reply) is checked against the rules; if any `drop` rule matches it is lost,
 * otherwise it is held back by the sum of the matching `delay` rules.
 */
export class Faults {
  private rules: Rule[] = [];

  /** Lose every message matching `predicate` (a request then times out). */
  drop(predicate: FaultPredicate, options: FaultOptions = {}): FaultRule {
    return this.add(predicate, 'drop', options);
  }

  /**
   * Deliver every message matching `predicate` `ms` milliseconds late: a
   * fixed delay, or one computed per message (e.g. until a paused process
   * resumes, so that all it missed arrives at once).
   */
  delay(predicate: FaultPredicate, ms: number | ((message: FaultMessage) => number), options: FaultOptions = {}): FaultRule {
    if (typeof ms === 'number') checkDelay(ms);
    return this.add(predicate, ms, options);
  }

  /** Remove every rule. */
  clear(): void {
    this.rules = [];
  }

  /** Internal: 'drop', or the extra delay in ms for this message. */
  apply(message: FaultMessage): number | 'drop' {
    let delay = 0;
    let dropped = false;
    for (const rule of [...this.rules]) {
      if (!rule.predicate(message)) continue;
      rule.matched++;
      if (--rule.remaining <= 0) this.rules = this.rules.filter((r) => r !== rule);
      if (rule.delayMs === 'drop') dropped = true;
      else delay += typeof rule.delayMs === 'number' ? rule.delayMs : checkDelay(rule.delayMs(message));
    }
    return dropped ? 'drop' : delay;
  }

  private add(predicate: FaultPredicate, delayMs: Rule['delayMs'], options: FaultOptions): FaultRule {
    const times = options.times ?? Infinity;
    if (!(times > 0)) throw new RepriseError('INVALID_ARGUMENT', `fault times must be positive, got ${times}`);
    const rule: Rule = { predicate, delayMs, remaining: times, matched: 0 };
    this.rules.push(rule);
    return {
      get matched() {
        return rule.matched;
      },
      remove: () => {
        this.rules = this.rules.filter((r) => r !== rule);
      },
    };
  }
}

function checkDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) throw new RepriseError('INVALID_ARGUMENT', `fault delay must be a non-negative number of ms, got ${ms}`);
  return ms;
}

// ---------------------------------------------------------------- network

interface Route {
  readonly transport: InProcessTransport;
  readonly pattern: readonly string[];
  readonly queue: string | undefined;
  /** Deliver one message; `reply` is set for requests. */
  readonly deliver: (subject: string, data: Uint8Array, reply: ((data: Uint8Array) => void) | undefined) => void;
  open: boolean;
}

export interface InProcessNetworkOptions {
  /** Picks the queue-group member for each message; default Math.random. Seed it for simulation. */
  readonly random?: () => number;
  /** Largest encoded message (default 1 MiB, as NATS). */
  readonly maxPayloadBytes?: number;
}

/** The shared "server" of in-process transports. */
export class InProcessNetwork {
  /** Drop and delay messages: for tests and simulation only. */
  readonly faults = new Faults();
  readonly maxPayloadBytes: number;
  private readonly random: () => number;
  private routes: Route[] = [];
  private names = 0;

  constructor(options: InProcessNetworkOptions = {}) {
    this.random = options.random ?? Math.random;
    this.maxPayloadBytes = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  }

  /** A new transport (a "connection") on this network. */
  transport(options: Omit<InProcessTransportOptions, 'network'>): InProcessTransport {
    return new InProcessTransport({ ...options, network: this });
  }

  /** @internal */
  nextName(): string {
    return `in-process-${++this.names}`;
  }

  /** @internal */
  add(route: Route): void {
    this.routes.push(route);
  }

  /** @internal */
  remove(route: Route): void {
    route.open = false;
    this.routes = this.routes.filter((r) => r !== route);
  }

  /**
   * @internal Route one message; returns how many subscriptions it matched
   * (before faults). Each receiver gets its own copy of `data`.
   */
  route(
    from: InProcessTransport,
    kind: 'request' | 'event',
    subject: string,
    data: Uint8Array,
    reply: ((data: Uint8Array, replier: InProcessTransport) => void) | undefined,
  ): number {
    const tokens = subject.split('.');
    const matching = this.routes.filter((r) => subjectMatches(r.pattern, tokens));
    const chosen: Route[] = [];
    const groups = new Map<string, Route[]>();
    for (const route of matching) {
      if (route.queue === undefined) chosen.push(route);
      else groups.set(route.queue, [...(groups.get(route.queue) ?? []), route]);
    }
    for (const members of groups.values()) {
      chosen.push(members[Math.min(members.length - 1, Math.floor(this.random() * members.length))]!);
    }
    for (const route of chosen) {
      const verdict = this.faults.apply({ kind, subject, from: from.name, to: route.transport.name });
      if (verdict === 'drop') continue;
      const copy = data.slice();
      const replyTo = reply && ((bytes: Uint8Array) => reply(bytes, route.transport));
      schedule(verdict, () => {
        if (route.open) route.deliver(subject, copy, replyTo);
      });
    }
    return matching.length;
  }

  /** @internal Send a reply back to a requester, through the faults. */
  sendReply(from: InProcessTransport, to: InProcessTransport, subject: string, data: Uint8Array, receive: (data: Uint8Array) => void): void {
    const verdict = this.faults.apply({ kind: 'reply', subject, from: from.name, to: to.name });
    if (verdict === 'drop') return;
    const copy = data.slice();
    schedule(verdict, () => receive(copy));
  }
}

/** Run `fn` asynchronously: after `ms`, or on the next macrotask turn (FIFO). */
function schedule(ms: number, fn: () => void): void {
  if (ms > 0) setTimeout(fn, ms);
  else setImmediate(fn);
}

// ---------------------------------------------------------------- transport

export interface InProcessTransportOptions {
  readonly cluster: string;
  /** The network to join; by default a new one of its own. */
  readonly network?: InProcessNetwork;
  /** How fault predicates name this transport; default `in-process-<n>`. */
  readonly name?: string;
  readonly logger?: TransportLogger;
}

interface PendingRequest {
  readonly fail: (err: RepriseError) => void;
}

export class InProcessTransport implements Transport {
  readonly cluster: string;
  readonly network: InProcessNetwork;
  readonly name: string;
  private readonly logger: TransportLogger;
  private readonly subscriptions = new Set<InProcessSubscription>();
  private readonly pending = new Set<PendingRequest>();
  private closing: Promise<void> | undefined;

  constructor(options: InProcessTransportOptions) {
    subjectOf(options.cluster, 'check'); // validates the cluster name
    this.cluster = options.cluster;
    this.network = options.network ?? new InProcessNetwork();
    this.name = options.name ?? this.network.nextName();
    this.logger = options.logger ?? stderrLogger;
  }

  /** The network's faults (for tests and simulation only). */
  get faults(): Faults {
    return this.network.faults;
  }

  get maxPayloadBytes(): number {
    return this.network.maxPayloadBytes;
  }

  get closed(): boolean {
    return this.closing !== undefined;
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
    return withRetries(subject, resolved, () => this.closed, () => this.attempt(subject, data, resolved.timeoutMs)) as Promise<Res>;
  }

  private attempt(subject: string, data: Uint8Array, timeoutMs: number): Promise<unknown> {
    this.checkOpen(`request to ${subject}`);
    return new Promise((resolve, reject) => {
      let done = false;
      const settle = (fn: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.pending.delete(entry);
        fn();
      };
      const entry: PendingRequest = { fail: (err) => settle(() => reject(err)) };
      this.pending.add(entry);
      const timer = setTimeout(() => settle(() => reject(timedOut(subject, timeoutMs))), timeoutMs);
      const onReply = (bytes: Uint8Array) =>
        settle(() => {
          try {
            resolve(decodeReply(subject, bytes));
          } catch (err) {
            reject(err);
          }
        });
      const matched = this.network.route(this, 'request', subject, data, (bytes, replier) =>
        this.network.sendReply(replier, this, subject, bytes, onReply),
      );
      if (matched === 0) setImmediate(() => settle(() => reject(noResponders(subject))));
    });
  }

  serve<Req = unknown, Res = unknown>(
    subject: string,
    handler: RequestHandler<Req, Res>,
    options: SubscriptionOptions = {},
  ): Promise<Subscription> {
    return this.open(subject, false, options, (msgSubject, data, reply, running) => {
      const info: MessageInfo = { subject: msgSubject };
      running.track(
        answerRequest(handler as RequestHandler<never, unknown>, data, info, this.maxPayloadBytes).then((bytes) => bytes && reply?.(bytes)),
      );
    });
  }

  async publish<T = unknown>(subject: string, payload: T): Promise<void> {
    this.checkOpen(`publish to ${String(subject)}`);
    checkSubject(subject, this.cluster, false);
    const data = encodePayload(`event on ${subject}`, payload);
    if (data.length > this.maxPayloadBytes) throw tooLarge(`the event on ${subject}`, data.length, this.maxPayloadBytes);
    this.network.route(this, 'event', subject, data, undefined);
  }

  subscribe<T = unknown>(subject: string, handler: EventHandler<T>, options: SubscriptionOptions = {}): Promise<Subscription> {
    return this.open(subject, true, options, (msgSubject, data, _reply, running) => {
      running.track(deliverEvent(handler as EventHandler<never>, data, { subject: msgSubject }, this.logger));
    });
  }

  private async open(
    subject: string,
    pattern: boolean,
    options: SubscriptionOptions,
    onMessage: (subject: string, data: Uint8Array, reply: ((data: Uint8Array) => void) | undefined, running: RunningHandlers) => void,
  ): Promise<Subscription> {
    this.checkOpen(`${pattern ? 'subscribe' : 'serve'} ${String(subject)}`);
    const tokens = checkSubject(subject, this.cluster, pattern);
    const queue = checkQueue(options.queue);
    const sub = new InProcessSubscription(subject, this, (s) => this.subscriptions.delete(s));
    const route: Route = {
      transport: this,
      pattern: tokens,
      queue,
      open: true,
      deliver: (msgSubject, data, reply) => onMessage(msgSubject, data, reply, sub.running),
    };
    sub.route = route;
    this.subscriptions.add(sub);
    this.network.add(route);
    return sub;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const entry of [...this.pending]) entry.fail(transportClosed(`${this.name} closed while a request waited for its reply`));
      await Promise.all([...this.subscriptions].map((s) => s.close()));
    })();
    return this.closing;
  }

  private checkOpen(what: string): void {
    if (this.closing) throw transportClosed(`${what} on ${this.name}, which is closed`);
  }
}

class InProcessSubscription implements Subscription {
  readonly running = new RunningHandlers();
  route: Route | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    readonly subject: string,
    private readonly transport: InProcessTransport,
    private readonly onClosed: (s: InProcessSubscription) => void,
  ) {}

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.route) this.transport.network.remove(this.route);
      await this.running.idle();
      this.onClosed(this);
    })();
    return this.closing;
  }
}
