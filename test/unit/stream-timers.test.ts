import pino from 'pino';
import { Registry as PromRegistry } from 'prom-client';
import { MemoryHistory } from '../../src/history/memory-history';
import type { HistoryQuery } from '../../src/history/history';
import { type EventId, formatEventId } from '../../src/history/event-id';
import { HubCore } from '../../src/hub/core';
import { HubMetrics } from '../../src/metrics';
import { HEARTBEAT_FRAME } from '../../src/sse/frame';
import { RecordingResponse } from '../helpers/recording-response';

const HEARTBEAT_MS = 1000;
const heartbeat = HEARTBEAT_FRAME.toString();

/** A response with just enough of a socket for a stream to open on it. */
function response(): RecordingResponse {
  const res = new RecordingResponse();
  const socket = { destroyed: false, setNoDelay: () => socket, setKeepAlive: () => socket, setTimeout: () => socket };
  (res as unknown as { socket: unknown }).socket = socket;
  return res;
}

/** The hub's stream lifecycle on the hub's own timer, driven by jest's clock. */
function setup() {
  const history = new MemoryHistory({ maxEntries: 100, maxBytes: 1 << 20, ttlMs: 3_600_000 });
  const transport = {
    readHistory: (userId: string, after: EventId | undefined, query: HistoryQuery) =>
      Promise.resolve(history.read(userId, after, query)),
    isListening: () => true,
  };
  const metrics = new HubMetrics(
    { connections: () => 0, connectedUsers: () => 0, transportListening: () => true, outboundBytes: () => 0 },
    { registry: new PromRegistry() },
  );
  const core = new HubCore(
    {
      maxEventBytes: 1024,
      heartbeatMs: HEARTBEAT_MS,
      maxConnectionsPerUser: 10,
      maxConnections: 1000,
      replayMax: 100,
      replay: {
        pageEvents: 100,
        pageBytes: 1 << 16,
        replicaBytes: 1 << 20,
        holdMaxBytes: 1 << 20,
        retryMinMs: 1000,
        retryMaxMs: 8000,
      },
      outbound: { maxEvents: 100, maxBytes: 1 << 20, stallMs: 5000 },
      outboundMaxBytes: 1 << 24,
    },
    transport,
    metrics,
    pino({ level: 'silent' }),
  );
  const open = (userId: string, expiresAt = Date.now() + 3_600_000) => {
    const res = response();
    const opened = core.streams.open('agui', userId, expiresAt, res.asResponse());
    if (!opened.ok) throw new Error(`stream not opened: ${opened.reason}`);
    return { res, subscriber: opened.subscriber, heartbeats: () => res.writes.filter((w) => w === heartbeat).length };
  };
  return { core, open, history };
}

describe('stream timers on the hub', () => {
  beforeEach(() => jest.useFakeTimers({ now: 1_700_000_000_000 }));
  afterEach(() => jest.useRealTimers());

  it('heartbeats idle streams once per interval, and a stream that wrote only after its interval from that write', async () => {
    const { core, open } = setup();
    core.streams.start();
    const idle = open('idle');
    const busy = open('busy');
    await jest.advanceTimersByTimeAsync(500);
    busy.subscriber.connection.send(Buffer.from('data:x\n\n'));
    await jest.advanceTimersByTimeAsync(750);
    // 1.25 s in: the idle stream's heartbeat is out; the busy one wrote at 0.5 s, so it is not due yet.
    expect(idle.heartbeats()).toBe(1);
    expect(busy.heartbeats()).toBe(0);
    await jest.advanceTimersByTimeAsync(750);
    expect(busy.heartbeats()).toBe(1);
    await jest.advanceTimersByTimeAsync(3000);
    // 5 s in: the idle stream at every whole second, the busy one half a second behind it.
    expect(idle.heartbeats()).toBe(5);
    expect(busy.heartbeats()).toBe(4);
    core.streams.stop();
  });

  it("tells an idle stream's client the position it moved to unseen, with its heartbeat", async () => {
    const { core, open, history } = setup();
    core.streams.start();
    const stream = open('quiet');
    await jest.advanceTimersByTimeAsync(100);
    // An event of a kind this stream does not show moves its position without a frame.
    const passed = { epoch: history.epoch, ms: Date.now(), seq: 7 };
    stream.subscriber.passOver(passed, 'a2a');
    const before = stream.res.writes.length;
    await jest.advanceTimersByTimeAsync(1000);
    expect(stream.res.writes.slice(before)).toEqual([heartbeat, `id:${formatEventId(passed)}\n\n`]);

    // The id of an analytics event, which this stream may not show, is never told: the client
    // keeps the position it has.
    stream.subscriber.passOver({ ...passed, seq: 8 }, 'analytics');
    const later = stream.res.writes.length;
    await jest.advanceTimersByTimeAsync(1000);
    expect(stream.res.writes.slice(later)).toEqual([heartbeat]);
    core.streams.stop();
  });

  it('forgets a closed stream, and closes an expired one at its expiry', async () => {
    const { core, open } = setup();
    core.streams.start();
    const kept = open('kept');
    const gone = open('gone');
    const expiring = open('expiring', Date.now() + 2500);
    gone.res.emit('close');
    await jest.advanceTimersByTimeAsync(5000);
    expect(gone.res.writes.filter((w) => w === heartbeat)).toEqual([]);
    expect(kept.heartbeats()).toBe(5);
    expect(expiring.subscriber.connection.isClosed).toBe(true);
    expect(expiring.heartbeats()).toBe(2);
    expect(core.registry.total()).toBe(1);
    core.streams.stop();
  });
});
