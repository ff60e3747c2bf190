import { dropSchema, SHARED_DATABASE_URL, uniqueSchema } from '../helpers/postgres-server';
import { metricValue, SHARED_REDIS_URL, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid, until } from '../helpers/wait';

async function publish(hub: HubProcess, kind: string, userId: string, delta: string): Promise<void> {
  const res = await fetch(`${hub.url}/api/v1/webhook/${kind}`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${await mintToken('publisher', { roles: ['service'] })}`,
      'content-type': 'application/json',
    },
    body: JSON.stringify({ user_id: userId, type: 'TEXT_MESSAGE_CONTENT', delta }),
  });
  expect(res.status).toBe(202);
}

describe('delivery lag and connected users (Redis)', () => {
  let hub: HubProcess;
  const streams: SseStream[] = [];

  beforeAll(async () => {
    hub = await startReadyHub({ REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: uniquePrefix() });
  });

  afterAll(async () => {
    for (const stream of streams) stream.close();
    await hub.stop();
  });

  it('measures publish-to-socket lag per kind from the id, and counts users once across their streams', async () => {
    const alice = uid('alice');
    const bob = uid('bob');
    for (const [user, path] of [
      [alice, '/api/v1/stream/agui'],
      [alice, '/api/v1/stream/contexts'],
      [bob, '/api/v1/stream/a2a'],
    ] as const) {
      streams.push(await openStream(hub.url, path, { token: await mintToken(user) }));
    }
    await until(async () => (await metricValue(hub, 'ssehub_connected_users')) === 2, 5000, 'two connected users');
    expect(await metricValue(hub, 'sse_active_connections{channel="context"}')).toBe(1);

    for (let i = 0; i < 3; i++) await publish(hub, 'agui', alice, `m${i}`);
    // Two streams of alice show each agui event: still one observation per event.
    await (streams[0] as SseStream).waitForEvents(3, 5000);
    await (streams[1] as SseStream).waitForEvents(3, 5000);
    const count = await metricValue(hub, 'ssehub_delivery_lag_seconds_count{kind="agui"}');
    const sum = await metricValue(hub, 'ssehub_delivery_lag_seconds_sum{kind="agui"}');
    console.log(`delivery lag: ${count} agui events, mean ${((sum / count) * 1000).toFixed(2)} ms`);
    expect(count).toBe(3);
    expect(sum / count).toBeLessThan(5);
    // Events no open stream shows are not measured.
    expect(await metricValue(hub, 'ssehub_delivery_lag_seconds_count{kind="analytics"}')).toBe(0);

    (streams[2] as SseStream).close();
    await until(async () => (await metricValue(hub, 'ssehub_connected_users')) === 1, 5000, 'bob leaving');
  });
});

describe('delivery lag on the Postgres outbox', () => {
  const schema = uniqueSchema();
  let hub: HubProcess;
  let stream: SseStream | undefined;

  beforeAll(async () => {
    hub = await startReadyHub({
      SSEHUB_TRANSPORT: 'postgres',
      DATABASE_URL: SHARED_DATABASE_URL,
      SSEHUB_PG_SCHEMA: schema,
    });
  });

  afterAll(async () => {
    stream?.close();
    await hub.stop();
    await dropSchema(SHARED_DATABASE_URL, schema);
  });

  it('is not measured: an outbox id holds no publish time', async () => {
    const user = uid('pg');
    stream = await openStream(hub.url, '/api/v1/stream/agui', { token: await mintToken(user) });
    await publish(hub, 'agui', user, 'x');
    await stream.waitForEvents(1, 5000);
    expect(await metricValue(hub, 'ssehub_frames_delivered_total{stream="agui"}')).toBe(1);
    expect(await metricValue(hub, 'ssehub_delivery_lag_seconds_count{kind="agui"}')).toBe(0);
  });
});
