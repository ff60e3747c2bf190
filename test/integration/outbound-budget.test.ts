import type { Socket } from 'node:net';
import { Redis } from 'ioredis';
import { SHARED_REDIS_URL, metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { openStalledStream, openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid } from '../helpers/wait';

const KIB = 1024;
const BUDGET = 1024 * KIB;
const BUFFERED = 'ssehub_outbound_buffered_bytes';
const BUDGET_CUTS = 'ssehub_outbound_budget_cuts_total';
const SLOW_CONSUMER = 'ssehub_disconnects_total{reason="slow_consumer"}';

/**
 * Clients that stop reading, on a replica whose outbound budget is smaller than their backlogs
 * together: the total stays under it, and the stream furthest behind is the one cut.
 */
describe('the outbound budget of a replica', () => {
  const prefix = uniquePrefix();
  let hub: HubProcess;
  let redis: Redis;
  const stalled: Socket[] = [];
  const streams: SseStream[] = [];
  /** Every reading of the buffered bytes the test took; none may pass the budget. */
  const buffered: number[] = [];
  const pad = 'x'.repeat(60 * KIB);

  const publish = (kind: string, userId: string, n: number): Promise<number> =>
    redis.publish(`${prefix}:${kind}`, `{"user_id":"${userId}","event":{"n":${n},"pad":"${pad}"}}`);
  const readBuffered = async (): Promise<number> => {
    const bytes = await metricValue(hub, BUFFERED);
    buffered.push(bytes);
    return bytes;
  };
  const open = (channel: string): Promise<number> => metricValue(hub, `sse_active_connections{channel="${channel}"}`);

  beforeAll(async () => {
    hub = await startReadyHub({
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: prefix,
      SSEHUB_MAX_EVENT_BYTES: String(64 * KIB),
      SSEHUB_BUFFER_MAX_BYTES: String(768 * KIB),
      SSEHUB_HOLD_MAX_BYTES: String(64 * KIB),
      SSEHUB_OUTBOUND_MAX_BYTES: String(BUDGET),
      // The clients stall on purpose; only the budget may cut them here.
      SSEHUB_WRITE_STALL_MS: '300000',
    });
    redis = new Redis(SHARED_REDIS_URL);
  });

  afterAll(async () => {
    for (const socket of stalled) socket.destroy();
    for (const stream of streams) stream.close();
    redis.disconnect();
    await hub.stop();
  });

  /** A stalled client of `userId`, and a tab of the same user that keeps up (it paces the publisher and is never cut). */
  const stalledWithSteadyTab = async (userId: string, path: string): Promise<SseStream> => {
    const token = await mintToken(userId);
    stalled.push(await openStalledStream(hub.port, path, token, true));
    const steady = await openStream(hub.url, '/api/v1/stream/contexts', { token });
    streams.push(steady);
    await steady.waitForPosition();
    return steady;
  };

  it('keeps the bytes queued for stalled clients under the budget, cutting the furthest behind first', async () => {
    const small = uid('small');
    const big = uid('big');
    const smallTab = await stalledWithSteadyTab(small, '/api/v1/stream/agui');
    const bigTab = await stalledWithSteadyTab(big, '/api/v1/stream/a2a');
    const cutsBefore = await metricValue(hub, BUDGET_CUTS);
    const slowBefore = await metricValue(hub, SLOW_CONSUMER);

    // The small user's client falls 400 KiB behind, once the kernel's buffers are full.
    for (let n = 0; (await readBuffered()) < 400 * KIB; n++) {
      if (n === 1000) throw new Error('the small backlog never grew');
      await publish('agui', small, n);
      await smallTab.waitForEvents(n + 1, 10_000);
    }
    const smallQueued = await readBuffered();

    // The big user's client falls behind past it until the total passes the budget: the big one
    // is cut (well within its own 768 KiB bound), the small one stays.
    for (let n = 0; (await open('a2a')) > 0; n++) {
      if (n === 1000) throw new Error(`the big stream was never cut; buffered bytes read: ${buffered.join(', ')}`);
      await publish('a2a', big, n);
      await bigTab.waitForEvents(n + 1, 10_000);
      await readBuffered();
    }
    expect(await metricValue(hub, BUDGET_CUTS)).toBe(cutsBefore + 1);
    expect(await metricValue(hub, SLOW_CONSUMER)).toBe(slowBefore + 1);
    expect([await open('agui'), await open('context')]).toEqual([1, 2]);
    expect(await readBuffered()).toBe(smallQueued);
    expect(Math.max(...buffered)).toBeLessThanOrEqual(BUDGET);
    expect(Math.max(...buffered)).toBeGreaterThan(BUDGET - 64 * KIB);
  });
});
