import { SseConnection } from '../../src/sse/connection';
import { RecordingResponse } from '../helpers/recording-response';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const frame = (n: number, size = 0): Buffer =>
  Buffer.from(`data:{"n":${n}${size ? `,"pad":"${'x'.repeat(size)}"` : ''}}\n\n`);

function open(limits = { maxEvents: 100, maxBytes: 1 << 20, stallMs: 30_000 }) {
  const res = new RecordingResponse();
  const closed: string[] = [];
  const connection = new SseConnection('c', 'u', Date.now() + 60_000, res.asResponse(), limits, (_c, reason) =>
    closed.push(reason),
  );
  connection.open();
  return { res, connection, closed };
}

describe('SSE connection write batching', () => {
  it('writes the frames of one turn as one chunk, in order, after the turn', async () => {
    const { res, connection } = open();
    for (let n = 1; n <= 3; n++) expect(connection.send(frame(n))).toBe(true);
    expect(res.writes).toEqual([]);
    await turn();
    expect(res.writes).toEqual([[1, 2, 3].map((n) => frame(n).toString()).join('')]);
    connection.send(frame(4));
    await turn();
    expect(res.writes).toHaveLength(2);
    expect(res.writes[1]).toBe(frame(4).toString());
  });

  it('writes a batch right away once it reaches 64 KB, and keeps order through the backlog after back-pressure', async () => {
    const { res, connection } = open();
    const big = 20 * 1024;
    for (let n = 1; n <= 3; n++) connection.send(frame(n, big));
    expect(res.writes).toHaveLength(0);
    res.accepting = false;
    connection.send(frame(4, big));
    // 4 x 20 KB crossed 64 KB: written at once; the socket refused more, so 5 and 6 wait in the backlog.
    expect(res.writes).toHaveLength(1);
    connection.send(frame(5));
    connection.send(frame(6));
    await turn();
    expect(res.writes).toHaveLength(1);
    res.accepting = true;
    res.emit('drain');
    expect(res.writes.slice(1)).toEqual([frame(5).toString(), frame(6).toString()]);
    const all = res.writes.join('');
    const order = [...all.matchAll(/"n":(\d+)/g)].map((m) => Number(m[1]));
    expect(order).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('delivers the pending frames before a polite close, and drops them when the client is cut', async () => {
    const polite = open();
    polite.connection.send(frame(1));
    polite.connection.closeWithRetryHint(1000);
    expect(polite.res.writes.join('')).toBe(`${frame(1).toString()}retry:1000\n\n`);
    expect(polite.res.writableEnded).toBe(true);

    const cut = open();
    cut.connection.send(frame(1));
    cut.connection.close('slow_consumer');
    await turn();
    expect(cut.res.writes).toEqual([]);
    expect(cut.res.destroyed).toBe(true);
    expect(cut.closed).toEqual(['slow_consumer']);
  });
});
