import pino from 'pino';
import { CatchUp, type CatchUpMetrics } from '../../src/delivery/catch-up';
import { ReplayBudget } from '../../src/delivery/replay-budget';
import { StreamSubscriber } from '../../src/delivery/subscriber';
import { formatEventId, type EventId } from '../../src/history/event-id';
import {
  HistoryReadAbandonedError,
  type HistoryQuery,
  type HistoryRead,
  type HistorySource,
} from '../../src/history/history';
import { MemoryHistory } from '../../src/history/memory-history';
import { SseConnection } from '../../src/sse/connection';
import { encodeFrame } from '../../src/sse/frame';
import { parseFrames } from '../helpers/sse-client';
import { RecordingResponse } from '../helpers/recording-response';

/** A history source whose reads wait until the test lets them through. */
class GatedHistory implements HistorySource {
  private gates: Array<() => void> = [];
  reads = 0;
  /** Reads started and not answered yet. */
  running = 0;
  failNext: Error | undefined;
  readonly queries: HistoryQuery[] = [];
  constructor(readonly history: MemoryHistory) {}
  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    this.reads++;
    this.running++;
    this.queries.push(query);
    await new Promise<void>((resolve) => this.gates.push(resolve));
    this.running--;
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure) throw failure;
    return this.history.read(userId, after, query);
  }
  open(): void {
    const gates = this.gates;
    this.gates = [];
    for (const open of gates) open();
  }
}

const counters = { delivered: 0, resets: [] as string[], failures: 0, pages: [] as number[] };
const metrics: CatchUpMetrics = {
  historyDelivered: (_purpose, n) => (counters.delivered += n),
  historyReset: (reason) => counters.resets.push(reason),
  historyReadFailed: () => counters.failures++,
  replayPageRead: (bytes) => counters.pages.push(bytes),
};

const newHistory = () => new MemoryHistory({ maxEntries: 100, maxBytes: 1 << 20, ttlMs: 3_600_000 });

interface SetupOptions {
  history?: MemoryHistory;
  pageEvents?: number;
  holdMaxBytes?: number;
  budget?: ReplayBudget;
  retry?: { minMs: number; maxMs: number };
}

function setup(resumeFrom?: string, options: SetupOptions = {}) {
  const history = options.history ?? newHistory();
  const gated = new GatedHistory(history);
  const catchUp = new CatchUp({
    history: gated,
    replayMax: 50,
    maxEventBytes: 1 << 10,
    page: { maxEntries: options.pageEvents ?? 100, maxBytes: 1 << 10 },
    budget: options.budget ?? new ReplayBudget(1 << 20),
    retry: options.retry ?? { minMs: 1000, maxMs: 8000 },
    metrics,
    log: pino({ level: 'silent' }),
  });
  const res = new RecordingResponse();
  const closed: string[] = [];
  const connection = new SseConnection(
    'c1',
    'u',
    Date.now() + 60_000,
    res.asResponse(),
    { maxEvents: 100, maxBytes: 1 << 20, stallMs: 30_000 },
    (_connection, reason) => closed.push(reason),
  );
  connection.open();
  res.beforeRead = () => connection.flushPending();
  const hold = { maxEvents: 100, maxBytes: options.holdMaxBytes ?? 1 << 20 };
  const subscriber = new StreamSubscriber(connection, 'agui', resumeFrom, hold, () =>
    metrics.historyReset('history_lost'),
  );
  const publish = (n: number, kind = 'agui') => history.append('u', kind, Buffer.from(`{"n":${n}}`));
  const live = (id: EventId) =>
    subscriber.deliver(id, encodeFrame(Buffer.from(`{"n":${id.seq}}`), { id: formatEventId(id) }));
  const dataOf = () =>
    parseFrames(res.written)
      .filter((f) => f.hasData)
      .map((f) => f.event ?? JSON.parse(f.data).n);
  return { history, gated, catchUp, res, connection, subscriber, publish, live, dataOf, closed };
}

const settle = () => new Promise((r) => setImmediate(r));

/** Lets the event loop run until `check` holds (the gated reads and fake socket involve no timers). */
async function until(check: () => boolean): Promise<void> {
  for (let turns = 0; !check(); turns++) {
    if (turns > 1000) throw new Error('condition never held');
    await settle();
  }
}

