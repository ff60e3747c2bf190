import type { RedisAddress } from './transport/redis/transport';
import { readFileSync } from 'node:fs';
import { JWT_DEFAULTS } from './auth/jwt';
import { LIMIT_NAMES, LIMIT_SPECS, crossLimitProblems, type HubLimits, type LimitSpec } from './limits';
import { MIN_HS256_SECRET_BYTES } from './auth/hs256';

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

export interface Config extends HubLimits {
  port: number;
  host: string;
  /** A listener of its own serving only `/metrics`; the public port then has none. */
  metricsPort?: number;
  /** Bearer token `/metrics` requires, wherever it is served. */
  metricsToken?: string;
  production: boolean;
  logLevel: string;
  transport: TransportKind;
  redisUrl?: string;
  /** Sentinels that name the primary (`SSEHUB_REDIS_SENTINELS`), with `redisSentinelName`. */
  redisSentinels?: RedisAddress[];
  redisSentinelName: string;
  /** Seeds of a Redis Cluster (`SSEHUB_REDIS_CLUSTER_NODES`). */
  redisClusterNodes?: RedisAddress[];
  /** Whether plain PUBLISHes on the kind channels are taken too. */
  redisKindChannels: boolean;
  redisReleaseDelayMs: number;
  publishMinReplicas: number;
  publishMinReplicasTimeoutMs: number;
  channelPrefix: string;
  databaseUrl?: string;
  /** Schema of the Postgres outbox (table, publish function). */
  pgSchema: string;
  pgPollMs: number;
  drainMs: number;
  /** Origins whose pages may open streams and ask for tickets from another site. */
  corsOrigins: string[];
  jwt: JwtConfig;
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
  'SSEHUB_METRICS_PORT',
  'SSEHUB_METRICS_TOKEN',
  'NODE_ENV',
  'LOG_LEVEL',
  'SSEHUB_TRANSPORT',
  'REDIS_URL',
  'SSEHUB_REDIS_SENTINELS',
  'SSEHUB_REDIS_SENTINEL_NAME',
  'SSEHUB_REDIS_CLUSTER_NODES',
  'SSEHUB_REDIS_KIND_CHANNELS',
  'SSEHUB_REDIS_RELEASE_DELAY_MS',
  'SSEHUB_PUBLISH_MIN_REPLICAS',
  'SSEHUB_PUBLISH_MIN_REPLICAS_TIMEOUT_MS',
  'SSEHUB_CHANNEL_PREFIX',
  'DATABASE_URL',
  'SSEHUB_PG_SCHEMA',
  'SSEHUB_PG_POLL_MS',
  ...LIMIT_NAMES.map((name) => LIMIT_SPECS[name].env),
  'SSEHUB_DRAIN_MS',
  'SSEHUB_CORS_ORIGINS',
  'SSEHUB_JWT_SECRET',
  'SSEHUB_JWT_PUBLIC_KEY',
  'SSEHUB_JWT_PUBLIC_KEY_FILE',
  'SSEHUB_JWT_JWKS_URL',
  'SSEHUB_JWT_ISSUER',
  'SSEHUB_JWT_AUDIENCE',
  'SSEHUB_JWT_USER_CLAIM',
  'SSEHUB_JWT_CLOCK_TOLERANCE_S',
];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** No braces: keys and channels put the user in a cluster hash tag right after the prefix. */
const CHANNEL_PREFIX_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;
const ADDRESS_PATTERN = /^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/;

/** `host:port,host:port` into addresses; problems named after the variable. */
function parseAddresses(name: string, value: string | undefined, problems: string[]): RedisAddress[] | undefined {
  if (value === undefined) return undefined;
  const addresses: RedisAddress[] = [];
  for (const part of value.split(',').map((item) => item.trim())) {
    const match = ADDRESS_PATTERN.exec(part);
    const port = match ? Number(match[2]) : 0;
    if (!match || port < 1 || port > 65_535) {
      problems.push(`${name} must be comma-separated host:port pairs, got ${JSON.stringify(part)}`);
      continue;
    }
    addresses.push({ host: (match[1] as string).replace(/^\[|\]$/g, ''), port });
  }
  return addresses.length > 0 ? addresses : undefined;
}
/** Unquoted-style names only: the schema also names the NOTIFY channel and appears in SQL publishers write. */
const PG_SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,47}$/;

