import { request } from 'node:http';
import { startReadyHub, type HubProcess } from '../helpers/hub-process';
import { openStream, sleep } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';

/** The embedded default: one process, in-process transport, no Redis. */
describe('single hub on the memory transport', () => {
  let hub: HubProcess;
  const token = (userId: string, roles: string[] = []) => mintToken(userId, { roles, audience: 'ssehub' });

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_JWT_AUDIENCE: 'ssehub' });
  });

  afterAll(async () => {
    await hub.stop();
  });

  it('uses the memory transport when REDIS_URL is unset', () => {
    expect(hub.output()).toContain('"transport":"memory","msg":"ssehub listening"');
  });

  it('refuses tokens for another audience', async () => {
    const wrong = await openStream(hub.url, '/api/v1/stream/agui', {
      token: await mintToken('u', { audience: 'other' }),
    });
    const none = await openStream(hub.url, '/api/v1/stream/agui', { token: await mintToken('u') });
    const right = await openStream(hub.url, '/api/v1/stream/agui', { token: await token('u') });
    expect([wrong.status, none.status, right.status]).toEqual([401, 401, 200]);
    for (const s of [wrong, none, right]) s.close();
  });

  it('delivers system events on contexts only and analytics events on analytics only, via webhooks', async () => {
    const contexts = await openStream(hub.url, '/api/v1/stream/contexts', { token: await token('mia') });
    const analytics = await openStream(hub.url, '/api/v1/analytics/stream', { token: await token('mia', ['admin']) });
    const agui = await openStream(hub.url, '/api/v1/stream/agui', { token: await token('mia') });
    const service = await token('svc', ['service']);
    const post = async (kind: string, body: string) => {
      const res = await fetch(`${hub.url}/api/v1/webhook/${kind}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${service}`, 'Content-Type': 'application/json' },
        body,
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const system = await post('system', '{"type":"CONTEXT_CREATED","user_id":"mia","contextId":"c1","name":"N"}');
    expect(system).toEqual({
      status: 202,
      body: expect.objectContaining({ status: 'broadcasted', connection_count: 1, replicas: 1, transport: 'memory' }),
    });
    await post('analytics', '{"type":"PAGE_VIEW","session_id":"s","user_id":"mia","page_url":"/"}');
    await contexts.waitForEvents(1);
    await analytics.waitForEvents(1);
    await sleep(100);
    const id = String(system.body.id);
    expect(id).toMatch(/^[0-9a-z]+:\d+-1$/);
    const origin = id.replace(/:.*/, ':0-0');
    expect(contexts.raw()).toBe(
      `id:${origin}\n\nid:${id}\ndata:{"protocol":"system","event":{"type":"CONTEXT_CREATED","contextId":"c1","name":"N"}}\n\n`,
    );
    // Only the envelope's user_id member is removed: the analytics event's own fields stay, byte for byte.
    expect(analytics.raw()).toMatch(
      /^id:[0-9a-z]+:0-0\n\nid:[0-9a-z]+:\d+-2\ndata:\{"type":"PAGE_VIEW","session_id":"s","page_url":"\/"\}\n\n$/,
    );
    expect(agui.events()).toHaveLength(0);
    for (const s of [contexts, analytics, agui]) s.close();
  });

  it('answers HEAD on a stream route with 405 instead of holding a connection slot', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      void token('h').then((t) => {
        const req = request(
          `${hub.url}/api/v1/stream/agui`,
          { method: 'HEAD', headers: { Authorization: `Bearer ${t}` } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
    });
    expect(status).toBe(405);
    await sleep(100);
    const metrics = await (await fetch(`${hub.url}/metrics`)).text();
    expect(metrics).toMatch(/^sse_active_connections\{channel="agui"\} 0$/m);
  });
});
