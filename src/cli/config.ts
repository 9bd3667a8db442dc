import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT_MS } from '../api/http.js';
import { DEFAULT_MAX_ROWS_PER_WRITE, DEFAULT_MAX_TABLES_PER_WRITE } from '../api/line-protocol-rows.js';
import { DEFAULT_MAX_WRITE_BYTES_IN_FLIGHT } from '../api/write-budget.js';
import { DEFAULT_FLUSH_POLICY } from '../actors/context.js';
import { DEFAULT_CACHE_BYTES, DEFAULT_MAX_RESULT_ROWS } from '../engine/table/table-engine.js';
import { DEFAULT_SCHEMA_LIMITS } from '../engine/table/validate.js';
import { RepriseError } from '../errors.js';
import type { KafkaWalOptions, WalOptions } from '../wal/open-log-store.js';
import { DEFAULT_OBJECT_CACHE_BYTES, type StorageOptions } from '../api/storage.js';
import { DEFAULT_META_ELECTION_LEASE_MS } from '../api/meta-process.js';

/**
 * Standalone configuration. Precedence, highest first (as GreptimeDB):
 * command-line flags, REPRISE_* environment variables, the config file
 * (`--config`: TOML if it ends in .toml, JSON otherwise; the same keys),
 * defaults.
 */
