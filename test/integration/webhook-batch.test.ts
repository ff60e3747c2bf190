import { SHARED_REDIS_URL, metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';

/** The most items a batch may hold here: the first test's batch is exactly this long. */
const BATCH_MAX_EVENTS = 9;

/** The batch webhook on two real hubs over Redis: per-item checks, one answer per item, delivery on both. */
describe('POST /api/v1/webhook/batch', () => {
  const prefix = uniquePrefix();
  let a: HubProcess;
  let b: HubProcess;
  const streams: SseStream[] = [];

  const post = async (token: string | undefined, body: string) => {
    const res = await fetch(`${a.url}/api/v1/webhook/batch`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  /**
   * Opens a user's stream on a hub and waits for its opening position: the hub sends it once it
   * subscribes the user's channel, so from then on the hub counts among the user's receivers.
   */
  const open = async (hub: HubProcess, userId: string): Promise<SseStream> => {
    const stream = await openStream(hub.url, '/api/v1/stream/agui', { token: await mintToken(userId) });
    streams.push(stream);
    await stream.waitForPosition(10_000, `${userId}'s opening position`);
    return stream;
  };

  beforeAll(async () => {
    const env = {
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: prefix,
      SSEHUB_MAX_EVENT_BYTES: '1024',
      SSEHUB_PUBLISH_QUOTA_EVENTS: '3',
      SSEHUB_WEBHOOK_BATCH_MAX_EVENTS: String(BATCH_MAX_EVENTS),
    };
    [a, b] = await Promise.all([startReadyHub(env), startReadyHub(env)]);
  });

  afterAll(async () => {
    for (const stream of streams) stream.close();
    await Promise.all([a.stop(), b.stop()]);
  });

  it('publishes the valid items of a partially invalid batch for many users, and answers each item in order', async () => {
    // "replicas" counts the hubs holding a stream of that user: alice has one on b, bob one on
    // each hub, and nobody has none (the event is still kept in the history and acknowledged).
    const [alice, bob] = await Promise.all([open(b, 'alice'), open(b, 'bob'), open(a, 'bob')]);
    const service = await mintToken('svc', { roles: ['service'] });
    const rejectedBefore = await metricValue(a, 'ssehub_events_rejected_total{reason="invalid_event"}');
    const { status, body } = await post(
      service,
      JSON.stringify([
        { kind: 'agui', user_id: 'alice', event: { type: 'A1' } },
        { kind: 'agui', user_id: 'bob', event: { type: 'B1' } },
        { kind: 'agui', user_id: 'alice', event: 'not an object' },
        { kind: 'nonsense', user_id: 'alice', event: { type: 'X' } },
        { kind: 'agui', user_id: 'alice', id: 'k:1-1', event: { type: 'X' } },
        { kind: 'agui', user_id: 'alice', event: { pad: 'x'.repeat(2000) } },
        { kind: 'system', user_id: 'alice', event: { type: 'S1' } },
        { kind: 'agui', user_id: 'alice', event: { type: 'A2', text: 'é "quoted" \\ ' } },
        { kind: 'agui', user_id: 'nobody', event: { type: 'N1' } },
      ]),
    );
    expect(status).toBe(207);
    const id = expect.stringMatching(/^[0-9a-z]+:\d+-\d+$/);
    expect(body).toEqual({
      published: 5,
      failed: 4,
      transport: 'redis',
      results: [
        { status: 202, id, kind: 'agui', user_id: 'alice', replicas: 1 },
        { status: 202, id, kind: 'agui', user_id: 'bob', replicas: 2 },
        { status: 400, error: expect.stringMatching(/^invalid_event/) },
        { status: 400, error: 'unknown event kind "nonsense"' },
        { status: 400, error: expect.stringContaining('"id"') },
        { status: 413, error: expect.stringMatching(/^too_large/) },
        { status: 202, id, kind: 'system', user_id: 'alice', replicas: 1 },
        { status: 202, id, kind: 'agui', user_id: 'alice', replicas: 1 },
        { status: 202, id, kind: 'agui', user_id: 'nobody', replicas: 0 },
      ],
    });
    expect(await metricValue(a, 'ssehub_events_rejected_total{reason="invalid_event"}')).toBe(rejectedBefore + 1);
    // The event's bytes are published exactly as they were in the batch.
    expect((await alice.waitForEvents(2)).map((e) => e.data)).toEqual([
      '{"type":"A1"}',
      '{"type":"A2","text":"é \\"quoted\\" \\\\ "}',
    ]);
    expect((await bob.waitForEvents(1)).map((e) => e.data)).toEqual(['{"type":"B1"}']);
  });

  it("authorizes each item as the single webhook does: a user's own user kinds only, within their quota", async () => {
    const carol = await mintToken('carol');
    const { status, body } = await post(
      carol,
      JSON.stringify([
        { kind: 'agui', user_id: 'carol', event: { type: 'C1' } },
        { kind: 'agui', user_id: 'dave', event: { type: 'D1' } },
        { kind: 'system', user_id: 'carol', event: { type: 'S' } },
        { kind: 'a2a', user_id: 'carol', event: { kind: 'message' } },
        { kind: 'agui', user_id: 'carol', event: { type: 'C2' } },
        { kind: 'agui', user_id: 'carol', event: { type: 'C3' } },
      ]),
    );
    expect(status).toBe(207);
    const results = body.results as Array<{ status: number; error?: string }>;
    expect(results.slice(0, 3).map((r) => r.status)).toEqual([202, 403, 403]);
    // Four of carol's items passed authorization; her quota (3 per window) admits three of them.
    const quotaBound = results.filter((_, i) => i === 0 || i >= 3);
    expect(quotaBound.filter((r) => r.status === 202)).toHaveLength(3);
    expect(quotaBound.filter((r) => r.status === 429)).toHaveLength(1);
    expect(body).toMatchObject({ published: 3, failed: 3 });
  });

  it('refuses the whole request when it is not a batch it can take', async () => {
    const service = await mintToken('svc', { roles: ['service'] });
    const item = { kind: 'agui', user_id: 'erin', event: { type: 'E' } };
    expect((await post(undefined, JSON.stringify([item]))).status).toBe(401);
    expect((await post(service, JSON.stringify(item))).status).toBe(400);
    expect((await post(service, '[{"kind":"agui",')).status).toBe(400);
    expect((await post(service, '[]')).status).toBe(400);
    const tooMany = Array.from({ length: BATCH_MAX_EVENTS + 1 }, () => item);
    expect((await post(service, JSON.stringify(tooMany))).status).toBe(413);
    // Items that are not objects are answered one by one, like any other invalid item.
    const mixed = await post(service, JSON.stringify([1, item, 'x']));
    expect(mixed.status).toBe(207);
    expect((mixed.body.results as Array<{ status: number }>).map((r) => r.status)).toEqual([400, 202, 400]);
  });
});
