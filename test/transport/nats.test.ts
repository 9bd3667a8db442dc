import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NatsTransport } from '../../src/transport/index.js';
import { findNatsServer, freePort, startNatsServer, type TestNatsServer } from '../harness/nats-server.js';
import { expectCode } from './helpers.js';
import { transportContract } from './transport-contract.js';

let server: TestNatsServer;
const quiet = { info() {}, warn() {}, error() {} };

beforeAll(async () => {
  server = await startNatsServer();
});
afterAll(async () => {
  await server?.stop();
});

transportContract('nats', async () => ({
  connect: (cluster) => NatsTransport.connect({ servers: server.url, cluster, logger: quiet }),
}));

describe('NatsTransport', () => {
  it('fails to connect with UNAVAILABLE naming the server', async () => {
    const port = await freePort();
    const started = Date.now();
    const err = await expectCode(NatsTransport.connect({ servers: `nats://127.0.0.1:${port}`, cluster: 'c', logger: quiet }), 'UNAVAILABLE');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('the harness says how to install nats-server when it is missing', () => {
    const saved = process.env['NATS_SERVER_BIN'];
    process.env['NATS_SERVER_BIN'] = '/nonexistent/nats-server';
    try {
      expect(() => findNatsServer()).toThrow(/apt-get install -y nats-server/);
    } finally {
      if (saved === undefined) delete process.env['NATS_SERVER_BIN'];
      else process.env['NATS_SERVER_BIN'] = saved;
    }
  });

  it('passes credentials through (user/pass and token)', async () => {
    const secured = await startNatsServer({ args: ['--user', 'reprise', '--pass', 's3cret'] });
    const tokened = await startNatsServer({ args: ['--auth', 'tok3n'] });
    try {
      await expectCode(NatsTransport.connect({ servers: secured.url, cluster: 'c', logger: quiet, user: 'reprise', pass: 'wrong' }), 'UNAVAILABLE');
      const ok = await NatsTransport.connect({ servers: secured.url, cluster: 'c', logger: quiet, user: 'reprise', pass: 's3cret' });
      await ok.serve(ok.subject('ping'), () => 'pong');
      expect(await ok.request(ok.subject('ping'), null, { timeoutMs: 2000 })).toBe('pong');
      await ok.close();
      const withToken = await NatsTransport.connect({ servers: tokened.url, cluster: 'c', logger: quiet, token: 'tok3n' });
      expect(withToken.connected).toBe(true);
      await withToken.close();
    } finally {
      await secured.stop();
      await tokened.stop();
    }
  });

  it('two clusters share one server without seeing each other', async () => {
    const a = await NatsTransport.connect({ servers: server.url, cluster: 'alpha', logger: quiet });
    const b = await NatsTransport.connect({ servers: server.url, cluster: 'beta', logger: quiet });
    try {
      await a.serve(a.subject('meta', 'ping'), () => 'alpha');
      await expectCode(b.request(b.subject('meta', 'ping'), null, { timeoutMs: 2000 }), 'UNAVAILABLE');
      expect(await a.request(a.subject('meta', 'ping'), null, { timeoutMs: 2000 })).toBe('alpha');
    } finally {
      await a.close();
      await b.close();
    }
  });
});
