import { Redis } from 'ioredis';
import { uniquePrefix } from '../helpers/hub-process';
import { ignoringHandler } from '../helpers/embedded-hub';
import { OwnRedis } from '../helpers/redis-server';
import { sleep } from '../helpers/sse-client';
import { until } from '../helpers/wait';
import { RedisEvents } from '../../src/transport/redis/events';
import { DEFAULT_HISTORY_SETTINGS, parseSettings, redisLibrary } from '../../src/transport/redis/library';
import { RedisTransport } from '../../src/transport/redis/transport';

const PROBE_INTERVAL_MS = 50;
const BURST = 4000;
/** What each event costs the slow reader: the burst takes about 4,000 x 0.1 ms = 400 ms to read, eight probe timeouts. */
const READ_COST_MS = 0.1;

function busyFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // A replica whose CPU is taken by the burst itself.
  }
}

/**
 * What a replica checks every second beside its subscription. The probe goes to Redis behind
 * whatever is queued for the subscriber: a burst that takes longer to read than the probe's
 * timeout must leave the subscriber alone while it is still reading (a reconnect would throw away
 * every queued message, and plain PUBLISHes on the kind channels have no history to bring them
 * back). And the function library must hold the deployment's limits, whoever replaced it.
 */
describe('the Redis self-check', () => {
  let redis: OwnRedis;

  beforeAll(async () => {
    redis = await OwnRedis.start();
  });

  afterAll(async () => {
    await redis.destroy();
  });

  /** A transport on the suite's Redis whose self-check runs every PROBE_INTERVAL_MS. */
  const checkingTransport = (prefix: string, url = redis.url): RedisTransport =>
    new RedisTransport({
      url,
      channelPrefix: prefix,
      selfCheckIntervalMs: PROBE_INTERVAL_MS,
      history: { historyMax: 100, historyTtlMs: 60_000, maxEventBytes: 65_536 },
    });

  it("puts its limits back within a check when another deployment's load left them out", async () => {
    const prefix = uniquePrefix();
    const transport = checkingTransport(prefix);
    await transport.start(ignoringHandler());
    const backend = new Redis(redis.url);
    const publish = (): Promise<unknown> =>
      backend.call('FCALL', 'ssehub_publish', '0', 'agui', 'someone', '{"type":"X"}', prefix);
    try {
      await until(() => transport.isListening(), 5000, 'the subscription');
      await publish();
      // FUNCTION LOAD replaces the whole library: a replica of another deployment, loading at the
      // same moment as this one, writes a library without this deployment's limits.
      await backend.call('FUNCTION', 'LOAD', 'REPLACE', redisLibrary(new Map([['other', DEFAULT_HISTORY_SETTINGS]])));
      await expect(publish()).rejects.toThrow(/no limits loaded for prefix/);
      // A backend publishing with FCALL is not left failing until a replica publishes by itself.
      await until(
        () =>
          publish().then(
            () => true,
            () => false,
          ),
        2000,
        'the library to hold this deployment again',
      );
    } finally {
      backend.disconnect();
      await transport.close();
    }
  });

  it('is not ready until the library holds its deployment, whoever loads it', async () => {
    const prefix = uniquePrefix();
    const admin = new Redis(redis.url);
    // A Redis account that may not load functions: an operator loads the library instead.
    await admin.call('ACL', 'SETUSER', 'noloader', 'on', '>noloader-secret', '~*', '&*', '+@all', '-function|load');
    const url = new URL(redis.url);
    url.username = 'noloader';
    url.password = 'noloader-secret';
    const transport = checkingTransport(prefix, url.toString());
    await transport.start(ignoringHandler());
    try {
      await sleep(20 * PROBE_INTERVAL_MS);
      expect(transport.isListening()).toBe(false);
      await admin.call('FUNCTION', 'LOAD', 'REPLACE', redisLibrary(new Map([[prefix, DEFAULT_HISTORY_SETTINGS]])));
      await until(() => transport.isListening(), 2000, 'ready once the library holds the deployment');
      // Gone again, and this replica may not put it back: a backend's FCALL would fail.
      await admin.call('FUNCTION', 'DELETE', 'ssehub');
      await until(() => !transport.isListening(), 2000, 'not ready once the library is gone');
    } finally {
      admin.disconnect();
      await transport.close();
    }
  });

  it('leaves both deployments loaded when two load the library at the same moment', async () => {
    const connection = new Redis(redis.url);
    const deployments = [uniquePrefix(), uniquePrefix()];
    try {
      // On one connection both reads reach Redis before either load: each load leaves the other out.
      await Promise.all(
        deployments.map((prefix) =>
          new RedisEvents(connection, prefix, { settings: DEFAULT_HISTORY_SETTINGS }).prepare(),
        ),
      );
      const [, settings] = (await connection.call('FCALL_RO', 'ssehub_version', '0')) as [number, string];
      expect(deployments.filter((prefix) => !parseSettings(settings).has(prefix))).toEqual([]);
    } finally {
      connection.disconnect();
    }
  });

  it('waits for a probe queued behind a burst the subscriber is still reading, and loses none of it', async () => {
    const prefix = uniquePrefix();
    let received = 0;
    let selfCheckFailures = 0;
    const handler = ignoringHandler();
    const transport = checkingTransport(prefix);
    await transport.start({
      ...handler,
      event: () => {
        busyFor(READ_COST_MS);
        received++;
      },
      metrics: { ...handler.metrics, selfCheckFailed: () => selfCheckFailures++ },
    });
    const publisher = new Redis(redis.url);
    try {
      await until(() => transport.isListening(), 5000, 'the subscription');
      // One transaction: Redis queues the whole burst for the subscriber before any later probe.
      const burst = publisher.multi();
      for (let i = 0; i < BURST; i++) {
        burst.publish(`${prefix}:agui`, JSON.stringify({ user_id: 'reader', event: { type: 'DELTA', i } }));
      }
      await burst.exec();
      await until(() => received === BURST, 10_000, 'every event of the burst');
      // Two more probe rounds after the burst: the subscriber was never taken for lost.
      await new Promise((resolve) => setTimeout(resolve, 3 * PROBE_INTERVAL_MS));
      expect(selfCheckFailures).toBe(0);
      expect(transport.isListening()).toBe(true);
    } finally {
      publisher.disconnect();
      await transport.close();
    }
  });
});
