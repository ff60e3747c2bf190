// BASELINE, NOT SSEHUB. This is the naive SSE hub a developer would write from a blog post
// ("real-time notifications with Koa, Redis pub/sub and Server-Sent Events"), kept only as the
// benchmark's yardstick: one Redis channel, a Map from user to open responses, JSON in, JSON out.
// It has no ids, no history, no resume, no back-pressure handling, no connection caps.
//
//   PORT=8090 REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=... CHANNEL=baseline:events node koa-hub.mjs
//   redis-cli PUBLISH baseline:events '{"user_id":"alice","event":{"type":"hello"}}'
import Koa from 'koa';
import { Redis } from 'ioredis';
import { jwtVerify } from 'jose';
import { PassThrough } from 'node:stream';

const { PORT = '8090', REDIS_URL = 'redis://127.0.0.1:6379', JWT_SECRET = '', CHANNEL = 'events' } = process.env;
const secret = new TextEncoder().encode(JWT_SECRET);
const clients = new Map(); // user id -> Set of open streams

const sub = new Redis(REDIS_URL);
await sub.subscribe(CHANNEL);
sub.on('message', (_channel, message) => {
  const { user_id, event } = JSON.parse(message);
  for (const stream of clients.get(user_id) ?? []) stream.write(`data: ${JSON.stringify(event)}\n\n`);
});

const app = new Koa();
app.use(async (ctx) => {
  if (ctx.path !== '/events') ctx.throw(404);
  let user;
  try {
    const { payload } = await jwtVerify(ctx.get('Authorization').replace(/^Bearer /, ''), secret);
    user = payload.sub;
  } catch {
    ctx.throw(401);
  }
  ctx.req.socket.setTimeout(0);
  ctx.req.socket.setNoDelay(true);
  ctx.req.socket.setKeepAlive(true);
  ctx.set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
  const stream = new PassThrough();
  stream.write(': connected\n\n'); // so the browser sees the stream open right away
  ctx.status = 200;
  ctx.body = stream;
  if (!clients.has(user)) clients.set(user, new Set());
  clients.get(user).add(stream);
  ctx.req.on('close', () => {
    clients.get(user)?.delete(stream);
    if (clients.get(user)?.size === 0) clients.delete(user);
  });
});

app.listen(Number(PORT), '127.0.0.1', () => console.log(`baseline hub listening on ${PORT}`));
