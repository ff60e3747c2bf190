import { SHARED_REDIS_URL, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { SHARED_DATABASE_URL, dropSchema, uniqueSchema } from '../helpers/postgres-server';
import { openStream, sleep } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid } from '../helpers/wait';

const APP_ORIGIN = 'https://app.example.com';
const EVIL_ORIGIN = 'https://evil.example';

async function ticketFor(
  hub: HubProcess,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; ticket?: string; expires_in?: number; headers: Headers }> {
  const res = await fetch(`${hub.url}/api/v1/stream/ticket`, {
    method: 'POST',
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = res.status === 201 ? ((await res.json()) as { ticket: string; expires_in: number }) : {};
  return { status: res.status, ...json, headers: res.headers };
}

const bearer = async (user: string, roles: string[] = []) => ({
  authorization: `Bearer ${await mintToken(user, { roles })}`,
});

/** Opens a stream, reads its status, and closes it. */
async function statusOf(hub: HubProcess, path: string, headers: Record<string, string> = {}): Promise<number> {
  const stream = await openStream(hub.url, path, { headers });
  stream.close();
  return stream.status;
}

describe('stream tickets across two replicas on Redis', () => {
  const hubs: HubProcess[] = [];
  let a: HubProcess;
  let b: HubProcess;

  beforeAll(async () => {
    const env = { REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: uniquePrefix(), SSEHUB_TICKET_TTL_MS: '1500' };
    hubs.push(...(await Promise.all([startReadyHub(env), startReadyHub(env)])));
    [a, b] = hubs as [HubProcess, HubProcess];
  });

  afterAll(async () => {
    await Promise.all(hubs.map((hub) => hub.stop()));
  });

  it('issues a ticket on one replica that opens a stream once on the other, for its own user', async () => {
    const user = uid('ticket');
    const issued = await ticketFor(a, await bearer(user));
    expect(issued).toMatchObject({ status: 201, ticket: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), expires_in: 2 });
    expect(issued.headers.get('cache-control')).toBe('no-store');
    const stream = await openStream(b.url, `/api/v1/stream/contexts?ticket=${issued.ticket}`);
    expect(stream.status).toBe(200);
    await fetch(`${a.url}/api/v1/webhook/system`, {
      method: 'POST',
      headers: { ...(await bearer('svc', ['service'])), 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'PING' }),
    });
    const [event] = await stream.waitForEvents(1, 3000);
    expect(event?.data).toBe('{"protocol":"system","event":{"type":"PING"}}');
    stream.close();
    expect(await statusOf(a, `/api/v1/stream/contexts?ticket=${issued.ticket}`)).toBe(401);
    expect(await statusOf(b, `/api/v1/stream/agui?ticket=${issued.ticket}`)).toBe(401);
  });

  it('refuses an expired ticket, a made-up one, and never logs a ticket', async () => {
    const issued = await ticketFor(a, await bearer(uid('expiring')));
    await sleep(1700);
    expect(await statusOf(b, `/api/v1/stream/agui?ticket=${issued.ticket}`)).toBe(401);
    expect(await statusOf(b, `/api/v1/stream/agui?ticket=${'x'.repeat(43)}`)).toBe(401);
    for (const hub of hubs) expect(hub.output()).not.toContain(issued.ticket as string);
  });

  it('binds a ticket to the kinds it was asked for and to the roles of its principal', async () => {
    const user = uid('kinds');
    const agui = await ticketFor(a, await bearer(user), { kinds: ['agui'] });
    expect(await statusOf(b, `/api/v1/stream/contexts?ticket=${agui.ticket}`)).toBe(403);
    const again = await ticketFor(a, await bearer(user), { kinds: ['agui'] });
    expect(await statusOf(b, `/api/v1/stream/agui?ticket=${again.ticket}`)).toBe(200);

    expect((await ticketFor(a, await bearer(user), { kinds: ['analytics'] })).status).toBe(403);
    expect((await ticketFor(a, await bearer(user), { kinds: ['nope'] })).status).toBe(400);
    const plain = await ticketFor(a, await bearer(user));
    expect(await statusOf(b, `/api/v1/analytics/stream?ticket=${plain.ticket}`)).toBe(403);
    const admin = await ticketFor(a, await bearer(uid('admin'), ['admin']), { kinds: ['analytics'] });
    expect(await statusOf(b, `/api/v1/analytics/stream?ticket=${admin.ticket}`)).toBe(200);
  });

  it('issues tickets only to authenticated requests', async () => {
    expect((await ticketFor(a, {})).status).toBe(401);
    expect((await ticketFor(a, { authorization: 'Bearer nonsense' })).status).toBe(401);
  });
});

