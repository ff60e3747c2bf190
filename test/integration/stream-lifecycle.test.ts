import { EventSource } from 'eventsource';
import { Redis } from 'ioredis';
import { SHARED_REDIS_URL, metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { openStalledStream, openStream, sleep } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';

describe('stream lifecycle', () => {
  const prefix = uniquePrefix();
  let hub: HubProcess;
  let redis: Redis;
  const envelope = (userId: string, event: string): string => `{"user_id":${JSON.stringify(userId)},"event":${event}}`;

  beforeAll(async () => {
    hub = await startReadyHub({
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: prefix,
      SSEHUB_HEARTBEAT_MS: '400',
      SSEHUB_JWT_CLOCK_TOLERANCE_S: '0',
      SSEHUB_MAX_EVENT_BYTES: '131072',
    });
    redis = new Redis(SHARED_REDIS_URL);
  });

  afterAll(async () => {
    redis.disconnect();
    await hub.stop();
  });

  it('sends the exact heartbeat after the idle interval, and not while events flow', async () => {
    const stream = await openStream(hub.url, '/api/v1/stream/agui', { token: await mintToken('beat') });
    const opened = Date.now();
    await stream.waitFor((s) => s.raw().includes('heartbeat'), 3000, 'a heartbeat');
    expect(Date.now() - opened).toBeGreaterThanOrEqual(350);
    // The stream opens with its position in the user's history, then idles into a heartbeat.
    expect(stream.raw()).toMatch(/^id:[0-9a-z]+:0-0\n\nevent:heartbeat\ndata:\{"type":"heartbeat"\}\n\n$/);
    // Events every 100 ms keep the connection busy: no heartbeat in between.
    const before = stream.frames().length;
    for (let i = 0; i < 8; i++) {
      await redis.publish(`${prefix}:agui`, envelope('beat', `{"i":${i}}`));
      await sleep(100);
    }
    const during = stream.frames().slice(before);
    expect(during.filter((f) => f.event === 'heartbeat')).toHaveLength(0);
    expect(during).toHaveLength(8);
    stream.close();
  });

  it('closes an open stream when its token expires', async () => {
    const stream = await openStream(hub.url, '/api/v1/stream/contexts', {
      token: await mintToken('short', { expiresIn: 2 }),
    });
    expect(stream.status).toBe(200);
    const started = Date.now();
    await stream.waitFor((s) => s.isEnded(), 5000, 'the stream to close');
    expect(Date.now() - started).toBeLessThan(4000);
    expect(await metricValue(hub, 'ssehub_disconnects_total{reason="token_expired"}')).toBeGreaterThanOrEqual(1);
  });

  it('works with a real EventSource client authenticated by cookie', async () => {
    const token = await mintToken('browser');
    const received: string[] = [];
    const heartbeats: string[] = [];
    const source = new EventSource(`${hub.url}/api/v1/stream/contexts`, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, Cookie: `access_token=${token}` } }),
    });
    source.addEventListener('heartbeat', (e) => heartbeats.push(e.data));
    source.onmessage = (e) => received.push(e.data);
    await new Promise<void>((resolve, reject) => {
      source.onopen = () => resolve();
      source.onerror = () => reject(new Error('EventSource failed'));
    });
    await redis.publish(`${prefix}:a2a`, envelope('browser', '{"type":"TASK_SUBMITTED","taskId":"t1"}'));
    const deadline = Date.now() + 3000;
    while ((received.length < 1 || heartbeats.length < 1) && Date.now() < deadline) await sleep(20);
    source.close();
    expect(received).toEqual(['{"protocol":"a2a","event":{"type":"TASK_SUBMITTED","taskId":"t1"}}']);
    expect(heartbeats[0]).toBe('{"type":"heartbeat"}');
  });

  it("disconnects a client that stops reading while the user's other tabs keep up", async () => {
    const token = await mintToken('slowpoke');
    // Never read: the kernel buffers fill, then the hub's bound is reached.
    const slow = await openStalledStream(hub.port, '/api/v1/stream/agui', token);
    const fast = await openStream(hub.url, '/api/v1/stream/agui', { token });
    await sleep(100);
    const slowBefore = await metricValue(hub, 'ssehub_disconnects_total{reason="slow_consumer"}');

    // The healthy tab paces the publisher (it is never more than one batch behind), while the
    // stalled one falls further behind with every batch until the hub cuts it off.
    const pad = 'x'.repeat(50_000);
    const total = 400;
    const batchSize = 10;
    for (let batch = 0; batch < total; batch += batchSize) {
      const pipeline = redis.pipeline();
      for (let i = batch; i < batch + batchSize; i++) {
        pipeline.publish(`${prefix}:agui`, envelope('slowpoke', `{"i":${i},"pad":"${pad}"}`));
      }
      await pipeline.exec();
      await fast.waitForEvents(batch + batchSize, 10_000);
    }
    const events = fast.events();
    expect(events.map((e) => (JSON.parse(e.data) as { i: number }).i)).toEqual(
      Array.from({ length: total }, (_, i) => i),
    );
    expect(await metricValue(hub, 'ssehub_disconnects_total{reason="slow_consumer"}')).toBe(slowBefore + 1);

    // The stalled client's socket was dropped: reading now reaches its end well before all events.
    let bytes = 0;
    slow.on('data', (chunk: Buffer) => (bytes += chunk.length));
    slow.resume();
    await new Promise<void>((resolve) => slow.once('close', () => resolve()));
    expect(bytes).toBeLessThan(total * pad.length);
    fast.close();
  });
});
