import { Redis } from 'ioredis';
import { userKeys } from '../../src/transport/redis/library';
import {
  MAX_ID_CLOCK_LEAD_MS,
  MAX_JSON_DEPTH,
  REJECT_REASONS,
  type RejectReason,
  validateEvent,
} from '../../src/wire/envelope';
import { SHARED_REDIS_URL, metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { userHistoryEvents } from '../helpers/redis-user';
import { openStream, sleep, type SseStream } from '../helpers/sse-client';
import { mintToken, unsignedToken } from '../helpers/tokens';

type RejectCounts = Record<RejectReason, number>;

/** A hub's ssehub_events_rejected_total, every reason. */
async function rejectedCounts(hub: HubProcess): Promise<RejectCounts> {
  const counts = {} as RejectCounts;
  for (const reason of REJECT_REASONS) {
    counts[reason] = await metricValue(hub, `ssehub_events_rejected_total{reason="${reason}"}`);
  }
  return counts;
}

function countedSince(before: RejectCounts, after: RejectCounts): RejectCounts {
  const counts = {} as RejectCounts;
  for (const reason of REJECT_REASONS) counts[reason] = after[reason] - before[reason];
  return counts;
}

/** The reasons counted at all, so an exact comparison also says nothing else was counted. */
function nonZero(counts: RejectCounts): Partial<RejectCounts> {
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n !== 0));
}

/** Two real hub processes on one Redis: the shape of every production deployment. */
/** Every stream opens with an `id:` alone: its position in the user's history (the origin, for a new user). */
function afterPosition(raw: string): string {
  const match = /^id:[0-9a-z]+:0-0\n\n/.exec(raw);
  if (!match) throw new Error(`stream did not open with its position: ${JSON.stringify(raw.slice(0, 80))}`);
  return raw.slice(match[0].length);
}

