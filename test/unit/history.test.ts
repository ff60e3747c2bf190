import { comparePositions, formatEventId, parseEventId, type EventId } from '../../src/history/event-id';
import { planReplay, type HistoryEntry, type HistoryQuery, type StoredHistory } from '../../src/history/history';
import { MemoryHistory } from '../../src/history/memory-history';

const id = (ms: number, seq: number, epoch = 'e1'): EventId => ({ epoch, ms, seq });
const entry = (ms: number, seq: number, kind = 'agui'): HistoryEntry => ({
  id: id(ms, seq),
  kind,
  event: Buffer.from(`{"seq":${seq}}`),
});

/** A user's history holding seqs first..last (ms = 1000 + seq), with a page of `pageSize` after `from`. */
function stored(first: number, last: number, from?: EventId, pageSize = 100): StoredHistory {
  const all = [];
  for (let seq = first; seq <= last; seq++) all.push(entry(1000 + seq, seq));
  const page = from ? all.filter((e) => comparePositions(e.id, from) > 0).slice(0, pageSize) : [];
  return {
    epoch: 'e1',
    last: last > 0 ? id(1000 + last, last) : undefined,
    first: all[0]?.id,
    page,
    ttlMs: 3_600_000,
  };
}

/** Every bound wide open but the one a test looks at. */
const query = (bounds: Partial<HistoryQuery> = {}): HistoryQuery => ({
  maxEntries: 100,
  maxBytes: 1 << 20,
  replayMax: 100,
  ...bounds,
});

describe('event ids', () => {
  it('round-trips and refuses anything else', () => {
    expect(parseEventId('abc9:1795266279084-42')).toEqual({ epoch: 'abc9', ms: 1795266279084, seq: 42 });
    expect(formatEventId({ epoch: 'abc9', ms: 5, seq: 0 })).toBe('abc9:5-0');
    for (const bad of [
      '',
      '42',
      'e:1',
      'e:1-',
      'E:1-1',
      'e:1-1\nid:2',
      'e:-1-1',
      'e:1-1 ',
      `e:${'9'.repeat(17)}-1`,
      'e:99999999999999999-1',
    ]) {
      expect(parseEventId(bad)).toBeUndefined();
    }
  });

  it('orders by time, then sequence', () => {
    expect(comparePositions(id(2, 1), id(1, 9))).toBeGreaterThan(0);
    expect(comparePositions(id(1, 2), id(1, 3))).toBeLessThan(0);
    expect(comparePositions(id(1, 2), id(1, 2))).toBe(0);
  });
});

describe('planReplay', () => {
  it('without a requested id reports only the head (or the origin for a new user)', () => {
    expect(planReplay(undefined, stored(1, 3), 10)).toEqual({ ok: true, head: id(1003, 3), entries: [], more: false });
    expect(planReplay(undefined, stored(1, 0), 10)).toEqual({ ok: true, head: id(0, 0), entries: [], more: false });
  });

  it('replays everything after the requested id, proven by the entry that follows it', () => {
    const from = id(1002, 2);
    const read = planReplay(from, stored(1, 5, from), 10);
    expect(read.ok && read.entries.map((e) => e.id.seq)).toEqual([3, 4, 5]);
    expect(read).toMatchObject({ more: false });
  });

  it('says more follows when the page ends before the head', () => {
    const from = id(1002, 2);
    const read = planReplay(from, stored(1, 9, from, 3), 10);
    expect(read.ok && read.entries.map((e) => e.id.seq)).toEqual([3, 4, 5]);
    expect(read).toMatchObject({ more: true, head: id(1009, 9) });
  });

  it('replays when the requested entry was trimmed but its successor is retained', () => {
    const from = id(1002, 2);
    const read = planReplay(from, stored(3, 5, from), 10);
    expect(read.ok && read.entries.map((e) => e.id.seq)).toEqual([3, 4, 5]);
  });

  it('does not mistake a sequence that restarted after a silence for the continuation', () => {
    // The client saw seq 2 long ago; the user's counter expired and a new sequence reached seq 3.
    const from = id(1002, 2);
    const restarted = { ...stored(3, 5, from), ttlMs: 1000 };
    restarted.page = [entry(5000, 3), entry(5001, 4)];
    expect(planReplay(from, restarted, 10)).toMatchObject({ ok: false, reason: 'trimmed' });
  });

  it('resets when events after the requested id were trimmed', () => {
    const from = id(1002, 2);
    expect(planReplay(from, stored(4, 6, from), 10)).toEqual({ ok: false, reason: 'trimmed', head: id(1006, 6) });
  });

  it('replays from the origin of a user who had no history yet', () => {
    const from = id(0, 0);
    const read = planReplay(from, stored(1, 2, from), 10);
    expect(read.ok && read.entries.map((e) => e.id.seq)).toEqual([1, 2]);
    expect(planReplay(from, stored(1, 0, from), 10)).toEqual({ ok: true, head: id(0, 0), entries: [], more: false });
  });

  it('is empty at the head and resets past it', () => {
    expect(planReplay(id(1003, 3), stored(1, 3, id(1003, 3)), 10)).toEqual({
      ok: true,
      head: id(1003, 3),
      entries: [],
      more: false,
    });
    expect(planReplay(id(9999, 1), stored(1, 3, id(9999, 1)), 10)).toMatchObject({ ok: false, reason: 'unknown_id' });
  });

  it('resets an id of another epoch as lost history', () => {
    expect(planReplay(id(1002, 2, 'old'), stored(1, 3, id(1002, 2)), 10)).toMatchObject({
      ok: false,
      reason: 'history_lost',
    });
  });

  it("resets an id that is within retention but not in this history (another user's)", () => {
    const foreign = id(1002, 7);
    expect(planReplay(foreign, stored(1, 5, foreign), 10)).toMatchObject({ ok: false, reason: 'unknown_id' });
  });

  it('resets instead of replaying more than the cap, counting events past the page too', () => {
    const from = id(1001, 1);
    expect(planReplay(from, stored(1, 5, from, 2), 3)).toMatchObject({ ok: false, reason: 'replay_limit' });
    const read = planReplay(from, stored(1, 4, from, 2), 3);
    expect(read.ok && read.entries).toHaveLength(2);
    // Later pages continue a replay already admitted.
    expect(planReplay(from, stored(1, 5, from, 2))).toMatchObject({ ok: true, more: true });
  });
});

