import { startReadyHub, type HubProcess } from '../helpers/hub-process';
import { OwnRedis } from '../helpers/redis-server';
import { openStream, type SseStream } from '../helpers/sse-client';
import { TcpProxy } from '../helpers/tcp-proxy';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * A hub whose connections to Redis go silent for good while Redis itself is fine (a dropped NAT
 * or conntrack entry): commands sent on them are never answered, and the hub has to give each
 * connection up and open another. Whatever waited on a command of a dropped connection must
 * learn it failed: ioredis drops such commands without settling them, and a history read or an
 * SSUBSCRIBE left waiting held streams forever while /readyz said 200.
 */
describe('Redis connections that go silent for good', () => {
  let redis: OwnRedis;
  let proxy: TcpProxy;
  let hub: HubProcess;
  const opened: Array<Promise<SseStream>> = [];

  beforeAll(async () => {
    redis = await OwnRedis.start();
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: redis.port });
    hub = await startReadyHub({ REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
  });

  afterAll(async () => {
    // The hub first: a stream whose response never started settles only when its hub is gone.
    await hub?.stop('SIGKILL');
    for (const stream of await Promise.allSettled(opened)) if (stream.status === 'fulfilled') stream.value.close();
    await proxy?.close();
    await redis?.destroy();
  });

  /** Opens a stream that is closed after the test, whether or not its response ever started. */
  function open(user: string): Promise<SseStream> {
    const stream = mintToken(user).then((token) => openStream(hub.url, '/api/v1/stream/agui', { token }));
    opened.push(stream);
    return stream;
  }

  async function publish(user: string, marker: string): Promise<number> {
    const res = await fetch(`${hub.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await mintToken('svc', { roles: ['service'] })}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ user_id: user, marker }),
      signal: AbortSignal.timeout(8000),
    }).catch(() => undefined);
    await res?.body?.cancel();
    return res?.status ?? 0;
  }

  const shows = (stream: SseStream, marker: string): boolean =>
    stream.events().some((event) => event.data.includes(`"marker":"${marker}"`));

  it('gives up on them, and streams held meanwhile and streams opened meanwhile get their events', async () => {
    const user = uid('held');
    const held = await open(user);
    await held.waitForPosition(10_000);
    expect(await publish(user, 'before')).toBe(202);
    await held.waitFor((s) => shows(s, 'before'), 5000, 'the event before');

    proxy.silenceOpenConnections();
    // Its SSUBSCRIBE goes out on the silent subscriber: the stream cannot start until it fails.
    const newcomer = uid('newcomer');
    const opening = open(newcomer);
    opening.catch(() => undefined);

    // The publisher's PING probe gives up on it within seconds; the history reader's within 10 s.
    await until(async () => (await publish(user, 'after')) === 202, 15_000, 'a publish through a fresh connection');
    // The held stream's catch-up read went out on the silent history connection.
    await held.waitFor((s) => shows(s, 'after'), 25_000, 'the event published after the fault');

    const late = await open(uid('late'));
    await late.waitForPosition(5000, 'a stream opened after the fault to start');
    const opened = await opening;
    expect(opened.status).toBe(200);
    await opened.waitForPosition(5000, 'the stream opened during the fault to start');
    expect(await publish(newcomer, 'welcome')).toBe(202);
    await opened.waitFor((s) => shows(s, 'welcome'), 5000, 'its event');
    expect(held.events().filter((e) => e.event === undefined)).toHaveLength(2);
  }, 60_000);
});
