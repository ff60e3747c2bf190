import Koa from 'koa';
import { Registry } from 'prom-client';
import { AuthError, EventRejectedError, EventValidationError, createHub, type Hub, type Principal } from '../../src';
import { createKoaRouter } from '../../src/koa';
import { RedisTransport } from '../../src/redis';
import { listen, recordingLogger } from '../helpers/embedded-hub';
import { SHARED_REDIS_URL, uniquePrefix } from '../helpers/hub-process';
import { openStream } from '../helpers/sse-client';
import { until, uid } from '../helpers/wait';

const principal = (userId: string, roles: string[] = []): Principal => ({
  userId,
  roles: new Set(roles),
  expiresAt: Number.POSITIVE_INFINITY,
});

/** A bare node:http host that authenticates by an `x-user` header and serves the agui stream. */
async function bareHost(hub: Hub) {
  return listen((req, res) => {
    const user = req.headers['x-user'];
    if (typeof user !== 'string') {
      res.writeHead(401).end();
      return;
    }
    hub.serveStream(req, res, principal(user), 'agui');
  });
}

describe('a hub embedded in a bare node:http server', () => {
  let hub: Hub;
  let host: Awaited<ReturnType<typeof bareHost>>;

  beforeAll(async () => {
    hub = createHub();
    await hub.start();
    host = await bareHost(hub);
  });

  afterAll(async () => {
    await host.close();
    await hub.close();
  });

  it('delivers a typed event published from the host to the user stream, byte for byte, with its id', async () => {
    const user = uid('bare');
    const stream = await openStream(host.url, '/', { headers: { 'x-user': user } });
    expect(stream.status).toBe(200);
    await until(() => hub.connectionCount(user) === 1, 2000, 'the stream to register');
    const published = await hub.agui.publish(user, { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'hi' });
    const [event] = await stream.waitForEvents(1, 2000);
    expect(event).toMatchObject({
      id: published.id,
      data: '{"type":"TEXT_MESSAGE_CONTENT","messageId":"m1","delta":"hi"}',
    });
    stream.close();
    await until(() => hub.connectionCount(user) === 0, 2000, 'the stream to unregister');
  });

  it('counts connections per user and per stream, and lists connected users', async () => {
    const user = uid('count');
    const streams = await Promise.all([1, 2].map(() => openStream(host.url, '/', { headers: { 'x-user': user } })));
    await until(() => hub.connectionCount(user) === 2, 2000, 'both streams');
    expect(hub.connectionCount(user, 'agui')).toBe(2);
    expect(hub.connectionCount(user, 'contexts')).toBe(0);
    expect(hub.agui.connectionCount(user)).toBe(2);
    expect(hub.system.connectionCount(user)).toBe(0);
    expect(hub.connectedUsers()).toContain(user);
    expect(hub.totalConnections()).toBeGreaterThanOrEqual(2);
    for (const s of streams) s.close();
  });

  it('publishes strings and Buffers byte for byte, and refuses what the hub would drop', async () => {
    const user = uid('bytes');
    const stream = await openStream(host.url, '/', { headers: { 'x-user': user } });
    await until(() => hub.connectionCount(user) === 1, 2000, 'the stream');
    const exact = '{"type":"RAW", "big":12345678901234567890,"k":"\\u00e9"}';
    await hub.publish('agui', user, exact);
    await hub.publish('agui', user, Buffer.from('{"b":1}'));
    const events = await stream.waitForEvents(2, 2000);
    expect(events.map((e) => e.data)).toEqual([exact, '{"b":1}']);
    await expect(hub.publish('agui', user, '[1]')).rejects.toBeInstanceOf(EventRejectedError);
    await expect(hub.publish('agui', '', '{}')).rejects.toBeInstanceOf(EventRejectedError);
    stream.close();
  });
});

