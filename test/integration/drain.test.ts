import { SHARED_REDIS_URL, startReadyHub, uniquePrefix } from '../helpers/hub-process';
import { openStream, sleep } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';

describe('SIGTERM drain', () => {
  it('fails readiness at once, refuses new streams, spreads closes with a retry hint and exits 0', async () => {
    const hub = await startReadyHub({
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: uniquePrefix(),
      SSEHUB_DRAIN_MS: '1500',
      SSEHUB_MAX_CONNECTIONS_PER_USER: '20',
    });
    const token = await mintToken('drained');
    const streams = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        openStream(hub.url, i % 2 ? '/api/v1/stream/agui' : '/api/v1/stream/contexts', { token }),
      ),
    );
    // Established streams: each has its position, sent once the hub watches the user's channel
    // and has read the history (a stream closed before that gets the retry hint alone).
    await Promise.all(streams.map((stream) => stream.waitForPosition(10_000, 'the opening position')));
    const closedAt: number[] = [];
    for (const stream of streams) void stream.ended.then(() => closedAt.push(Date.now()));

    const signalledAt = Date.now();
    hub.child.kill('SIGTERM');
    await sleep(100);
    const ready = await fetch(`${hub.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: 'not_ready', reason: 'draining' });
    const late = await openStream(hub.url, '/api/v1/stream/agui', { token });
    expect(late.status).toBe(503);
    late.close();

    expect(await hub.exited).toBe(0);
    const exitedAfter = Date.now() - signalledAt;
    expect(exitedAfter).toBeLessThan(4000);
    expect(closedAt).toHaveLength(10);
    // Spread over the window, not all at once.
    const spread = Math.max(...closedAt) - Math.min(...closedAt);
    expect(spread).toBeGreaterThan(700);
    for (const stream of streams) {
      const retry = stream.frames().find((f) => f.retry !== undefined);
      expect(Number(retry?.retry)).toBeGreaterThanOrEqual(500);
      expect(stream.raw()).toMatch(/^id:[0-9a-z]+:0-0\n\nretry:\d+\n\n$/);
    }
  });
});