export const standaloneConfigSchema = z.strictObject({
  dataDir: z.string().min(1),
  httpAddr: z.string().min(1),
  /** The MySQL protocol's address ('' turns it off). */
  mysqlAddr: z.string(),
  /** The PostgreSQL protocol's address ('' turns it off). */
  postgresAddr: z.string(),
  /** Who may connect, as GreptimeDB names it: static_user_provider:file:<path> (one user=password per line). Unset: anyone. */
  userProvider: z.string().min(1).optional(),
  /** Shards on first start (4 when not set); a data dir keeps its count: more adds shards, fewer is refused. */
  shards: z.number().int().min(1).max(4096).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  bodyLimitBytes: z.number().int().min(1024),
  /** A request not received whole within this many ms is answered 408 and its connection closed. */
  httpRequestTimeoutMs: z.number().int().min(100),
  /** HTTP connections served at once (each holds a file descriptor); more are closed as they arrive. */
  httpMaxConnections: z.number().int().min(1),
  /** Host names (besides IP addresses, localhost and the --http-addr host) the HTTP API answers to; `*`: any. */
  allowedHosts: z.array(z.string().min(1)),
  /** Origins (scheme://host[:port]) whose browser pages may write through the HTTP API, besides its own. */
  allowedOrigins: z.array(z.string().regex(/^https?:\/\/[^/]+$/, 'expected scheme://host[:port]')),
  /** Line protocol writes create a missing table (tags, fields, time column `ts`, no partition rule). */
  autoCreateTables: z.boolean(),
  /** Worker threads that parse and encode line-protocol and JSON writes (0: the main thread). Unset: one per core but one, at least one. */
  ingestThreads: z.number().int().min(0).max(64).optional(),
  wal: z
    .strictObject({
      provider: z.enum(['local', 'kafka']),
      maxBatchBytes: z.number().int().min(4096),
      topicPrefix: z.string().regex(/^[A-Za-z0-9._-]+$/),
      // Local only: open a damaged WAL, skipping (and logging) what is lost instead of refusing to start.
      skipCorrupt: z.boolean().optional(),
      // Kafka only (the names of GreptimeDB's [wal] keys, camelCased).
      brokerEndpoints: z.array(z.string().regex(/^[^\s:]+:\d+$/, 'expected host:port')).optional(),
      replicationFactor: z.number().int().min(1).max(32).optional(),
      clientId: z.string().min(1).optional(),
      connectionTimeoutMs: z.number().int().min(1).optional(),
      requestTimeoutMs: z.number().int().min(1).optional(),
      consumerWaitTimeoutMs: z.number().int().min(1).optional(),
      backoffInitMs: z.number().int().min(1).optional(),
      backoffMaxMs: z.number().int().min(1).optional(),
      backoffDeadlineMs: z.number().int().min(1).optional(),
      // false for clusters that cannot grant producer ids (librdkafka's mock cluster).
      idempotent: z.boolean().optional(),
      // Passed through to kafkajs as they are.
      ssl: z.union([z.boolean(), z.record(z.string(), z.unknown())]).optional(),
      sasl: z.record(z.string(), z.unknown()).optional(),
    })
    .refine((wal) => wal.provider !== 'kafka' || (wal.brokerEndpoints?.length ?? 0) > 0, {
      path: ['brokerEndpoints'],
      message: 'the kafka provider needs at least one broker (--brokers host:port,... or REPRISE_WAL_BROKER_ENDPOINTS)',
    })
    .refine((wal) => wal.provider === 'local' || wal.skipCorrupt !== true, {
      path: ['skipCorrupt'],
      message: 'applies to the local WAL only (a Kafka topic is repaired on the broker)',
    }),
  /**
   * Where SSTs and manifests live (the seed's [storage] section, keys
   * camelCased as the [wal] ones; the file also takes the seed's
   * access_key_id, secret_access_key, force_path_style and cache_bytes).
   * `local`: a directory (`<dataDir>/objects` standalone; a cluster node's
   * --data-dir, shared by every node). `s3`: a bucket, with a local cache of
   * SSTs under `<dataDir>/cache`.
   */
  storage: z
    .strictObject({
      type: z.enum(['local', 's3']),
      bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens').optional(),
      /** Key prefix inside the bucket. */
      root: z.string().regex(/^[^\s]*$/, 'no whitespace').optional(),
      /** An S3-compatible store's URL (MinIO, Ceph RGW, R2, OSS); unset: AWS. */
      endpoint: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }).optional(),
      region: z.string().min(1).optional(),
      /** Unset (both): the SDK's default chain (AWS_* env, ~/.aws, instance roles). */
      accessKeyId: z.string().min(1).optional(),
      secretAccessKey: z.string().min(1).optional(),
      forcePathStyle: z.boolean().optional(),
      /** Bytes of the local SST cache in front of S3 (0: none). */
      cacheBytes: z.number().int().min(0),
      /** One S3 request, from sending to the last byte of its answer. */
      requestTimeoutMs: z.number().int().min(100).optional(),
      /** An S3 operation retries (5xx, throttling, resets, timeouts) until this long after it started, then fails STORE_UNAVAILABLE. */
      retryDeadlineMs: z.number().int().min(100).optional(),
    })
    .refine((st) => st.type !== 's3' || st.bucket !== undefined, {
      path: ['bucket'],
      message: 'storage type "s3" needs a bucket (storage.bucket, or REPRISE_STORAGE_BUCKET)',
    })
    .refine((st) => (st.accessKeyId === undefined) === (st.secretAccessKey === undefined), {
      path: ['secretAccessKey'],
      message: 'give both accessKeyId and secretAccessKey, or neither (the SDK\'s default credential chain)',
    })
    .superRefine((st, ctx) => {
      if (st.type !== 'local') return;
      for (const key of ['bucket', 'root', 'endpoint', 'region', 'accessKeyId', 'secretAccessKey', 'forcePathStyle', 'requestTimeoutMs', 'retryDeadlineMs'] as const) {
        if (st[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'applies to storage type "s3" only' });
      }
    }),
  /** Memory budgets: memory is set by these, not by the size of the data. */
  memory: z.strictObject({
    /** Memtables of the shards a node leads; past it the node flushes the largest. */
    memtableBytes: z.number().int().min(1024 * 1024),
    /** SST indexes and decoded SST chunks kept for queries, half each (0: no cache). */
    cacheBytes: z.number().int().min(0),
    /** Rows (or groups) a query may return; more is QUERY_TOO_LARGE. */
    maxResultRows: z.number().int().min(1),
    /** Result rows this node's queries may hold at once; past it a query is OVERLOADED (retry). Unset: 2 x maxResultRows. */
    maxResultRowsInFlight: z.number().int().min(1).optional(),
    /**
     * How far V8 lets the JavaScript heap grow past what the last full GC
     * kept, in percent (V8's --heap-growing-percent; 0: V8's own factor, up
     * to 4x under a high allocation rate). The process's, so the CLI sets
     * it; an embedding application keeps its own.
     */
    heapGrowthPercent: z.number().int().min(0).max(400),
  }).refine((memory) => memory.maxResultRowsInFlight === undefined || memory.maxResultRowsInFlight >= memory.maxResultRows, {
    path: ['maxResultRowsInFlight'],
    message: 'must be at least maxResultRows, or one query could never run',
  }),
  /** Caps on what one request may ask for, each refused with a coded error naming it. */
  limits: z.strictObject({
    /** Columns of a table. */
    maxColumns: z.number().int().min(2),
    /** Partition bounds of a table (it has one region more). */
    maxPartitionBounds: z.number().int().min(0),
    /** Tables one line-protocol request may create. */
    maxTablesPerWrite: z.number().int().min(1),
    /** Rows one insert, keys one delete, lines one line-protocol request may hold. */
    maxRowsPerWrite: z.number().int().min(1),
    /** Bytes of write bodies a node works on at once; a write past it is refused OVERLOADED (503, Retry-After). */
    maxWriteBytesInFlight: z.number().int().min(1024),
  }),
  /** Distributed mode (`reprise meta`, `reprise node`): NATS, this node's id, heartbeats and leases. */
  cluster: z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, - and _'),
    natsServers: z.array(z.string().min(1)).min(1),
    nodeId: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, - and _').optional(),
    heartbeatMs: z.number().int().min(10),
    leaseMs: z.number().int().min(50),
    failureTimeoutMs: z.number().int().min(60),
    topology: z.enum(['static', 'dynamic']),
    minNodes: z.number().int().min(1),
    /** Hot-standby followers per shard. */
    followers: z.number().int().min(0),
    /** `reprise meta` serves /health, /metrics and /v1/cluster/status here when set. */
    metaHttpAddr: z.string().min(1).optional(),
    /** This meta replica's name among the cluster's metas (default meta-<host>-<pid>). */
    metaId: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, - and _').optional(),
    /** The meta election's lease: how long a meta leader acts after a renewal, and about how long its successor waits after the last one. */
    metaElectionLeaseMs: z.number().int().min(100),
    /** Replicas of the election's JetStream KV bucket when it is created (default 3 on a NATS cluster, 1 on one server). */
    metaElectionReplicas: z.number().int().min(1).max(5).optional(),
  }),
});

