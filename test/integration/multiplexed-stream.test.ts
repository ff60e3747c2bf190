import { SHARED_REDIS_URL, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid } from '../helpers/wait';

/** One multiplexed connection carrying several kinds, on two replicas sharing a Redis. */
describe('the multiplexed stream', () => {
  const hubs: HubProcess[] = [];
  let a: HubProcess;
  let b: HubProcess;
  let service: string;

  beforeAll(async () => {
    const env = { REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: uniquePrefix() };
    hubs.push(...(await Promise.all([startReadyHub(env), startReadyHub(env)])));
    [a, b] = hubs as [HubProcess, HubProcess];
    service = await mintToken('publisher', { roles: ['service'] });
  });

  afterAll(async () => {
    await Promise.all(hubs.map((hub) => hub.stop()));
  });

  async function publish(kind: string, user: string, event: object): Promise<string> {
    const res = await fetch(`${a.url}/api/v1/webhook/${kind}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, ...event }),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as { id: string }).id;
  }

  const open = async (hub: HubProcess, user: string, query: string, headers: Record<string, string> = {}) =>
    openStream(hub.url, `/api/v1/stream${query}`, { token: await mintToken(user), headers });

  const named = (stream: SseStream) => stream.events().map((e) => [e.event, e.id, e.data]);

  it('names each frame by its kind, carries only the kinds asked for, with one id sequence', async () => {
    const user = uid('mux');
    const stream = await open(b, user, '?kinds=agui,system');
    expect([stream.status, stream.headers['content-type']]).toEqual([200, 'text/event-stream']);
    const ids = [
      await publish('agui', user, { type: 'RUN_STARTED', n: 1 }),
      await publish('a2a', user, { kind: 'task', n: 2 }),
      await publish('system', user, { type: 'PING', n: 3 }),
      await publish('agui', user, { type: 'RUN_FINISHED', n: 4 }),
    ];
    await stream.waitForEvents(3, 3000);
    expect(named(stream)).toEqual([
      ['agui', ids[0], '{"type":"RUN_STARTED","n":1}'],
      ['system', ids[2], '{"type":"PING","n":3}'],
      ['agui', ids[3], '{"type":"RUN_FINISHED","n":4}'],
    ]);
    stream.close();
  });

  it('resumes across all its kinds from Last-Event-ID on another replica', async () => {
    const user = uid('resume');
    const first = await open(a, user, '?kinds=agui,a2a,system');
    const ids = [
      await publish('agui', user, { type: 'A' }),
      await publish('a2a', user, { kind: 'B' }),
      await publish('system', user, { type: 'C' }),
    ];
    await first.waitForEvents(1, 3000);
    first.close();
    const resumed = await open(b, user, '?kinds=agui,a2a,system', { 'Last-Event-ID': ids[0] as string });
    await resumed.waitForEvents(2, 3000);
    expect(named(resumed)).toEqual([
      ['a2a', ids[1], '{"kind":"B"}'],
      ['system', ids[2], '{"type":"C"}'],
    ]);
    resumed.close();
  });

  it('serves every kind the principal may stream when none are named; analytics only for admins', async () => {
    const user = uid('default');
    const plain = await open(a, user, '');
    await publish('analytics', user, { type: 'HIDDEN' });
    const shown = await publish('a2a', user, { kind: 'shown' });
    await plain.waitForEvents(1, 3000);
    expect(named(plain)).toEqual([['a2a', shown, '{"kind":"shown"}']]);
    plain.close();

    const analytics = await open(a, user, '?kinds=agui,analytics');
    const unknown = await open(a, user, '?kinds=agui,contexts');
    const admin = await openStream(a.url, '/api/v1/stream?kinds=analytics', {
      token: await mintToken(uid('admin'), { roles: ['admin'] }),
    });
    expect([analytics.status, unknown.status, admin.status]).toEqual([403, 400, 200]);
    for (const s of [analytics, unknown, admin]) s.close();
  });

  it('opens with a ticket for the kinds it covers, and only those', async () => {
    const user = uid('ticket');
    const ticket = async (kinds: string[]) => {
      const res = await fetch(`${a.url}/api/v1/stream/ticket`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await mintToken(user)}`, 'content-type': 'application/json' },
        body: JSON.stringify({ kinds }),
      });
      return ((await res.json()) as { ticket: string }).ticket;
    };
    const wider = await openStream(b.url, `/api/v1/stream?kinds=agui,a2a&ticket=${await ticket(['agui'])}`);
    const covered = await openStream(b.url, `/api/v1/stream?ticket=${await ticket(['a2a'])}`);
    expect([wider.status, covered.status]).toEqual([403, 200]);
    await publish('agui', user, { type: 'NOT_COVERED' });
    const id = await publish('a2a', user, { kind: 'covered' });
    await covered.waitForEvents(1, 3000);
    expect(named(covered)).toEqual([['a2a', id, '{"kind":"covered"}']]);
    for (const s of [wider, covered]) s.close();
  });
});