describe('stream guards', () => {
  let hub: Hub;
  const guards = new Map<string, ReturnType<Hub['serveStream']>>();
  const aborts = new Map<string, AbortController>();
  let host: Awaited<ReturnType<typeof listen>>;

  beforeAll(async () => {
    hub = createHub();
    await hub.start();
    host = await listen((req, res) => {
      const user = String(req.headers['x-user']);
      const abort = new AbortController();
      aborts.set(user, abort);
      guards.set(user, hub.serveStream(req, res, principal(user), 'agui', { signal: abort.signal }));
    });
  });

  afterAll(async () => {
    await host.close();
    await hub.close();
  });

  it('closes and unregisters the stream when the guard is disposed (using)', async () => {
    const user = uid('dispose');
    const stream = await openStream(host.url, '/', { headers: { 'x-user': user } });
    await until(() => hub.connectionCount(user) === 1, 2000, 'the stream');
    const guard = guards.get(user);
    {
      using _scoped = guard as NonNullable<typeof guard>;
    }
    await stream.ended;
    expect(await guard?.closed).toBe('host_closed');
    expect(guard?.isClosed).toBe(true);
    expect(hub.connectionCount(user)).toBe(0);
  });

  it('closes the stream when its AbortSignal aborts, and settles `closed` when the client leaves', async () => {
    const user = uid('abort');
    const stream = await openStream(host.url, '/', { headers: { 'x-user': user } });
    await until(() => hub.connectionCount(user) === 1, 2000, 'the stream');
    aborts.get(user)?.abort();
    await stream.ended;
    expect(await guards.get(user)?.closed).toBe('host_closed');

    const leaving = uid('leaving');
    const other = await openStream(host.url, '/', { headers: { 'x-user': leaving } });
    await until(() => hub.connectionCount(leaving) === 1, 2000, 'the stream');
    other.close();
    expect(await guards.get(leaving)?.closed).toBe('client_closed');
  });
});

