import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config';
import { LIMIT_NAMES, LIMIT_SPECS } from '../../src/limits';

const problems = (env: Record<string, string>): string[] => {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
};

describe('configuration', () => {
  it('defaults to an in-process hub on port 8080', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      transport: 'memory',
      channelPrefix: 'ssehub',
      heartbeatMs: 15000,
      maxConnectionsPerUser: 10,
      bufferMaxEvents: 1024,
      bufferMaxBytes: 1048576,
      maxEventBytes: 1048576,
      drainMs: 10000,
    });
    expect(config.jwt.userClaim).toBe('sub');
  });

  it('uses redis when REDIS_URL is set', () => {
    expect(loadConfig({ REDIS_URL: 'redis://r:6379' }).transport).toBe('redis');
    expect(loadConfig({ REDIS_URL: 'redis://r:6379', SSEHUB_TRANSPORT: 'memory' }).transport).toBe('memory');
  });

  it('reports every problem at once, clearly', () => {
    const found = problems({
      PORT: 'eighty',
      SSEHUB_TRANSPORT: 'kafka',
      SSEHUB_HEARTBEAT_MS: '5',
      SSEHUB_JWT_SECRET: 'short',
      SSEHUB_JWT_JWKS_URL: 'https://idp/jwks',
    });
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringContaining('PORT must be a whole number'),
        expect.stringContaining('SSEHUB_TRANSPORT must be'),
        expect.stringContaining('SSEHUB_HEARTBEAT_MS must be between'),
        expect.stringContaining('at least 32 bytes'),
        expect.stringContaining('exactly one of'),
      ]),
    );
  });

  it('keeps the metrics listener off the public port and its token long enough', () => {
    expect(problems({ PORT: '9000', SSEHUB_METRICS_PORT: '9000', SSEHUB_METRICS_TOKEN: 'short' })).toEqual([
      'SSEHUB_METRICS_PORT must differ from PORT',
      'SSEHUB_METRICS_TOKEN must be at least 16 bytes',
    ]);
    expect(loadConfig({ SSEHUB_METRICS_PORT: '9100' }).metricsPort).toBe(9100);
    expect(loadConfig({}).metricsPort).toBeUndefined();
  });

  it('refuses production without a key and redis without a URL', () => {
    expect(problems({ NODE_ENV: 'production' })).toEqual([
      expect.stringContaining('NODE_ENV=production needs a JWT key'),
    ]);
    expect(problems({ SSEHUB_TRANSPORT: 'redis' })).toEqual([expect.stringContaining('needs REDIS_URL')]);
  });

  it('selects the postgres outbox only when asked, and checks its settings', () => {
    expect(loadConfig({ DATABASE_URL: 'postgres://db/app' }).transport).toBe('memory');
    const config = loadConfig({ SSEHUB_TRANSPORT: 'postgres', DATABASE_URL: 'postgresql://u@db:5432/app' });
    expect(config).toMatchObject({ transport: 'postgres', pgSchema: 'ssehub', pgPollMs: 1000 });
    expect(problems({ SSEHUB_TRANSPORT: 'postgres' })).toEqual([expect.stringContaining('needs DATABASE_URL')]);
    expect(problems({ SSEHUB_TRANSPORT: 'postgres', DATABASE_URL: 'mysql://db/app' })).toEqual([
      expect.stringContaining('DATABASE_URL must start with postgres://'),
    ]);
    expect(problems({ SSEHUB_PG_SCHEMA: 'Public"; DROP' })).toEqual([expect.stringContaining('SSEHUB_PG_SCHEMA')]);
    expect(problems({ SSEHUB_PG_POLL_MS: '10' })).toEqual([expect.stringContaining('SSEHUB_PG_POLL_MS')]);
  });

  it('bounds history, replays and publishing by default, and checks the bounds against each other', () => {
    expect(loadConfig({})).toMatchObject({
      historyMaxBytes: 16 * 1024 * 1024,
      replayPageEvents: 100,
      replayPageBytes: 256 * 1024,
      replayReplicaBytes: 64 * 1024 * 1024,
      holdMaxBytes: 4 * 1024 * 1024,
      outboundMaxBytes: 256 * 1024 * 1024,
      historyRetryMinMs: 500,
      historyRetryMaxMs: 30_000,
    });
    expect(problems({ SSEHUB_REPLAY_PAGE_EVENTS: '0', SSEHUB_PUBLISH_QUOTA_WINDOW_MS: '10' })).toEqual([
      expect.stringContaining('SSEHUB_REPLAY_PAGE_EVENTS must be between'),
      expect.stringContaining('SSEHUB_PUBLISH_QUOTA_WINDOW_MS must be between'),
    ]);
    expect(
      problems({
        SSEHUB_MAX_EVENT_BYTES: '2097152',
        SSEHUB_HISTORY_MAX_BYTES: '1048576',
        SSEHUB_REPLAY_REPLICA_BYTES: '1048576',
        SSEHUB_PUBLISH_QUOTA_BYTES: '1048576',
        SSEHUB_OUTBOUND_MAX_BYTES: '4194304',
        SSEHUB_HISTORY_RETRY_MIN_MS: '2000',
        SSEHUB_HISTORY_RETRY_MAX_MS: '1000',
      }),
    ).toEqual([
      expect.stringContaining('SSEHUB_HISTORY_MAX_BYTES must be at least SSEHUB_MAX_EVENT_BYTES'),
      expect.stringContaining('SSEHUB_REPLAY_REPLICA_BYTES must be at least'),
      // 2 MiB of backlog (one event) and 4 MiB held behind a replay do not fit 4 MiB.
      expect.stringContaining(
        'SSEHUB_OUTBOUND_MAX_BYTES must be at least SSEHUB_BUFFER_MAX_BYTES plus SSEHUB_HOLD_MAX_BYTES',
      ),
      expect.stringContaining('SSEHUB_HISTORY_RETRY_MAX_MS must be at least'),
      expect.stringContaining('SSEHUB_PUBLISH_QUOTA_BYTES must be at least SSEHUB_MAX_EVENT_BYTES'),
    ]);
  });

  it('unescapes PEM keys given on one line', () => {
    const config = loadConfig({ SSEHUB_JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----' });
    expect(config.jwt.publicKeyPem).toBe('-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----');
  });

  it("lists every limit in the README's configuration table, with its default", () => {
    const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Scaling out'));
    for (const name of LIMIT_NAMES) {
      const { env, default: value } = LIMIT_SPECS[name];
      const row = table.split('\n').find((line) => line.startsWith(`| \`${env}\` |`));
      expect({ env, default: row?.split('|')[2]?.trim() }).toEqual({ env, default: `\`${value}\`` });
    }
  });
});
