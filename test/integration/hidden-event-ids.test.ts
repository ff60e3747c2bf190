import { SHARED_REDIS_URL, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid } from '../helpers/wait';

const HEARTBEAT_MS = 300;

/**
 * A user's analytics events are for admins; a stream of that user without the role must not
 * learn even their ids (an id tells when an event happened), neither live, nor in the `id:`
 * an idle stream is refreshed with, nor at the end of a replay.
 */
describe('ids of events a stream may not show', () => {
  let hub: HubProcess;
  let service: string;
  const streams: SseStream[] = [];

  beforeAll(async () => {
    hub = await startReadyHub({
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: uniquePrefix(),
      SSEHUB_HEARTBEAT_MS: String(HEARTBEAT_MS),
    });
    service = await mintToken('publisher', { roles: ['service'] });
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.close();
  });

  afterAll(async () => {
    await hub.stop();
  });

  async function publish(kind: string, user: string, event: object): Promise<string> {
    const res = await fetch(`${hub.url}/api/v1/webhook/${kind}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, ...event }),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as { id: string }).id;
  }

  /** A stream of a user without the admin role, once it has its position. */
  async function open(user: string, path: string, lastEventId?: string): Promise<SseStream> {
    const headers: Record<string, string> = lastEventId === undefined ? {} : { 'Last-Event-ID': lastEventId };
    const stream = await openStream(hub.url, path, { token: await mintToken(user), headers });
    streams.push(stream);
    if (lastEventId === undefined) await stream.waitForPosition();
    return stream;
  }

  /** Waits until the stream has idled into `count` more heartbeats: its `id:` refresh has gone out by then. */
  async function idle(stream: SseStream, count = 2): Promise<void> {
    const heartbeats = (): number => stream.frames().filter((frame) => frame.event === 'heartbeat').length;
    const target = heartbeats() + count;
    await stream.waitFor(() => heartbeats() >= target, HEARTBEAT_MS * (count + 4), `${count} heartbeats`);
  }

  const ids = (stream: SseStream): string[] => stream.frames().flatMap((frame) => (frame.id ? [frame.id] : []));
  const shown = (stream: SseStream): Array<[string | undefined, string]> =>
    stream.events().map((frame) => [frame.id, frame.data]);

  it.each([
    ['an agui stream', '/api/v1/stream/agui'],
    ['a multiplexed stream of agui, a2a and system', '/api/v1/stream?kinds=agui,a2a,system'],
  ])('%s never carries the id of an analytics event, live, idle or replayed', async (_name, path) => {
    const user = uid('viewer');
    const live = await open(user, path);
    const opening = live.lastEventId() as string;

    const first = await publish('agui', user, { type: 'RUN_STARTED' });
    const between = await publish('analytics', user, { metric: 'tokens', value: 1 });
    const second = await publish('agui', user, { type: 'RUN_FINISHED' });
    // The user's newest event is one the stream may not show: an idle refresh must not move to it.
    const last = await publish('analytics', user, { metric: 'tokens', value: 2 });
    const hidden = [between, last];
    const visible = [
      [first, '{"type":"RUN_STARTED"}'],
      [second, '{"type":"RUN_FINISHED"}'],
    ];
    await live.waitForEvents(2);
    await idle(live);
    expect(shown(live)).toEqual(visible);
    expect(ids(live)).toEqual([opening, first, second]);
    expect(live.lastEventId()).toBe(second);

    // A resume from the last id announced reads the hidden event again, skips it, and idles
    // without revealing it; the next visible event follows once.
    const resumed = await open(user, path, live.lastEventId());
    await idle(resumed);
    const third = await publish('agui', user, { type: 'RUN_STARTED', n: 3 });
    await resumed.waitForEvents(1);
    await idle(resumed);
    expect(shown(resumed)).toEqual([[third, '{"type":"RUN_STARTED","n":3}']]);
    expect(ids(resumed)).toEqual([third]);

    // A resume from the opening position replays everything visible, once, and nothing hidden.
    const replayed = await open(user, path, opening);
    await replayed.waitForEvents(3);
    await idle(replayed);
    expect(shown(replayed)).toEqual([...visible, [third, '{"type":"RUN_STARTED","n":3}']]);
    for (const stream of [live, resumed, replayed]) {
      expect(ids(stream).filter((id) => hidden.includes(id))).toEqual([]);
    }
  });
});
