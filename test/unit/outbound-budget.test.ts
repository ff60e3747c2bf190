import { StreamSubscriber } from '../../src/delivery/subscriber';
import { parseEventId } from '../../src/history/event-id';
import { SseConnection } from '../../src/sse/connection';
import { OutboundBudget } from '../../src/sse/outbound-budget';
import { RecordingResponse } from '../helpers/recording-response';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const frameOf = (bytes: number): Buffer => Buffer.from(`data:${'x'.repeat(bytes - 7)}\n\n`);

/** A replica's streams sharing one budget, each on a response the test can stall and drain. */
function replica(capacity: number) {
  let cuts = 0;
  const budget = new OutboundBudget(capacity, () => cuts++);
  const closed = new Map<string, string>();
  const open = (name: string) => {
    const res = new RecordingResponse();
    const limits = { maxEvents: 10_000, maxBytes: 1 << 20, stallMs: 30_000 };
    const connection = new SseConnection(
      name,
      'u',
      Date.now() + 60_000,
      res.asResponse(),
      limits,
      (_c, reason) => closed.set(name, reason),
      undefined,
      budget,
    );
    connection.open();
    return { res, connection };
  };
  /** A stream whose socket refused its first chunk: whatever it is sent next waits in its backlog. */
  const stalled = async (name: string) => {
    const stream = open(name);
    stream.res.accepting = false;
    stream.connection.send(frameOf(10));
    await turn();
    return stream;
  };
  return { budget, closed, open, stalled, cuts: () => cuts };
}

describe('the outbound budget of a replica', () => {
  it('keeps a running total of the backlogs as frames queue up and drain', async () => {
    const { budget, stalled } = replica(1 << 20);
    const a = await stalled('a');
    const b = await stalled('b');
    a.connection.send(frameOf(100));
    a.connection.send(frameOf(200));
    b.connection.send(frameOf(50));
    expect([budget.bytes, a.connection.queuedBytes, b.connection.queuedBytes]).toEqual([350, 300, 50]);

    // One frame goes out, then the socket refuses again: the rest stays counted.
    a.res.accepting = false;
    a.res.emit('drain');
    expect(budget.bytes).toBe(250);
    b.res.accepting = true;
    b.res.emit('drain');
    expect(budget.bytes).toBe(200);
    a.connection.close('client_closed');
    expect(budget.bytes).toBe(0);
  });

  it('counts live frames held behind a replay with the backlog, until they are released', async () => {
    const { budget, open } = replica(1 << 20);
    const { connection } = open('held');
    const subscriber = new StreamSubscriber(
      connection,
      'agui',
      undefined,
      { maxEvents: 100, maxBytes: 1 << 20 },
      () => {
        throw new Error('no epoch change expected');
      },
    );
    subscriber.hold();
    subscriber.deliver(parseEventId('e:1-1'), frameOf(100));
    subscriber.deliver(parseEventId('e:1-2'), frameOf(100));
    expect(budget.bytes).toBe(200);
    await subscriber.releasePaced(() => false);
    expect(budget.bytes).toBe(0);
    subscriber.hold();
    subscriber.deliver(parseEventId('e:1-3'), frameOf(100));
    // A cut stream's held frames go with it.
    connection.close('slow_consumer');
    expect(budget.bytes).toBe(0);
  });

  it('past its capacity, cuts the streams furthest behind first, until the total is back under seven eighths of it', async () => {
    const { budget, closed, stalled, cuts } = replica(1000);
    const small = await stalled('small');
    const middle = await stalled('middle');
    const large = await stalled('large');
    small.connection.send(frameOf(100));
    middle.connection.send(frameOf(300));
    large.connection.send(frameOf(500));
    expect([budget.bytes, cuts()]).toEqual([900, 0]);

    // 200 more bytes on the smallest backlog: the total passes 1000, and the largest goes alone.
    expect(small.connection.send(frameOf(200))).toBe(true);
    expect([...closed]).toEqual([['large', 'slow_consumer']]);
    expect(large.res.destroyed).toBe(true);
    expect([budget.bytes, cuts()]).toEqual([600, 1]);

    // Past it again by a frame of the stream now furthest behind: that stream is cut, its frame refused.
    expect(small.connection.send(frameOf(500))).toBe(false);
    expect([...closed.keys()]).toEqual(['large', 'small']);
    expect([budget.bytes, cuts()]).toEqual([300, 2]);
    expect(middle.connection.isClosed).toBe(false);
  });
});
