import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NatsTransport, subjectPatternOf } from '../../src/transport/index.js';
import { startNatsServer, type TestNatsServer } from '../harness/nats-server.js';
import { expectCode, sleep, waitFor } from './helpers.js';

const quiet = { info() {}, warn() {}, error() {} };

/**
 * nats-server crashes (SIGKILL) and comes back on the same port: clients
 * reconnect by themselves, served subjects and subscriptions come back
 * without being served again, and requests in between fail with clear codes.
 */
describe('NatsTransport across a nats-server crash', () => {
  let nats: TestNatsServer;
  let server: NatsTransport;
  let client: NatsTransport;
  let served = 0;

  beforeEach(async () => {
    nats = await startNatsServer();
    server = await NatsTransport.connect({ servers: nats.url, cluster: 'crash', name: 'server', logger: quiet });
    client = await NatsTransport.connect({ servers: nats.url, cluster: 'crash', name: 'client', logger: quiet });
    served = 0;
    await server.serve(server.subject('svc', 'echo'), (n: number) => (served++, n), { queue: 'svc' });
  });
  afterEach(async () => {
    await client?.close();
    await server?.close();
    await nats?.stop();
  });

  it('fails clearly during the outage and serves again after the restart, with no re-serve', async () => {
    const subject = client.subject('svc', 'echo');
    expect(await client.request(subject, 1, { timeoutMs: 2000 })).toBe(1);
    const events: number[] = [];
    await server.subscribe(subjectPatternOf(server.cluster, 'events', '>'), (n: number) => void events.push(n));

    await nats.kill();
    await waitFor(() => !client.connected && !server.connected, 2000, 'both clients to notice the crash');

    // Down: a request waits for the connection within its timeout, then fails
    // as "not sent", naming the subject and the server.
    let started = Date.now();
    const down = await expectCode(client.request(subject, 2, { timeoutMs: 300 }), 'UNAVAILABLE');
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(down.message).toContain(subject);
    expect(down.message).toMatch(/not sent: the connection to NATS \(127\.0\.0\.1:\d+\) has been down/);
    // Retries back off and give up with the same clear error.
    const gaveUp = await expectCode(client.request(subject, 3, { timeoutMs: 100, retries: 2, retryDelayMs: 20 }), 'UNAVAILABLE');
    expect(gaveUp.message).toContain('3 attempts');

    await nats.start();
    const restartedAt = Date.now();
    // The first request after the restart, retried until the server side is back too.
    expect(await client.request(subject, 4, { timeoutMs: 2000, retries: 40, retryDelayMs: 25 })).toBe(4);
    const firstSuccessMs = Date.now() - restartedAt;
    console.log(`nats-server restart -> first successful request: ${firstSuccessMs} ms`);
    expect(firstSuccessMs).toBeLessThan(3000);
    expect(client.stats.reconnects).toBe(1);
    expect(server.stats.reconnects).toBe(1);
    expect(served).toBe(2);

    // Subscriptions came back too.
    await client.publish(client.subject('events', 'x'), 5);
    await waitFor(() => events.includes(5), 2000, 'the event after reconnect');
  });

  it('a request made during the outage succeeds once the connection is back, within its timeout', async () => {
    const subject = client.subject('svc', 'echo');
    await nats.kill();
    await waitFor(() => !client.connected, 2000, 'the client to notice the crash');
    const pending = client.request(subject, 9, { timeoutMs: 5000, retries: 20, retryDelayMs: 25 });
    await sleep(300);
    await nats.start();
    expect(await pending).toBe(9);
  });

  it('a request in flight when the server dies fails with TIMEOUT saying the connection dropped', async () => {
    const subject = server.subject('slow');
    await server.serve(subject, async () => {
      await sleep(200); // replies while nats-server is down: the reply is lost
      return 'late';
    });
    const started = Date.now();
    const pending = client.request(subject, null, { timeoutMs: 1500 });
    await sleep(50);
    await nats.kill();
    await sleep(400);
    await nats.start();
    const err = await expectCode(pending, 'TIMEOUT');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1490);
    expect(err.message).toBe(`request to ${subject} timed out after 1500 ms (the connection to NATS dropped while it waited)`);
  });

  it('a crash followed at once by a restart is invisible to a caller that retries', async () => {
    const subject = client.subject('svc', 'echo');
    await nats.restart();
    expect(await client.request(subject, 6, { timeoutMs: 2000, retries: 40, retryDelayMs: 25 })).toBe(6);
  });

  it('gives up for good when asked not to reconnect: CLOSED, naming the reason', async () => {
    const fragile = await NatsTransport.connect({ servers: nats.url, cluster: 'crash', name: 'fragile', reconnect: false, logger: quiet });
    try {
      await nats.kill();
      await waitFor(() => !fragile.connected, 2000, 'the connection to drop');
      const err = await expectCode(fragile.request(fragile.subject('svc', 'echo'), 1, { timeoutMs: 500 }), 'CLOSED');
      expect(err.message).toContain('fragile');
    } finally {
      await fragile.close();
    }
  });
});
