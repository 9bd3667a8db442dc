import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RuntimeEvent } from './observe.js';
import type { Reprise } from './runtime.js';

/**
 * `GET /v1/events`: server-sent events for the dashboard.
 *
 *   event: snapshot    the status and the recent transitions, on connect
 *   event: transition  each machine transition, as it happens
 *   event: replay      replay progress of a shard (about once a second)
 *   event: status      the status again, shortly after transitions and every
 *                      few seconds while it changes (entry ids, memtables)
 *
 * Bounded: at most `maxClients` streams; a client that does not keep up
 * (more than `maxBufferedBytes` waiting in its socket) is disconnected, and
 * its browser reconnects and starts again from a fresh snapshot.
 */
export interface EventStreamOptions {
  readonly maxClients?: number;
  readonly maxBufferedBytes?: number;
  readonly statusEveryMs?: number;
  readonly heartbeatMs?: number;
}

interface Client {
  readonly write: (chunk: string) => void;
  readonly end: () => void;
}

export class EventStreams {
  private readonly clients = new Set<Client>();
  private readonly maxClients: number;
  private readonly maxBufferedBytes: number;
  private readonly statusEveryMs: number;
  private readonly heartbeatMs: number;
  private unsubscribe: (() => void) | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private statusSoon: NodeJS.Timeout | undefined;
  private lastStatus = '';

  constructor(
    private readonly runtime: Reprise,
    options: EventStreamOptions = {},
  ) {
    this.maxClients = options.maxClients ?? 64;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
    this.statusEveryMs = options.statusEveryMs ?? 2000;
    this.heartbeatMs = options.heartbeatMs ?? 15_000;
  }

  get size(): number {
    return this.clients.size;
  }

  handle(request: FastifyRequest, reply: FastifyReply): void {
    if (this.clients.size >= this.maxClients) {
      void reply.status(503).send({ error: { code: 'UNAVAILABLE', message: `too many event streams (at most ${this.maxClients}); retry later` } });
      return;
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    const client: Client = {
      write: (chunk) => {
        if (res.writableEnded || res.destroyed) return;
        if (res.writableLength > this.maxBufferedBytes) {
          // Too far behind: let it reconnect and resync from a snapshot.
          res.destroy();
          return;
        }
        res.write(chunk);
      },
      end: () => {
        if (!res.writableEnded) res.end();
      },
    };
    this.clients.add(client);
    request.raw.on('close', () => this.remove(client));
    res.on('close', () => this.remove(client));
    const status = this.runtime.status();
    client.write(`retry: 2000\n\n`);
    client.write(frame('snapshot', { status, transitions: this.runtime.observer.recentTransitions() }));
    this.start();
  }

  /** End every stream (the server is closing). */
  closeAll(): void {
    for (const client of [...this.clients]) client.end();
    this.clients.clear();
    this.stop();
  }

  private remove(client: Client): void {
    this.clients.delete(client);
    if (this.clients.size === 0) this.stop();
  }

  private start(): void {
    if (this.unsubscribe) return;
    this.lastStatus = JSON.stringify(this.runtime.status());
    this.unsubscribe = this.runtime.observer.subscribe((event) => this.onEvent(event));
    this.statusTimer = setInterval(() => this.sendStatus(), this.statusEveryMs);
    this.heartbeatTimer = setInterval(() => this.broadcast(': ping\n\n'), this.heartbeatMs);
    this.statusTimer.unref();
    this.heartbeatTimer.unref();
  }

  private stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    clearInterval(this.statusTimer);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.statusSoon);
    this.statusSoon = undefined;
  }

  private onEvent(event: RuntimeEvent): void {
    if (event.type === 'transition') {
      this.broadcast(frame('transition', event.transition));
      // Epochs and entry ids move with transitions: follow up with the status, coalesced.
      this.statusSoon ??= setTimeout(() => {
        this.statusSoon = undefined;
        this.sendStatus();
      }, 100);
    } else {
      this.broadcast(frame('replay', event.progress));
    }
  }

  private sendStatus(): void {
    const json = JSON.stringify(this.runtime.status());
    if (json === this.lastStatus) return;
    this.lastStatus = json;
    this.broadcast(`event: status\ndata: ${json}\n\n`);
  }

  private broadcast(chunk: string): void {
    for (const client of this.clients) client.write(chunk);
  }
}

function frame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
