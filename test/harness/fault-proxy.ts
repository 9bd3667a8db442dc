/**
 * An HTTP proxy between reprise and a store (s3rver), on real loopback
 * sockets, that injects the faults of a network and a struggling store:
 *
 * - `status`: answer 500 or 503 (an S3 XML error body) without asking upstream;
 * - `slow`: wait `delayMs` before forwarding (longer than a client's timeout: a hang);
 * - `reset`: reset the client's connection (TCP RST) as the request arrives;
 * - `down()`: stop listening and drop every connection (connect is refused) until `up()`.
 *
 * A fault applies to the next `count` requests (default: every request
 * until `clear()`); `requests` counts what reached the proxy, `faulted`
 * what it answered with a fault.
 */
import { Agent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type Fault =
  | { readonly kind: 'status'; readonly status: 500 | 503; readonly count?: number }
  | { readonly kind: 'slow'; readonly delayMs: number; readonly count?: number }
  | { readonly kind: 'reset'; readonly count?: number };

export interface FaultProxy {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly requests: number;
  readonly faulted: number;
  readonly isDown: boolean;
  /** Inject `fault` into the next `fault.count` requests (all, if not given). */
  inject(fault: Fault): void;
  /** Back to forwarding every request. */
  clear(): void;
  /** Refuse connections (the port is closed) and drop open ones. */
  down(): Promise<void>;
  /** Listen again on the same port. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

const S3_ERRORS = { 500: 'InternalError', 503: 'ServiceUnavailable' } as const;

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  let fault: Fault | undefined;
  let remaining = Infinity;
  let requests = 0;
  let faulted = 0;
  let isDown = false;

  const takeFault = (): Fault | undefined => {
    if (fault === undefined) return undefined;
    remaining--;
    const f = fault;
    if (remaining <= 0) fault = undefined;
    return f;
  };

  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    const out = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  };

  const server: Server = createServer((req, res) => {
    requests++;
    const f = takeFault();
    if (f === undefined) return forward(req, res);
    faulted++;
    switch (f.kind) {
      case 'status': {
        const code = S3_ERRORS[f.status];
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by the fault proxy</Message></Error>`;
        // Read the request whole first, so the client sees the answer rather than a reset.
        req.resume();
        req.on('end', () => {
          res.writeHead(f.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), connection: 'close' });
          res.end(body);
        });
        return;
      }
      case 'slow': {
        const timer = setTimeout(() => forward(req, res), f.delayMs);
        res.on('close', () => clearTimeout(timer));
        return;
      }
      case 'reset':
        req.socket.resetAndDestroy();
        return;
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Resets and drops end requests mid-flight: not the proxy's error.
  server.on('clientError', (_err, socket) => socket.destroy());

  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        const address = server.address();
        resolve(typeof address === 'object' && address ? address.port : port);
      });
    });
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });

  const port = await listen(0);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get requests() {
      return requests;
    },
    get faulted() {
      return faulted;
    },
    get isDown() {
      return isDown;
    },
    inject(f) {
      fault = f;
      remaining = f.count ?? Infinity;
    },
    clear() {
      fault = undefined;
    },
    async down() {
      if (isDown) return;
      isDown = true;
      await close();
    },
    async up() {
      if (!isDown) return;
      await listen(port);
      isDown = false;
    },
    async stop() {
      if (!isDown) await close();
      isDown = true;
      agent.destroy();
    },
  };
}
