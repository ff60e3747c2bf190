// An Express app with server-side sessions that serves ssehub streams itself through
// hub.serveStream, publishes from its own routes, and ends a session's streams on logout.
import { randomBytes, randomUUID } from 'node:crypto';
import express from 'express';
import { createHub } from 'ssehub';

const PORT = Number(process.env.PORT ?? 3000);
// Long-lived streams are recycled now and then so that connections spread over new replicas;
// EventSource reconnects by itself and resumes from Last-Event-ID, so nothing is missed.
const STREAM_MAX_AGE_MS = Number(process.env.STREAM_MAX_AGE_MS ?? 15 * 60_000);

const hub = createHub();
await hub.start();

/** session id -> { sid, userId, streams }: the hub cannot know about a logout, so the app tracks its streams. */
const sessions = new Map();

function sessionOf(req) {
  const match = /(?:^|;\s*)sid=([\w-]+)/.exec(req.headers.cookie ?? '');
  return match ? sessions.get(match[1]) : undefined;
}

function requireSession(req, res, next) {
  req.session = sessionOf(req);
  if (req.session) next();
  else res.status(401).json({ error: 'log in first' });
}

const app = express();
app.use(express.json());

app.post('/login', (req, res) => {
  const { user } = req.body ?? {};
  // A real app checks a password here.
  if (typeof user !== 'string' || !/^[\w-]{1,64}$/.test(user)) return res.status(400).json({ error: 'user required' });
  const sid = randomBytes(32).toString('base64url');
  sessions.set(sid, { sid, userId: user, streams: new Set() });
  res.cookie('sid', sid, { httpOnly: true, sameSite: 'lax' }).status(204).end();
});

app.post('/logout', requireSession, (req, res) => {
  sessions.delete(req.session.sid);
  // Logging out must not leave a stream open that keeps delivering the user's events.
  for (const guard of req.session.streams) guard.close();
  res.status(204).end();
});

app.get('/events', requireSession, (req, res) => {
  const { session } = req;
  const principal = { userId: session.userId, roles: new Set(), expiresAt: Number.POSITIVE_INFINITY };
  const guard = hub.serveStream(req, res, principal, 'agui', { signal: AbortSignal.timeout(STREAM_MAX_AGE_MS) });
  // Undefined when the hub refused the stream (e.g. 429 over the per-user cap); it answered already.
  if (!guard) return;
  session.streams.add(guard);
  guard.closed.then((reason) => {
    session.streams.delete(guard);
    console.log(`stream ${guard.id} of ${guard.userId} closed: ${reason}`);
  });
});

// Express 5 passes a rejected publish (e.g. TransportUnavailableError) on to the error handler.
app.post('/todos', requireSession, async (req, res) => {
  const todo = { id: randomUUID(), title: String(req.body?.title) };
  const { id } = await hub.agui.publish(req.session.userId, { type: 'CUSTOM', name: 'todo_added', value: todo });
  res.status(201).json({ ...todo, eventId: id });
});

app.get('/me', requireSession, (req, res) => {
  res.json({ user: req.session.userId, streams: hub.connectionCount(req.session.userId, 'agui') });
});

const server = app.listen(PORT, '127.0.0.1', () => {
  console.log(`express-embed listening on port ${server.address().port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await hub.drain(1000);
    server.close();
    await hub.close();
  });
}
