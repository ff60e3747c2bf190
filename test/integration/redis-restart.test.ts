import { Redis } from 'ioredis';
import { metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { OwnRedis } from '../helpers/redis-server';
import { openStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until } from '../helpers/wait';

describe('Redis restarted under live hubs', () => {
  let redis: OwnRedis;
  let hubs: HubProcess[];
  const prefix = uniquePrefix();

  beforeAll(async () => {
    redis = await OwnRedis.start();
    const env = { REDIS_URL: redis.url, SSEHUB_CHANNEL_PREFIX: prefix };
    hubs = await Promise.all([startReadyHub(env), startReadyHub(env)]);
  });

  afterAll(async () => {
    await Promise.all(hubs.map((hub) => hub.stop()));
    await redis.destroy();
  });

  it('reports the outage, refuses to publish, then resubscribes, resets the lost history and delivers again', async () => {
    const [a, b] = hubs as [HubProcess, HubProcess];
    const token = await mintToken('survivor');
    const onA = await openStream(a.url, '/api/v1/stream/agui', { token });
    const onB = await openStream(b.url, '/api/v1/stream/agui', { token });
    const publish = async (seq: number): Promise<number> => {
      const client = new Redis(redis.url, { maxRetriesPerRequest: 0, lazyConnect: true });
      try {
        await client.connect();
        return await client.publish(`${prefix}:agui`, `{"user_id":"survivor","event":{"seq":${seq}}}`);
      } finally {
        client.disconnect();
      }
    };
    expect(await publish(1)).toBe(2);
    await Promise.all([onA.waitForEvents(1), onB.waitForEvents(1)]);

    await redis.stop();
    await until(async () => (await fetch(`${a.url}/readyz`)).status === 503, 10_000, 'readiness to fail');
    expect(await (await fetch(`${a.url}/health`)).json()).toEqual({
      status: 'degraded',
      events: { relay: 'not_listening' },
    });
    expect(await metricValue(a, 'ssehub_transport_listening')).toBe(0);
    const refused = await fetch(`${b.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      body: '{"user_id":"survivor","seq":99}',
    });
    expect(refused.status).toBe(503);
    // Open streams stay open through the outage; clients see no error.
    expect(onA.isEnded() || onB.isEnded()).toBe(false);

    await redis.restart();
    for (const hub of hubs) {
      await until(async () => (await fetch(`${hub.url}/readyz`)).status === 200, 10_000, 'readiness to recover');
    }
    expect(await (await fetch(`${a.url}/health`)).json()).toEqual({ status: 'ok', events: { relay: 'listening' } });
    expect(await metricValue(a, 'ssehub_transport_resubscribes_total')).toBe(1);
    for (const [hub, seq] of [
      [a, 2],
      [b, 3],
    ] as const) {
      const accepted = await fetch(`${hub.url}/api/v1/webhook/agui`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
        body: `{"user_id":"survivor","seq":${seq}}`,
      });
      expect(accepted.status).toBe(202);
    }
    // This Redis keeps nothing across a restart: its history is gone, and the streams say so in-band.
    for (const stream of [onA, onB]) {
      const events = await stream.waitForEvents(4);
      expect(events.map((e) => [e.event ?? 'message', JSON.parse(e.data)])).toEqual([
        ['message', { seq: 1 }],
        ['reset', expect.objectContaining({ type: 'reset', reason: 'history_lost' })],
        ['message', { seq: 2 }],
        ['message', { seq: 3 }],
      ]);
      stream.close();
    }
  });
});