describe('two replicas over Redis', () => {
  const prefix = uniquePrefix();
  let a: HubProcess;
  let b: HubProcess;
  let redis: Redis;
  const streams: SseStream[] = [];

  const publish = (kind: string, payload: string): Promise<number> => redis.publish(`${prefix}:${kind}`, payload);
  const envelope = (userId: string, event: string): string => `{"user_id":${JSON.stringify(userId)},"event":${event}}`;
  const open = async (hub: HubProcess, path: string, userId: string, roles: string[] = []): Promise<SseStream> => {
    const stream = await openStream(hub.url, path, { token: await mintToken(userId, { roles }) });
    streams.push(stream);
    return stream;
  };

  /** Opens a stream and waits for its position: sent once the replica watches the user's channel. */
  const openPositioned = async (hub: HubProcess, path: string, userId: string): Promise<SseStream> => {
    const stream = await open(hub, path, userId);
    await stream.waitForPosition(10_000, `${userId}'s opening position`);
    return stream;
  };

  beforeAll(async () => {
    const env = {
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: prefix,
      SSEHUB_MAX_CONNECTIONS_PER_USER: '3',
      SSEHUB_MAX_EVENT_BYTES: '65536',
    };
    [a, b] = await Promise.all([startReadyHub(env), startReadyHub(env)]);
    redis = new Redis(SHARED_REDIS_URL);
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.close();
  });

  afterAll(async () => {
    redis.disconnect();
    await Promise.all([a.stop(), b.stop()]);
  });

  it('delivers every event exactly once to every connection of the user, on both replicas', async () => {
    const conns = [
      await open(a, '/api/v1/stream/agui', 'alice'),
      await open(a, '/api/v1/stream/agui', 'alice'),
      await open(b, '/api/v1/stream/agui', 'alice'),
      await open(b, '/api/v1/stream/agui', 'alice'),
    ];
    const service = await mintToken('backend', { roles: ['service'] });
    for (let i = 0; i < 20; i++) {
      if (i % 2 === 0) {
        await publish('agui', envelope('alice', `{"type":"TEXT_MESSAGE_CONTENT","seq":${i}}`));
      } else {
        // The webhook on replica A publishes through Redis too: no local shortcut, no echo.
        const res = await fetch(`${a.url}/api/v1/webhook/agui`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${service}`, 'Content-Type': 'application/json' },
          body: `{"user_id":"alice","type":"TEXT_MESSAGE_CONTENT","seq":${i}}`,
        });
        expect(res.status).toBe(202);
        const bytes = Buffer.byteLength(`{"type":"TEXT_MESSAGE_CONTENT","seq":${i}}`);
        expect(await res.json()).toEqual({
          status: 'broadcasted',
          connection_count: 2, // alice's streams on replica A; B has two more
          replicas: 2,
          kind: 'agui',
          user_id: 'alice',
          transport: 'redis',
          bytes,
          id: expect.stringMatching(/^[0-9a-z]+:\d+-\d+$/),
        });
      }
    }
    for (const conn of conns) {
      const events = await conn.waitForEvents(20);
      await sleep(200);
      const seqs = conn.events().map((e) => (JSON.parse(e.data) as { seq: number }).seq);
      expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i));
      expect(events.length).toBe(20);
    }
  });

  it("never shows one user another user's events", async () => {
    const alice = await open(a, '/api/v1/stream/contexts', 'alice');
    const bob = await open(b, '/api/v1/stream/contexts', 'bob');
    await publish('agui', envelope('bob', '{"type":"FOR_BOB"}'));
    await publish('system', envelope('alice', '{"type":"FOR_ALICE"}'));
    await publish('a2a', envelope('alice ', '{"type":"LOOKALIKE"}'));
    await bob.waitForEvents(1);
    await alice.waitForEvents(1);
    await sleep(200);
    expect(bob.events().map((e) => e.data)).toEqual(['{"protocol":"agui","event":{"type":"FOR_BOB"}}']);
    expect(alice.events().map((e) => e.data)).toEqual(['{"protocol":"system","event":{"type":"FOR_ALICE"}}']);
  });

  it('sends golden frames on every stream', async () => {
    const agui = await open(b, '/api/v1/stream/agui', 'gold');
    const a2a = await open(b, '/api/v1/stream/a2a', 'gold');
    const contexts = await open(a, '/api/v1/stream/contexts', 'gold');
    const analytics = await open(a, '/api/v1/analytics/stream', 'gold', ['admin']);
    const aguiEvent =
      '{"type":"TEXT_MESSAGE_CONTENT","timestamp":"2026-11-21T10:00:00.123456789Z","messageId":"m1","delta":"h\\u00e9\\"llo","n":9007199254740993}';
    const a2aEvent =
      '{"type":"TASK_STATUS_UPDATE","timestamp":"2026-11-21T10:00:01Z","taskId":"t","contextId":"c","state":"TASK_STATE_WORKING","unknownField":{"z":1,"a":[]}}';
    const systemEvent = '{"type":"CONTEXT_CREATED","timestamp":"2026-11-21T10:00:02Z","contextId":"c","name":"Ctx"}';
    const analyticsEvent =
      '{"type":"PAGE_VIEW","timestamp":"2026-11-21T10:00:03Z","session_id":"s","user_id":null,"page_url":"/","content_id":null,"referrer":null}';
    await publish('agui', envelope('gold', aguiEvent));
    await publish('a2a', envelope('gold', a2aEvent));
    await publish('system', envelope('gold', systemEvent));
    await publish('analytics', envelope('gold', analyticsEvent));
    await contexts.waitForEvents(3);
    await Promise.all([agui.waitForEvents(1), a2a.waitForEvents(1), analytics.waitForEvents(1)]);
    await sleep(200);
    expect(afterPosition(agui.raw())).toBe(`data:${aguiEvent}\n\n`);
    expect(afterPosition(a2a.raw())).toBe(`data:${a2aEvent}\n\n`);
    expect(afterPosition(analytics.raw())).toBe(`data:${analyticsEvent}\n\n`);
    expect(afterPosition(contexts.raw())).toBe(
      `data:{"protocol":"agui","event":${aguiEvent}}\n\n` +
        `data:{"protocol":"a2a","event":${a2aEvent}}\n\n` +
        `data:{"protocol":"system","event":${systemEvent}}\n\n`,
    );
    expect(agui.status).toBe(200);
    expect(agui.headers['content-type']).toBe('text/event-stream');
    expect(agui.headers['cache-control']).toBe('no-cache, no-transform');
    expect(agui.headers['x-accel-buffering']).toBe('no');
    expect(agui.headers['content-encoding']).toBeUndefined();
  });

  it('keeps multi-line payloads inside their frame', async () => {
    const stream = await open(a, '/api/v1/stream/agui', 'lines');
    await publish('agui', envelope('lines', '{\n"type":"X",\r\n  "v":"data:evil"\r}'));
    await stream.waitForEvents(1);
    expect(afterPosition(stream.raw())).toBe('data:{\ndata:"type":"X",\ndata:   "v":"data:evil"\ndata:}\n\n');
    expect(JSON.parse(stream.events()[0]?.data ?? '')).toEqual({ type: 'X', v: 'data:evil' });
  });

  it('answers 429 with no body past the per-user cap, per stream', async () => {
    for (let i = 0; i < 3; i++) expect((await open(a, '/api/v1/stream/a2a', 'capped')).status).toBe(200);
    const refused = await open(a, '/api/v1/stream/a2a', 'capped');
    expect(refused.status).toBe(429);
    await refused.ended;
    expect(refused.raw()).toBe('');
    expect((await open(a, '/api/v1/stream/agui', 'capped')).status).toBe(200);
    expect((await open(b, '/api/v1/stream/a2a', 'capped')).status).toBe(200);
    streams[0]?.close();
    await sleep(100);
    expect((await open(a, '/api/v1/stream/a2a', 'capped')).status).toBe(200);
  });

  it('refuses bad credentials with 401 and non-admins on analytics with 403', async () => {
    const status = async (path: string, token?: string, cookie?: string): Promise<number> => {
      const stream = await openStream(a.url, path, { token, cookie });
      stream.close();
      return stream.status;
    };
    expect(await status('/api/v1/stream/agui')).toBe(401);
    expect(await status('/api/v1/stream/agui', await mintToken('u', { expiresIn: -60 }))).toBe(401);
    expect(
      await status('/api/v1/stream/agui', await mintToken('u', { secret: 'wrong-secret-0123456789abcdef0123456' })),
    ).toBe(401);
    expect(await status('/api/v1/stream/agui', unsignedToken('u'))).toBe(401);
    expect(await status('/api/v1/analytics/stream', await mintToken('u'))).toBe(403);
    expect(await status('/api/v1/analytics/stream', await mintToken('u', { roles: ['admin'] }))).toBe(200);
    expect(await status('/api/v1/stream/a2a', undefined, `access_token=${await mintToken('u')}`)).toBe(200);
    const viaQuery = await fetch(`${a.url}/api/v1/stream/agui?access_token=${await mintToken('u')}`);
    expect(viaQuery.status).toBe(401);
    await viaQuery.body?.cancel();
  });

  it('lets a user publish only to itself unless the token has the service role', async () => {
    const post = async (token: string, body: string, kind = 'agui'): Promise<number> =>
      (
        await fetch(`${b.url}/api/v1/webhook/${kind}`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}` },
          body,
        })
      ).status;
    const carol = await mintToken('carol');
    expect(await post(carol, '{"user_id":"carol","type":"A"}')).toBe(202);
    expect(await post(carol, '{"user_id":"dave","type":"A"}')).toBe(403);
    expect(await post(await mintToken('svc', { roles: ['service'] }), '{"user_id":"dave","type":"A"}')).toBe(202);
    expect(await post(carol, '{"user_id":"carol","type":"A"}', 'nope')).toBe(404);
    expect(await post(carol, '{"type":"A"}')).toBe(400);
    expect(await post(carol, 'not json')).toBe(400);
    expect(await post(carol, `{"user_id":"carol","pad":"${'x'.repeat(70000)}"}`)).toBe(413);
    expect(await post('garbage', '{"user_id":"carol","type":"A"}')).toBe(401);
  });

  it('drops events for users it holds no stream of before parsing them, and still validates the ones it delivers', async () => {
    const held = await open(b, '/api/v1/stream/agui', 'skip-held');
    const skippedBefore = await metricValue(b, 'ssehub_events_skipped_total');
    const malformedBefore = await metricValue(b, 'ssehub_events_rejected_total{reason="malformed_json"}');
    // Unparseable after the user id: skipped unread on a replica that does not hold the user.
    await publish('agui', '{"user_id":"skip-nobody","event":{"type":"X"');
    await publish('agui', `{"id":"k:1-1","user_id":"skip-nobody","event":{"type":"X"}}`);
    // The held user's broken envelope is parsed, and rejected.
    await publish('agui', '{"user_id":"skip-held","event":{"type":"X"');
    await publish('agui', envelope('skip-held', '{"type":"DELIVERED"}'));
    await held.waitForEvents(1);
    expect(held.events().map((e) => e.data)).toEqual(['{"type":"DELIVERED"}']);
    expect(await metricValue(b, 'ssehub_events_skipped_total')).toBe(skippedBefore + 2);
    expect(await metricValue(b, 'ssehub_events_rejected_total{reason="malformed_json"}')).toBe(malformedBefore + 1);
  });

  it('survives bad input on the kind channels: counted, logged, and nothing leaks to anyone', async () => {
    const victim = await openPositioned(b, '/api/v1/stream/contexts', 'victim');
    const bad = [
      ['agui', 'not json at all'],
      ['agui', '{"user_id":"victim","event":{"type":"X"}'],
      ['agui', '{"event":{"type":"NO_USER"}}'],
      ['agui', '{"user_id":7,"event":{}}'],
      ['a2a', '{"user_id":"victim","event":"{\\"type\\":\\"STRING\\"}"}'],
      ['system', '{"user_id":"victim","event":[1,2]}'],
      ['agui', `{"user_id":"victim","event":{"pad":"${'x'.repeat(70000)}"}}`],
      ['agui', '[]'],
    ] as const;
    const before = await rejectedCounts(b);
    for (const [kind, payload] of bad) expect(await publish(kind, payload)).toBe(2);
    // Replicas subscribe exactly the four kind channels: one of another name reaches nobody.
    expect(await publish('nonsense', envelope('victim', '{"type":"UNKNOWN_KIND"}'))).toBe(0);
    await publish('agui', envelope('victim', '{"type":"STILL_ALIVE"}'));
    await victim.waitForEvents(1);
    await sleep(200);
    expect(victim.events().map((e) => e.data)).toEqual(['{"protocol":"agui","event":{"type":"STILL_ALIVE"}}']);
    const counted = countedSince(before, await rejectedCounts(b));
    expect(counted.malformed_json).toBe(2);
    expect(counted.too_large).toBeGreaterThanOrEqual(1);
    expect(counted.invalid_event).toBeGreaterThanOrEqual(2);
    expect(counted.unknown_kind).toBe(0);
    expect(b.output()).toContain('dropped invalid event');
    expect((await fetch(`${b.url}/livez`)).status).toBe(200);
  });

  it('stores what FCALL accepts but the hub refuses, then drops it at delivery and at every replay, counted once', async () => {
    const user = 'fcall-victim';
    const bystander = await openPositioned(b, '/api/v1/stream/agui', 'fcall-bystander');
    // The stream's opening position is the user's epoch: the history read created it.
    const victim = await openPositioned(b, '/api/v1/stream/agui', user);
    const position = victim.lastEventId() as string;
    // Each passes the function (1..max bytes, from { to }) and fails the replicas' JSON check.
    const bad: Array<[RejectReason, Buffer]> = [
      ['malformed_json', Buffer.from('{"a":NaN}')],
      ['malformed_json', Buffer.from('{"a":1,}')],
      ['invalid_utf8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d])],
      ['too_deep', Buffer.from(`${'{"a":'.repeat(MAX_JSON_DEPTH)}{}${'}'.repeat(MAX_JSON_DEPTH)}`)],
    ];
    for (const [reason, event] of bad)
      expect({ reason, hub: validateEvent(event, 65536)?.reason }).toEqual({ reason, hub: reason });
    const expected: Partial<Record<RejectReason, number>> = {};
    for (const [reason] of bad) expected[reason] = (expected[reason] ?? 0) + 1;

    const before = await rejectedCounts(b);
    const { meta, history } = userKeys(prefix, user);
    const ids: string[] = [];
    for (const [, event] of bad)
      ids.push(String(await redis.call('FCALL', 'ssehub_publish', '2', meta, history, 'agui', event)));
    const good = String(await redis.call('FCALL', 'ssehub_publish', '2', meta, history, 'agui', '{"type":"GOOD"}'));
    // Every one got an id of the user's epoch and is kept in the history as published.
    expect(ids.map((id) => id.split(':')[0])).toEqual(bad.map(() => position.split(':')[0]));
    expect(await userHistoryEvents(redis, prefix, user)).toEqual([
      ...bad.map(([, event]) => event),
      Buffer.from('{"type":"GOOD"}'),
    ]);

    await victim.waitForEvents(1);
    await sleep(200);
    expect(victim.events().map((e) => [e.id, e.data])).toEqual([[good, '{"type":"GOOD"}']]);
    expect(nonZero(countedSince(before, await rejectedCounts(b)))).toEqual(expected);
    expect(bystander.events()).toEqual([]);

    // Resumes from the opening position, twice on the replica that counted the drops live and once
    // on the other, replay the good event alone: the bad entries are dropped again, not counted again.
    const beforeReplayOnA = await rejectedCounts(a);
    for (const hub of [b, b, a]) {
      const resumed = await openStream(hub.url, '/api/v1/stream/agui', {
        token: await mintToken(user),
        headers: { 'Last-Event-ID': position },
      });
      streams.push(resumed);
      await resumed.waitForEvents(1);
      await sleep(200);
      expect(resumed.events().map((e) => [e.id, e.data])).toEqual([[good, '{"type":"GOOD"}']]);
    }
    expect(nonZero(countedSince(before, await rejectedCounts(b)))).toEqual(expected);
    expect(nonZero(countedSince(beforeReplayOnA, await rejectedCounts(a)))).toEqual({});
  });

  it("drops records on a user's channel that no function wrote: unknown kinds, bad ids, broken frames", async () => {
    const user = 'spublish-victim';
    const victim = await openPositioned(b, '/api/v1/stream/agui', user);
    const epoch = (victim.lastEventId() as string).split(':')[0];
    const { channel } = userKeys(prefix, user);
    const record = (kind: string, id: string, event: string): string =>
      `${kind} ${id} ${Buffer.byteLength(event)} ${event}`;
    const before = await rejectedCounts(b);
    // One message, records back to back: the bad ones are dropped, the rest still go.
    await redis.spublish(
      channel,
      record('nonsense', `${epoch}:1-1`, '{"type":"UNKNOWN"}') +
        record('agui', 'not-an-id', '{"type":"BAD_ID"}') +
        record('agui', `${epoch}:${Date.now() + MAX_ID_CLOCK_LEAD_MS + 60_000}-1`, '{"type":"FUTURE"}') +
        record('agui', `${epoch}:${Date.now()}-1`, '{"type":"KEPT"}'),
    );
    // A broken frame ends its message.
    await redis.spublish(channel, 'agui 1:2');
    await redis.spublish(channel, record('agui', `${epoch}:${Date.now()}-2`, '{"type":"AFTER"}'));
    await victim.waitForEvents(2);
    await sleep(200);
    expect(victim.events().map((e) => e.data)).toEqual(['{"type":"KEPT"}', '{"type":"AFTER"}']);
    expect(nonZero(countedSince(before, await rejectedCounts(b)))).toEqual({
      unknown_kind: 1,
      invalid_id: 2,
      invalid_event: 1,
    });
  });

  it('reports health, readiness and metrics', async () => {
    expect(await (await fetch(`${a.url}/health`)).json()).toEqual({ status: 'ok', events: { relay: 'listening' } });
    expect((await fetch(`${a.url}/readyz`)).status).toBe(200);
    await open(a, '/api/v1/stream/contexts', 'metered');
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toMatch(/^sse_active_connections\{channel="context"\} [1-9]/m);
    expect(metrics).toContain('ssehub_delivery_seconds_bucket');
    expect(metrics).toContain('nodejs_eventloop_lag_seconds');
    expect(metrics).not.toMatch(/user(_id)?="/);
  });
});
