import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { RepriseError } from '../errors.js';

/**
 * Standalone configuration. Precedence, highest first (as GreptimeDB):
 * command-line flags, REPRISE_* environment variables, the config file
 * (JSON, `--config`), defaults.
 */
export const standaloneConfigSchema = z.strictObject({
  dataDir: z.string().min(1),
  httpAddr: z.string().min(1),
  shards: z.number().int().min(1).max(4096),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  bodyLimitBytes: z.number().int().min(1024),
  wal: z.strictObject({
    provider: z.literal('local'),
    maxBatchBytes: z.number().int().min(4096),
    topicPrefix: z.string().regex(/^[A-Za-z0-9._-]+$/),
  }),
});

export type StandaloneConfig = z.infer<typeof standaloneConfigSchema>;

export const DEFAULT_CONFIG: StandaloneConfig = {
  dataDir: './reprise_data',
  httpAddr: '127.0.0.1:4000',
  shards: 4,
  logLevel: 'info',
  bodyLimitBytes: 64 * 1024 * 1024,
  wal: { provider: 'local', maxBatchBytes: 1024 * 1024, topicPrefix: 'reprise_wal' },
};

/** REPRISE_* variable -> config key path and how to parse it. */
const ENV_KEYS: Record<string, { path: string[]; parse: (v: string) => unknown }> = {
  REPRISE_DATA_DIR: { path: ['dataDir'], parse: String },
  REPRISE_HTTP_ADDR: { path: ['httpAddr'], parse: String },
  REPRISE_SHARDS: { path: ['shards'], parse: Number },
  REPRISE_LOG_LEVEL: { path: ['logLevel'], parse: String },
  REPRISE_BODY_LIMIT_BYTES: { path: ['bodyLimitBytes'], parse: Number },
  REPRISE_WAL_PROVIDER: { path: ['wal', 'provider'], parse: String },
  REPRISE_WAL_MAX_BATCH_BYTES: { path: ['wal', 'maxBatchBytes'], parse: Number },
  REPRISE_WAL_TOPIC_PREFIX: { path: ['wal', 'topicPrefix'], parse: String },
};

type Layer = Record<string, unknown>;

function setPath(target: Layer, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Layer;
  node[path[path.length - 1]!] = value;
}

function merge(base: Layer, over: Layer): Layer {
  const out: Layer = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    const prior = out[key];
    out[key] =
      value && typeof value === 'object' && !Array.isArray(value) && prior && typeof prior === 'object'
        ? merge(prior as Layer, value as Layer)
        : value;
  }
  return out;
}

function readConfigFile(file: string): Layer {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RepriseError('INVALID_ARGUMENT', `config file '${file}' cannot be read: ${(err as Error).message}`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('top level must be an object');
    return parsed as Layer;
  } catch (err) {
    throw new RepriseError('INVALID_ARGUMENT', `config file '${file}' is not a JSON object: ${(err as Error).message}`);
  }
}

export function envLayer(env: NodeJS.ProcessEnv): Layer {
  const layer: Layer = {};
  for (const [name, { path, parse }] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') setPath(layer, path, parse(raw));
  }
  return layer;
}

/** Resolve the effective config; errors name the offending key and where it came from. */
export function resolveConfig(opts: { configFile?: string; env: NodeJS.ProcessEnv; flags: Layer }): StandaloneConfig {
  const file = opts.configFile ? readConfigFile(opts.configFile) : {};
  const merged = merge(merge(merge(DEFAULT_CONFIG as unknown as Layer, file), envLayer(opts.env)), opts.flags);
  const result = standaloneConfigSchema.safeParse(merged);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const key = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : '(root)');
      return `${key}: ${issue.message}`;
    });
    throw new RepriseError('INVALID_ARGUMENT', `invalid configuration: ${problems.join('; ')} (sources: flags > REPRISE_* env > ${opts.configFile ?? 'no config file'} > defaults)`);
  }
  return result.data;
}
