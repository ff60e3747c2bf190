import { NOT_FILED, TimerWheel, type WheelItem } from '../../src/hub/timer-wheel';
import { type ConnectionTimers, SseConnection, writeClock } from '../../src/sse/connection';
import { HEARTBEAT_FRAME } from '../../src/sse/frame';
import { RecordingResponse } from '../helpers/recording-response';

interface Item extends WheelItem {
  name: string;
}
const item = (name: string): Item => ({ name, wheelSlot: NOT_FILED });

function taken(wheel: TimerWheel<Item>, now: number): string[] {
  const names: string[] = [];
  wheel.takeDue(now, (it) => names.push(it.name));
  return names;
}

describe('timer wheel', () => {
  it('hands items over in deadline order, never before their slot has ended', () => {
    const wheel = new TimerWheel<Item>(100, 0);
    const [a, b, c] = [item('a'), item('b'), item('c')];
    wheel.file(c, 350);
    wheel.file(a, 120);
    wheel.file(b, 250);
    expect(wheel.size).toBe(3);
    expect(taken(wheel, 199)).toEqual([]);
    expect(taken(wheel, 200)).toEqual(['a']);
    expect(taken(wheel, 1000)).toEqual(['b', 'c']);
    expect(wheel.size).toBe(0);
    expect(a.wheelSlot).toBe(NOT_FILED);
  });

  it('moves a re-filed item, and forgets a removed one', () => {
    const wheel = new TimerWheel<Item>(100, 0);
    const [a, b] = [item('a'), item('b')];
    wheel.file(a, 100);
    wheel.file(b, 100);
    wheel.file(a, 500);
    wheel.remove(b);
    wheel.remove(b);
    expect(wheel.size).toBe(1);
    expect(taken(wheel, 400)).toEqual([]);
    expect(taken(wheel, 500)).toEqual(['a']);
  });

  it('takes a past deadline on the next call, and what a visit files again only on a later one', () => {
    const wheel = new TimerWheel<Item>(100, 1000);
    const a = item('a');
    wheel.file(a, 0);
    const visits: number[] = [];
    wheel.takeDue(1000, (it) => {
      visits.push(1);
      wheel.file(it, 0);
    });
    expect(visits).toHaveLength(1);
    expect(taken(wheel, 1100)).toEqual(['a']);
  });

  it('after a long pause takes only the filled slots, still in order', () => {
    const wheel = new TimerWheel<Item>(1, 0);
    wheel.file(item('late'), 9_000_000);
    wheel.file(item('early'), 5);
    expect(taken(wheel, 10_000_000)).toEqual(['early', 'late']);
  });
});

describe('connection deadlines', () => {
  const limits = { maxEvents: 4, maxBytes: 1 << 20, stallMs: 5000 };
  const heartbeatMs = 1000;

  function open(expiresAt = Date.now() + 3_600_000, timers?: ConnectionTimers) {
    const res = new RecordingResponse();
    const closed: string[] = [];
    const connection = new SseConnection(
      'c',
      'u',
      expiresAt,
      res.asResponse(),
      limits,
      (_c, reason) => closed.push(reason),
      timers,
    );
    connection.open();
    return { res, connection, closed };
  }

  it('is due for a heartbeat one interval after its last write, and writes the shared frame as is', async () => {
    const start = Date.now();
    writeClock.now = start;
    const { res, connection } = open();
    expect(connection.nextDeadline(heartbeatMs)).toBeGreaterThanOrEqual(start + heartbeatMs);
    writeClock.now = start + 600;
    connection.send(Buffer.from('data:x\n\n'));
    await new Promise((resolve) => setImmediate(resolve));
    // The write moved the deadline; the hub finds that when it pops the old one.
    expect(connection.nextDeadline(heartbeatMs)).toBe(start + 1600);
    expect(connection.tick(start + 1000, heartbeatMs)).toBe(false);
    expect(connection.tick(start + 1600, heartbeatMs)).toBe(true);
    expect(res.writes.at(-1)).toBe(HEARTBEAT_FRAME.toString());
    expect(connection.nextDeadline(heartbeatMs)).toBe(start + 2600);
  });

  it('is due at its token expiry when that comes first, and closes then', () => {
    const expiresAt = Date.now() + 300;
    const { connection, closed } = open(expiresAt);
    expect(connection.nextDeadline(heartbeatMs)).toBe(expiresAt);
    expect(connection.tick(expiresAt, heartbeatMs)).toBe(false);
    expect(closed).toEqual(['token_expired']);
  });

  it('asks to be filed again when it becomes congested, and is then due for a stall check', () => {
    const refiled: number[] = [];
    const timers: ConnectionTimers = { refile: (c) => refiled.push(c.nextDeadline(heartbeatMs)) };
    const { res, connection, closed } = open(undefined, timers);
    res.accepting = false;
    const before = Date.now();
    connection.send(Buffer.from('data:x\n\n'));
    connection.flushPending();
    expect(refiled).toHaveLength(1);
    expect(refiled[0]).toBeGreaterThanOrEqual(before + limits.stallMs);
    expect(connection.tick((refiled[0] as number) - 1, heartbeatMs)).toBe(false);
    expect(closed).toEqual([]);
    expect(connection.tick(refiled[0] as number, heartbeatMs)).toBe(false);
    expect(closed).toEqual(['slow_consumer']);
  });

  it('asks to be filed again when its socket drains, back on the heartbeat schedule', () => {
    const refiled: number[] = [];
    const timers: ConnectionTimers = { refile: (c) => refiled.push(c.nextDeadline(heartbeatMs)) };
    const { res, connection } = open(undefined, timers);
    res.accepting = false;
    connection.send(Buffer.from('data:x\n\n'));
    connection.flushPending();
    connection.send(Buffer.from('data:y\n\n'));
    writeClock.now = Date.now();
    res.accepting = true;
    res.emit('drain');
    expect(refiled).toHaveLength(2);
    expect(refiled[1]).toBe(writeClock.now + heartbeatMs);
    expect(refiled[1]).toBeLessThan(refiled[0] as number);
  });
});
