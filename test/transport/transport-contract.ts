import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RepriseError } from '../../src/errors.js';
import { subjectOf, subjectPatternOf, type MessageInfo, type Transport } from '../../src/transport/index.js';
import { expectCode, expectThrows, gate, sleep, waitFor } from './helpers.js';

export interface TransportFixture {
  /** A new transport (its own connection) on the shared network, in `cluster`. */
  connect(cluster: string): Promise<Transport>;
  /** Close what the fixture holds besides the transports (they are closed by the suite). */
  cleanup?(): Promise<void>;
}

/**
 * The behaviour every Transport must have, using nothing but the interface.
 * Each test has its own cluster name, so tests never see each other's
 * subjects even on a shared server; a "client" and "servers" are separate
 * transports, as separate processes would be.
 */
export function transportContract(name: string, factory: () => Promise<TransportFixture>): void {
  describe(`Transport contract: ${name}`, () => {
    let fixture: TransportFixture;
    let cluster: string;
    let opened: Transport[];
    let seq = 0;

    const connect = async (): Promise<Transport> => {
      const t = await fixture.connect(cluster);
      opened.push(t);
      return t;
    };

    beforeEach(async () => {
      fixture = await factory();
      cluster = `c${process.pid}x${Date.now().toString(36)}x${seq++}`;
      opened = [];
    });
    afterEach(async () => {
      await Promise.all(opened.map((t) => t.close()));
      await fixture.cleanup?.();
    });

    it('round-trips binary and nested payloads, each side getting its own copy', async () => {
      const [server, client] = [await connect(), await connect()];
      const subject = server.subject('echo', 'v1');
      let seen: unknown;
      let info: MessageInfo | undefined;
      await server.serve<Record<string, unknown>, unknown>(subject, (payload, i) => {
        seen = payload;
        info = i;
        (payload['list'] as unknown[]).push('added by the handler');
        return { got: payload, bytes: new Uint8Array([255, 0, 1]) };
      });
      const blob = new Uint8Array(70_000).map((_, i) => (i * 31) & 0xff);
      const payload = {
        text: 'ünïcødé ✓',
        n: -12.5,
        big: 2 ** 40,
        flag: true,
        nothing: null,
        list: [1, 'two', [3, { four: 4 }]],
        nested: { deeper: { blob, empty: new Uint8Array(0), at: new Date(1667446797450) } },
      };
      const reply = await client.request<typeof payload, { got: typeof payload; bytes: Uint8Array }>(subject, payload, { timeoutMs: 5000 });
      expect(reply.bytes).toBeInstanceOf(Uint8Array);
      expect([...reply.bytes]).toEqual([255, 0, 1]);
      expect(reply.got.nested.deeper.blob).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(reply.got.nested.deeper.blob).equals(Buffer.from(blob))).toBe(true);
      expect(reply.got.nested.deeper.at).toEqual(new Date(1667446797450));
      expect(reply.got.text).toBe(payload.text);
      expect(reply.got.big).toBe(2 ** 40);
      expect(reply.got.list).toEqual([1, 'two', [3, { four: 4 }], 'added by the handler']);
      // Nothing shared by reference: the caller's object is untouched, the handler saw a copy.
      expect(payload.list).toEqual([1, 'two', [3, { four: 4 }]]);
      expect(seen === payload).toBe(false); // (not `.not.toBe`: it formats the 70 kB payload eagerly)
      expect(info).toEqual({ subject });
      // undefined travels as null, in both directions.
      await server.serve(server.subject('nothing'), () => undefined);
      expect(await client.request(server.subject('nothing'), undefined, { timeoutMs: 5000 })).toBeNull();
    });

    it('rejects with the remote RepriseError: same code, message and details', async () => {
      const [server, client] = [await connect(), await connect()];
      await server.serve(server.subject('tables', 'get'), (req: { name: string }) => {
        throw new RepriseError('TABLE_NOT_FOUND', `table '${req.name}' does not exist`, { table: req.name });
      });
      await server.serve(server.subject('buggy'), () => {
        throw new TypeError('cannot read properties of undefined');
      });
      const err = await expectCode(client.request(server.subject('tables', 'get'), { name: 'cpu' }, { timeoutMs: 5000 }), 'TABLE_NOT_FOUND');
      expect(err).toBeInstanceOf(RepriseError);
      expect(err.message).toBe("table 'cpu' does not exist");
      expect(err.details).toEqual({ table: 'cpu' });
      const bug = await expectCode(client.request(server.subject('buggy'), {}, { timeoutMs: 5000 }), 'INTERNAL');
      expect(bug.message).toBe('cannot read properties of undefined');
    });

    it('fails fast with UNAVAILABLE naming the subject when nothing serves it', async () => {
      const client = await connect();
      const subject = client.subject('nobody', 'home');
      const started = Date.now();
      const err = await expectCode(client.request(subject, { x: 1 }, { timeoutMs: 5000 }), 'UNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(1000);
      expect(err.message).toContain(subject);
      expect(err.details).toMatchObject({ subject });
    });

    it('times out (not UNAVAILABLE) on a subject that only event subscribers match', async () => {
      const [listener, client] = [await connect(), await connect()];
      const subject = listener.subject('events', 'only');
      let seen = 0;
      await listener.subscribe(subject, () => void seen++);
      await expectCode(client.request(subject, 1, { timeoutMs: 150 }), 'TIMEOUT');
      expect(seen).toBe(1);
    });

    it('fails with TIMEOUT naming subject and milliseconds when the handler is too slow', async () => {
      const [server, client] = [await connect(), await connect()];
      const subject = server.subject('slow');
      const release = gate();
      await server.serve(subject, async () => {
        await release.promise;
        return 'late';
      });
      const started = Date.now();
      const err = await expectCode(client.request(subject, null, { timeoutMs: 200 }), 'TIMEOUT');
      const elapsed = Date.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(190);
      expect(elapsed).toBeLessThan(2000);
      expect(err.message).toContain(subject);
      expect(err.message).toContain('200 ms');
      expect(err.details).toMatchObject({ subject, timeoutMs: 200 });
      release.open();
    });

    it('retries only when asked, and only after UNAVAILABLE or TIMEOUT', async () => {
      const [server, client] = [await connect(), await connect()];
      const late = server.subject('late');
      // Not asked: one attempt.
      const once = await expectCode(client.request(late, 1, { timeoutMs: 1000 }), 'UNAVAILABLE');
      expect(once.details).not.toHaveProperty('attempts');
      // Asked: a service that comes up while the client backs off is reached.
      const answered = client.request<number, number>(late, 20, { timeoutMs: 1000, retries: 8, retryDelayMs: 25 });
      await sleep(150);
      await server.serve(late, (n: number) => n + 1);
      expect(await answered).toBe(21);
      // Exhausted: the last error, saying how many attempts were made.
      const gone = await expectCode(client.request(server.subject('never'), 1, { timeoutMs: 1000, retries: 2, retryDelayMs: 10 }), 'UNAVAILABLE');
      expect(gone.message).toContain('3 attempts');
      expect(gone.details).toMatchObject({ attempts: 3 });
      // A handler's own error is an answer, never retried.
      let calls = 0;
      await server.serve(server.subject('refuses'), () => {
        calls++;
        throw new RepriseError('NOT_LEADER', 'not the leader of shard 3');
      });
      await expectCode(client.request(server.subject('refuses'), 1, { timeoutMs: 1000, retries: 3, retryDelayMs: 10 }), 'NOT_LEADER');
      expect(calls).toBe(1);
    });

    it('shares a queue group’s load: each request answered once, every member gets some', async () => {
      const [a, b, client] = [await connect(), await connect(), await connect()];
      const subject = a.subject('work');
      const handled = { a: [] as number[], b: [] as number[] };
      await a.serve(subject, (n: number) => (handled.a.push(n), { by: 'a', n }), { queue: 'workers' });
      await b.serve(subject, (n: number) => (handled.b.push(n), { by: 'b', n }), { queue: 'workers' });
      const N = 60;
      const replies = await Promise.all(
        Array.from({ length: N }, (_, n) => client.request<number, { by: string; n: number }>(subject, n, { timeoutMs: 5000 })),
      );
      expect(replies.map((r) => r.n)).toEqual(Array.from({ length: N }, (_, n) => n));
      expect(handled.a.length + handled.b.length).toBe(N);
      expect(new Set([...handled.a, ...handled.b]).size).toBe(N);
      expect(handled.a.length).toBeGreaterThan(0);
      expect(handled.b.length).toBeGreaterThan(0);
      for (const r of replies) expect(handled[r.by as 'a' | 'b']).toContain(r.n);
    });

    it('without a queue group every server sees each request and the first reply wins', async () => {
      const [a, b, client] = [await connect(), await connect(), await connect()];
      const subject = a.subject('fanout');
      const seen: string[] = [];
      await a.serve(subject, () => (seen.push('a'), 'a'));
      await b.serve(subject, () => (seen.push('b'), 'b'));
      expect(['a', 'b']).toContain(await client.request(subject, null, { timeoutMs: 5000 }));
      await waitFor(() => seen.length === 2, 5000, 'both servers');
      expect(seen.sort()).toEqual(['a', 'b']);
    });

    it('closing a served subject drains: running handlers finish and reply, then nothing serves it', async () => {
      const [server, client] = [await connect(), await connect()];
      const subject = server.subject('drain');
      const release = gate();
      let started = 0;
      const sub = await server.serve(subject, async (n: number) => {
        started++;
        await release.promise;
        return n * 2;
      });
      expect(sub.subject).toBe(subject);
      const inFlight = [1, 2, 3].map((n) => client.request<number, number>(subject, n, { timeoutMs: 5000 }));
      await waitFor(() => started === 3, 5000, 'three handlers running');
      let closed = false;
      const closing = sub.close().then(() => (closed = true));
      await sleep(100);
      expect(closed).toBe(false);
      release.open();
      await closing;
      expect(await Promise.all(inFlight)).toEqual([2, 4, 6]);
      await expectCode(client.request(subject, 4, { timeoutMs: 5000 }), 'UNAVAILABLE');
      await sub.close(); // idempotent
    });

    it('publishes events to exact and wildcard subscribers', async () => {
      const [listener, publisher] = [await connect(), await connect()];
      const got: { who: string; subject: string; payload: unknown }[] = [];
      const record = (who: string) => (payload: unknown, info: MessageInfo) => {
        got.push({ who, subject: info.subject, payload });
      };
      const beat3 = listener.subject('node', '3', 'heartbeat');
      await listener.subscribe(beat3, record('exact'));
      await listener.subscribe(subjectPatternOf(cluster, 'node', '*', 'heartbeat'), record('star'));
      const all = await listener.subscribe(subjectPatternOf(cluster, 'node', '>'), record('tail'));
      await publisher.publish(beat3, { node: 3, at: 1 });
      await publisher.publish(publisher.subject('node', '7', 'heartbeat'), { node: 7, at: 2 });
      await publisher.publish(publisher.subject('node', '7', 'status', 'changed'), { state: 'serving' });
      await publisher.publish(publisher.subject('meta', 'heartbeat'), 'not for these subscribers');
      await waitFor(() => got.length >= 6, 5000, 'six deliveries');
      await sleep(100);
      const key = (g: { who: string; subject: string }) => `${g.who} ${g.subject}`;
      expect(got.map(key).sort()).toEqual(
        [
          `exact ${beat3}`,
          `star ${beat3}`,
          `tail ${beat3}`,
          `star ${subjectOf(cluster, 'node', '7', 'heartbeat')}`,
          `tail ${subjectOf(cluster, 'node', '7', 'heartbeat')}`,
          `tail ${subjectOf(cluster, 'node', '7', 'status', 'changed')}`,
        ].sort(),
      );
      expect(got.find((g) => g.who === 'exact')?.payload).toEqual({ node: 3, at: 1 });
      await all.close();
      await publisher.publish(beat3, { node: 3, at: 3 });
      await waitFor(() => got.length === 8, 5000, 'two more deliveries');
      await sleep(100);
      expect(got.filter((g) => g.who === 'tail')).toHaveLength(3);
    });

    it('an event handler that throws does not disturb the subscription', async () => {
      const [listener, publisher] = [await connect(), await connect()];
      const subject = listener.subject('events');
      const seen: number[] = [];
      await listener.subscribe(subject, (n: number) => {
        seen.push(n);
        if (n === 1) throw new Error('handler bug');
      });
      await publisher.publish(subject, 1);
      await publisher.publish(subject, 2);
      await waitFor(() => seen.length === 2, 5000, 'both events');
    });

    it('validates subjects, queue names and options with clear INVALID_ARGUMENT errors', async () => {
      const t = await connect();
      const checks: [() => unknown, RegExp][] = [
        [() => subjectOf(cluster, 'node', 'has space'), /"has space" contains whitespace/],
        [() => subjectOf(cluster, 'node', 'a.b'), /"a\.b" contains '\.'/],
        [() => subjectOf(cluster, 'node', '*'), /wildcard '\*'/],
        [() => subjectOf(cluster, 'node', '>'), /wildcard '>'/],
        [() => subjectOf(cluster, 'node', ''), /is empty/],
        [() => subjectOf(cluster), /at least a service/],
        [() => subjectOf('my cluster', 'x'), /cluster.*contains whitespace/],
        [() => subjectPatternOf(cluster, '>', 'x'), /'>' may only be the last/],
        [() => t.request('reprise.other.x', 1, { timeoutMs: 100 }), /must start with 'reprise\.c/],
        [() => t.request('x.y.z', 1, { timeoutMs: 100 }), /must start with/],
        [() => t.request(`reprise.${cluster}.node.*`, 1, { timeoutMs: 100 }), /wildcard '\*': only subscribe/],
        [() => t.request(`reprise.${cluster}..x`, 1, { timeoutMs: 100 }), /is empty/],
        [() => t.request(`reprise.${cluster}.x y`, 1, { timeoutMs: 100 }), /whitespace/],
        [() => t.serve(`reprise.${cluster}.node.>`, () => 1), /wildcard '>'/],
        [() => t.publish(`reprise.${cluster}.*`, 1), /wildcard/],
        [() => t.subscribe(`reprise.${cluster}.>.x`, () => {}), /'>' may only be the last/],
        [() => t.serve(t.subject('q'), () => 1, { queue: 'two words' }), /queue group "two words"/],
        [() => t.request(t.subject('x'), 1, { timeoutMs: 0 }), /timeoutMs must be a positive/],
        [() => t.request(t.subject('x'), 1, { timeoutMs: 10, retries: -1 }), /retries must be/],
        [() => t.request(t.subject('x'), () => 1, { timeoutMs: 10 }), /cannot be encoded as msgpack/],
      ];
      for (const [fn, pattern] of checks) {
        const err = await expectThrows(fn, 'INVALID_ARGUMENT');
        expect(err.message).toMatch(pattern);
      }
      // Wildcards are fine where they belong.
      const sub = await t.subscribe(`reprise.${cluster}.node.*.>`, () => {});
      await sub.close();
    });

    it('rejects requests and replies over maxPayloadBytes with REQUEST_TOO_LARGE', async () => {
      const [server, client] = [await connect(), await connect()];
      const max = client.maxPayloadBytes;
      expect(max).toBeGreaterThan(1000);
      const subject = server.subject('big');
      await server.serve(subject, (n: number) => new Uint8Array(n));
      const err = await expectCode(client.request(subject, new Uint8Array(max), { timeoutMs: 5000 }), 'REQUEST_TOO_LARGE');
      expect(err.message).toContain(subject);
      const reply = await expectCode(client.request(subject, max, { timeoutMs: 5000 }), 'REQUEST_TOO_LARGE');
      expect(reply.message).toContain(`reply from ${subject}`);
      expect((await client.request<number, Uint8Array>(subject, 1000, { timeoutMs: 5000 })).length).toBe(1000);
    });

    it('close() fails pending requests with CLOSED and refuses new calls', async () => {
      const [server, client] = [await connect(), await connect()];
      const subject = server.subject('hang');
      const release = gate();
      await server.serve(subject, () => release.promise);
      const pending = client.request(subject, null, { timeoutMs: 10_000 });
      await sleep(50);
      await client.close();
      await expectCode(pending, 'CLOSED');
      await expectCode(client.request(subject, null, { timeoutMs: 1000 }), 'CLOSED');
      await expectThrows(() => client.publish(subject, 1), 'CLOSED');
      await expectThrows(() => client.serve(client.subject('x'), () => 1), 'CLOSED');
      await client.close(); // idempotent
      release.open();
    });
  });
}
