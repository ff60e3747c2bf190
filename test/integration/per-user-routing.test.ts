import { Redis } from 'ioredis';
import { userKeys } from '../../src/transport/redis/library';
import { metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { OwnRedis } from '../helpers/redis-server';
import { openStream, sleep, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * Three real replicas on a Redis of their own: each subscribes the channels of the users it
 * holds, so an event reaches only the replicas that have a stream of its user.
 */
describe('per-user routing over Redis', () => {
  const prefix = uniquePrefix();
  let redis: OwnRedis;
  let admin: Redis;
  let hubs: HubProcess[];
  const streams: SseStream[] = [];
  let service: string;

  const open = async (hub: HubProcess, user: string): Promise<SseStream> => {
    const stream = await openStream(hub.url, '/api/v1/stream/agui', { token: await mintToken(user) });
    streams.push(stream);
    await stream.waitForPosition(5000, 'the stream position');
    return stream;
  };
  const publish = async (hub: HubProcess, user: string, n: number): Promise<{ id: string; replicas: number }> => {
    const res = await fetch(`${hub.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'ROUTED', n }),
    });
    expect(res.status).toBe(202);
    return (await res.json()) as { id: string; replicas: number };
  };
  const userMessages = (hub: HubProcess): Promise<number> =>
    metricValue(hub, 'ssehub_redis_messages_total{channel="user"}');
  const numsub = async (user: string): Promise<number> => {
    const reply = (await admin.call('PUBSUB', 'SHARDNUMSUB', userKeys(prefix, user).channel)) as [string, number];
    return Number(reply[1]);
  };

  beforeAll(async () => {
    redis = await OwnRedis.start();
    admin = new Redis(redis.url);
    const env = { REDIS_URL: redis.url, SSEHUB_CHANNEL_PREFIX: prefix, SSEHUB_REDIS_RELEASE_DELAY_MS: '300' };
    hubs = await Promise.all([startReadyHub(env), startReadyHub(env), startReadyHub(env)]);
    service = await mintToken('routing-backend', { roles: ['service'] });
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.close();
  });

  afterAll(async () => {
    admin.disconnect();
    await Promise.all(hubs.map((hub) => hub.stop()));
    await redis.destroy();
  });

  it('delivers each event once to every stream of its user, and nothing to replicas without that user', async () => {
    const [a, b, c] = hubs as [HubProcess, HubProcess, HubProcess];
    const alice = uid('alice{1}%');
    const bob = uid('bob');
    const aliceStreams = [await open(a, alice), await open(a, alice), await open(b, alice)];
    const bobStream = await open(b, bob);
    const before = await Promise.all(hubs.map(userMessages));
    const sent = { alice: [] as string[], bob: [] as string[] };
    for (let n = 0; n < 20; n++) {
      const publisher = hubs[n % 3] as HubProcess;
      const target = n % 4 === 0 ? bob : alice;
      const { id, replicas } = await publish(publisher, target, n);
      // Only the replicas holding the user are subscribed to its channel.
      expect(replicas).toBe(target === bob ? 1 : 2);
      (target === bob ? sent.bob : sent.alice).push(id);
    }
    for (const stream of aliceStreams) {
      const events = await stream.waitForEvents(sent.alice.length, 10_000);
      expect(events.map((e) => e.id)).toEqual(sent.alice);
    }
    expect((await bobStream.waitForEvents(sent.bob.length, 10_000)).map((e) => e.id)).toEqual(sent.bob);
    await sleep(200);
    const after = await Promise.all(hubs.map(userMessages));
    // a holds alice only; b holds both (one message per event, however many streams); c holds neither.
    expect(after.map((count, i) => count - (before[i] as number))).toEqual([
      sent.alice.length,
      sent.alice.length + sent.bob.length,
      0,
    ]);
    expect(await metricValue(c, 'ssehub_redis_user_channels')).toBe(0);
  });

  it('survives a connect and disconnect storm without leaking subscriptions or dropping events of the streams that stay', async () => {
    const [a, b] = hubs as [HubProcess, HubProcess];
    const steady = uid('steady');
    const steadyStream = await open(a, steady);
    const churners = Array.from({ length: 40 }, (_, i) => uid(`churn-${i}`));
    const sent: string[] = [];
    const storm = (async () => {
      for (let round = 0; round < 5; round++) {
        const opened = await Promise.all(churners.map((user) => open(round % 2 === 0 ? a : b, user)));
        for (const stream of opened) stream.close();
      }
    })();
    for (let n = 0; n < 30; n++) {
      sent.push((await publish(b, steady, n)).id);
      await sleep(10);
    }
    await storm;
    const events = await steadyStream.waitForEvents(sent.length, 10_000);
    expect(events.map((e) => e.id)).toEqual(sent);
    // Released after the delay: only the steady user's channel stays, on the one replica that holds it.
    await until(
      async () => (await metricValue(a, 'ssehub_redis_user_channels')) === 1,
      5000,
      'replica a to release the churned users',
    );
    await until(
      async () => (await metricValue(b, 'ssehub_redis_user_channels')) === 0,
      5000,
      'replica b to release the churned users',
    );
    const leaked = (await Promise.all(churners.map(numsub))).filter((count) => count > 0);
    expect(leaked).toEqual([]);
    expect(await numsub(steady)).toBe(1);
    // The self-check compares what Redis holds with what each replica believes: churn is no false alarm.
    for (const hub of hubs) expect(await metricValue(hub, 'ssehub_redis_self_check_failures_total')).toBe(0);
  });

  it('keeps a channel through a quick reconnect, and delivers what was published in between from history', async () => {
    const [a] = hubs as [HubProcess];
    const user = uid('reconnecting');
    const first = await open(a, user);
    const published = [(await publish(a, user, 1)).id];
    await first.waitForEvents(1, 5000);
    const lastId = first.lastEventId() as string;
    first.close();
    published.push((await publish(a, user, 2)).id);
    // Back within the release delay: the subscription was never dropped.
    expect(await numsub(user)).toBe(1);
    const second = await openStream(a.url, '/api/v1/stream/agui', {
      token: await mintToken(user),
      headers: { 'last-event-id': lastId },
    });
    streams.push(second);
    published.push((await publish(a, user, 3)).id);
    const events = await second.waitForEvents(2, 5000);
    expect(events.map((e) => e.id)).toEqual(published.slice(1));
  });
});