describe('a hub mounted in a host Koa app with its own session auth', () => {
  const sessions = new Map<string, { userId: string; roles: string[] }>([
    ['s-alice', { userId: 'alice', roles: [] }],
    ['s-admin', { userId: 'root', roles: ['admin'] }],
  ]);
  let hub: Hub;
  let host: Awaited<ReturnType<typeof listen>>;
  const registry = new Registry();

  beforeAll(async () => {
    hub = createHub({ metrics: { registry, prefix: 'app_' } });
    await hub.start();
    const app = new Koa();
    const router = createKoaRouter(hub, {
      authenticate: (ctx) => {
        const sid = ctx.cookies.get('sid');
        if (sid === 'down') throw new AuthError(503, 'session store unavailable');
        return sid === undefined ? null : sessions.get(sid);
      },
    });
    app.use(router.routes());
    app.use(async (ctx) => {
      // The host's own route publishes to the logged-in user.
      if (ctx.path === '/todos' && ctx.method === 'POST') {
        const session = sessions.get(ctx.cookies.get('sid') ?? '');
        if (!session) return ctx.throw(401);
        const { id } = await hub.agui.publish(session.userId, { type: 'CUSTOM', name: 'todo_added', value: 1 });
        ctx.body = { id };
      }
    });
    host = await listen(app.callback());
  });

  afterAll(async () => {
    await host.close();
    await hub.close();
  });

  it('streams to the session user what the host publishes from its own route', async () => {
    const stream = await openStream(host.url, '/api/v1/stream/contexts', { cookie: 'sid=s-alice' });
    expect(stream.status).toBe(200);
    const res = await fetch(`${host.url}/todos`, { method: 'POST', headers: { cookie: 'sid=s-alice' } });
    const { id } = (await res.json()) as { id: string };
    const [event] = await stream.waitForEvents(1, 2000);
    expect(event).toMatchObject({
      id,
      data: '{"protocol":"agui","event":{"type":"CUSTOM","name":"todo_added","value":1}}',
    });
    stream.close();
  });

  it('answers 401 for no session, 503 when the callback cannot decide, 403 for analytics without admin', async () => {
    const none = await openStream(host.url, '/api/v1/stream/agui');
    const down = await openStream(host.url, '/api/v1/stream/agui', { cookie: 'sid=down' });
    const analytics = await openStream(host.url, '/api/v1/analytics/stream', { cookie: 'sid=s-alice' });
    const admin = await openStream(host.url, '/api/v1/analytics/stream', { cookie: 'sid=s-admin' });
    expect([none.status, down.status, analytics.status, admin.status]).toEqual([401, 503, 403, 200]);
    for (const s of [none, down, analytics, admin]) s.close();
  });

  it('takes webhooks from the session user for their own user id', async () => {
    const stream = await openStream(host.url, '/api/v1/stream/agui', { cookie: 'sid=s-alice' });
    const res = await fetch(`${host.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { cookie: 'sid=s-alice', 'content-type': 'application/json' },
      body: '{"user_id":"alice","type":"RAW","event":{}}',
    });
    expect(res.status).toBe(202);
    const [event] = await stream.waitForEvents(1, 2000);
    expect(event?.data).toBe('{"type":"RAW","event":{}}');
    stream.close();
  });

  it("puts its metrics in the host's registry under the prefix, with no default process metrics", async () => {
    const names = registry.getMetricsAsArray().map((m) => m.name);
    expect(names).toContain('app_sse_active_connections');
    expect(names).toContain('app_ssehub_events_received_total');
    expect(names.every((name) => name.startsWith('app_'))).toBe(true);
    expect(names).not.toContain('process_cpu_user_seconds_total');
    expect(hub.metricsRegistry).toBe(registry);
  });
});

describe('hub options', () => {
  it('validates events of the kinds switched on, naming the field', async () => {
    const hub = createHub({ validate: { agui: true } });
    await hub.start();
    try {
      const missingDelta = hub.agui.publish('u', {
        type: 'TEXT_MESSAGE_CONTENT',
        messageId: 'm',
      } as unknown as Parameters<Hub['agui']['publish']>[1]);
      await expect(missingDelta).rejects.toBeInstanceOf(EventValidationError);
      await expect(missingDelta).rejects.toMatchObject({ path: 'delta' });
      // Validation errors are rejections too, and unvalidated kinds pass unchecked.
      await expect(missingDelta).rejects.toBeInstanceOf(EventRejectedError);
      await expect(hub.system.publish('u', { type: 'ANYTHING' })).resolves.toMatchObject({ id: expect.any(String) });
    } finally {
      await hub.close();
    }
  });

  it('refuses limits out of range, naming each', () => {
    expect(() => createHub({ limits: { heartbeatMs: 5, maxConnectionsPerUser: 0 } })).toThrow(
      /heartbeatMs must be between 100 and .*maxConnectionsPerUser must be between 1 and/,
    );
  });

  it('logs through the logger it is given', async () => {
    const { lines, logger } = recordingLogger();
    const prefix = uniquePrefix();
    const transport = new RedisTransport({
      url: SHARED_REDIS_URL,
      channelPrefix: prefix,
      logger,
      history: { historyMax: 100, historyTtlMs: 60_000, maxEventBytes: 65_536 },
    });
    const hub = createHub({ transport, logger });
    await hub.start();
    try {
      await until(() => hub.readiness().ready, 5000, 'the Redis subscription');
      expect(lines.some((line) => line.message === 'listening for events')).toBe(true);
    } finally {
      await hub.close();
    }
  });

  it('reports readiness: not started, ready, draining', async () => {
    const hub = createHub();
    expect(hub.readiness()).toEqual({ ready: false, reason: 'not_started' });
    await hub.start();
    expect(hub.readiness()).toEqual({ ready: true });
    await hub.drain(0);
    expect(hub.readiness()).toEqual({ ready: false, reason: 'draining' });
    await hub.close();
  });
});

describe('two embedded hubs on one Redis', () => {
  it('delivers an event published on one to a stream served by the other', async () => {
    const prefix = uniquePrefix();
    const hubs = [0, 1].map(() =>
      createHub({
        transport: new RedisTransport({
          url: SHARED_REDIS_URL,
          channelPrefix: prefix,
          logger: recordingLogger().logger,
          history: { historyMax: 100, historyTtlMs: 60_000, maxEventBytes: 65_536 },
        }),
        logger: recordingLogger().logger,
      }),
    );
    const [a, b] = hubs as [Hub, Hub];
    await Promise.all(hubs.map((hub) => hub.start()));
    const host = await bareHost(b);
    try {
      await until(() => hubs.every((hub) => hub.readiness().ready), 5000, 'both subscriptions');
      const user = uid('redis');
      const stream = await openStream(host.url, '/', { headers: { 'x-user': user } });
      await until(() => b.connectionCount(user) === 1, 2000, 'the stream');
      // The a2a event is not the agui stream's, so the first event it shows is the second one published.
      await a.a2a.publish(user, '{"kind":"status-update"}');
      const agui = await a.agui.publish(user, { type: 'RUN_STARTED', threadId: 't', runId: 'r' });
      const [event] = await stream.waitForEvents(1, 3000);
      expect(event).toMatchObject({ id: agui.id, data: '{"type":"RUN_STARTED","threadId":"t","runId":"r"}' });
      stream.close();
    } finally {
      await host.close();
      await Promise.all(hubs.map((hub) => hub.close()));
    }
  });
});