export type StandaloneConfig = z.infer<typeof standaloneConfigSchema>;

export const DEFAULT_CONFIG: StandaloneConfig = {
  dataDir: './reprise_data',
  httpAddr: '127.0.0.1:4000',
  mysqlAddr: '127.0.0.1:4002',
  postgresAddr: '127.0.0.1:4003',
  logLevel: 'info',
  bodyLimitBytes: DEFAULT_BODY_LIMIT,
  httpRequestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
  httpMaxConnections: DEFAULT_MAX_CONNECTIONS,
  allowedHosts: [],
  allowedOrigins: [],
  autoCreateTables: true,
  wal: { provider: 'local', maxBatchBytes: 1024 * 1024, topicPrefix: 'reprise_wal' },
  storage: { type: 'local', cacheBytes: DEFAULT_OBJECT_CACHE_BYTES },
  memory: { memtableBytes: DEFAULT_FLUSH_POLICY.nodeMemtableBytes, cacheBytes: DEFAULT_CACHE_BYTES, maxResultRows: DEFAULT_MAX_RESULT_ROWS, heapGrowthPercent: 20 },
  limits: { ...DEFAULT_SCHEMA_LIMITS, maxTablesPerWrite: DEFAULT_MAX_TABLES_PER_WRITE, maxRowsPerWrite: DEFAULT_MAX_ROWS_PER_WRITE, maxWriteBytesInFlight: DEFAULT_MAX_WRITE_BYTES_IN_FLIGHT },
  cluster: { name: 'reprise', natsServers: ['127.0.0.1:4222'], heartbeatMs: 200, leaseMs: 800, failureTimeoutMs: 1000, topology: 'dynamic', minNodes: 1, followers: 1, metaElectionLeaseMs: DEFAULT_META_ELECTION_LEASE_MS },
};

