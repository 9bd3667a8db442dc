import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
    expect(await page.locator('.machine-card[data-kind="shard"] g.state').count()).toBe(8);

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
});
