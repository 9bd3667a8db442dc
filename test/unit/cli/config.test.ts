import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAddr } from '../../../src/api/http.js';
import { DEFAULT_CONFIG, resolveConfig, walOptionsOf } from '../../../src/cli/config.js';

describe('standalone configuration', () => {
  it('defaults', () => {
    expect(resolveConfig({ env: {}, flags: {} })).toEqual(DEFAULT_CONFIG);
  });

  it('precedence: flags > env > file > defaults', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reprise-config-'));
    const file = join(dir, 'reprise.json');
    await writeFile(file, JSON.stringify({ dataDir: '/file', httpAddr: '0.0.0.0:1', shards: 2, wal: { maxBatchBytes: 65536 } }));
    const config = resolveConfig({
      configFile: file,
      env: { REPRISE_HTTP_ADDR: '127.0.0.1:2', REPRISE_SHARDS: '8' },
      flags: { shards: 16, dataDir: undefined },
    });
    expect(config).toMatchObject({ dataDir: '/file', httpAddr: '127.0.0.1:2', shards: 16, wal: { maxBatchBytes: 65536, provider: 'local' } });
    await rm(dir, { recursive: true });
  });

  it('errors name the key', async () => {
    expect(() => resolveConfig({ env: { REPRISE_SHARDS: 'many' }, flags: {} })).toThrow(/shards/);
    expect(() => resolveConfig({ env: { REPRISE_WAL_MAX_BATCH_BYTES: '10' }, flags: {} })).toThrow(/wal\.maxBatchBytes/);
    expect(resolveConfig({ env: { REPRISE_HEAP_GROWTH_PERCENT: '0' }, flags: {} }).memory.heapGrowthPercent).toBe(0);
    expect(() => resolveConfig({ env: { REPRISE_HEAP_GROWTH_PERCENT: '1000' }, flags: {} })).toThrow(/memory\.heapGrowthPercent/);
    expect(resolveConfig({ env: { REPRISE_MAX_COLUMNS: '64', REPRISE_MAX_TABLES_PER_WRITE: '5', REPRISE_MAX_ROWS_PER_WRITE: '7', REPRISE_MAX_WRITE_BYTES_IN_FLIGHT: '65536' }, flags: {} }).limits).toEqual({
      maxColumns: 64,
      maxPartitionBounds: 1023,
      maxTablesPerWrite: 5,
      maxRowsPerWrite: 7,
      maxWriteBytesInFlight: 65_536,
    });
    expect(resolveConfig({ env: {}, flags: {} }).limits.maxWriteBytesInFlight).toBe(256 * 1024 * 1024);
    expect(resolveConfig({ env: {}, flags: {} }).limits.maxRowsPerWrite).toBe(100_000);
    expect(resolveConfig({ env: { REPRISE_MAX_RESULT_ROWS_IN_FLIGHT: '3000000' }, flags: {} }).memory.maxResultRowsInFlight).toBe(3_000_000);
    expect(resolveConfig({ env: {}, flags: {} }).memory.maxResultRowsInFlight).toBeUndefined();
    expect(() => resolveConfig({ env: { REPRISE_MAX_RESULT_ROWS: '10', REPRISE_MAX_RESULT_ROWS_IN_FLIGHT: '9' }, flags: {} })).toThrow(/memory\.maxResultRowsInFlight: must be at least maxResultRows/);
    const dir = await mkdtemp(join(tmpdir(), 'reprise-config-'));
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ dataDri: '/typo' }));
    expect(() => resolveConfig({ configFile: file, env: {}, flags: {} })).toThrow(/dataDri/);
    await writeFile(file, '{ nope');
    expect(() => resolveConfig({ configFile: file, env: {}, flags: {} })).toThrow(/not a JSON object/);
    expect(() => resolveConfig({ configFile: join(dir, 'missing.json'), env: {}, flags: {} })).toThrow(/cannot be read/);
    await rm(dir, { recursive: true });
  });

  it('kafka WAL: brokers from flags or env, required, and mapped to the runtime options', () => {
    const fromEnv = resolveConfig({ env: { REPRISE_WAL_PROVIDER: 'kafka', REPRISE_WAL_BROKER_ENDPOINTS: 'a:9092, b:9093', REPRISE_WAL_IDEMPOTENT: 'false' }, flags: {} });
    expect(fromEnv.wal).toMatchObject({ provider: 'kafka', brokerEndpoints: ['a:9092', 'b:9093'], idempotent: false });
    expect(walOptionsOf(fromEnv.wal)).toEqual({
      provider: 'kafka',
      brokerEndpoints: ['a:9092', 'b:9093'],
      idempotent: false,
      maxBatchBytes: 1024 * 1024,
      topicPrefix: 'reprise_wal',
    });
    const fromFlags = resolveConfig({ env: { REPRISE_WAL_BROKER_ENDPOINTS: 'a:1' }, flags: { wal: { provider: 'kafka', brokerEndpoints: ['c:2'] } } });
    expect(fromFlags.wal.brokerEndpoints).toEqual(['c:2']);
    expect(() => resolveConfig({ env: { REPRISE_WAL_PROVIDER: 'kafka' }, flags: {} })).toThrow(/wal\.brokerEndpoints: the kafka provider needs at least one broker/);
    expect(() => resolveConfig({ env: { REPRISE_WAL_PROVIDER: 'kafka', REPRISE_WAL_BROKER_ENDPOINTS: 'nohost' }, flags: {} })).toThrow(/wal\.brokerEndpoints\.0: expected host:port/);
    expect(() => resolveConfig({ env: { REPRISE_WAL_PROVIDER: 'rocks' }, flags: {} })).toThrow(/wal\.provider/);
    expect(walOptionsOf(DEFAULT_CONFIG.wal)).toEqual({ provider: 'local', maxBatchBytes: 1024 * 1024, topicPrefix: 'reprise_wal' });
  });

  it('wal.skipCorrupt: off unless asked (flag, REPRISE_WAL_SKIP_CORRUPT or file), local WAL only', () => {
    expect(walOptionsOf(resolveConfig({ env: {}, flags: {} }).wal)).not.toHaveProperty('skipCorrupt');
    expect(walOptionsOf(resolveConfig({ env: { REPRISE_WAL_SKIP_CORRUPT: 'true' }, flags: {} }).wal)).toMatchObject({ provider: 'local', skipCorrupt: true });
    expect(walOptionsOf(resolveConfig({ env: { REPRISE_WAL_SKIP_CORRUPT: 'true' }, flags: { wal: { skipCorrupt: false } } }).wal)).not.toHaveProperty('skipCorrupt');
    expect(() => resolveConfig({ env: { REPRISE_WAL_SKIP_CORRUPT: 'yes' }, flags: {} })).toThrow(/wal\.skipCorrupt/);
    expect(() =>
      resolveConfig({ env: { REPRISE_WAL_PROVIDER: 'kafka', REPRISE_WAL_BROKER_ENDPOINTS: 'a:1', REPRISE_WAL_SKIP_CORRUPT: 'true' }, flags: {} }),
    ).toThrow(/wal\.skipCorrupt: applies to the local WAL only/);
  });

  it('parses host:port', () => {
    expect(parseAddr('127.0.0.1:4000')).toEqual({ host: '127.0.0.1', port: 4000 });
    expect(parseAddr('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(() => parseAddr('4000')).toThrow(/host:port/);
    expect(() => parseAddr('h:99999')).toThrow(/host:port/);
  });
});
