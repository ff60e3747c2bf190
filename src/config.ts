import { readFileSync } from 'node:fs';

export type TransportKind = 'memory' | 'redis' | 'postgres';

export interface JwtConfig {
  /** HS256 shared secret. */
  secret?: string;
  /** PEM-encoded public key (RSA, EC or Ed25519). */
  publicKeyPem?: string;
  jwksUrl?: string;
  issuer?: string;
  audience?: string;
  userClaim: string;
  clockToleranceSec: number;
}

export interface Config {
  port: number;
  host: string;
  production: boolean;
  logLevel: string;
  transport: TransportKind;
  redisUrl?: string;
  channelPrefix: string;
  databaseUrl?: string;
  /** Schema of the Postgres outbox (table, publish function). */
  pgSchema: string;
  pgPollMs: number;
  heartbeatMs: number;
  maxConnectionsPerUser: number;
  bufferMaxEvents: number;
  bufferMaxBytes: number;
  writeStallMs: number;
  maxEventBytes: number;
  drainMs: number;
  historyMax: number;
  /** Event bytes kept per user; the oldest entries go past it. */
  historyMaxBytes: number;
  historyTtlMs: number;
  replayMax: number;
  replay: ReplayBounds;
  publishQuota: PublishQuotaLimits;
  jwt: JwtConfig;
}

/** How much of a replay may be read from the store and held in the hub at once. */
export interface ReplayBounds {
  /** Most entries one history read returns. */
  pageEvents: number;
  /** Event bytes one history read returns (one entry is always returned, however large). */
  pageBytes: number;
  /** Event bytes of replay pages read but not yet written, across this replica's streams. */
  replicaBytes: number;
  /** Bytes of live frames a stream holds while its replay is written; past it the stream is cut. */
  holdMaxBytes: number;
  /** First wait before a failed history read is retried; doubled per failure, with jitter. */
  retryMinMs: number;
  retryMaxMs: number;
}

/** Per principal, for tokens without the service role. */
export interface PublishQuotaLimits {
  events: number;
  bytes: number;
  windowMs: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/** Every variable the hub reads; the README table and the deployment checks are kept against this list. */
export const CONFIG_VARIABLES = [
  'PORT',
  'HOST',
  'NODE_ENV',
  'LOG_LEVEL',
  'SSEHUB_TRANSPORT',
  'REDIS_URL',
  'SSEHUB_CHANNEL_PREFIX',
  'DATABASE_URL',
  'SSEHUB_PG_SCHEMA',
  'SSEHUB_PG_POLL_MS',
  'SSEHUB_HEARTBEAT_MS',
  'SSEHUB_MAX_CONNECTIONS_PER_USER',
  'SSEHUB_BUFFER_MAX_EVENTS',
  'SSEHUB_BUFFER_MAX_BYTES',
  'SSEHUB_WRITE_STALL_MS',
  'SSEHUB_MAX_EVENT_BYTES',
  'SSEHUB_DRAIN_MS',
  'SSEHUB_HISTORY_MAX',
  'SSEHUB_HISTORY_MAX_BYTES',
  'SSEHUB_HISTORY_TTL_MS',
  'SSEHUB_REPLAY_MAX',
  'SSEHUB_REPLAY_PAGE_EVENTS',
  'SSEHUB_REPLAY_PAGE_BYTES',
  'SSEHUB_REPLAY_REPLICA_BYTES',
  'SSEHUB_HOLD_MAX_BYTES',
  'SSEHUB_HISTORY_RETRY_MIN_MS',
  'SSEHUB_HISTORY_RETRY_MAX_MS',
  'SSEHUB_PUBLISH_QUOTA_EVENTS',
  'SSEHUB_PUBLISH_QUOTA_BYTES',
  'SSEHUB_PUBLISH_QUOTA_WINDOW_MS',
  'SSEHUB_JWT_SECRET',
  'SSEHUB_JWT_PUBLIC_KEY',
  'SSEHUB_JWT_PUBLIC_KEY_FILE',
  'SSEHUB_JWT_JWKS_URL',
  'SSEHUB_JWT_ISSUER',
  'SSEHUB_JWT_AUDIENCE',
  'SSEHUB_JWT_USER_CLAIM',
  'SSEHUB_JWT_CLOCK_TOLERANCE_S',
] as const;

const MIB = 1024 * 1024;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const CHANNEL_PREFIX_PATTERN = /^[A-Za-z0-9_.:{}-]{1,64}$/;
/** Unquoted-style names only: the schema also names the NOTIFY channel and appears in SQL publishers write. */
const PG_SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,47}$/;

