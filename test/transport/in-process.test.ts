import { afterEach, describe, expect, it } from 'vitest';
import { InProcessNetwork, InProcessTransport } from '../../src/transport/index.js';
import { expectCode, sleep, waitFor } from './helpers.js';
import { transportContract } from './transport-contract.js';

transportContract('in-process', async () => {
  const network = new InProcessNetwork();
  return { connect: async (cluster) => network.transport({ cluster }) };
});

describe('InProcessTransport faults (test hooks)', () => {
  const opened: InProcessTransport[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((t) => t.close()));
  });

  async function pair(random?: () => number) {
    const network = new InProcessNetwork(random ? { random } : {});
    const server = network.transport({ cluster: 'sim', name: 'node-1' });
    const client = network.transport({ cluster: 'sim', name: 'client' });
    opened.push(server, client);
    const calls: number[] = [];
    await server.serve(server.subject('echo'), (n: number) => (calls.push(n), n));
    return { network, server, client, calls, subject: server.subject('echo') };
  }

  it('drops requests matching a predicate (the request times out, the handler never runs)', async () => {
    const { network, client, calls, subject } = await pair();
    const seen: unknown[] = [];
    const rule = network.faults.drop((m) => (seen.push(m), m.kind === 'request' && m.to === 'node-1'));
    await expectCode(client.request(subject, 1, { timeoutMs: 100 }), 'TIMEOUT');
    expect(calls).toEqual([]);
    expect(rule.matched).toBe(1);
    expect(seen).toEqual([{ kind: 'request', subject, from: 'client', to: 'node-1' }]);
    rule.remove();
    expect(await client.request(subject, 2, { timeoutMs: 1000 })).toBe(2);
  });

  it('drops replies only: the handler ran, the caller times out', async () => {
    const { network, client, calls, subject } = await pair();
    network.faults.drop((m) => m.kind === 'reply' && m.subject === subject && m.from === 'node-1' && m.to === 'client');
    await expectCode(client.request(subject, 7, { timeoutMs: 100 }), 'TIMEOUT');
    expect(calls).toEqual([7]);
    network.faults.clear();
    expect(await client.request(subject, 8, { timeoutMs: 1000 })).toBe(8);
  });

  it('drops a limited number of messages; a retrying caller gets through', async () => {
    const { network, client, calls, subject } = await pair();
    const rule = network.faults.drop((m) => m.kind === 'request', { times: 2 });
    expect(await client.request(subject, 3, { timeoutMs: 50, retries: 3, retryDelayMs: 5 })).toBe(3);
    expect(rule.matched).toBe(2);
    expect(calls).toEqual([3]);
  });

  it('delays messages: slower replies, and a TIMEOUT once the delay passes the timeout', async () => {
    const { network, client, subject } = await pair();
    const rule = network.faults.delay((m) => m.subject === subject, 150);
    let started = Date.now();
    expect(await client.request(subject, 1, { timeoutMs: 2000 })).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290); // request and reply, 150 ms each
    expect(rule.matched).toBe(2);
    started = Date.now();
    await expectCode(client.request(subject, 2, { timeoutMs: 200 }), 'TIMEOUT');
    expect(Date.now() - started).toBeLessThan(1000);
    rule.remove();
    started = Date.now();
    expect(await client.request(subject, 3, { timeoutMs: 2000 })).toBe(3);
    expect(Date.now() - started).toBeLessThan(140);
  });

  it('delays and drops events per receiver, which can reorder them', async () => {
    const network = new InProcessNetwork();
    const [a, b, pub] = [network.transport({ cluster: 'sim', name: 'a' }), network.transport({ cluster: 'sim', name: 'b' }), network.transport({ cluster: 'sim', name: 'pub' })];
    opened.push(a, b, pub);
    const got = { a: [] as number[], b: [] as number[] };
    const subject = pub.subject('status');
    await a.subscribe(subject, (n: number) => void got.a.push(n));
    await b.subscribe(subject, (n: number) => void got.b.push(n));
    network.faults.delay((m) => m.kind === 'event' && m.to === 'a', 50, { times: 1 });
    network.faults.drop((m) => m.kind === 'event' && m.to === 'b' && m.subject === subject, { times: 1 });
    await pub.publish(subject, 1);
    await pub.publish(subject, 2);
    await waitFor(() => got.a.length === 2, 2000, 'both events at a');
    expect(got.a).toEqual([2, 1]);
    expect(got.b).toEqual([2]);
  });

  it('picks queue-group members with the supplied random source (seedable)', async () => {
    const network = new InProcessNetwork({ random: () => 0.99 });
    const [x, y, client] = [network.transport({ cluster: 'sim' }), network.transport({ cluster: 'sim' }), network.transport({ cluster: 'sim' })];
    opened.push(x, y, client);
    const subject = x.subject('svc');
    await x.serve(subject, () => 'x', { queue: 'q' });
    await y.serve(subject, () => 'y', { queue: 'q' });
    for (let i = 0; i < 5; i++) expect(await client.request(subject, i, { timeoutMs: 1000 })).toBe('y');
  });

  it('delivers asynchronously: nothing runs before request() returns its promise', async () => {
    const { client, calls, subject } = await pair();
    const p = client.request(subject, 1, { timeoutMs: 1000 });
    expect(calls).toEqual([]);
    await p;
    expect(calls).toEqual([1]);
    await sleep(0);
  });

  it('transports of different networks do not see each other', async () => {
    const a = new InProcessTransport({ cluster: 'sim' });
    const b = new InProcessTransport({ cluster: 'sim' });
    opened.push(a, b);
    await a.serve(a.subject('x'), () => 1);
    await expectCode(b.request(b.subject('x'), null, { timeoutMs: 1000 }), 'UNAVAILABLE');
  });
});