describe('MemoryHistory', () => {
  const limits = { maxEntries: 3, maxBytes: 1 << 20, ttlMs: 10_000 };

  it("numbers each user's events from 1 and keeps ids increasing when the clock steps back", () => {
    const history = new MemoryHistory(limits);
    const a1 = history.append('a', 'agui', Buffer.from('{}'), 5000);
    const b1 = history.append('b', 'agui', Buffer.from('{}'), 5000);
    const a2 = history.append('a', 'a2a', Buffer.from('{}'), 4000);
    expect([a1.seq, b1.seq, a2.seq]).toEqual([1, 1, 2]);
    expect(comparePositions(a2, a1)).toBeGreaterThan(0);
  });

  it('caps entries per user and turns a resume past them into a reset', () => {
    const history = new MemoryHistory(limits);
    const ids = [1, 2, 3, 4, 5].map((n) => history.append('u', 'agui', Buffer.from(`{"n":${n}}`), 1000 + n));
    const fromThird = history.read('u', ids[2], query(), 1010);
    expect(fromThird.ok && fromThird.entries.map((e) => e.event.toString())).toEqual(['{"n":4}', '{"n":5}']);
    expect(history.read('u', ids[0], query(), 1010)).toMatchObject({ ok: false, reason: 'trimmed' });
  });

  it('keeps at most the byte budget per user, oldest out first, but always the newest event', () => {
    const history = new MemoryHistory({ maxEntries: 100, maxBytes: 25, ttlMs: 10_000 });
    const tenBytes = (n: number) => Buffer.from(`{"n":"${n}"}`.padEnd(10, ' '));
    const ids = [1, 2, 3, 4].map((n) => history.append('u', 'agui', tenBytes(n), 1000 + n));
    expect(history.retainedBytes('u')).toBe(20);
    expect(history.read('u', ids[0], query(), 1010)).toMatchObject({ ok: false, reason: 'trimmed' });
    const kept = history.read('u', ids[1], query(), 1010);
    expect(kept.ok && kept.entries.map((e) => e.id.seq)).toEqual([3, 4]);
    history.append('u', 'agui', Buffer.from(`{"big":"${'x'.repeat(40)}"}`), 1010);
    expect(history.read('u', ids[3], query(), 1011)).toMatchObject({ ok: true, entries: [{ id: { seq: 5 } }] });
    expect(history.retainedBytes('u')).toBe(50);
  });

  it('reads a page within its entry and byte bounds, the first entry however large', () => {
    const history = new MemoryHistory({ maxEntries: 100, maxBytes: 1 << 20, ttlMs: 10_000 });
    const ids = [10, 10, 30, 10].map((size, i) => history.append('u', 'agui', Buffer.alloc(size, 0x20), 1000 + i));
    const origin = { epoch: history.epoch, ms: 0, seq: 0 };
    const seqs = (read: ReturnType<MemoryHistory['read']>) => (read.ok ? read.entries.map((e) => e.id.seq) : read);
    expect(seqs(history.read('u', origin, query({ maxEntries: 3 }), 1010))).toEqual([1, 2, 3]);
    expect(seqs(history.read('u', origin, query({ maxBytes: 25 }), 1010))).toEqual([1, 2]);
    expect(seqs(history.read('u', ids[1], query({ maxBytes: 25 }), 1010))).toEqual([3]);
    expect(history.read('u', ids[1], query({ maxBytes: 25 }), 1010)).toMatchObject({ more: true });
    expect(history.read('u', ids[2], query({ maxBytes: 25 }), 1010)).toMatchObject({ more: false });
  });

  it('drops entries past their time to live', () => {
    const history = new MemoryHistory(limits);
    const first = history.append('u', 'agui', Buffer.from('{}'), 1000);
    history.append('u', 'agui', Buffer.from('{}'), 8000);
    history.append('u', 'agui', Buffer.from('{}'), 12_000);
    const read = history.read('u', first, query(), 12_500);
    expect(read.ok && read.entries.map((e) => e.id.seq)).toEqual([2, 3]);
    history.sweep(30_000);
    expect(history.read('u', undefined, query(), 30_000)).toMatchObject({ ok: true, head: { ms: 0, seq: 0 } });
  });

  it('has its own epoch: ids of another process are lost history', () => {
    const before = new MemoryHistory(limits).append('u', 'agui', Buffer.from('{}'));
    expect(new MemoryHistory(limits).read('u', before, query())).toMatchObject({ ok: false, reason: 'history_lost' });
  });
});
