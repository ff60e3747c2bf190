import { createHub, type Hub } from '../../src';
import { listen } from '../helpers/embedded-hub';
import { metricValue, startReadyHub, type HubProcess } from '../helpers/hub-process';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid, until } from '../helpers/wait';

describe('the replica connection cap (SSEHUB_MAX_CONNECTIONS)', () => {
  let hub: HubProcess;
  const open: SseStream[] = [];

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_TRANSPORT: 'memory', SSEHUB_MAX_CONNECTIONS: '2' });
  });

  afterAll(async () => {
    for (const stream of open) stream.close();
    await hub.stop();
  });

  const streamFor = async (path: string): Promise<SseStream> => {
    const stream = await openStream(hub.url, path, { token: await mintToken(uid('cap')) });
    open.push(stream);
    return stream;
  };

  it('refuses streams past the cap with 503 and Retry-After, counts them, and takes streams again once one closes', async () => {
    const first = await streamFor('/api/v1/stream/agui');
    const second = await streamFor('/api/v1/stream/contexts');
    expect([first.status, second.status]).toEqual([200, 200]);

    const refused = await fetch(`${hub.url}/api/v1/stream/a2a`, {
      headers: { authorization: `Bearer ${await mintToken(uid('cap'))}` },
    });
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toEqual({ error: 'this replica is at its connection limit' });
    expect(await metricValue(hub, 'ssehub_connections_rejected_total{reason="replica_full"}')).toBe(1);

    first.close();
    await until(async () => (await metricValue(hub, 'sse_active_connections{channel="agui"}')) === 0, 5000, 'close');
    const third = await streamFor('/api/v1/stream/a2a');
    expect(third.status).toBe(200);
  });
});

describe('the replica connection cap in an embedding host', () => {
  let hub: Hub;

  afterEach(async () => {
    await hub.close();
  });

  it('refuses with 503 from serveStream as well', async () => {
    hub = createHub({ limits: { maxConnections: 1 } });
    await hub.start();
    const principal = { userId: 'host-user', roles: new Set<string>(), expiresAt: Number.POSITIVE_INFINITY };
    const host = await listen((req, res) => void hub.serveStream(req, res, principal, 'agui'));
    try {
      const first = await openStream(host.url, '/');
      expect(first.status).toBe(200);
      const second = await fetch(host.url);
      expect(second.status).toBe(503);
      expect(second.headers.get('retry-after')).not.toBeNull();
      expect(hub.totalConnections()).toBe(1);
      first.close();
    } finally {
      await host.close();
    }
  });
});