/** An origin as browsers send it: scheme, host and port only. */
function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'https:' || url.protocol === 'http:') && url.origin === value;
  } catch {
    return false;
  }
}

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
  const redisSentinels = parseAddresses('SSEHUB_REDIS_SENTINELS', read.string('SSEHUB_REDIS_SENTINELS'), problems);
  const redisClusterNodes = parseAddresses(
    'SSEHUB_REDIS_CLUSTER_NODES',
    read.string('SSEHUB_REDIS_CLUSTER_NODES'),
    problems,
  );
  const redisConfigured = redisUrl !== undefined || redisSentinels !== undefined || redisClusterNodes !== undefined;
  const transportRaw = read.string('SSEHUB_TRANSPORT') ?? (redisConfigured ? 'redis' : 'memory');
  let transport: TransportKind = 'memory';
  if (transportRaw === 'memory' || transportRaw === 'redis' || transportRaw === 'postgres') {
    transport = transportRaw;
  } else {
    problems.push(`SSEHUB_TRANSPORT must be "memory", "redis" or "postgres", got ${JSON.stringify(transportRaw)}`);
  }
  if (transport === 'redis' && !redisConfigured) {
    problems.push(
      'SSEHUB_TRANSPORT=redis needs REDIS_URL (e.g. redis://127.0.0.1:6379), SSEHUB_REDIS_SENTINELS or SSEHUB_REDIS_CLUSTER_NODES',
    );
  }
  if (redisSentinels && redisClusterNodes) {
    problems.push('set SSEHUB_REDIS_SENTINELS or SSEHUB_REDIS_CLUSTER_NODES, not both');
  }
  const redisKindChannelsRaw = read.string('SSEHUB_REDIS_KIND_CHANNELS') ?? 'true';
  if (redisKindChannelsRaw !== 'true' && redisKindChannelsRaw !== 'false') {
    problems.push(`SSEHUB_REDIS_KIND_CHANNELS must be true or false, got ${JSON.stringify(redisKindChannelsRaw)}`);
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
    problems.push('SSEHUB_CHANNEL_PREFIX must be 1-64 characters of letters, digits and _ . : -');
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
    userClaim: read.string('SSEHUB_JWT_USER_CLAIM') ?? JWT_DEFAULTS.userClaim,
    clockToleranceSec: read.integer('SSEHUB_JWT_CLOCK_TOLERANCE_S', JWT_DEFAULTS.clockToleranceSec, 0, 300),
  };
  const keySources = [jwt.secret, jwt.publicKeyPem, jwt.jwksUrl].filter((v) => v !== undefined);
  if (keySources.length > 1) {
    problems.push('set exactly one of SSEHUB_JWT_SECRET, SSEHUB_JWT_PUBLIC_KEY(_FILE), SSEHUB_JWT_JWKS_URL');
  }
  if (jwt.secret !== undefined && Buffer.byteLength(jwt.secret) < MIN_HS256_SECRET_BYTES) {
    problems.push(`SSEHUB_JWT_SECRET must be at least ${MIN_HS256_SECRET_BYTES} bytes (HS256 needs a 256-bit key)`);
  }
  if (jwt.jwksUrl !== undefined && !/^https?:\/\//.test(jwt.jwksUrl)) {
    problems.push('SSEHUB_JWT_JWKS_URL must be an http(s) URL');
  }

  const corsOrigins = (read.string('SSEHUB_CORS_ORIGINS') ?? '')
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin !== '');
  for (const origin of corsOrigins) {
    if (!isOrigin(origin)) {
      problems.push(`SSEHUB_CORS_ORIGINS takes origins like https://app.example.com, got ${JSON.stringify(origin)}`);
    }
  }

  const production = env.NODE_ENV === 'production';
  if (production && keySources.length === 0) {
    problems.push(
      'NODE_ENV=production needs a JWT key: set SSEHUB_JWT_SECRET, SSEHUB_JWT_PUBLIC_KEY(_FILE) or SSEHUB_JWT_JWKS_URL',
    );
  }

  const limits = Object.fromEntries(
    LIMIT_NAMES.map((name) => {
      const spec: LimitSpec = LIMIT_SPECS[name];
      return [name, read.integer(spec.env, spec.default, spec.min, spec.max)];
    }),
  ) as HubLimits;
  if (problems.length === 0) {
    problems.push(...crossLimitProblems(limits, (name) => LIMIT_SPECS[name].env));
  }
  const port = read.integer('PORT', 8080, 0, 65_535);
  const metricsPort =
    read.string('SSEHUB_METRICS_PORT') === undefined ? undefined : read.integer('SSEHUB_METRICS_PORT', 0, 0, 65_535);
  if (metricsPort !== undefined && metricsPort !== 0 && metricsPort === port) {
    problems.push('SSEHUB_METRICS_PORT must differ from PORT');
  }
  const metricsToken = read.string('SSEHUB_METRICS_TOKEN');
  if (metricsToken !== undefined && Buffer.byteLength(metricsToken) < 16) {
    problems.push('SSEHUB_METRICS_TOKEN must be at least 16 bytes');
  }
  const config: Config = {
    ...limits,
    port,
    metricsPort,
    metricsToken,
    host: read.string('HOST') ?? '0.0.0.0',
    production,
    logLevel,
    transport,
    redisUrl,
    redisSentinels,
    redisSentinelName: read.string('SSEHUB_REDIS_SENTINEL_NAME') ?? 'mymaster',
    redisClusterNodes,
    redisKindChannels: redisKindChannelsRaw !== 'false',
    redisReleaseDelayMs: read.integer('SSEHUB_REDIS_RELEASE_DELAY_MS', 5000, 0, 600_000),
    publishMinReplicas: read.integer('SSEHUB_PUBLISH_MIN_REPLICAS', 0, 0, 16),
    publishMinReplicasTimeoutMs: read.integer('SSEHUB_PUBLISH_MIN_REPLICAS_TIMEOUT_MS', 1000, 10, 60_000),
    channelPrefix,
    databaseUrl,
    pgSchema,
    pgPollMs: read.integer('SSEHUB_PG_POLL_MS', 1000, 50, 60_000),
    drainMs: read.integer('SSEHUB_DRAIN_MS', 10_000, 0, 600_000),
    corsOrigins,
    jwt,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
