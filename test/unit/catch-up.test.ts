import pino from 'pino';
import { CatchUp, type CatchUpMetrics } from '../../src/delivery/catch-up';
import { StreamSubscriber } from '../../src/delivery/subscriber';
import { formatEventId, type EventId } from '../../src/history/event-id';
import type { HistoryRead, HistorySource } from '../../src/history/history';
import { MemoryHistory } from '../../src/history/memory-history';
import { SseConnection } from '../../src/sse/connection';
import { encodeFrame } from '../../src/sse/frame';
import { parseFrames } from '../helpers/sse-client';
import { RecordingResponse } from '../helpers/recording-response';

/** A history source whose reads wait until the test lets them through. */
class GatedHistory implements HistorySource {
  private gates: Array<() => void> = [];
  reads = 0;
  failNext = false;
  constructor(readonly history: MemoryHistory) {}
  async readHistory(userId: string, after: EventId | undefined, limit: number): Promise<HistoryRead> {
    this.reads++;
    await new Promise<void>((resolve) => this.gates.push(resolve));
    if (this.failNext) {
      this.failNext = false;
      throw new Error('store unreachable');
    }
    return this.history.read(userId, after, limit);
  }
  open(): void {
    const gates = this.gates;
    this.gates = [];
    for (const open of gates) open();
  }
}

const counters = { delivered: 0, resets: [] as string[], failures: 0, rejected: 0 };
const metrics: CatchUpMetrics = {
  historyDelivered: (_purpose, n) => (counters.delivered += n),
  historyReset: (reason) => counters.resets.push(reason),
  historyReadFailed: () => counters.failures++,
  eventRejected: () => counters.rejected++,
};

function setup(resumeFrom?: string, history = new MemoryHistory({ maxEntries: 100, ttlMs: 3_600_000 })) {
  const gated = new GatedHistory(history);
  const catchUp = new CatchUp({
    history: gated,
    replayMax: 50,
    maxEventBytes: 1 << 20,
    metrics,
    log: pino({ level: 'silent' }),
  });
  const res = new RecordingResponse();
  const connection = new SseConnection(
    'c1',
    'u',
    Date.now() + 60_000,
    res.asResponse(),
    { maxEvents: 100, maxBytes: 1 << 20, stallMs: 30_000 },
    () => undefined,
  );
  connection.open();
  res.beforeRead = () => connection.flushPending();
  const subscriber = new StreamSubscriber(connection, 'agui', resumeFrom, 100, () =>
    metrics.historyReset('history_lost'),
  );
  const publish = (n: number, kind = 'agui') => history.append('u', kind, Buffer.from(`{"n":${n}}`));
  const live = (id: EventId) =>
    subscriber.deliver(id, encodeFrame(Buffer.from(`{"n":${id.seq}}`), { id: formatEventId(id) }));
  const dataOf = () =>
    parseFrames(res.written)
      .filter((f) => f.hasData)
      .map((f) => f.event ?? JSON.parse(f.data).n);
  return { history, gated, catchUp, res, subscriber, publish, live, dataOf };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('catching a stream up from history', () => {
  beforeEach(() => {
    counters.delivered = 0;
    counters.resets = [];
    counters.failures = 0;
  });

  it('holds live events during the replay and delivers each event once, in order', async () => {
    const t = setup();
    const ids = [1, 2, 3].map((n) => t.publish(n));
    const s = setup(formatEventId(ids[0] as EventId), t.history);
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    // Published while the history read is in flight: one the read will also see, one it will not.
    const id4 = t.publish(4);
    s.live(ids[2] as EventId);
    s.live(id4);
    s.gated.open();
    await running;
    const id5 = t.publish(5);
    s.live(id5);
    expect(s.dataOf()).toEqual([2, 3, 4, 5]);
    expect(s.res.written.startsWith(`id:${formatEventId(ids[1] as EventId)}\n`)).toBe(true);
    expect(s.subscriber.cursor).toEqual(id5);
  });

  it('tells a new stream its position with an id line alone, and nothing else', async () => {
    const s = setup();
    const id = s.publish(1);
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    s.gated.open();
    await running;
    expect(s.res.written).toBe(`id:${formatEventId(id)}\n\n`);
  });

  it('skips events of kinds the stream does not carry but moves past them', async () => {
    const s = setup();
    const from = s.publish(1);
    s.publish(2, 'a2a');
    s.publish(3, 'analytics');
    const last = s.publish(4, 'system');
    const resumed = setup(formatEventId(from), s.history);
    const running = resumed.catchUp.run(resumed.subscriber, 'connect');
    await settle();
    resumed.gated.open();
    await running;
    expect(resumed.dataOf()).toEqual([]);
    // The client is moved to the newest id so its next resume starts there.
    expect(resumed.res.written).toBe(`id:${formatEventId(last)}\n\n`);
  });

  it('answers an id it cannot vouch for with a reset that carries the newest id', async () => {
    const s = setup('not-an-id');
    const id = s.publish(1);
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    s.gated.open();
    await running;
    const [reset] = parseFrames(s.res.written);
    expect(reset).toMatchObject({ event: 'reset', id: formatEventId(id) });
    expect(JSON.parse(reset?.data ?? '')).toMatchObject({ type: 'reset', reason: 'unknown_id' });
    expect(counters.resets).toEqual(['unknown_id']);
  });

  it('retries a failed read from the same place and fills the gap then', async () => {
    const s = setup();
    const first = s.publish(1);
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    s.gated.open();
    await running;
    expect(s.subscriber.cursor).toEqual(first);
    // The subscription is lost; two events go by; the first catch-up attempt fails.
    s.publish(2);
    s.publish(3);
    s.gated.failNext = true;
    const failed = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    s.gated.open();
    await failed;
    expect(s.subscriber.needsCatchUp).toBe(true);
    expect(counters.failures).toBe(1);
    const retried = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    s.gated.open();
    await retried;
    expect(s.dataOf()).toEqual([2, 3]);
    expect(s.subscriber.needsCatchUp).toBe(false);
  });

  it('sends a reset when a live event comes from a new epoch', () => {
    const s = setup();
    s.live({ epoch: 'a', ms: 1, seq: 1 });
    s.live({ epoch: 'b', ms: 2, seq: 1 });
    s.live({ epoch: 'b', ms: 2, seq: 1 });
    expect(s.dataOf()).toEqual([1, 'reset', 1]);
  });
});