describe('catching a stream up from history', () => {
  beforeEach(() => {
    counters.delivered = 0;
    counters.resets = [];
    counters.failures = 0;
    counters.pages = [];
  });

  it('holds live events during the replay and delivers each event once, in order', async () => {
    const t = setup();
    const ids = [1, 2, 3].map((n) => t.publish(n));
    const s = setup(formatEventId(ids[0] as EventId), { history: t.history });
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
    const resumed = setup(formatEventId(from), { history: s.history });
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
    s.gated.failNext = new Error('store unreachable');
    const failed = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    s.gated.open();
    await failed;
    expect(s.catchUp.status(s.subscriber)?.failed).toBe(true);
    expect(counters.failures).toBe(1);
    const retried = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    s.gated.open();
    await retried;
    expect(s.dataOf()).toEqual([2, 3]);
    expect(s.catchUp.status(s.subscriber)?.failed ?? false).toBe(false);
  });

  it('replays page by page, reading the next page only once the socket has taken the last one', async () => {
    const t = setup();
    const ids = Array.from({ length: 8 }, (_, i) => t.publish(i + 1));
    const s = setup(formatEventId(ids[0] as EventId), { history: t.history, pageEvents: 3 });
    s.res.accepting = false;
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    s.gated.open();
    // Page one (events 2 to 4) goes out; the socket reports back-pressure, so no second read starts.
    await until(() => s.res.writes.length > 0);
    await settle();
    expect(s.gated.reads).toBe(1);
    s.res.accepting = true;
    s.res.emit('drain');
    await until(() => s.gated.reads === 2);
    s.gated.open();
    await until(() => s.gated.reads === 3);
    s.gated.open();
    await running;
    expect(s.dataOf()).toEqual([2, 3, 4, 5, 6, 7, 8]);
    // Only the first page checks the replay cap; every page is bounded.
    expect(s.gated.queries.map((q) => [q.maxEntries, q.replayMax])).toEqual([
      [3, 50],
      [3, undefined],
      [3, undefined],
    ]);
    expect(counters.pages).toHaveLength(3);
    expect(s.subscriber.cursor).toEqual(ids[7]);
  });

  it('keeps events published during a paged replay once each, after it', async () => {
    const t = setup();
    const ids = Array.from({ length: 5 }, (_, i) => t.publish(i + 1));
    const s = setup(formatEventId(ids[0] as EventId), { history: t.history, pageEvents: 2 });
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    s.gated.open();
    await until(() => s.gated.reads === 2);
    // Published between two pages: the live copy is held, the replay stops at its first head.
    const late = t.publish(6);
    s.live(ids[4] as EventId);
    s.live(late);
    s.gated.open();
    await running;
    expect(s.gated.reads).toBe(2);
    expect(s.dataOf()).toEqual([2, 3, 4, 5, 6]);
  });

  it('cuts a stream whose held live frames pass the byte bound during a replay', async () => {
    const s = setup(undefined, { holdMaxBytes: 100 });
    s.publish(1);
    const running = s.catchUp.run(s.subscriber, 'connect');
    await settle();
    const a = s.publish(2);
    const b = s.publish(3);
    const big = (id: EventId) =>
      s.subscriber.deliver(id, encodeFrame(Buffer.from(`{"pad":"${'x'.repeat(60)}"}`), { id: formatEventId(id) }));
    // One frame is always held, however large; the second one passes the bound.
    expect(big(a)).toBe(true);
    expect(big(b)).toBe(false);
    expect(s.closed).toEqual(['slow_consumer']);
    s.gated.open();
    await running;
  });

  it('backs off exponentially with jitter after failed reads, and resets the backoff once a read succeeds', async () => {
    const s = setup(undefined, { retry: { minMs: 1000, maxMs: 4000 } });
    s.publish(1);
    const waits: number[] = [];
    for (let attempt = 0; attempt < 4; attempt++) {
      s.gated.failNext = new Error('store unreachable');
      const before = Date.now();
      const failed = s.catchUp.run(s.subscriber, 'recover');
      await settle();
      s.gated.open();
      await failed;
      waits.push((s.catchUp.status(s.subscriber)?.retryNotBefore ?? 0) - before);
      expect(s.catchUp.retryDue(s.subscriber, Date.now())).toBe(false);
      expect(s.catchUp.retryDue(s.subscriber, s.catchUp.status(s.subscriber)?.retryNotBefore ?? 0)).toBe(true);
    }
    // Each wait is between half and all of 1 s, 2 s, 4 s, then capped at 4 s.
    const ceilings = [1000, 2000, 4000, 4000];
    waits.forEach((wait, i) => {
      expect(wait).toBeGreaterThanOrEqual((ceilings[i] as number) / 2);
      expect(wait).toBeLessThanOrEqual((ceilings[i] as number) + 50);
    });
    const retried = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    s.gated.open();
    await retried;
    expect(s.catchUp.status(s.subscriber)?.failed ?? false).toBe(false);
    expect(s.catchUp.status(s.subscriber)?.readFailures ?? 0).toBe(0);
  });

  it('never starts a second read for a stream while the store may still be running one it gave up on', async () => {
    const s = setup();
    s.publish(1);
    let storeDone: () => void = () => undefined;
    s.gated.failNext = new HistoryReadAbandonedError(
      'timed out',
      new Promise<void>((resolve) => (storeDone = resolve)),
    );
    const failed = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    s.gated.open();
    await failed;
    // A retry (or a recovery after a resubscription) waits for the abandoned read to end.
    const retried = s.catchUp.run(s.subscriber, 'recover');
    await settle();
    expect(s.gated.reads).toBe(1);
    storeDone();
    await until(() => s.gated.reads === 2);
    s.gated.open();
    await retried;
    expect(s.catchUp.status(s.subscriber)?.failed ?? false).toBe(false);
  });

  it("shares one replay byte budget across the replica's streams", async () => {
    const budget = new ReplayBudget(1 << 10);
    const t = setup();
    const from = t.publish(1);
    t.publish(2);
    const one = setup(formatEventId(from), { history: t.history, budget });
    const two = setup(formatEventId(from), { history: t.history, budget });
    const first = one.catchUp.run(one.subscriber, 'connect');
    const second = two.catchUp.run(two.subscriber, 'connect');
    await settle();
    // A page reserves its whole bound: the second stream reads only once the first page is written.
    expect([one.gated.reads, two.gated.reads]).toEqual([1, 0]);
    one.gated.open();
    await first;
    await until(() => two.gated.reads === 1);
    two.gated.open();
    await second;
    expect([one.dataOf(), two.dataOf()]).toEqual([[2], [2]]);
    expect(budget.inUse).toBe(0);
  });

  it('sends a reset when a live event comes from a new epoch', () => {
    const s = setup();
    s.live({ epoch: 'a', ms: 1, seq: 1 });
    s.live({ epoch: 'b', ms: 2, seq: 1 });
    s.live({ epoch: 'b', ms: 2, seq: 1 });
    expect(s.dataOf()).toEqual([1, 'reset', 1]);
  });
});
