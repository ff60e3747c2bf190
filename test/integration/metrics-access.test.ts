import { startReadyHub, type HubProcess } from '../helpers/hub-process';
import { until } from '../helpers/wait';

const TOKEN = 'metrics-token-0123456789';

async function metricsPortOf(hub: HubProcess): Promise<number> {
  let port: number | undefined;
  await until(
    () => {
      const match = /"port":(\d+),"msg":"metrics listening"/.exec(hub.output());
      port = match ? Number(match[1]) : undefined;
      return port !== undefined;
    },
    5000,
    'the metrics listener',
  );
  return port as number;
}

describe('/metrics on its own port (SSEHUB_METRICS_PORT) behind a token (SSEHUB_METRICS_TOKEN)', () => {
  let hub: HubProcess;
  let metricsUrl: string;

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_TRANSPORT: 'memory', SSEHUB_METRICS_PORT: '0', SSEHUB_METRICS_TOKEN: TOKEN });
    metricsUrl = `http://127.0.0.1:${await metricsPortOf(hub)}`;
  });

  afterAll(async () => {
    await hub.stop();
  });

  it('serves no /metrics on the public port', async () => {
    expect((await fetch(`${hub.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(404);
    expect((await fetch(`${hub.url}/livez`)).status).toBe(200);
  });

  it('serves /metrics, and nothing else, on the metrics port, to the token only', async () => {
    const refused = await fetch(`${metricsUrl}/metrics`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer');
    const wrong = await fetch(`${metricsUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
    const scraped = await fetch(`${metricsUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain('sse_active_connections{channel="agui"} 0');
    expect((await fetch(`${metricsUrl}/livez`)).status).toBe(404);
    expect((await fetch(`${metricsUrl}/api/v1/stream/agui`)).status).toBe(404);
  });
});

describe('/metrics on the public port behind a token', () => {
  let hub: HubProcess;

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_TRANSPORT: 'memory', SSEHUB_METRICS_TOKEN: TOKEN });
  });

  afterAll(async () => {
    await hub.stop();
  });

  it('answers 401 without the token and the metrics with it', async () => {
    expect((await fetch(`${hub.url}/metrics`)).status).toBe(401);
    const scraped = await fetch(`${hub.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain('ssehub_transport_listening 1');
  });
});
