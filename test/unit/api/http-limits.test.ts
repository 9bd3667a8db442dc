import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/api/http.js';
import { open, type Reprise } from '../../../src/api/runtime.js';

const logger = pino({ level: 'silent' });

/** A raw TCP client: what it was sent back, and when the server closed it. */
function rawClient(port: number): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    const t0 = performance.now();
    const closed = new Promise<number>((done) => socket.on('close', () => done(performance.now() - t0)));
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, received: () => text, closed }));
    socket.once('error', reject);
  });
}

// Slow and numerous clients (issue 14, finding 12), against a listening server.
describe('HTTP connection limits', () => {
  let dir: string;
  let db: Reprise;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-limits-'));
    db = await open({ dataDir: dir, shards: 1, logger: false });
  });
  afterEach(async () => {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('cuts off a request whose body never comes (408), and keeps serving', async () => {
    const app = createHttpServer(db, { logger, requestTimeoutMs: 300 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (app.server.address() as { port: number }).port;
      const stalled = await rawClient(port);
      stalled.socket.write('POST /v1/tables HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"na');
      const after = await stalled.closed;
      expect(stalled.received()).toMatch(/^HTTP\/1\.1 408/);
      expect(after).toBeGreaterThanOrEqual(250);
      expect(after).toBeLessThan(5000);
      expect((await fetch(`http://127.0.0.1:${port}/v1/tables`)).status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('closes connections past maxConnections as they arrive; the ones it holds are served', async () => {
    const app = createHttpServer(db, { logger, maxConnections: 3 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (app.server.address() as { port: number }).port;
      const held = await Promise.all([0, 1, 2].map(() => rawClient(port)));
      await new Promise((r) => setTimeout(r, 100)); // the server has accepted them
      const extra = await rawClient(port);
      await extra.closed;
      expect(extra.received()).toBe('');
      held[0]!.socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      await held[0]!.closed;
      expect(held[0]!.received()).toMatch(/^HTTP\/1\.1 200/);
      for (const c of held) c.socket.destroy();
    } finally {
      await app.close();
    }
  });
});
