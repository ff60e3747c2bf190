import { startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { OwnRedisSentinel } from '../helpers/redis-sentinel';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid } from '../helpers/wait';

/** Replicas that find their Redis through Sentinel (one primary, one replica, three sentinels). */
describe('replicas behind Redis Sentinel', () => {
  const prefix = uniquePrefix();
  let sentinel: OwnRedisSentinel;
  let durable: HubProcess;
  let overAsking: HubProcess;
  const streams: SseStream[] = [];
  let service: string;

  const publish = (hub: HubProcess, user: string, n: number): Promise<Response> =>
    fetch(`${hub.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'DURABLE', n }),
    });

  beforeAll(async () => {
    sentinel = await OwnRedisSentinel.start();
    const env = {
      SSEHUB_REDIS_SENTINELS: sentinel.sentinels,
      SSEHUB_REDIS_SENTINEL_NAME: sentinel.name,
      SSEHUB_CHANNEL_PREFIX: prefix,
    };
    // One Redis replica exists: waiting for one succeeds, waiting for two cannot.
    [durable, overAsking] = await Promise.all([
      startReadyHub({ ...env, SSEHUB_PUBLISH_MIN_REPLICAS: '1' }),
      startReadyHub({ ...env, SSEHUB_PUBLISH_MIN_REPLICAS: '2', SSEHUB_PUBLISH_MIN_REPLICAS_TIMEOUT_MS: '200' }),
    ]);
    service = await mintToken('sentinel-backend', { roles: ['service'] });
  }, 60_000);

  afterAll(async () => {
    for (const stream of streams) stream.close();
    await Promise.all([durable, overAsking].filter(Boolean).map((hub) => hub.stop()));
    await sentinel?.close();
  });

  it('acknowledges a publish once a Redis replica has it, and answers 504 when replicas do not confirm in time', async () => {
    const user = uid('durable');
    const stream = await openStream(overAsking.url, '/api/v1/stream/agui', { token: await mintToken(user) });
    streams.push(stream);
    await stream.waitForPosition(5000, 'the stream position');

    const confirmed = await publish(durable, user, 1);
    expect(confirmed.status).toBe(202);
    const { id } = (await confirmed.json()) as { id: string };

    const started = Date.now();
    const unconfirmed = await publish(overAsking, user, 2);
    expect(unconfirmed.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(await unconfirmed.text()).toMatch(/published, but 1 of 2 Redis replicas confirmed it in time/);

    // Both were published: the unconfirmed one is in the history and delivered, only its durability is unknown.
    const events = await stream.waitForEvents(2, 5000);
    expect(events[0]?.id).toBe(id);
    expect(events.map((e) => JSON.parse(e.data).n)).toEqual([1, 2]);
  });
});