class Reader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  string(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw.trim())) {
      this.problems.push(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
      return fallback;
    }
    const value = Number(raw.trim());
    if (value < min || value > max) {
      this.problems.push(`${name} must be between ${min} and ${max}, got ${value}`);
      return fallback;
    }
    return value;
  }
}

export function loadConfig(env: Env = process.env): Config {
  const read = new Reader(env);
  const problems = read.problems;

  const redisUrl = read.string('REDIS_URL');
  const transportRaw = read.string('SSEHUB_TRANSPORT') ?? (redisUrl ? 'redis' : 'memory');
  let transport: TransportKind = 'memory';
  if (transportRaw === 'memory' || transportRaw === 'redis' || transportRaw === 'postgres') {
    transport = transportRaw;
  } else {
    problems.push(`SSEHUB_TRANSPORT must be "memory", "redis" or "postgres", got ${JSON.stringify(transportRaw)}`);
  }
  if (transport === 'redis' && !redisUrl) {
    problems.push('SSEHUB_TRANSPORT=redis needs REDIS_URL (e.g. redis://127.0.0.1:6379)');
  }
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl)) {
    problems.push(`REDIS_URL must start with redis:// or rediss://, got ${JSON.stringify(redisUrl)}`);
  }

  const databaseUrl = read.string('DATABASE_URL');
  if (transport === 'postgres' && !databaseUrl) {
    problems.push('SSEHUB_TRANSPORT=postgres needs DATABASE_URL (e.g. postgres://ssehub@127.0.0.1:5432/app)');
  }
  if (transport === 'postgres' && databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push(`DATABASE_URL must start with postgres:// or postgresql://, got ${JSON.stringify(databaseUrl)}`);
  }
  const pgSchema = read.string('SSEHUB_PG_SCHEMA') ?? 'ssehub';
  if (!PG_SCHEMA_PATTERN.test(pgSchema)) {
    problems.push(
      'SSEHUB_PG_SCHEMA must be a lowercase identifier: a letter or _, then letters, digits or _ (at most 48)',
    );
  }

  const channelPrefix = read.string('SSEHUB_CHANNEL_PREFIX') ?? 'ssehub';
  if (!CHANNEL_PREFIX_PATTERN.test(channelPrefix)) {
    problems.push('SSEHUB_CHANNEL_PREFIX must be 1-64 characters of letters, digits and _ . : { } -');
  }

  const logLevel = read.string('LOG_LEVEL') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) {
    problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`);
  }

  let publicKeyPem = read.string('SSEHUB_JWT_PUBLIC_KEY');
  const publicKeyFile = read.string('SSEHUB_JWT_PUBLIC_KEY_FILE');
  if (publicKeyFile) {
    if (publicKeyPem) problems.push('set SSEHUB_JWT_PUBLIC_KEY or SSEHUB_JWT_PUBLIC_KEY_FILE, not both');
    try {
      publicKeyPem = readFileSync(publicKeyFile, 'utf8');
    } catch (err) {
      problems.push(`SSEHUB_JWT_PUBLIC_KEY_FILE cannot be read: ${(err as Error).message}`);
    }
  }
  const jwt: JwtConfig = {
    secret: read.string('SSEHUB_JWT_SECRET'),
    // Kubernetes secrets and shell exports often carry the PEM with literal "\n".
    publicKeyPem: publicKeyPem?.replace(/\\n/g, '\n'),
    jwksUrl: read.string('SSEHUB_JWT_JWKS_URL'),
    issuer: read.string('SSEHUB_JWT_ISSUER'),
    audience: read.string('SSEHUB_JWT_AUDIENCE'),
    userClaim: read.string('SSEHUB_JWT_USER_CLAIM') ?? 'sub',
    clockToleranceSec: read.integer('SSEHUB_JWT_CLOCK_TOLERANCE_S', 30, 0, 300),
  };
  const keySources = [jwt.secret, jwt.publicKeyPem, jwt.jwksUrl].filter((v) => v !== undefined);
  if (keySources.length > 1) {
    problems.push('set exactly one of SSEHUB_JWT_SECRET, SSEHUB_JWT_PUBLIC_KEY(_FILE), SSEHUB_JWT_JWKS_URL');
  }
  if (jwt.secret !== undefined && Buffer.byteLength(jwt.secret) < 32) {
    problems.push('SSEHUB_JWT_SECRET must be at least 32 bytes (HS256 needs a 256-bit key)');
  }
  if (jwt.jwksUrl !== undefined && !/^https?:\/\//.test(jwt.jwksUrl)) {
    problems.push('SSEHUB_JWT_JWKS_URL must be an http(s) URL');
  }

  const production = env.NODE_ENV === 'production';
  if (production && keySources.length === 0) {
    problems.push(
      'NODE_ENV=production needs a JWT key: set SSEHUB_JWT_SECRET, SSEHUB_JWT_PUBLIC_KEY(_FILE) or SSEHUB_JWT_JWKS_URL',
    );
  }

  const heartbeatMs = read.integer('SSEHUB_HEARTBEAT_MS', 15_000, 100, 3_600_000);
  const maxEventBytes = read.integer('SSEHUB_MAX_EVENT_BYTES', MIB, 64, 64 * MIB);
  const historyMaxBytes = read.integer('SSEHUB_HISTORY_MAX_BYTES', 16 * MIB, 64, 16 * 1024 * MIB);
  const replay: ReplayBounds = {
    pageEvents: read.integer('SSEHUB_REPLAY_PAGE_EVENTS', 100, 1, 10_000),
    pageBytes: read.integer('SSEHUB_REPLAY_PAGE_BYTES', 256 * 1024, 1024, 64 * MIB),
    replicaBytes: read.integer('SSEHUB_REPLAY_REPLICA_BYTES', 64 * MIB, 1024, 16 * 1024 * MIB),
    holdMaxBytes: read.integer('SSEHUB_HOLD_MAX_BYTES', 4 * MIB, 1024, 1024 * MIB),
    retryMinMs: read.integer('SSEHUB_HISTORY_RETRY_MIN_MS', 500, 10, 60_000),
    retryMaxMs: read.integer('SSEHUB_HISTORY_RETRY_MAX_MS', 30_000, 10, 3_600_000),
  };
  // A single event must fit everywhere an event is bounded, or it could never be kept or replayed.
  if (historyMaxBytes < maxEventBytes) {
    problems.push('SSEHUB_HISTORY_MAX_BYTES must be at least SSEHUB_MAX_EVENT_BYTES');
  }
  if (replay.replicaBytes < Math.max(replay.pageBytes, maxEventBytes)) {
    problems.push('SSEHUB_REPLAY_REPLICA_BYTES must be at least SSEHUB_REPLAY_PAGE_BYTES and SSEHUB_MAX_EVENT_BYTES');
  }
  if (replay.retryMaxMs < replay.retryMinMs) {
    problems.push('SSEHUB_HISTORY_RETRY_MAX_MS must be at least SSEHUB_HISTORY_RETRY_MIN_MS');
  }
  const publishQuota: PublishQuotaLimits = {
    events: read.integer('SSEHUB_PUBLISH_QUOTA_EVENTS', 6000, 1, 100_000_000),
    bytes: read.integer('SSEHUB_PUBLISH_QUOTA_BYTES', 64 * MIB, 64, 1024 * 1024 * MIB),
    windowMs: read.integer('SSEHUB_PUBLISH_QUOTA_WINDOW_MS', 60_000, 1000, 86_400_000),
  };
  if (publishQuota.bytes < maxEventBytes) {
    problems.push('SSEHUB_PUBLISH_QUOTA_BYTES must be at least SSEHUB_MAX_EVENT_BYTES');
  }
  const config: Config = {
    port: read.integer('PORT', 8080, 0, 65_535),
    host: read.string('HOST') ?? '0.0.0.0',
    production,
    logLevel,
    transport,
    redisUrl,
    channelPrefix,
    databaseUrl,
    pgSchema,
    pgPollMs: read.integer('SSEHUB_PG_POLL_MS', 1000, 50, 60_000),
    heartbeatMs,
    maxConnectionsPerUser: read.integer('SSEHUB_MAX_CONNECTIONS_PER_USER', 10, 1, 100_000),
    bufferMaxEvents: read.integer('SSEHUB_BUFFER_MAX_EVENTS', 1024, 1, 1_000_000),
    bufferMaxBytes: read.integer('SSEHUB_BUFFER_MAX_BYTES', 1024 * 1024, 1024, 1024 * 1024 * 1024),
    writeStallMs: read.integer('SSEHUB_WRITE_STALL_MS', 30_000, 100, 3_600_000),
    maxEventBytes,
    drainMs: read.integer('SSEHUB_DRAIN_MS', 10_000, 0, 600_000),
    historyMax: read.integer('SSEHUB_HISTORY_MAX', 1000, 1, 1_000_000),
    historyMaxBytes,
    historyTtlMs: read.integer('SSEHUB_HISTORY_TTL_MS', 3_600_000, 1000, 7 * 24 * 3_600_000),
    replayMax: read.integer('SSEHUB_REPLAY_MAX', 1000, 0, 100_000),
    replay,
    publishQuota,
    jwt,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