/** REPRISE_* variable -> config key path and how to parse it. */
const ENV_KEYS: Record<string, { path: string[]; parse: (v: string) => unknown }> = {
  REPRISE_DATA_DIR: { path: ['dataDir'], parse: String },
  REPRISE_HTTP_ADDR: { path: ['httpAddr'], parse: String },
  REPRISE_MYSQL_ADDR: { path: ['mysqlAddr'], parse: String },
  REPRISE_POSTGRES_ADDR: { path: ['postgresAddr'], parse: String },
  REPRISE_USER_PROVIDER: { path: ['userProvider'], parse: String },
  REPRISE_SHARDS: { path: ['shards'], parse: Number },
  REPRISE_LOG_LEVEL: { path: ['logLevel'], parse: String },
  REPRISE_BODY_LIMIT_BYTES: { path: ['bodyLimitBytes'], parse: Number },
  REPRISE_HTTP_REQUEST_TIMEOUT_MS: { path: ['httpRequestTimeoutMs'], parse: Number },
  REPRISE_HTTP_MAX_CONNECTIONS: { path: ['httpMaxConnections'], parse: Number },
  REPRISE_ALLOWED_HOSTS: { path: ['allowedHosts'], parse: commaList },
  REPRISE_ALLOWED_ORIGINS: { path: ['allowedOrigins'], parse: commaList },
  REPRISE_AUTO_CREATE_TABLES: { path: ['autoCreateTables'], parse: boolean },
  REPRISE_INGEST_THREADS: { path: ['ingestThreads'], parse: Number },
  REPRISE_WAL_PROVIDER: { path: ['wal', 'provider'], parse: String },
  REPRISE_WAL_MAX_BATCH_BYTES: { path: ['wal', 'maxBatchBytes'], parse: Number },
  REPRISE_WAL_TOPIC_PREFIX: { path: ['wal', 'topicPrefix'], parse: String },
  REPRISE_WAL_SKIP_CORRUPT: { path: ['wal', 'skipCorrupt'], parse: boolean },
  REPRISE_WAL_BROKER_ENDPOINTS: { path: ['wal', 'brokerEndpoints'], parse: commaList },
  REPRISE_WAL_REPLICATION_FACTOR: { path: ['wal', 'replicationFactor'], parse: Number },
  REPRISE_WAL_IDEMPOTENT: { path: ['wal', 'idempotent'], parse: boolean },
  REPRISE_STORAGE_TYPE: { path: ['storage', 'type'], parse: String },
  REPRISE_STORAGE_BUCKET: { path: ['storage', 'bucket'], parse: String },
  REPRISE_STORAGE_ROOT: { path: ['storage', 'root'], parse: String },
  REPRISE_STORAGE_ENDPOINT: { path: ['storage', 'endpoint'], parse: String },
  REPRISE_STORAGE_REGION: { path: ['storage', 'region'], parse: String },
  REPRISE_STORAGE_ACCESS_KEY_ID: { path: ['storage', 'accessKeyId'], parse: String },
  REPRISE_STORAGE_SECRET_ACCESS_KEY: { path: ['storage', 'secretAccessKey'], parse: String },
  REPRISE_STORAGE_FORCE_PATH_STYLE: { path: ['storage', 'forcePathStyle'], parse: boolean },
  REPRISE_STORAGE_CACHE_BYTES: { path: ['storage', 'cacheBytes'], parse: Number },
  REPRISE_STORAGE_REQUEST_TIMEOUT_MS: { path: ['storage', 'requestTimeoutMs'], parse: Number },
  REPRISE_STORAGE_RETRY_DEADLINE_MS: { path: ['storage', 'retryDeadlineMs'], parse: Number },
  REPRISE_MEMTABLE_BYTES: { path: ['memory', 'memtableBytes'], parse: Number },
  REPRISE_CACHE_BYTES: { path: ['memory', 'cacheBytes'], parse: Number },
  REPRISE_MAX_RESULT_ROWS: { path: ['memory', 'maxResultRows'], parse: Number },
  REPRISE_MAX_RESULT_ROWS_IN_FLIGHT: { path: ['memory', 'maxResultRowsInFlight'], parse: Number },
  REPRISE_HEAP_GROWTH_PERCENT: { path: ['memory', 'heapGrowthPercent'], parse: Number },
  REPRISE_MAX_COLUMNS: { path: ['limits', 'maxColumns'], parse: Number },
  REPRISE_MAX_PARTITION_BOUNDS: { path: ['limits', 'maxPartitionBounds'], parse: Number },
  REPRISE_MAX_TABLES_PER_WRITE: { path: ['limits', 'maxTablesPerWrite'], parse: Number },
  REPRISE_MAX_ROWS_PER_WRITE: { path: ['limits', 'maxRowsPerWrite'], parse: Number },
  REPRISE_MAX_WRITE_BYTES_IN_FLIGHT: { path: ['limits', 'maxWriteBytesInFlight'], parse: Number },
  REPRISE_CLUSTER_NAME: { path: ['cluster', 'name'], parse: String },
  REPRISE_NATS_SERVERS: { path: ['cluster', 'natsServers'], parse: commaList },
  REPRISE_NODE_ID: { path: ['cluster', 'nodeId'], parse: String },
  REPRISE_CLUSTER_TOPOLOGY: { path: ['cluster', 'topology'], parse: String },
  REPRISE_CLUSTER_MIN_NODES: { path: ['cluster', 'minNodes'], parse: Number },
  REPRISE_CLUSTER_FOLLOWERS: { path: ['cluster', 'followers'], parse: Number },
  REPRISE_META_HTTP_ADDR: { path: ['cluster', 'metaHttpAddr'], parse: String },
  REPRISE_META_ID: { path: ['cluster', 'metaId'], parse: String },
  REPRISE_META_ELECTION_LEASE_MS: { path: ['cluster', 'metaElectionLeaseMs'], parse: Number },
  REPRISE_META_ELECTION_REPLICAS: { path: ['cluster', 'metaElectionReplicas'], parse: Number },
  REPRISE_CLUSTER_HEARTBEAT_MS: { path: ['cluster', 'heartbeatMs'], parse: Number },
  REPRISE_CLUSTER_LEASE_MS: { path: ['cluster', 'leaseMs'], parse: Number },
  REPRISE_CLUSTER_FAILURE_TIMEOUT_MS: { path: ['cluster', 'failureTimeoutMs'], parse: Number },
};

