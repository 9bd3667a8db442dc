import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeMachine, MACHINES } from '../../src/actors/diagram.js';
import { call, ROWS, startServer, SYSTEM_METRICS, type Server } from '../harness/standalone.js';
import { launchChromium } from './browser.js';

const SCREENSHOT = fileURLToPath(new URL('../../docs/dashboard.png', import.meta.url));

describe('dashboard (headless Chromium against reprise standalone)', () => {
  let browser: Browser;
  let server: Server;
  let dir: string;

  beforeAll(async () => {
    browser = await launchChromium();
    dir = await mkdtemp(join(tmpdir(), 'reprise-dashboard-'));
    server = await startServer(dir);
  });
  afterAll(async () => {
    await browser?.close();
    server?.child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shows the tables regions and machines, and a flush appears live without reload', async () => {
    expect((await call(server, 'POST', '/v1/tables', SYSTEM_METRICS)).status).toBe(201);
    expect((await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS)).body).toEqual({ written: 5 });

    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    await page.goto(server.url);

    // The table's three regions, serving, and the live connection.
    const regions = page.locator('.table-card[data-table="system_metrics"] tr[data-region]');
    await expect.poll(() => regions.count()).toBe(3);
    expect(await regions.locator('td.state').allTextContents()).toEqual(['serving', 'serving', 'serving']);
    await page.locator('#connection[data-state="live"]').waitFor();
    // Each machine drawn from its definition, current states highlighted.
    for (const kind of ['node', 'shard', 'region']) {
      await page.locator(`.machine-card[data-kind="${kind}"] svg g.state.current[data-state="serving"]`).waitFor();
    }
    expect(await page.locator('.machine-card[data-kind="region"] g.state[data-state="serving"] text.count').textContent()).toBe('×3');
    expect(await page.locator('.machine-card[data-kind="shard"] g.state').count()).toBe(describeMachine(MACHINES.shard!).states.length);
    // Every state of every machine is visibly filled when highlighted (a new state needs its colour in style.css).
    // (the tests have no DOM types: the little this uses, spelled out)
    type StateGroup = { classList: { add(c: string): void; remove(c: string): void }; dataset: Record<string, string>; querySelector(s: string): object; closest(s: string): StateGroup };
    const unfilled = await page.locator('svg.machine g.state').evaluateAll((groups) => {
      const { getComputedStyle } = globalThis as unknown as { getComputedStyle(e: object): { fill: string } };
      return (groups as unknown as StateGroup[]).flatMap((g) => {
        g.classList.add('current');
        const fill = getComputedStyle(g.querySelector('rect')).fill;
        g.classList.remove('current');
        return fill === 'rgb(255, 255, 255)' ? [`${g.closest('svg').dataset.machine}.${g.dataset.state}`] : [];
      });
    });
    expect(unfilled).toEqual([]);

    const flushedBefore = await regions.locator('td:nth-child(6)').allTextContents();
    await page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 42));

    // A flush, through the API: its transitions and new flushed ids arrive over SSE.
    expect((await call(server, 'POST', '/v1/flush')).body).toEqual({ flushed: true });
    await page.locator('#transitions li[data-kind="node"][data-to="flushing"]').waitFor();
    await page.locator('#transitions li[data-kind="region"][data-to="flushing"]').first().waitFor();
    await page.locator('#transitions li[data-kind="shard"][data-to="serving"]').first().waitFor();
    await expect.poll(async () => regions.locator('td:nth-child(6)').allTextContents(), { timeout: 10_000 }).not.toEqual(flushedBefore);
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker)).toBe(42);

    // Fresh rows in the memtables for the picture, then the screenshot the README shows.
    await call(server, 'POST', '/v1/tables/system_metrics/rows', ROWS.map((r) => ({ ...r, ts: r.ts + 1000 })));
    await expect.poll(async () => (await page.locator('#summary').textContent()) ?? '', { timeout: 10_000 }).not.toMatch(/memtables 0 B/);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('shows a follower shard with its lag, followers per shard and running procedures (cluster status mocked)', async () => {
    const now = Date.now();
    const region = { table: 'cpu', appliedEntryId: 41, flushedEntryId: 20, memtableBytes: 2048 };
    const status = {
      wal: { provider: 'kafka' },
      nodes: [
        {
          id: 'n2',
          state: 'serving',
          shards: [
            { id: 0, topic: 't_0', state: 'serving', role: 'leader', epoch: 3, lastEntryId: 41, flushedEntryId: 20, regions: [{ ...region, id: 1, partition: 0, state: 'serving' }] },
            { id: 1, topic: 't_1', state: 'following', role: 'follower', epoch: 2, lastEntryId: 17, flushedEntryId: 9, lag: { entries: 3, ms: 12 }, regions: [{ ...region, id: 2, partition: 1, state: 'following' }] },
          ],
        },
      ],
    };
    const procedures = [
      { id: 4, kind: 'rebalance', shard: null, from: null, to: null, parent: null, state: 'moving', startedAt: now - 2500, stepAt: now - 800 },
      { id: 5, kind: 'migrate', shard: 0, from: 'n2', to: 'n1', parent: 4, state: 'handing_off', startedAt: now - 800, stepAt: now - 800 },
      { id: 6, kind: 'failover', shard: 1, from: 'n3', to: 'n1', parent: null, epoch: 2, state: 'awaiting_leader', startedAt: now - 300, stepAt: now - 290 },
      { id: 7, kind: 'create_table', shard: null, from: null, to: null, parent: null, table: 3, state: 'creating_regions', startedAt: now - 50, stepAt: now - 50 },
    ];
    const meta = {
      topology: 'dynamic',
      counters: { placements: 2, failovers: 1, migrations: 1, migrationMs: 20, leaves: 0, rebalanceMoves: 1 },
      entryId: 57,
      procedures,
      nodes: [
        { id: 'n1', alive: true, lastHeartbeatMsAgo: 40, shards: [{ id: 1, epoch: 2, state: 'serving', role: 'leader', lastEntryId: 20 }] },
        { id: 'n2', alive: true, lastHeartbeatMsAgo: 10, shards: [{ id: 0, epoch: 3, state: 'serving', role: 'leader', lastEntryId: 41 }, { id: 1, epoch: 2, state: 'following', role: 'follower', lastEntryId: 17, lag: { entries: 3, ms: 12 } }] },
        { id: 'n3', alive: false, lastHeartbeatMsAgo: 5000, shards: [{ id: 1, epoch: 2, state: 'following', role: 'follower', lastEntryId: 20, lag: { entries: 0, ms: 1 } }] },
      ],
      shards: [
        { id: 0, topic: 't_0', leader: 'n2', epoch: 3, followers: ['n1'] },
        { id: 1, topic: 't_1', leader: 'n1', epoch: 2, followers: ['n2', 'n3'] },
      ],
    };
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    // The node's own tree: one snapshot, then no reconnect for the rest of the test.
    await page.route('**/v1/events', (route) =>
      route.fulfill({ status: 200, contentType: 'text/event-stream', body: `retry: 600000\nevent: snapshot\ndata: ${JSON.stringify({ status, transitions: [] })}\n\n` }),
    );
    await page.route('**/v1/cluster/status', (route) => route.fulfill({ json: { ...status, meta } }));
    await page.goto(server.url);

    // The node's own follower shard: role, lag, and the new states highlighted in the shard and region machines.
    await page.locator('#shards tr[data-shard="1"][data-role="follower"][data-lag-entries="3"][data-lag-ms="12"]').waitFor();
    expect(await page.locator('#shards tr[data-shard="1"]').textContent()).toContain('3 entries · 12 ms');
    await page.locator('.machine-card[data-kind="shard"] g.state.current[data-state="following"]').waitFor();
    await page.locator('.machine-card[data-kind="region"] g.state.current[data-state="following"]').waitFor();

    // Meta's view: each shard's followers with the lag their nodes reported; a dead follower shows no lag.
    const shard1 = page.locator('#cluster-shards tr[data-shard="1"][data-followers="n2,n3"]');
    await shard1.waitFor();
    expect(await shard1.locator('[data-follower="n2"]').getAttribute('data-lag-entries')).toBe('3');
    expect(await shard1.locator('[data-follower="n2"]').textContent()).toContain('3 entries · 12 ms');
    expect(await shard1.locator('[data-follower="n3"]').textContent()).toContain('dead');
    expect(await shard1.locator('[data-follower="n3"][data-lag-entries]').count()).toBe(0);
    expect(await page.locator('#cluster-shards tr[data-shard="0"] [data-follower="n1"]').textContent()).toContain('not reported yet');

    // Running procedures, the move under its rebalance.
    const rows = page.locator('#cluster-procedures tr[data-procedure]');
    expect(await rows.count()).toBe(4);
    const move = page.locator('#cluster-procedures tr[data-procedure="5"][data-kind="migrate"][data-shard="0"][data-state="handing_off"]');
    expect(await move.textContent()).toMatch(/#5 migrate\s+of #4[\s\S]*shard 0[\s\S]*n2 → n1[\s\S]*handing_off/);
    // A failover and a table being created, the latter by its table.
    expect(await page.locator('#cluster-procedures tr[data-procedure="6"][data-kind="failover"][data-shard="1"]').textContent()).toMatch(/#6 failover[\s\S]*shard 1[\s\S]*n3 → n1[\s\S]*awaiting_leader/);
    expect(await page.locator('#cluster-procedures tr[data-procedure="7"][data-kind="create_table"][data-shard=""]').textContent()).toMatch(/#7 create_table[\s\S]*table #3[\s\S]*creating_regions/);
    expect(await page.locator('#cluster-summary').textContent()).toMatch(/1 rebalance moves · 4 procedures running/);
    // ...and none once they finish.
    procedures.length = 0;
    await page.locator('#cluster-procedures td.empty', { hasText: 'no procedures running' }).waitFor({ timeout: 5_000 });
    expect(errors).toEqual([]);
    await page.close();
  });
});
