// A Koa app with its own cookie sessions that mounts ssehub's stream routes and publishes to
// the logged-in user from its own handlers.
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import Koa from 'koa';
import { createHub } from 'ssehub';
import { createKoaRouter } from 'ssehub/koa';

const PORT = Number(process.env.PORT ?? 3000);
const SESSION_SECRET = process.env.SESSION_SECRET ?? 'dev-only-secret-change-me';
const SESSION_MS = 8 * 3600_000;

// ioredis is an optional peer of ssehub: only a host that sets REDIS_URL installs and loads it.
async function redisTransport(url) {
  const { RedisTransport } = await import('ssehub/redis');
  // Channel prefix, history limits and logger default to the stand-alone server's (and the hub's).
  return new RedisTransport({ url });
}

const hub = createHub({
  transport: process.env.REDIS_URL ? await redisTransport(process.env.REDIS_URL) : undefined,
  validate: { agui: true },
});
await hub.start();

// session = <user>.<expires ms>.<HMAC of both>: stateless, so every replica can check it.
const sign = (payload) => createHmac('sha256', SESSION_SECRET).update(payload).digest('base64url');

function issueSession(userId) {
  const payload = `${userId}.${Date.now() + SESSION_MS}`;
  return `${payload}.${sign(payload)}`;
}

function readSession(cookie) {
  const [userId, expires, mac] = cookie?.split('.') ?? [];
  if (!userId || !expires || !mac) return null;
  const expected = Buffer.from(sign(`${userId}.${expires}`));
  const given = Buffer.from(mac);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const expiresAt = Number(expires);
  return expiresAt > Date.now() ? { userId, expiresAt } : null;
}

async function readJson(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body === '' ? {} : JSON.parse(body);
}

const todos = new Map();
const app = new Koa();
const routes = new Router();

routes.post('/login', async (ctx) => {
  const { user } = await readJson(ctx.req);
  // A real app checks a password here.
  if (typeof user !== 'string' || !/^[\w-]{1,64}$/.test(user)) ctx.throw(400, 'user required');
  ctx.cookies.set('session', issueSession(user), { httpOnly: true, sameSite: 'lax', maxAge: SESSION_MS });
  ctx.status = 204;
});

routes.post('/todos', async (ctx) => {
  const session = readSession(ctx.cookies.get('session'));
  if (!session) ctx.throw(401);
  const { title } = await readJson(ctx.req);
  const todo = { id: randomUUID(), title: String(title) };
  const list = todos.get(session.userId) ?? [];
  list.push(todo);
  todos.set(session.userId, list);
  // Every open tab of this user (on any replica, with Redis) sees the change as a JSON Patch.
  const { id } = await hub.agui.publish(session.userId, {
    type: 'STATE_DELTA',
    delta: [{ op: 'add', path: '/todos/-', value: todo }],
  });
  ctx.status = 201;
  ctx.body = { ...todo, eventId: id };
});

// GET /api/v1/stream/{agui,a2a,contexts}, authenticated by this app's own session cookie.
const streams = createKoaRouter(hub, {
  authenticate: (ctx) => readSession(ctx.cookies.get('session')),
  routes: { streams: true, webhooks: false },
});

app.use(routes.routes()).use(routes.allowedMethods()).use(streams.routes());

const server = app.listen(PORT, '127.0.0.1', () => {
  console.log(`koa-embed listening on port ${server.address().port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    // Streams end with a retry hint first, so browsers reconnect to another replica.
    await hub.drain(1000);
    server.close();
    await hub.close();
  });
}
