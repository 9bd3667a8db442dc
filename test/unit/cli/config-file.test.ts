import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, redactConfig, resolveConfig } from '../../../src/cli/config.js';

describe('config files: TOML or JSON, the same keys', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reprise-config-file-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('TOML file (*.toml) with tables for nested keys; precedence unchanged', async () => {
    const file = join(dir, 'reprise.toml');
    await writeFile(
      file,
      [
        'dataDir = "/var/lib/reprise"',
        'shards = 8',
        'autoCreateTables = false',
        '',
        '[wal]',
        'provider = "kafka"',
        'brokerEndpoints = ["k1:9092", "k2:9092"]',
        'replicationFactor = 3',
      ].join('\n'),
    );
    const config = resolveConfig({ configFile: file, env: { REPRISE_SHARDS: '16' }, flags: { dataDir: '/flag' } });
    expect(config).toEqual({
      ...DEFAULT_CONFIG,
      dataDir: '/flag',
      shards: 16,
      autoCreateTables: false,
      wal: { ...DEFAULT_CONFIG.wal, provider: 'kafka', brokerEndpoints: ['k1:9092', 'k2:9092'], replicationFactor: 3 },
    });
  });

  it('TOML errors: syntax (with the position) and keys, named', async () => {
    const bad = join(dir, 'bad.toml');
    await writeFile(bad, 'shards = \n');
    expect(() => resolveConfig({ configFile: bad, env: {}, flags: {} })).toThrow(/bad\.toml' is not valid TOML: Invalid TOML document: invalid value\n\n1: +shards =/);
    await writeFile(bad, 'shards = "four"\n[wal]\nprovidr = "local"\n');
    expect(() => resolveConfig({ configFile: bad, env: {}, flags: {} })).toThrow(/shards: .*; wal: .*providr/);
  });

  it('autoCreateTables from the environment', () => {
    expect(resolveConfig({ env: { REPRISE_AUTO_CREATE_TABLES: 'false' }, flags: {} }).autoCreateTables).toBe(false);
    expect(() => resolveConfig({ env: { REPRISE_AUTO_CREATE_TABLES: 'no' }, flags: {} })).toThrow(/autoCreateTables/);
    expect(DEFAULT_CONFIG.autoCreateTables).toBe(true);
  });

  it('config print hides secrets, shows the rest', () => {
    const config = resolveConfig({
      env: {},
      flags: {
        wal: {
          provider: 'kafka',
          brokerEndpoints: ['k:9092'],
          sasl: { mechanism: 'plain', username: 'u', password: 'p4ss' },
          ssl: { ca: 'CA', key: 'PRIVATE', passphrase: 'pp' },
        },
      },
    });
    expect(redactConfig(config)).toMatchObject({
      dataDir: './reprise_data',
      wal: { sasl: { mechanism: 'plain', username: 'u', password: '***' }, ssl: { ca: 'CA', key: '***', passphrase: '***' } },
    });
  });
});
