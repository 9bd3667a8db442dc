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
const SQL_SCREENSHOT = fileURLToPath(new URL('../../docs/dashboard-sql.png', import.meta.url));

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

  it('runs SQL in the query console: rows as a table, a chart over time buckets, a syntax error', async () => {
    // Not UTC (and not a whole hour off): the times shown must be UTC whatever the browser's zone.
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, timezoneId: 'Asia/Kolkata' });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    // The chart library comes from its npm package, these two files of it only.
    for (const file of ['uPlot.iife.min.js', 'uPlot.min.css']) {
      const response = await fetch(new URL(`/dashboard/vendor/${file}`, server.url));
      expect(response.status).toBe(200);
      expect((await response.text()).length).toBeGreaterThan(1000);
      expect(response.headers.get('content-type')).toMatch(file.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
    }
    for (const file of ['uPlot.esm.js', 'package.json', '..%2Fpackage.json', '..%2F..%2Fpackage.json']) expect((await call(server, 'GET', `/dashboard/vendor/${file}`)).status).toBe(404);

    await page.goto(server.url);
    const sql = page.locator('#query-sql');
    const results = page.locator('#query-results');
    const result = (i: number) => results.locator(`.result[data-index="${i}"]`);
    let runs = 0;
    const ran = async () => {
      runs++;
      await page.locator(`#query-results[data-run="${runs}"]`).waitFor();
    };

    // Two hosts every 3 s for 30 minutes from 2023-11-14 22:13:20 UTC: 1,200 rows, past the table's cap.
    const t0 = 1_700_000_000_000;
    const values: string[] = [];
    for (let i = 0; i < 600; i++) {
      const minute = i / 20;
      values.push(`('web-1', ${(40 + 25 * Math.sin(minute / 4) + (i % 7)).toFixed(2)}, ${t0 + i * 3000})`);
      values.push(`('web-2', ${(30 + 12 * Math.cos(minute / 5) + (i % 5)).toFixed(2)}, ${t0 + i * 3000})`);
    }
    await sql.fill(
      [
        'CREATE TABLE sql_console (host STRING, usage DOUBLE, ts TIMESTAMP TIME INDEX, PRIMARY KEY(host));',
        `INSERT INTO sql_console (host, usage, ts) VALUES ${values.join(', ')};`,
        `SELECT host, usage, ts FROM sql_console WHERE ts < ${t0 + 6000} ORDER BY ts, host;`,
        'SELECT host, count(*) AS n FROM sql_console GROUP BY host ORDER BY host;',
        'SELECT * FROM sql_console;',
      ].join('\n'),
    );
    await sql.press('Control+Enter');
    await ran();
    expect(await page.locator('#query').getAttribute('data-state')).toBe('done');
    expect(await page.locator('#query-status').textContent()).toMatch(/^5 statements · \d+ ms$/);
    expect(await results.locator('.result').count()).toBe(5);
    expect(await result(0).getAttribute('data-kind')).toBe('affected');
    expect(await result(1).locator('.result-head').textContent()).toMatch(/#2\s+1,200 rows affected/);
    // The rows, with their column types, the timestamps in UTC.
    expect(await result(2).locator('.result-table thead th').allTextContents()).toEqual(['host String', 'usage Float64', 'ts TimestampMillisecond']);
    const cells = await result(2).locator('.result-table tbody tr').evaluateAll((rows) =>
      (rows as unknown as { cells: ArrayLike<{ textContent: string }> }[]).map((r) => Array.from(r.cells, (c) => c.textContent)),
    );
    expect(cells).toEqual([
      ['web-1', '40', '2023-11-14 22:13:20.000'],
      ['web-2', '42', '2023-11-14 22:13:20.000'],
      ['web-1', '41.31', '2023-11-14 22:13:23.000'],
      ['web-2', '43', '2023-11-14 22:13:23.000'],
    ]);
    expect(await result(2).locator('.result-head').textContent()).toMatch(/4 rows$/);
    // A result without a time column has no chart; one past the cap shows 1,000 rows and says so.
    expect(await result(3).locator('.result-table tbody tr').allTextContents()).toEqual(['web-1600', 'web-2600']);
    expect(await result(3).locator('.chart').count()).toBe(0);
    expect(await result(4).locator('.result-table tbody tr').count()).toBe(1000);
    expect(await result(4).locator('.cap').textContent()).toBe('showing 1,000 of 1,200');

    // An aggregate over time buckets, by host: a chart with one series per (host, aggregate), run with the button.
    await sql.fill(
      [
        'SELECT date_bin(INTERVAL \'1 minute\', ts) AS minute, host, avg(usage) AS avg_usage, max(usage) AS max_usage',
        'FROM sql_console',
        'GROUP BY minute, host',
        'ORDER BY minute, host',
      ].join('\n'),
    );
    await page.locator('#query-run').click();
    await ran();
    expect(await results.locator('.result').count()).toBe(1);
    expect(await result(0).getAttribute('data-rows')).toBe('62');
    const chart = result(0).locator('.chart');
    expect(await chart.getAttribute('data-series')).toBe('4');
    expect(await chart.getAttribute('data-points')).toBe('31');
    const canvas = await chart.locator('canvas').boundingBox();
    expect(canvas?.width).toBeGreaterThan(300);
    expect(canvas?.height).toBeGreaterThan(100);
    expect(await chart.locator('.u-legend .u-series .u-label').allTextContents()).toEqual([
      'minute (UTC)',
      'avg_usage · web-1',
      'avg_usage · web-2',
      'max_usage · web-1',
      'max_usage · web-2',
    ]);
    // Each series' line is on the canvas: pixels of its legend colour (the axes and grid are grey).
    type Pixels = { width: number; height: number; getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: ArrayLike<number> } } };
    const colours = await chart.locator('.u-legend .u-series .u-marker').evaluateAll((markers) => {
      const { getComputedStyle } = globalThis as unknown as { getComputedStyle(e: object): { borderColor: string } };
      return markers.slice(1).map((m) => getComputedStyle(m).borderColor);
    });
    expect(colours).toHaveLength(4);
    const inked = await chart.locator('canvas').evaluate((c, colours) => {
      const canvas = c as unknown as Pixels;
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      return colours.map((colour) => {
        const [r, g, b] = colour.match(/\d+/g)!.map(Number);
        let n = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          if (Math.abs(pixels[i]! - r!) + Math.abs(pixels[i + 1]! - g!) + Math.abs(pixels[i + 2]! - b!) < 60) n++;
        }
        return n;
      });
    }, colours);
    for (const n of inked) expect(n).toBeGreaterThan(500);
    // The first bucket of web-1: its 14 rows from 22:13:20 on.
    const first = await result(0).locator('.result-table tbody tr').first().locator('td').allTextContents();
    expect(first.slice(0, 2)).toEqual(['2023-11-14 22:13:00.000', 'web-1']);
    expect(Number(first[2])).toBeCloseTo(45.0264, 3);
    expect(first[3]).toBe('50.04');
    // The picture the README shows.
    await page.locator('#query').screenshot({ path: SQL_SCREENSHOT });
    expect(errors).toEqual([]);

    // A syntax error, typed: its code and message, the caret put where it is.
    await sql.fill('');
    await sql.pressSequentially('SELECT 1;\n  SELEC 2');
    await sql.press('Meta+Enter');
    await ran();
    expect(await page.locator('#query').getAttribute('data-state')).toBe('error');
    const error = results.locator('.error-result[data-code="SQL_SYNTAX"]');
    expect(await error.locator('.code').textContent()).toBe('SQL_SYNTAX');
    expect(await error.locator('.message').textContent()).toMatch(/^SQL syntax error at line 2, column 3: .*'SELEC'/);
    expect(await results.locator('.result, .chart').count()).toBe(1);
    expect(await sql.evaluate((area) => (area as unknown as { selectionStart: number }).selectionStart)).toBe('SELECT 1;\n  '.length);
    // (the 400 answer is the only thing the browser logs)
    expect(errors).toEqual(['Failed to load resource: the server responded with a status of 400 (Bad Request)']);
    await page.close();
  });
});