describe('stream tickets across two replicas on the Postgres outbox', () => {
  const schema = uniqueSchema();
  const hubs: HubProcess[] = [];

  beforeAll(async () => {
    const env = { SSEHUB_TRANSPORT: 'postgres', DATABASE_URL: SHARED_DATABASE_URL, SSEHUB_PG_SCHEMA: schema };
    hubs.push(await startReadyHub(env));
    hubs.push(await startReadyHub(env));
  });

  afterAll(async () => {
    await Promise.all(hubs.map((hub) => hub.stop()));
    await dropSchema(SHARED_DATABASE_URL, schema);
  });

  it('redeems on one replica, once, a ticket the other issued', async () => {
    const [a, b] = hubs as [HubProcess, HubProcess];
    const issued = await ticketFor(a, await bearer(uid('pg')));
    expect(issued.status).toBe(201);
    expect(await statusOf(b, `/api/v1/stream/agui?ticket=${issued.ticket}`)).toBe(200);
    expect(await statusOf(a, `/api/v1/stream/agui?ticket=${issued.ticket}`)).toBe(401);
  });
});

describe('CORS and cross-site requests', () => {
  let hub: HubProcess;

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_CORS_ORIGINS: `${APP_ORIGIN}, http://localhost:5173` });
  });

  afterAll(async () => {
    await hub.stop();
  });

  const preflight = (path: string, origin: string, method: string) =>
    fetch(`${hub.url}${path}`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization' },
    });

  it('answers preflights from an allowed origin, for streams and tickets, and refuses others', async () => {
    const stream = await preflight('/api/v1/stream/agui', APP_ORIGIN, 'GET');
    expect(stream.status).toBe(204);
    expect(Object.fromEntries(stream.headers)).toMatchObject({
      'access-control-allow-origin': APP_ORIGIN,
      'access-control-allow-credentials': 'true',
      'access-control-allow-methods': 'GET',
      'access-control-allow-headers': 'Authorization, Content-Type, Last-Event-ID',
      vary: 'Origin',
    });
    const ticket = await preflight('/api/v1/stream/ticket', APP_ORIGIN, 'POST');
    expect([ticket.status, ticket.headers.get('access-control-allow-methods')]).toEqual([204, 'POST']);
    const evil = await preflight('/api/v1/stream/agui', EVIL_ORIGIN, 'GET');
    expect([evil.status, evil.headers.get('access-control-allow-origin')]).toEqual([403, null]);
  });

  it('lets an allowed origin open a stream with its cookie and read the response', async () => {
    const cookie = `access_token=${await mintToken(uid('cors'))}`;
    const stream = await openStream(hub.url, '/api/v1/stream/agui', { cookie, headers: { Origin: APP_ORIGIN } });
    expect(stream.status).toBe(200);
    expect(stream.headers['access-control-allow-origin']).toBe(APP_ORIGIN);
    expect(stream.headers['access-control-allow-credentials']).toBe('true');
    stream.close();
  });

  it('refuses cookie-authenticated streams from another site before they count against the user', async () => {
    const user = uid('victim');
    const cookie = `access_token=${await mintToken(user)}`;
    const forged = await Promise.all(
      Array.from({ length: 12 }, () =>
        openStream(hub.url, '/api/v1/stream/agui', { cookie, headers: { Origin: EVIL_ORIGIN } }),
      ),
    );
    expect(new Set(forged.map((s) => s.status))).toEqual(new Set([403]));
    const own = await openStream(hub.url, '/api/v1/stream/agui', { cookie });
    expect(own.status).toBe(200);
    for (const s of [...forged, own]) s.close();
    // Behind a proxy that rewrites Host, the page's own origin is the forwarded host.
    const proxied = await openStream(hub.url, '/api/v1/stream/agui', {
      cookie,
      headers: { Origin: 'https://hub.example.com', 'X-Forwarded-Host': 'hub.example.com' },
    });
    expect(proxied.status).toBe(200);
    proxied.close();
    // A bearer token cannot be forged by another site, so it needs no allowed origin.
    expect(await statusOf(hub, '/api/v1/stream/agui', { Origin: EVIL_ORIGIN, ...(await bearer(user)) })).toBe(200);
  });

  it('takes webhooks with bearer tokens only, and refuses cross-site cookie posts', async () => {
    const user = uid('csrf');
    const cookie = `access_token=${await mintToken(user)}`;
    const post = (headers: Record<string, string>) =>
      fetch(`${hub.url}/api/v1/webhook/agui`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', ...headers },
        body: JSON.stringify({ user_id: user, type: 'RAW', event: {} }),
      });
    const crossSite = await post({ cookie, origin: EVIL_ORIGIN });
    const sameSiteCookie = await post({ cookie });
    const withBearer = await post(await bearer(user));
    expect([crossSite.status, sameSiteCookie.status, withBearer.status]).toEqual([403, 401, 202]);
  });
});
