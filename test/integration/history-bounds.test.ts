import { ignoringHandler } from '../helpers/embedded-hub';
import { Redis } from 'ioredis';
import { Pool } from 'pg';
import { parseEventId, type EventId } from '../../src/history/event-id';
import type { HistoryQuery, HistoryRead } from '../../src/history/history';
import { MemoryTransport } from '../../src/transport/memory/transport';
import { Outbox } from '../../src/transport/postgres/outbox';
import { migrateOutbox } from '../../src/transport/postgres/schema';
import { RedisEvents } from '../../src/transport/redis/events';
import { userKeys } from '../../src/transport/redis/library';
import { metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { OwnRedis } from '../helpers/redis-server';
import { countedHistoryBytes, userHistoryLength } from '../helpers/redis-user';
import { SHARED_DATABASE_URL, connectPg, dropSchema, uniqueSchema } from '../helpers/postgres-server';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * The bounds that keep one user from occupying the store or a replica: a per-user history byte
 * budget and paged history reads on every store; paged, bounded replays in a running hub while
 * other users publish; publish quotas and the kinds a user may publish on the webhook.
 * Redis is a private server: the function library is global to a Redis, and other checkouts'
 * hubs on the shared one may load another version of it at any time.
 */

let redisServer: OwnRedis;
beforeAll(async () => {
  redisServer = await OwnRedis.start();
});
afterAll(async () => {
  await redisServer?.destroy();
});

const EVENT_BYTES = 1000;
/** An event of exactly EVENT_BYTES bytes. */
const event = (n: number): Buffer => {
  const head = `{"n":${n},"pad":"`;
  return Buffer.from(`${head}${'x'.repeat(EVENT_BYTES - head.length - 2)}"}`);
};

const wide: HistoryQuery = { maxEntries: 100, maxBytes: 1 << 20 };
const seqsOf = (read: HistoryRead): number[] | string =>
  read.ok ? read.entries.map((e) => JSON.parse(e.event.toString()).n as number) : read.reason;

/** One store as the hub sees it: publishing with history, and reading it back page by page. */
interface StoreUnderTest {
  publish(user: string, body: Buffer): Promise<EventId>;
  read(user: string, after: EventId, query: HistoryQuery): Promise<HistoryRead>;
  /** Where trimming to the budget runs apart from publishing (Postgres), runs it now. */
  trim(): Promise<void>;
  /** Event bytes the store counts against the user's budget, where it keeps a count. */
  countedBytes(user: string): Promise<number | undefined>;
  close(): Promise<void>;
}

const BUDGET = 8 * EVENT_BYTES;

function idOf(text: string): EventId {
  const id = parseEventId(text);
  if (!id) throw new Error(`not an event id: ${text}`);
  return id;
}

async function memoryStore(): Promise<StoreUnderTest> {
  const transport = new MemoryTransport({ maxEntries: 1000, maxBytes: BUDGET, ttlMs: 3_600_000 });
  await transport.start(ignoringHandler());
  return {
    publish: async (user, body) => idOf((await transport.publish('agui', user, body)).id),
    read: (user, after, query) => transport.readHistory(user, after, query),
    trim: async () => undefined,
    countedBytes: async () => undefined,
    close: () => transport.close(),
  };
}

async function redisStore(): Promise<StoreUnderTest> {
  const prefix = uniquePrefix();
  const redis = new Redis(redisServer.url);
  const events = new RedisEvents(redis, prefix, {
    settings: { historyMax: 1000, historyMaxBytes: BUDGET, historyTtlMs: 3_600_000, maxEventBytes: 4096 },
  });
  await events.prepare();
  return {
    publish: async (user, body) => idOf((await events.publish('agui', user, body)).id),
    read: (user, after, query) => events.readHistory(user, after, query),
    trim: async () => undefined,
    countedBytes: (user) => countedHistoryBytes(redis, prefix, user),
    close: async () => redis.disconnect(),
  };
}

async function postgresStore(): Promise<StoreUnderTest> {
  const schema = uniqueSchema();
  const pool = new Pool({ connectionString: SHARED_DATABASE_URL, max: 2 });
  await migrateOutbox(pool, schema, { maxEventBytes: 4096 });
  const outbox = new Outbox(pool, schema);
  return {
    publish: async (user, body) => idOf((await outbox.publish('agui', user, body)).id),
    read: (user, after, query) => outbox.readHistory(user, after, query),
    // Every row is old enough here (no grace); rows of transactions still open anywhere wait.
    trim: async () => {
      await outbox.trimToBudget(BUDGET, new Date(0), 0);
    },
    countedBytes: async () => undefined,
    close: async () => {
      await pool.end();
      await dropSchema(SHARED_DATABASE_URL, schema);
    },
  };
}

describe.each([
  ['memory', memoryStore],
  ['redis', redisStore],
  ['postgres', postgresStore],
])('%s history', (_name, createStore) => {
  let store: StoreUnderTest;
  beforeAll(async () => {
    store = await createStore();
  });
  afterAll(async () => {
    await store?.close();
  });

  it('keeps at most the byte budget per user, oldest out first; a resume from a trimmed id gets trimmed', async () => {
    const user = uid('budget');
    const other = uid('other');
    const ids: EventId[] = [];
    for (let n = 1; n <= 12; n++) ids.push(await store.publish(user, event(n)));
    const untouched = await store.publish(other, event(1));
    // 12 events of 1000 bytes against an 8000-byte budget: events 1 to 4 are gone.
    await until(
      async () => {
        await store.trim();
        return !(await store.read(user, ids[0] as EventId, wide)).ok;
      },
      15_000,
      'the oldest events to be trimmed',
    );
    expect(await store.read(user, ids[0] as EventId, wide)).toMatchObject({ ok: false, reason: 'trimmed' });
    expect(await store.read(user, ids[2] as EventId, wide)).toMatchObject({ ok: false, reason: 'trimmed' });
    // Event 4 is gone but its successor is kept, so nothing after it is missing.
    expect(seqsOf(await store.read(user, ids[3] as EventId, wide))).toEqual([5, 6, 7, 8, 9, 10, 11, 12]);
    const counted = await store.countedBytes(user);
    if (counted !== undefined) expect(counted).toBe(BUDGET);
    // Another user's history is their own budget.
    expect(seqsOf(await store.read(other, { ...untouched, ms: 0, seq: 0 }, wide))).toEqual([1]);
  });

  it('reads history in pages bounded by entries and bytes, and counts the whole replay against the cap', async () => {
    const user = uid('pages');
    const ids: EventId[] = [];
    for (let n = 1; n <= 7; n++) ids.push(await store.publish(user, event(n)));
    const from = ids[0] as EventId;
    const bounds = { maxEntries: 100, maxBytes: Math.floor(2.5 * EVENT_BYTES) };
    const pages: number[][] = [];
    let after = from;
    for (;;) {
      const read = await store.read(user, after, pages.length === 0 ? { ...bounds, replayMax: 6 } : bounds);
      if (!read.ok) throw new Error(`page ${pages.length + 1} was a reset: ${read.reason}`);
      const bytes = read.entries.reduce((sum, e) => sum + e.event.length, 0);
      expect(bytes).toBeLessThanOrEqual(bounds.maxBytes);
      pages.push(read.entries.map((e) => JSON.parse(e.event.toString()).n as number));
      const newest = read.entries[read.entries.length - 1];
      if (!read.more || newest === undefined) break;
      after = newest.id;
    }
    expect(pages).toEqual([
      [2, 3],
      [4, 5],
      [6, 7],
    ]);
    expect(seqsOf(await store.read(user, from, { maxEntries: 4, maxBytes: 1 << 20 }))).toEqual([2, 3, 4, 5]);
    // A page always holds one event, however small its byte bound.
    expect(seqsOf(await store.read(user, from, { maxEntries: 100, maxBytes: 10 }))).toEqual([2]);
    // Six events follow `from`: a cap of five resets however small the first page is.
    expect(await store.read(user, from, { maxEntries: 1, maxBytes: 10, replayMax: 5 })).toMatchObject({
      ok: false,
      reason: 'replay_limit',
    });
  });
});

// ---------------------------------------------------------------------------------------------

const PAGE_BYTES = 256 * 1024;
const BIG_EVENT_BYTES = 64 * 1024;

async function postWebhook(hub: HubProcess, token: string, kind: string, body: string): Promise<Response> {
  return fetch(`${hub.url}/api/v1/webhook/${kind}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body,
    signal: AbortSignal.timeout(10_000),
  });
}

async function status(hub: HubProcess, token: string, kind: string, body: string): Promise<number> {
  const res = await postWebhook(hub, token, kind, body);
  await res.body?.cancel();
  return res.status;
}

describe('a resume of a maximal history on a hub (Redis)', () => {
  const prefix = uniquePrefix();
  let hub: HubProcess;
  let redis: Redis;

  beforeAll(async () => {
    hub = await startReadyHub({
      REDIS_URL: redisServer.url,
      SSEHUB_CHANNEL_PREFIX: prefix,
      SSEHUB_MAX_EVENT_BYTES: String(BIG_EVENT_BYTES),
      SSEHUB_HISTORY_MAX_BYTES: String(4 * 1024 * 1024),
      SSEHUB_REPLAY_PAGE_BYTES: String(PAGE_BYTES),
      SSEHUB_REPLAY_REPLICA_BYTES: String(2 * PAGE_BYTES),
    });
    redis = new Redis(redisServer.url);
  }, 30_000);

  afterAll(async () => {
    await hub?.stop();
    redis?.disconnect();
  });

  it('is trimmed to the byte budget, replayed in bounded pages, and leaves other users publishing', async () => {
    const heavy = uid('heavy');
    const pad = 'x'.repeat(BIG_EVENT_BYTES - 100);
    const ids: string[] = [];
    for (let n = 1; n <= 80; n++) {
      const body = JSON.stringify({ n, pad });
      const { meta, history } = userKeys(prefix, heavy);
      ids.push(String(await redis.call('FCALL', 'ssehub_publish', '2', meta, history, 'agui', body)));
    }
    const eventBytes = Buffer.byteLength(JSON.stringify({ n: 10, pad }));
    // 4 MiB of budget holds the newest 64 events of 80 (each just under 64 KiB).
    expect(await userHistoryLength(redis, prefix, heavy)).toBe(64);
    expect(await countedHistoryBytes(redis, prefix, heavy)).toBe(64 * eventBytes);
    const pagesBefore = await metricValue(hub, 'ssehub_replay_pages_total');
    const bytesBefore = await metricValue(hub, 'ssehub_replay_bytes_total');

    // Four tabs resume from just before the oldest retained event: 4 MiB of replay each.
    const token = await mintToken(heavy);
    const from = ids[15] as string;
    const tabs: SseStream[] = await Promise.all(
      [1, 2, 3, 4].map(() => openStream(hub.url, '/api/v1/stream/agui', { token, headers: { 'Last-Event-ID': from } })),
    );
    // Meanwhile another user publishes: every webhook is taken.
    const bystander = uid('bystander');
    const bystanderToken = await mintToken(bystander);
    const answers: number[] = [];
    const replayed = Promise.all(tabs.map((tab) => tab.waitForEvents(64, 60_000)));
    let done = false;
    void replayed.finally(() => (done = true));
    for (let n = 0; n < 10 || !done; n++) {
      answers.push(await status(hub, bystanderToken, 'agui', JSON.stringify({ user_id: bystander, n })));
    }
    await replayed;

    for (const tab of tabs) {
      expect(tab.events().map((e) => JSON.parse(e.data).n)).toEqual(Array.from({ length: 64 }, (_, i) => i + 17));
      expect(tab.events().some((e) => e.event === 'reset')).toBe(false);
      tab.close();
    }
    expect(answers.every((code) => code === 202)).toBe(true);
    // Each store call returned at most one page: 4 MiB each in pages of 256 KiB (four events).
    const pages = (await metricValue(hub, 'ssehub_replay_pages_total')) - pagesBefore;
    const bytes = (await metricValue(hub, 'ssehub_replay_bytes_total')) - bytesBefore;
    expect(bytes).toBe(4 * 64 * eventBytes);
    expect(pages).toBe(4 * 16);
  });
});

// ---------------------------------------------------------------------------------------------

describe('the byte budget on a Postgres hub', () => {
  const schema = uniqueSchema();
  let hub: HubProcess;

  beforeAll(async () => {
    hub = await startReadyHub({
      SSEHUB_TRANSPORT: 'postgres',
      DATABASE_URL: SHARED_DATABASE_URL,
      SSEHUB_PG_SCHEMA: schema,
      SSEHUB_MAX_EVENT_BYTES: '2048',
      SSEHUB_HISTORY_MAX_BYTES: String(BUDGET),
    });
  }, 30_000);

  afterAll(async () => {
    await hub?.stop();
    await dropSchema(SHARED_DATABASE_URL, schema);
  });

  it('trims a user past the budget in the background; a resume from a trimmed id gets trimmed', async () => {
    const user = uid('pg-budget');
    const token = await mintToken(user);
    const ids: string[] = [];
    for (let n = 1; n <= 12; n++) {
      const pad = 'x'.repeat(EVENT_BYTES - `{"n":${n},"pad":""}`.length);
      const res = await postWebhook(hub, token, 'agui', JSON.stringify({ user_id: user, n, pad }));
      expect(res.status).toBe(202);
      ids.push(((await res.json()) as { id: string }).id);
    }
    const client = await connectPg(SHARED_DATABASE_URL);
    try {
      // Rows are trimmed once they are older than the grace the live readers get.
      await until(
        async () => {
          const rows = await client.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM "${schema}".outbox WHERE user_id = $1`,
            [user],
          );
          return rows.rows[0]?.n === 8;
        },
        30_000,
        'the oldest four rows to be trimmed',
      );
    } finally {
      await client.end();
    }
    const open = (from: string) =>
      openStream(hub.url, '/api/v1/stream/agui', { token, headers: { 'Last-Event-ID': from } });
    const trimmed = await open(ids[0] as string);
    const [reset] = await trimmed.waitForEvents(1);
    expect(JSON.parse(reset?.data ?? '{}')).toMatchObject({ type: 'reset', reason: 'trimmed' });
    const kept = await open(ids[3] as string);
    const replayed = await kept.waitForEvents(8);
    expect(replayed.map((e) => JSON.parse(e.data).n)).toEqual([5, 6, 7, 8, 9, 10, 11, 12]);
    trimmed.close();
    kept.close();
  });
});

