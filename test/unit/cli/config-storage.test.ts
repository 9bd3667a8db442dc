import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_OBJECT_CACHE_BYTES } from '../../../src/api/storage.js';
import { DEFAULT_CONFIG, redactConfig, resolveConfig, storageOptionsOf } from '../../../src/cli/config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'reprise-config-storage-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe('config: [storage]', () => {
  it('defaults to local storage, unchanged', () => {
    const config = resolveConfig({ env: {}, flags: {} });
    expect(config.storage).toEqual({ type: 'local', cacheBytes: DEFAULT_OBJECT_CACHE_BYTES });
    expect(DEFAULT_CONFIG.storage.type).toBe('local');
    expect(storageOptionsOf(config.storage)).toEqual({ type: 'local' });
  });

  it('reads an s3 section from TOML, taking the seed\'s snake_case names', async () => {
    const path = await file(
      's3.toml',
      [
        '[storage]',
        'type = "s3"',
        'bucket = "reprise-data"',
        'root = "prod/cluster-a"',
        'endpoint = "http://minio.internal:9000"',
        'region = "eu-west-1"',
        'access_key_id = "AKIAEXAMPLE"',
        'secret_access_key = "wJalrXUtnFEMI"',
        'force_path_style = true',
        'cache_bytes = 2147483648',
        '',
      ].join('\n'),
    );
    const config = resolveConfig({ configFile: path, env: {}, flags: {} });
    expect(config.storage).toEqual({
      type: 's3',
      bucket: 'reprise-data',
      root: 'prod/cluster-a',
      endpoint: 'http://minio.internal:9000',
      region: 'eu-west-1',
      accessKeyId: 'AKIAEXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI',
      forcePathStyle: true,
      cacheBytes: 2147483648,
    });
    expect(storageOptionsOf(config.storage)).toEqual({
      type: 's3',
      bucket: 'reprise-data',
      root: 'prod/cluster-a',
      endpoint: 'http://minio.internal:9000',
      region: 'eu-west-1',
      credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI' },
      forcePathStyle: true,
      cacheBytes: 2147483648,
    });
  });

  it('takes camelCase keys in JSON, and leaves credentials to the SDK\'s chain when none are given', async () => {
    const path = await file('s3.json', JSON.stringify({ storage: { type: 's3', bucket: 'b-1', forcePathStyle: false, cacheBytes: 0, retryDeadlineMs: 10000 } }));
    const config = resolveConfig({ configFile: path, env: {}, flags: {} });
    expect(storageOptionsOf(config.storage)).toEqual({ type: 's3', bucket: 'b-1', forcePathStyle: false, cacheBytes: 0, retryDeadlineMs: 10000 });
  });

  it('reads REPRISE_STORAGE_* over the file', async () => {
    const path = await file('env.toml', '[storage]\ntype = "s3"\nbucket = "from-file"\n');
    const config = resolveConfig({
      configFile: path,
      env: {
        REPRISE_STORAGE_BUCKET: 'from-env',
        REPRISE_STORAGE_ROOT: 'r',
        REPRISE_STORAGE_ENDPOINT: 'https://s3.example.com',
        REPRISE_STORAGE_REGION: 'us-west-2',
        REPRISE_STORAGE_ACCESS_KEY_ID: 'id',
        REPRISE_STORAGE_SECRET_ACCESS_KEY: 'secret',
        REPRISE_STORAGE_FORCE_PATH_STYLE: 'true',
        REPRISE_STORAGE_CACHE_BYTES: '1048576',
        REPRISE_STORAGE_REQUEST_TIMEOUT_MS: '5000',
        REPRISE_STORAGE_RETRY_DEADLINE_MS: '20000',
      },
      flags: {},
    });
    expect(config.storage).toEqual({
      type: 's3',
      bucket: 'from-env',
      root: 'r',
      endpoint: 'https://s3.example.com',
      region: 'us-west-2',
      accessKeyId: 'id',
      secretAccessKey: 'secret',
      forcePathStyle: true,
      cacheBytes: 1048576,
      requestTimeoutMs: 5000,
      retryDeadlineMs: 20000,
    });
    expect(resolveConfig({ env: { REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'b-2' }, flags: {} }).storage).toMatchObject({ type: 's3', bucket: 'b-2' });
  });

  it('config print masks the secret access key', () => {
    const config = resolveConfig({ env: { REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'b-3', REPRISE_STORAGE_ACCESS_KEY_ID: 'AKIA1', REPRISE_STORAGE_SECRET_ACCESS_KEY: 'topsecret' }, flags: {} });
    const printed = redactConfig(config) as { storage: Record<string, unknown> };
    expect(printed.storage).toMatchObject({ type: 's3', bucket: 'b-3', accessKeyId: 'AKIA1', secretAccessKey: '***' });
    expect(JSON.stringify(printed)).not.toContain('topsecret');
  });

  it('names the key at fault', async () => {
    const resolve = (env: Record<string, string>) => () => resolveConfig({ env, flags: {} });
    expect(resolve({ REPRISE_STORAGE_TYPE: 's3' })).toThrow(/storage\.bucket: storage type "s3" needs a bucket/);
    expect(resolve({ REPRISE_STORAGE_TYPE: 'gcs' })).toThrow(/storage\.type: /);
    expect(resolve({ REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'Bad_Bucket' })).toThrow(/storage\.bucket: an S3 bucket name/);
    expect(resolve({ REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'ok-b', REPRISE_STORAGE_ENDPOINT: 'minio:9000' })).toThrow(/storage\.endpoint: expected an http/);
    expect(resolve({ REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'ok-b', REPRISE_STORAGE_ACCESS_KEY_ID: 'id' })).toThrow(/storage\.secretAccessKey: give both/);
    expect(resolve({ REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'ok-b', REPRISE_STORAGE_CACHE_BYTES: '-1' })).toThrow(/storage\.cacheBytes/);
    expect(resolve({ REPRISE_STORAGE_TYPE: 's3', REPRISE_STORAGE_BUCKET: 'ok-b', REPRISE_STORAGE_FORCE_PATH_STYLE: 'yes' })).toThrow(/storage\.forcePathStyle/);
    expect(resolve({ REPRISE_STORAGE_BUCKET: 'ok-b' })).toThrow(/storage\.bucket: applies to storage type "s3" only/);
    const typo = await file('typo.toml', '[storage]\ntype = "s3"\nbucket = "ok-b"\nsecret_acess_key = "x"\n');
    expect(() => resolveConfig({ configFile: typo, env: {}, flags: {} })).toThrow(/storage: .*secret_acess_key/);
    const twice = await file('twice.toml', '[storage]\ntype = "s3"\nbucket = "ok-b"\naccessKeyId = "a"\naccess_key_id = "b"\n');
    expect(() => resolveConfig({ configFile: twice, env: {}, flags: {} })).toThrow(/storage\.accessKeyId: given twice .*access_key_id/);
  });
});