type Layer = Record<string, unknown>;

/** `true`/`false` as booleans; anything else is left for validation to name. */
function boolean(value: string): unknown {
  return value === 'true' ? true : value === 'false' ? false : value;
}

/** `a,b,c` -> a list, blanks dropped (brokers, NATS servers). */
export function commaList(value: string): string[] {
  return value
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b !== '');
}

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
  if (extname(file).toLowerCase() === '.toml') {
    try {
      return parseToml(text) as Layer;
    } catch (err) {
      throw new RepriseError('INVALID_ARGUMENT', `config file '${file}' is not valid TOML: ${(err as Error).message}`);
    }
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

/** The runtime's WAL options from a resolved config (the schema guarantees brokers for kafka). */
export function walOptionsOf(wal: StandaloneConfig['wal']): WalOptions {
  if (wal.provider === 'local') {
    return { provider: 'local', maxBatchBytes: wal.maxBatchBytes, topicPrefix: wal.topicPrefix, ...(wal.skipCorrupt ? { skipCorrupt: true } : {}) };
  }
  const { provider: _provider, brokerEndpoints, ssl, sasl, skipCorrupt: _skipCorrupt, ...rest } = wal;
  return {
    ...rest,
    provider: 'kafka',
    brokerEndpoints: brokerEndpoints ?? [],
    // Passed through unchecked: kafkajs validates its own TLS and SASL settings.
    ...(ssl === undefined ? {} : { ssl: ssl as KafkaWalOptions['ssl'] }),
    ...(sasl === undefined ? {} : { sasl: sasl as unknown as KafkaWalOptions['sasl'] }),
  };
}

/** The seed's snake_case names of [storage] keys, taken in a config file as their camelCase keys. */
const STORAGE_FILE_ALIASES: Record<string, string> = {
  access_key_id: 'accessKeyId',
  secret_access_key: 'secretAccessKey',
  force_path_style: 'forcePathStyle',
  cache_bytes: 'cacheBytes',
  request_timeout_ms: 'requestTimeoutMs',
  retry_deadline_ms: 'retryDeadlineMs',
};

/** A file's [storage] with the seed's snake_case names renamed; both spellings of one key is an error naming both. */
function normalizeStorageKeys(file: Layer, source: string): Layer {
  const storage = file['storage'];
  if (!storage || typeof storage !== 'object' || Array.isArray(storage)) return file;
  const out: Layer = {};
  for (const [key, value] of Object.entries(storage as Layer)) {
    const camel = STORAGE_FILE_ALIASES[key] ?? key;
    if (camel in out) throw new RepriseError('INVALID_ARGUMENT', `invalid configuration: storage.${camel}: given twice in ${source} (as ${camel} and ${key}); keep one`);
    out[camel] = value;
  }
  return { ...file, storage: out };
}

/** The runtime's storage options from a resolved config (the schema guarantees a bucket for s3). */
export function storageOptionsOf(storage: StandaloneConfig['storage']): StorageOptions {
  if (storage.type === 'local') return { type: 'local' };
  const { type: _type, accessKeyId, secretAccessKey, bucket, ...rest } = storage;
  return {
    ...rest,
    type: 's3',
    bucket: bucket ?? '',
    ...(accessKeyId !== undefined && secretAccessKey !== undefined ? { credentials: { accessKeyId, secretAccessKey } } : {}),
  };
}

/** Resolve the effective config; errors name the offending key and where it came from. */
export function resolveConfig(opts: { configFile?: string; env: NodeJS.ProcessEnv; flags: Layer }): StandaloneConfig {
  const file = opts.configFile ? normalizeStorageKeys(readConfigFile(opts.configFile), opts.configFile) : {};
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

const SECRET_KEY = /pass(word|phrase)?|secret|token|^key$|credential/i;

/**
 * The configuration as `reprise config print` shows it: every key with its
 * effective value; secrets (passwords, tokens, TLS keys) replaced by "***".
 */
export function redactConfig(config: StandaloneConfig): unknown {
  const redact = (value: unknown, key: string): unknown => {
    if (SECRET_KEY.test(key) && value !== undefined && value !== null && value !== '') return '***';
    if (Array.isArray(value)) return value.map((v) => redact(v, ''));
    if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, k)]));
    return value;
  };
  return redact(config, '');
}