// ---------------------------------------------------------------------------------------------

describe('what a token may publish on the webhook', () => {
  const QUOTA = {
    SSEHUB_PUBLISH_QUOTA_EVENTS: '3',
    SSEHUB_PUBLISH_QUOTA_BYTES: '2048',
    SSEHUB_MAX_EVENT_BYTES: '1024',
  };
  const prefix = uniquePrefix();
  let memoryHub: HubProcess;
  let redisHubs: [HubProcess, HubProcess];

  beforeAll(async () => {
    const redisEnv = { ...QUOTA, REDIS_URL: redisServer.url, SSEHUB_CHANNEL_PREFIX: prefix };
    [memoryHub, ...redisHubs] = (await Promise.all([
      startReadyHub(QUOTA),
      startReadyHub(redisEnv),
      startReadyHub(redisEnv),
    ])) as [HubProcess, HubProcess, HubProcess];
  }, 30_000);

  afterAll(async () => {
    await Promise.all([memoryHub, ...(redisHubs ?? [])].map((hub) => hub?.stop()));
  });

  const body = (user: string, extra: Record<string, unknown> = {}) => JSON.stringify({ user_id: user, ...extra });

  it('lets users publish only their own agui and a2a events; system and analytics need the service role', async () => {
    const user = uid('kinds');
    const own = await mintToken(user);
    const service = await mintToken('svc', { roles: ['service'] });
    const admin = await mintToken(user, { roles: ['admin'] });
    const refusedBefore = await metricValue(memoryHub, 'ssehub_publish_forbidden_total{reason="kind"}');
    expect(await status(memoryHub, own, 'agui', body(user))).toBe(202);
    expect(await status(memoryHub, own, 'a2a', body(user))).toBe(202);
    expect(await status(memoryHub, own, 'system', body(user))).toBe(403);
    expect(await status(memoryHub, own, 'analytics', body(user))).toBe(403);
    expect(await status(memoryHub, admin, 'system', body(user))).toBe(403);
    const res = await postWebhook(memoryHub, own, 'system', body(user));
    expect(await res.json()).toEqual({ error: 'publishing system events needs the service role' });
    expect(await status(memoryHub, service, 'system', body(user))).toBe(202);
    expect(await status(memoryHub, service, 'analytics', body(user))).toBe(202);
    expect((await metricValue(memoryHub, 'ssehub_publish_forbidden_total{reason="kind"}')) - refusedBefore).toBe(4);
  });

  it('answers 429 with Retry-After once a user has published its events or bytes for the window', async () => {
    const byCount = uid('count');
    const byBytes = uid('bytes');
    const countToken = await mintToken(byCount);
    const bytesToken = await mintToken(byBytes);
    const refusedBefore = await metricValue(memoryHub, 'ssehub_publish_quota_refusals_total');
    for (let n = 0; n < 3; n++) expect(await status(memoryHub, countToken, 'agui', body(byCount, { n }))).toBe(202);
    const refused = await postWebhook(memoryHub, countToken, 'a2a', body(byCount));
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    await refused.body?.cancel();
    // Bytes: two events of 900 bytes fit 2048, a third does not.
    const large = body(byBytes, { pad: 'x'.repeat(900 - 10) });
    expect([
      await status(memoryHub, bytesToken, 'agui', large),
      await status(memoryHub, bytesToken, 'agui', large),
      await status(memoryHub, bytesToken, 'agui', large),
    ]).toEqual([202, 202, 429]);
    expect((await metricValue(memoryHub, 'ssehub_publish_quota_refusals_total')) - refusedBefore).toBe(2);
    // The service role is exempt, also when it publishes for a user who is over quota.
    const service = await mintToken('svc', { roles: ['service'] });
    for (let n = 0; n < 5; n++) expect(await status(memoryHub, service, 'agui', body(byCount, { n }))).toBe(202);
  });

  it('counts one quota across the replicas of one Redis', async () => {
    const user = uid('shared');
    const token = await mintToken(user);
    const [a, b] = redisHubs;
    expect([
      await status(a, token, 'agui', body(user)),
      await status(b, token, 'agui', body(user)),
      await status(a, token, 'agui', body(user)),
      await status(b, token, 'agui', body(user)),
      await status(a, token, 'agui', body(user)),
    ]).toEqual([202, 202, 202, 429, 429]);
  });
});
