import { Redis } from 'ioredis';
import { Publisher } from '../../src/publisher';
import { DEFAULT_HISTORY_SETTINGS, redisLibrary, userKeys } from '../../src/transport/redis/library';
import { LIBRARY_WAIT_MS } from '../../src/transport/redis/events';
import { EventRejectedError, TransportUnavailableError } from '../../src/transport/transport';
import { SHARED_REDIS_URL, metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { OwnRedis } from '../helpers/redis-server';
import { userEpoch, userHistoryLength } from '../helpers/redis-user';
import { openStream, sleep, type SseFrame, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * Per-user event history: ids, resume with Last-Event-ID, resets, and recovery of open streams
 * across Redis restarts with and without persistence. Real hub processes (dist/main.js).
 */

type Kind = 'agui' | 'a2a' | 'system' | 'analytics';
type StreamName = 'agui' | 'a2a' | 'contexts';

const ID_PATTERN = /^([0-9a-z]{1,32}):(\d+)-(\d+)$/;
/** A fail-fast bound: a publish refused during an outage answers well within this, never hangs. */
const FAIL_FAST_MS = 2000;

interface ParsedId {
  epoch: string;
  ms: number;
  seq: number;
}

function parseId(id: string | undefined): ParsedId {
  const match = ID_PATTERN.exec(id ?? '');
  if (!match) throw new Error(`not an event id: ${JSON.stringify(id)}`);
  return { epoch: match[1] as string, ms: Number(match[2]), seq: Number(match[3]) };
}

function comparePositions(a: string, b: string): number {
  const x = parseId(a);
  const y = parseId(b);
  return x.ms !== y.ms ? x.ms - y.ms : x.seq - y.seq;
}

async function isReady(hub: HubProcess): Promise<boolean> {
  try {
    const res = await fetch(`${hub.url}/readyz`, { signal: AbortSignal.timeout(3000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** Routes as the hub applies them: which streams show events of a kind. */
function streamsFor(kind: Kind): StreamName[] {
  if (kind === 'agui') return ['agui', 'contexts'];
  if (kind === 'a2a') return ['a2a', 'contexts'];
  if (kind === 'system') return ['contexts'];
  return [];
}

/** The data a stream shows for an event (compared as parsed JSON). */
function shownAs(stream: StreamName, kind: Kind, event: unknown): unknown {
  return stream === 'contexts' ? { protocol: kind, event } : event;
}

const messages = (stream: SseStream): SseFrame[] => stream.events().filter((e) => e.event === undefined);
const resets = (stream: SseStream): SseFrame[] => stream.events().filter((e) => e.event === 'reset');
const resetReason = (frame: SseFrame | undefined): string | undefined =>
  frame?.event === 'reset' ? (JSON.parse(frame.data) as { reason: string }).reason : undefined;

/** A raw Redis connection that never queues and never resends: a command either runs now or fails now. */
async function strictClient(url: string): Promise<Redis> {
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: () => 100,
  });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function fcallPublish(
  client: Redis,
  prefix: string,
  kind: string,
  userId: string,
  event: string,
): Promise<string> {
  const { meta, history } = userKeys(prefix, userId);
  return String(await client.call('FCALL', 'ssehub_publish', '2', meta, history, kind, event));
}

/** Webhook body: the event with a top-level user_id. */
function webhookBody(userId: string, event: Record<string, unknown>): string {
  return JSON.stringify({ user_id: userId, ...event });
}

async function postWebhook(
  hub: HubProcess,
  token: string,
  kind: string,
  body: string,
): Promise<{ status: number; id?: string; replicas?: number }> {
  const res = await fetch(`${hub.url}/api/v1/webhook/${kind}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const json = (await res.json().catch(() => ({}))) as { id?: string; replicas?: number };
  return { status: res.status, id: json.id, replicas: json.replicas };
}

/** Outside the no-retry scenario: a publish that must land, retried only on a clean 503. */
async function publishAccepted(hub: HubProcess, token: string, kind: string, body: string): Promise<string> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { status, id } = await postWebhook(hub, token, kind, body);
    if (status === 202 && id) return id;
    if (status !== 503 || Date.now() > deadline) throw new Error(`webhook answered ${status}`);
    await sleep(100);
  }
}

async function openAt(
  hub: HubProcess,
  path: string,
  userId: string,
  headers: Record<string, string> = {},
): Promise<SseStream> {
  const stream = await openStream(hub.url, path, { token: await mintToken(userId), headers });
  expect(stream.status).toBe(200);
  return stream;
}

/** Opens a stream and waits for its opening position (`id:` alone). */
async function openPositioned(hub: HubProcess, path: string, userId: string): Promise<SseStream> {
  const stream = await openAt(hub, path, userId);
  await stream.waitForPosition(15_000, 'the opening position');
  const first = stream.frames()[0];
  expect(first?.hasData).toBe(false);
  expect(first?.id).toMatch(ID_PATTERN);
  return stream;
}

function summaryLine(title: string, fields: Record<string, unknown>): string {
  return `[resume-history] ${title}: ${Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ')}`;
}

// ---------------------------------------------------------------------------------------------

interface TwoHubs {
  redis: OwnRedis;
  hubs: [HubProcess, HubProcess];
  prefix: string;
}

/** Two hubs on a private Redis that the tests stop and restart; up for the enclosing describe. */
function twoHubsOnOwnRedis(options?: Parameters<typeof OwnRedis.start>[0]): TwoHubs {
  const setup = { prefix: uniquePrefix() } as TwoHubs;
  beforeAll(async () => {
    setup.redis = await OwnRedis.start(options);
    const env = { REDIS_URL: setup.redis.url, SSEHUB_CHANNEL_PREFIX: setup.prefix };
    setup.hubs = (await Promise.all([startReadyHub(env), startReadyHub(env)])) as [HubProcess, HubProcess];
  }, 30_000);
  afterAll(async () => {
    await Promise.all((setup.hubs ?? []).map((hub) => hub.stop()));
    await setup.redis?.destroy();
  });
  return setup;
}

/**
 * AOF keeps what Redis acknowledged, but a restarted (or failed-over) Redis cannot prove that it
 * holds everything it acknowledged (asynchronous persistence and replication may lose the newest
 * writes), so each user's history gets a new epoch there: every open stream is told so with one
 * reset, never a silent gap, and nothing acknowledged is lost or duplicated around it.
 */
describe('Redis with AOF restarted under two live hubs and a steady publisher', () => {
  const setup = twoHubsOnOwnRedis({ persistence: 'aof' });
  const { prefix } = setup;

  it('loses nothing and duplicates nothing: every acknowledged event reaches every open stream once, in order, around one history_lost reset', async () => {
    const [a, b] = setup.hubs;
    const hubByName = { A: a, B: b } as const;
    const users = [uid('u1'), uid('u2'), uid('u3')] as const;
    const [u1, u2, u3] = users;
    const layout: Array<{ user: string; stream: StreamName; hub: 'A' | 'B' }> = [
      { user: u1, stream: 'agui', hub: 'A' },
      { user: u1, stream: 'contexts', hub: 'B' },
      { user: u2, stream: 'agui', hub: 'B' },
      { user: u2, stream: 'contexts', hub: 'A' },
      { user: u3, stream: 'agui', hub: 'A' },
      { user: u3, stream: 'agui', hub: 'B' },
      { user: u3, stream: 'contexts', hub: 'A' },
      { user: u3, stream: 'contexts', hub: 'B' },
    ];
    const clients = await Promise.all(
      layout.map(async (spec) => ({
        ...spec,
        conn: await openPositioned(hubByName[spec.hub], `/api/v1/stream/${spec.stream}`, spec.user),
      })),
    );
    // Each stream opens at the origin of its user's history, whose epoch its first read created.
    const openingEpoch = new Map<string, string>();
    for (const client of clients) {
      expect(client.conn.lastEventId()).toMatch(/^[0-9a-z]+:0-0$/);
      const { epoch } = parseId(client.conn.lastEventId());
      expect(openingEpoch.get(client.user) ?? epoch).toBe(epoch);
      openingEpoch.set(client.user, epoch);
    }
    expect(new Set(openingEpoch.values()).size).toBe(users.length);

    const service = await mintToken('svc', { roles: ['service'] });
    const direct = await strictClient(setup.redis.url);

    interface Attempt {
      n: number;
      user: string;
      kind: Kind;
      via: 'A' | 'B' | 'fcall';
      event: Record<string, unknown>;
      startedAt: number;
      endedAt: number;
      id?: string;
      /** Replicas subscribed to the user's channel when Redis ran the publish: below 2, a hub missed it live. */
      receivers?: number;
      failure?: string;
    }
    const attempts: Attempt[] = [];
    const KINDS: Kind[] = ['agui', 'a2a', 'agui', 'system', 'analytics'];
    const LANES = ['A', 'B', 'fcall'] as const;
    const publishOnce = async (n: number, user: string, kind: Kind, via: Attempt['via']): Promise<Attempt> => {
      const event = { type: 'TICK', n, via };
      const attempt: Attempt = { n, user, kind, via, event, startedAt: Date.now(), endedAt: 0 };
      try {
        if (via === 'fcall') {
          // The counted variant of ssehub_publish: the same publish, returning [id, receivers].
          const { meta, history } = userKeys(prefix, user);
          const [id, receivers] = (await direct.call(
            'FCALL',
            'ssehub_publish_counted',
            '2',
            meta,
            history,
            kind,
            JSON.stringify(event),
          )) as [string, number];
          attempt.id = String(id);
          attempt.receivers = Number(receivers);
        } else {
          const { status, id, replicas } = await postWebhook(hubByName[via], service, kind, webhookBody(user, event));
          if (status === 202 && id) {
            attempt.id = id;
            attempt.receivers = replicas;
          } else attempt.failure = `http ${status}`;
        }
      } catch (err) {
        attempt.failure = (err as Error).message;
      }
      attempt.endedAt = Date.now();
      attempts.push(attempt);
      return attempt;
    };

    // One publish every 25 ms, in turn through hub A's webhook, hub B's webhook and FCALL; never retried.
    let running = true;
    let n = 0;
    const loop = (async () => {
      const interval = 25;
      const t0 = Date.now();
      while (running) {
        n++;
        await publishOnce(
          n,
          users[n % 3] as string,
          KINDS[n % 5] as Kind,
          LANES[Math.floor(n / 3) % 3] as Attempt['via'],
        );
        const wait = t0 + n * interval - Date.now();
        if (wait > 0) await sleep(wait);
      }
    })();
    const ok = (): Attempt[] => attempts.filter((x) => x.id !== undefined);
    const failed = (): Attempt[] => attempts.filter((x) => x.id === undefined);

    try {
      await until(() => ok().length >= 30, 20_000, '30 publishes before the outage');

      const killedAt = Date.now();
      await setup.redis.stop();
      const deadAt = Date.now();
      await until(async () => !(await isReady(a)) && !(await isReady(b)), 15_000, 'both hubs to report the outage');
      await until(
        () => Date.now() - killedAt >= 1000 && failed().filter((x) => x.startedAt >= killedAt).length >= 10,
        15_000,
        'failed publishes during the outage',
      );

      const _restartedAt = Date.now();
      await setup.redis.restart();
      const redisBackAt = Date.now();
      await until(async () => (await isReady(a)) && (await isReady(b)), 20_000, 'both hubs to resubscribe');
      const readyAt = Date.now();
      const since = (via: Attempt['via']): number => ok().filter((x) => x.via === via && x.startedAt >= readyAt).length;
      await until(
        () => since('A') >= 5 && since('B') >= 5 && since('fcall') >= 5,
        20_000,
        'publishes on every lane after recovery',
      );
      running = false;
      await loop;

      // A last event per user, after everything else: once it is in, nothing earlier is still on its way.
      for (const user of users) {
        const sentinel = await publishOnce(++n, user, 'agui', 'fcall');
        expect(sentinel.id).toBeDefined();
      }

      const succeeded = ok();
      const failures = failed();
      const byN = new Map(attempts.map((x) => [x.n, x]));

      // First gather (so the figures are printed whatever happens), then assert.
      const perClient: string[] = [];
      let failedButDelivered = 0;
      const failedButDeliveredNs = new Set<number>();
      const checks: Array<() => void> = [];
      const expectedFor = (client: (typeof clients)[number]): Attempt[] =>
        succeeded
          .filter((x) => x.user === client.user && streamsFor(x.kind).includes(client.stream))
          .sort((x, y) => comparePositions(x.id as string, y.id as string));
      const arrivals = await Promise.all(
        clients.map((client) => {
          const last = expectedFor(client).at(-1) as Attempt;
          return client.conn
            .waitFor((s) => messages(s).some((m) => m.id === last.id), 30_000, 'its last event')
            .then(
              () => true,
              () => false,
            );
        }),
      );
      for (const [index, client] of clients.entries()) {
        const expected = expectedFor(client);
        const arrived = arrivals[index];
        const received = messages(client.conn).map((m) => {
          const data = JSON.parse(m.data) as { n?: number; event?: { n?: number } };
          return { id: m.id, n: (client.stream === 'contexts' ? data.event?.n : data.n) as number, data };
        });
        const counts = new Map<number, number>();
        for (const r of received) counts.set(r.n, (counts.get(r.n) ?? 0) + 1);
        // The reset stands for everything of the new history up to its position: the client
        // refetches that state. What is owed is the old history, and the new one after that point.
        const reset = resets(client.conn)[0];
        const oldEpoch = openingEpoch.get(client.user) as string;
        const owed = expected.filter(
          (x) =>
            parseId(x.id).epoch === oldEpoch ||
            (reset?.id !== undefined && comparePositions(x.id as string, reset.id) > 0),
        );
        const covered = expected.length - owed.length;
        const lost = owed.filter((x) => !counts.has(x.n)).length;
        const duplicated = [...counts.values()].filter((c) => c > 1).length;
        const extra = received.filter((r) => byN.get(r.n)?.id === undefined);
        failedButDelivered += extra.length;
        for (const r of extra) failedButDeliveredNs.add(r.n);
        const resetCount = resets(client.conn).length;
        const name = `${client.user.slice(0, 2)}/${client.stream}@${client.hub}`;
        perClient.push(
          `${name}:exp=${expected.length},recv=${received.length},covered=${covered},lost=${lost},dup=${duplicated},extra=${extra.length},resets=${resetCount}(${resets(client.conn).map(resetReason).join(',')})`,
        );
        checks.push(() => {
          expect([name, arrived, resetCount, resetReason(reset), duplicated, lost]).toEqual([
            name,
            true,
            1,
            'history_lost',
            0,
            0,
          ]);
          // The reset names a position in the user's new history, and comes after every event of the old one.
          const resetId = reset?.id as string;
          expect(parseId(resetId).epoch).not.toBe(oldEpoch);
          const events = client.conn.events();
          const resetAt = events.indexOf(reset as SseFrame);
          expect(events.slice(0, resetAt).every((e) => parseId(e.id).epoch === oldEpoch)).toBe(true);
          expect(events.slice(resetAt + 1).every((e) => parseId(e.id).epoch === parseId(resetId).epoch)).toBe(true);
          // Only events published after Redis came back can be covered by the reset.
          for (const x of expected.filter((y) => !owed.includes(y))) expect(x.startedAt).toBeGreaterThanOrEqual(deadAt);
          // Ids only go forward on every stream.
          for (let i = 1; i < received.length; i++) {
            expect(comparePositions(received[i]?.id as string, received[i - 1]?.id as string)).toBeGreaterThan(0);
          }
          // Every acknowledged event owed to this stream, exactly once, in order, with its id and bytes.
          const acknowledged = received.filter((r) => byN.get(r.n)?.id !== undefined);
          expect(acknowledged.map((r) => [r.id, r.data])).toEqual(
            owed.map((x) => [x.id, shownAs(client.stream, x.kind, x.event)]),
          );
          // Anything else can only be a publish whose reply was lost with the connection: of this user, for this stream.
          for (const r of extra) {
            const attempt = byN.get(r.n);
            expect(attempt?.user).toBe(client.user);
            expect(streamsFor(attempt?.kind as Kind)).toContain(client.stream);
          }
        });
      }

      const metrics = async (
        hub: HubProcess,
      ): Promise<{ recovered: number; replayed: number; readFailures: number; resubscribes: number }> => ({
        recovered: await metricValue(hub, 'ssehub_history_recovered_total'),
        replayed: await metricValue(hub, 'ssehub_history_replayed_total'),
        readFailures: await metricValue(hub, 'ssehub_history_read_failures_total'),
        resubscribes: await metricValue(hub, 'ssehub_transport_resubscribes_total'),
      });
      const metricsA = await metrics(a);
      const metricsB = await metrics(b);

      // Events Redis ran while a hub was not subscribed (PUBLISH reached fewer than both) can only
      // have reached that hub's streams from history. Those that show on streams of both hubs
      // (agui events, and every event of u3) prove a recovery on at least one of them.
      const missedLive = succeeded.filter((x) => (x.receivers ?? 2) < 2);
      const missedOnBoth = missedLive.filter((x) =>
        (['A', 'B'] as const).every((h) =>
          clients.some((c) => c.hub === h && c.user === x.user && streamsFor(x.kind).includes(c.stream)),
        ),
      );
      const listenedAt = (hub: HubProcess): number[] =>
        hub
          .output()
          .split('\n')
          .filter((line) => line.includes('"msg":"listening for events"'))
          .map((line) => (JSON.parse(line) as { time: number }).time - redisBackAt);

      console.log(
        summaryLine('AOF restart (appendfsync always), 2 hubs, no retries', {
          published_ok: succeeded.length,
          published_failed: failures.length,
          // Publishes reported as failed whose event Redis had run (the reply was lost with the connection).
          failed_but_delivered: `${failedButDeliveredNs.size} publish(es), ${failedButDelivered} deliveries[${[
            ...failedButDeliveredNs,
          ]
            .map((fn) => byN.get(fn))
            .map((f) => `#${f?.n} ${f?.via} ${f?.kind} ${(f?.endedAt ?? 0) - (f?.startedAt ?? 0)}ms "${f?.failure}"`)
            .join('; ')}]`,
          max_fail_ms: Math.max(...failures.map((f) => f.endedAt - f.startedAt)),
          redis_down_ms: redisBackAt - killedAt,
          hubs_ready_after_restart_ms: readyAt - redisBackAt,
          resubscribed_after_ms: `A:${listenedAt(a).slice(1).join('/')},B:${listenedAt(b).slice(1).join('/')}`,
          missed_live: `${missedLive.length}(receivers=${missedLive.map((x) => x.receivers).join('')})`,
          missed_live_on_both: missedOnBoth.length,
          recovered: `A:${metricsA.recovered},B:${metricsB.recovered}`,
          replayed: `A:${metricsA.replayed},B:${metricsB.replayed}`,
          read_failures: `A:${metricsA.readFailures},B:${metricsB.readFailures}`,
          fcall_failures: [...new Set(failures.filter((f) => f.via === 'fcall').map((f) => f.failure))].join('|'),
          clients: perClient.join(' '),
        }),
      );

      // Publishes that failed did so quickly, with a clean answer.
      const slow = failures.filter((f) => f.endedAt - f.startedAt >= FAIL_FAST_MS);
      expect(slow.map((f) => `#${f.n} via ${f.via}: ${f.endedAt - f.startedAt} ms (${f.failure})`)).toEqual([]);
      for (const f of failures) {
        if (f.via !== 'fcall') expect(f.failure).toBe('http 503');
        else expect(f.failure).not.toMatch(/ERR ssehub/);
      }
      expect(failures.length).toBeGreaterThan(0);
      // Each user's acknowledged ids carry the user's own epochs: the one its streams opened in
      // until the kill, and one new epoch after the restart (the meta AOF kept names the Redis
      // that wrote it, and this one is another run). Every id is unique.
      for (const user of users) {
        const mine = succeeded.filter((x) => x.user === user);
        const before = new Set(mine.filter((x) => x.startedAt < killedAt).map((x) => parseId(x.id).epoch));
        const after = new Set(mine.filter((x) => x.startedAt >= redisBackAt).map((x) => parseId(x.id).epoch));
        expect({ user, before: [...before], after: after.size }).toEqual({
          user,
          before: [openingEpoch.get(user)],
          after: 1,
        });
        expect(after.has(openingEpoch.get(user) as string)).toBe(false);
      }
      const newEpochs = users.map((user) => parseId(succeeded.filter((x) => x.user === user).at(-1)?.id).epoch);
      expect(new Set(newEpochs).size).toBe(users.length);
      expect(new Set(succeeded.map((x) => x.id)).size).toBe(succeeded.length);
      for (const check of checks) check();
      expect(metricsA.resubscribes).toBeGreaterThanOrEqual(1);
      expect(metricsB.resubscribes).toBeGreaterThanOrEqual(1);

      // A lost reply is possible only for the publish in flight at the kill (the loop has one at a time).
      expect(failedButDeliveredNs.size).toBeLessThanOrEqual(1);
      for (const fn of failedButDeliveredNs) expect((byN.get(fn)?.startedAt ?? Infinity) <= deadAt).toBe(true);
    } finally {
      running = false;
      await loop;
      direct.disconnect();
      for (const client of clients) client.conn.close();
    }
  }, 90_000);
});

// ---------------------------------------------------------------------------------------------

describe('Redis without persistence restarted under two live hubs', () => {
  const setup = twoHubsOnOwnRedis();

  it('tells every open stream once that the history was lost, then goes on live; an old id also earns history_lost', async () => {
    const [a, b] = setup.hubs;
    const user = uid('w');
    const service = await mintToken('svc', { roles: ['service'] });
    const streams = {
      'agui@A': await openPositioned(a, '/api/v1/stream/agui', user),
      'contexts@A': await openPositioned(a, '/api/v1/stream/contexts', user),
      'agui@B': await openPositioned(b, '/api/v1/stream/agui', user),
    };
    const resetsBefore = {
      A: await metricValue(a, 'ssehub_history_resets_total{reason="history_lost"}'),
      B: await metricValue(b, 'ssehub_history_resets_total{reason="history_lost"}'),
    };
    const pre: string[] = [];
    for (let i = 1; i <= 3; i++)
      pre.push(await publishAccepted(a, service, 'agui', webhookBody(user, { phase: 'pre', i })));
    for (const stream of Object.values(streams)) await stream.waitForEvents(3, 15_000);
    const oldEpoch = parseId(pre[2]).epoch;

    await setup.redis.stop();
    await until(async () => !(await isReady(a)) && !(await isReady(b)), 15_000, 'both hubs to report the outage');
    // A stream opened during the outage cannot learn its position; it is told so once the store is back.
    const failuresBefore = await metricValue(b, 'ssehub_history_read_failures_total');
    const blind = await openAt(b, '/api/v1/stream/agui', user);
    await until(
      async () => (await metricValue(b, 'ssehub_history_read_failures_total')) > failuresBefore,
      15_000,
      'the history read of the stream opened during the outage to fail',
    );
    expect(blind.frames()).toEqual([]);
    await setup.redis.restart();
    await until(async () => (await isReady(a)) && (await isReady(b)), 20_000, 'both hubs to resubscribe');
    for (const stream of [...Object.values(streams), blind]) {
      await stream.waitFor((s) => resets(s).length >= 1, 20_000, 'the reset');
    }
    const post: string[] = [];
    for (let i = 1; i <= 2; i++)
      post.push(await publishAccepted(b, service, 'agui', webhookBody(user, { phase: 'post', i })));
    const newEpoch = parseId(post[0]).epoch;
    expect(newEpoch).not.toBe(oldEpoch);
    expect(post.map((id) => parseId(id).seq)).toEqual([1, 2]);

    const perClient: string[] = [];
    for (const [name, stream] of Object.entries(streams)) {
      const events = await stream.waitForEvents(6, 15_000);
      await stream.waitFor((s) => s.lastEventId() === post[1], 5000, 'the last id');
      const wrap = (e: unknown): unknown => (name.startsWith('contexts') ? { protocol: 'agui', event: e } : e);
      expect(events.map((e) => [e.event ?? 'message', e.id, JSON.parse(e.data)])).toEqual([
        ['message', pre[0], wrap({ phase: 'pre', i: 1 })],
        ['message', pre[1], wrap({ phase: 'pre', i: 2 })],
        ['message', pre[2], wrap({ phase: 'pre', i: 3 })],
        // The reset carries the new history's position: nothing was published in it yet.
        [
          'reset',
          `${newEpoch}:0-0`,
          expect.objectContaining({ type: 'reset', reason: 'history_lost', message: expect.any(String) }),
        ],
        ['message', post[0], wrap({ phase: 'post', i: 1 })],
        ['message', post[1], wrap({ phase: 'post', i: 2 })],
      ]);
      perClient.push(
        `${name}:recv=${messages(stream).length},resets=${resets(stream).length}(${resets(stream).map(resetReason).join(',')})`,
      );
      stream.close();
    }

    const blindEvents = await blind.waitForEvents(3, 15_000);
    await blind.waitFor((s) => s.lastEventId() === post[1], 5000, 'the last id');
    expect(blindEvents.map((e) => [e.event ?? 'message', e.id, resetReason(e)])).toEqual([
      ['reset', `${newEpoch}:0-0`, 'history_unavailable'],
      ['message', post[0], undefined],
      ['message', post[1], undefined],
    ]);
    perClient.push(
      `opened-during-outage@B:recv=${messages(blind).length},resets=${resets(blind).length}(${resets(blind).map(resetReason).join(',')})`,
    );
    blind.close();

    // A client coming back with an id of the lost history is told so, then continues live.
    const returning = await openAt(b, '/api/v1/stream/agui', user, { 'Last-Event-ID': pre[2] as string });
    const [reset] = await returning.waitForEvents(1, 15_000);
    expect(reset?.event).toBe('reset');
    expect(resetReason(reset)).toBe('history_lost');
    expect(reset?.id).toBe(post[1]);
    const live = await publishAccepted(a, service, 'agui', webhookBody(user, { phase: 'live' }));
    const events = await returning.waitForEvents(2, 15_000);
    expect(events.map((e) => [e.event ?? 'message', e.id])).toEqual([
      ['reset', post[1]],
      ['message', live],
    ]);
    expect(JSON.parse(events[1]?.data ?? '')).toEqual({ phase: 'live' });
    returning.close();

    const resetsAfter = {
      A: await metricValue(a, 'ssehub_history_resets_total{reason="history_lost"}'),
      B: await metricValue(b, 'ssehub_history_resets_total{reason="history_lost"}'),
    };
    console.log(
      summaryLine('restart without persistence, 2 hubs', {
        published_pre: pre.length,
        published_post: post.length + 1,
        old_epoch: oldEpoch,
        new_epoch: newEpoch,
        history_lost_resets_metric: `A:+${resetsAfter.A - resetsBefore.A},B:+${resetsAfter.B - resetsBefore.B}`,
        recovered: `A:${await metricValue(a, 'ssehub_history_recovered_total')},B:${await metricValue(b, 'ssehub_history_recovered_total')}`,
        clients: perClient.join(' '),
        returning_client: `reset=${resetReason(reset)},then_live=1`,
      }),
    );
    expect(resetsAfter.A - resetsBefore.A).toBe(2);
    expect(resetsAfter.B - resetsBefore.B).toBe(2);
    expect(await metricValue(b, 'ssehub_history_resets_total{reason="history_unavailable"}')).toBe(1);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------

describe('resuming from an id on one hub', () => {
  /** Replays of at most 5 events; default retention. */
  let capHub: HubProcess;
  /**
   * Keeps 5 events per user; default replay cap. On a Redis of its own: the history limits are
   * part of the function library, which is global to a Redis, so hubs with other limits (capHub,
   * other suites) must not share its Redis.
   */
  let trimHub: HubProcess;
  let trimServer: OwnRedis;
  let trimRedis: Redis;
  const capPrefix = uniquePrefix();
  const trimPrefix = uniquePrefix();
  let redis: Redis;
  const opened: SseStream[] = [];
  /** A user's epoch as Redis holds it: each user's history has its own. */
  const epochOf = async (prefix: string, userId: string): Promise<string> =>
    (await userEpoch(redis, prefix, userId)) ?? 'none';

  const publish = (prefix: string, kind: Kind, userId: string, event: object): Promise<string> =>
    fcallPublish(prefix === trimPrefix ? trimRedis : redis, prefix, kind, userId, JSON.stringify(event));
  const open = async (
    hub: HubProcess,
    path: string,
    userId: string,
    headers: Record<string, string> = {},
  ): Promise<SseStream> => {
    const stream = await openAt(hub, path, userId, headers);
    opened.push(stream);
    return stream;
  };
  const positioned = async (hub: HubProcess, path: string, userId: string): Promise<SseStream> => {
    const stream = await openPositioned(hub, path, userId);
    opened.push(stream);
    return stream;
  };
  const resetsOf = (hub: HubProcess, reason: string): Promise<number> =>
    metricValue(hub, `ssehub_history_resets_total{reason="${reason}"}`);

  beforeAll(async () => {
    trimServer = await OwnRedis.start();
    [capHub, trimHub] = await Promise.all([
      startReadyHub({ REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: capPrefix, SSEHUB_REPLAY_MAX: '5' }),
      startReadyHub({ REDIS_URL: trimServer.url, SSEHUB_CHANNEL_PREFIX: trimPrefix, SSEHUB_HISTORY_MAX: '5' }),
    ]);
    redis = new Redis(SHARED_REDIS_URL);
    trimRedis = new Redis(trimServer.url);
  }, 30_000);

  afterEach(() => {
    for (const stream of opened.splice(0)) stream.close();
  });

  afterAll(async () => {
    redis?.disconnect();
    trimRedis?.disconnect();
    await Promise.all([capHub?.stop(), trimHub?.stop()]);
    await trimServer?.destroy();
    const keys = await scanKeys(`${capPrefix}:*`);
    if (keys.length > 0) {
      const cleaner = new Redis(SHARED_REDIS_URL);
      await cleaner.del(...keys);
      cleaner.disconnect();
    }
  });

  async function scanKeys(pattern: string): Promise<string[]> {
    const client = new Redis(SHARED_REDIS_URL);
    try {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      return keys;
    } finally {
      client.disconnect();
    }
  }

  it('opens every stream at its position; the origin id resumes nothing for an empty history and everything for a full one', async () => {
    // No id at all: the stream opens with the origin of the user's history, no reset, no event;
    // its read created the user's epoch, which the user's first event then carries.
    const fresh = uid('fresh');
    const first = await positioned(capHub, '/api/v1/stream/agui', fresh);
    const freshEpoch = await epochOf(capPrefix, fresh);
    expect(first.raw()).toBe(`id:${freshEpoch}:0-0\n\n`);
    const id1 = await publish(capPrefix, 'agui', fresh, { n: 1 });
    expect(parseId(id1)).toEqual({ epoch: freshEpoch, ms: expect.any(Number), seq: 1 });
    expect((await first.waitForEvents(1, 10_000)).map((e) => [e.event, e.id, e.data])).toEqual([
      [undefined, id1, '{"n":1}'],
    ]);

    // The origin id with an empty history: nothing replayed, no reset; the next event is live.
    const empty = uid('empty');
    const emptyOrigin = (await positioned(capHub, '/api/v1/stream/agui', empty)).lastEventId() as string;
    expect(emptyOrigin).toBe(`${await epochOf(capPrefix, empty)}:0-0`);
    expect(parseId(emptyOrigin).epoch).not.toBe(freshEpoch);
    const fromOrigin = await open(capHub, '/api/v1/stream/agui', empty, { 'Last-Event-ID': emptyOrigin });
    const live = await publish(capPrefix, 'agui', empty, { live: true });
    const events = await fromOrigin.waitForEvents(1, 10_000);
    await sleep(100);
    expect(fromOrigin.events().map((e) => [e.event, e.id, e.data])).toEqual([[undefined, live, '{"live":true}']]);
    expect(events).toHaveLength(1);

    // The origin id with a history: all of it, from seq 1.
    const more = [id1];
    for (let n = 2; n <= 4; n++) more.push(await publish(capPrefix, 'agui', fresh, { n }));
    const all = await open(capHub, '/api/v1/stream/agui', fresh, { 'Last-Event-ID': `${freshEpoch}:0-0` });
    const replayed = await all.waitForEvents(4, 10_000);
    expect(replayed.map((e) => [e.event, e.id, JSON.parse(e.data)])).toEqual(
      more.map((id, i) => [undefined, id, { n: i + 1 }]),
    );
  });

  it('answers an id it never issued with a reset (unknown_id, or history_lost for another epoch), then goes on live', async () => {
    const user = uid('garbage');
    const ids = [await publish(capPrefix, 'agui', user, { n: 1 }), await publish(capPrefix, 'agui', user, { n: 2 })];
    const head = parseId(ids[1]);
    // Another user's history has an epoch of its own: its ids are from a history this user never had.
    const otherId = await publish(capPrefix, 'agui', uid('someone'), { n: 1 });
    expect(parseId(otherId).epoch).not.toBe(head.epoch);
    const unknownBefore = await resetsOf(capHub, 'unknown_id');
    const lostBefore = await resetsOf(capHub, 'history_lost');
    const cases: Array<[string, string]> = [
      ['garbage', 'unknown_id'],
      ['x'.repeat(200), 'unknown_id'],
      [`${head.epoch}:not-an-id`, 'unknown_id'],
      [`${head.epoch}:${head.ms}-${head.seq + 1}`, 'unknown_id'], // ahead of the user's newest event
      ['zz0epoch0zz:1-1', 'history_lost'], // well-formed, but from a history this store does not have
      [otherId, 'history_lost'],
      [`${parseId(otherId).epoch}:0-0`, 'history_lost'],
    ];
    let current = ids[1] as string;
    for (const [lastEventId, reason] of cases) {
      const stream = await open(capHub, '/api/v1/stream/agui', user, { 'Last-Event-ID': lastEventId });
      const [reset] = await stream.waitForEvents(1, 10_000);
      expect([lastEventId, reset?.event, resetReason(reset), reset?.id]).toEqual([
        lastEventId,
        'reset',
        reason,
        current,
      ]);
      expect(JSON.parse(reset?.data ?? '')).toEqual({ type: 'reset', reason, message: expect.any(String) });
      current = await publish(capPrefix, 'agui', user, { after: lastEventId.slice(0, 20) });
      const events = await stream.waitForEvents(2, 10_000);
      expect(events.map((e) => [e.event, e.id])).toEqual([
        ['reset', events[0]?.id],
        [undefined, current],
      ]);
      stream.close();
    }
    expect((await resetsOf(capHub, 'unknown_id')) - unknownBefore).toBe(4);
    expect((await resetsOf(capHub, 'history_lost')) - lostBefore).toBe(3);
  });

  it("never replays another user's events for an id taken from that user", async () => {
    const other = uid('other');
    const me = uid('me');
    const theirs: string[] = [];
    for (let i = 1; i <= 5; i++) theirs.push(await publish(capPrefix, 'agui', other, { secret: `theirs-${i}` }));
    const mine = [await publish(capPrefix, 'agui', me, { mine: 1 }), await publish(capPrefix, 'agui', me, { mine: 2 })];
    const later = await publish(capPrefix, 'agui', other, { secret: 'theirs-later' });
    for (const borrowed of [theirs[0], theirs[2], theirs[4], later] as string[]) {
      const stream = await open(capHub, '/api/v1/stream/agui', me, { 'Last-Event-ID': borrowed });
      // Caught up (a reset, a replay or the position alone) before the marker: a reset's position
      // would otherwise cover a marker published while the history was being read.
      await stream.waitForPosition(10_000, 'the catch-up');
      const marker = await publish(capPrefix, 'agui', me, { marker: borrowed });
      mine.push(marker);
      await stream.waitFor((s) => messages(s).some((m) => m.id === marker), 10_000, 'the live marker');
      await sleep(50);
      expect(stream.raw()).not.toContain('theirs');
      // The other user's ids are of the other user's epoch, a history this user never had: one
      // reset (history_lost) at this user's newest event, then the marker, never the other's events.
      expect(stream.events().map((e) => [e.event, resetReason(e), e.id])).toEqual([
        ['reset', 'history_lost', mine.at(-2)],
        [undefined, undefined, marker],
      ]);
      stream.close();
    }
  });

  it('answers more missed events than the replay cap with a reset (replay_limit), and replays up to the cap', async () => {
    // At the cap (5): replayed.
    const atCap = uid('atcap');
    const start = await publish(capPrefix, 'agui', atCap, { n: 0 });
    const five: string[] = [];
    for (let n = 1; n <= 5; n++) five.push(await publish(capPrefix, 'agui', atCap, { n }));
    const replayedBefore = await metricValue(capHub, 'ssehub_history_replayed_total');
    const replay = await open(capHub, '/api/v1/stream/agui', atCap, { 'Last-Event-ID': start });
    expect((await replay.waitForEvents(5, 10_000)).map((e) => [e.event, e.id])).toEqual(
      five.map((id) => [undefined, id]),
    );
    expect((await metricValue(capHub, 'ssehub_history_replayed_total')) - replayedBefore).toBe(5);

    // Over the cap (10 missed): a reset at the newest id, then live events.
    const overCap = uid('overcap');
    const from = await publish(capPrefix, 'agui', overCap, { n: 0 });
    let newest = from;
    for (let n = 1; n <= 10; n++) newest = await publish(capPrefix, 'agui', overCap, { n });
    const limitBefore = await resetsOf(capHub, 'replay_limit');
    const stream = await open(capHub, '/api/v1/stream/agui', overCap, { 'Last-Event-ID': from });
    const [reset] = await stream.waitForEvents(1, 10_000);
    expect([reset?.event, resetReason(reset), reset?.id]).toEqual(['reset', 'replay_limit', newest]);
    const live = await publish(capPrefix, 'agui', overCap, { n: 11 });
    const events = await stream.waitForEvents(2, 10_000);
    expect(events.map((e) => [e.event, e.id, e.event ? undefined : e.data])).toEqual([
      ['reset', newest, undefined],
      [undefined, live, '{"n":11}'],
    ]);
    expect((await resetsOf(capHub, 'replay_limit')) - limitBefore).toBe(1);
  });

  it('answers an id older than the retained history with a reset (trimmed), and replays from a trimmed id whose successor is kept', async () => {
    const user = uid('trim');
    const ids: string[] = [];
    for (let n = 1; n <= 8; n++) ids.push(await publish(trimPrefix, 'agui', user, { n }));
    expect(await userHistoryLength(trimRedis, trimPrefix, user)).toBe(5); // 4..8 kept
    const trimmedBefore = await resetsOf(trimHub, 'trimmed');

    for (const from of [ids[1] as string, `${parseId(ids[0]).epoch}:0-0`]) {
      const stream = await open(trimHub, '/api/v1/stream/agui', user, { 'Last-Event-ID': from });
      const [reset] = await stream.waitForEvents(1, 10_000);
      expect([from, reset?.event, resetReason(reset), reset?.id]).toEqual([from, 'reset', 'trimmed', ids[7]]);
      stream.close();
    }
    expect((await resetsOf(trimHub, 'trimmed')) - trimmedBefore).toBe(2);

    // Entry 3 is gone but entry 4 is its successor: provably contiguous.
    const contiguous = await open(trimHub, '/api/v1/stream/agui', user, { 'Last-Event-ID': ids[2] as string });
    const fromOldestKept = await open(trimHub, '/api/v1/stream/agui', user, { 'Last-Event-ID': ids[3] as string });
    const live = await publish(trimPrefix, 'agui', user, { n: 9 });
    const expected = (from: number): Array<[string | undefined, string | undefined, unknown]> =>
      [...ids.slice(from), live].map((id, i) => [undefined, id, { n: from + 1 + i }]);
    for (const [stream, from] of [
      [contiguous, 3],
      [fromOldestKept, 4],
    ] as const) {
      const events = await stream.waitForEvents(9 - from, 10_000);
      await sleep(50);
      expect(stream.events().map((e) => [e.event, e.id, JSON.parse(e.data)])).toEqual(expected(from));
      expect(events).toHaveLength(9 - from);
    }
    expect((await resetsOf(trimHub, 'trimmed')) - trimmedBefore).toBe(2);
  });

  it('takes the id from the last_event_id query parameter (the header wins when both are sent)', async () => {
    const user = uid('query');
    const ids: string[] = [];
    for (let n = 1; n <= 3; n++) ids.push(await publish(capPrefix, 'agui', user, { n }));
    const viaQuery = await open(
      capHub,
      `/api/v1/stream/agui?last_event_id=${encodeURIComponent(ids[0] as string)}`,
      user,
    );
    expect((await viaQuery.waitForEvents(2, 10_000)).map((e) => [e.event, e.id])).toEqual([
      [undefined, ids[1]],
      [undefined, ids[2]],
    ]);
    const both = await open(capHub, `/api/v1/stream/agui?last_event_id=garbage`, user, {
      'Last-Event-ID': ids[1] as string,
    });
    expect((await both.waitForEvents(1, 10_000)).map((e) => [e.event, e.id])).toEqual([[undefined, ids[2]]]);
    await sleep(100);
    expect(both.events()).toHaveLength(1);
  });

  it('replays agui, a2a and system on the contexts stream wrapped with their protocol, skipping analytics', async () => {
    const user = uid('ctx');
    const start = await publish(capPrefix, 'system', user, { type: 'START' });
    const sequence: Array<[Kind, Record<string, unknown>]> = [
      ['agui', { type: 'TEXT_MESSAGE_CONTENT', delta: 'hé "x"' }],
      ['analytics', { type: 'PAGE_VIEW' }],
      ['a2a', { type: 'TASK_STATUS_UPDATE', state: 'working' }],
      ['system', { type: 'CONTEXT_CREATED', name: 'Ctx' }],
    ];
    const published: Array<{ kind: Kind; id: string; bytes: string }> = [];
    for (const [kind, event] of sequence) {
      const bytes = JSON.stringify(event);
      published.push({ kind, id: await fcallPublish(redis, capPrefix, kind, user, bytes), bytes });
    }
    const newest = published[published.length - 1] as { id: string };
    const contexts = await open(capHub, '/api/v1/stream/contexts', user, { 'Last-Event-ID': start });
    const agui = await open(capHub, '/api/v1/stream/agui', user, { 'Last-Event-ID': start });
    const a2a = await open(capHub, '/api/v1/stream/a2a', user, { 'Last-Event-ID': start });
    const shown = (stream: StreamName): Array<[string, string]> =>
      published
        .filter((p) => streamsFor(p.kind).includes(stream))
        .map((p) => [p.id, stream === 'contexts' ? `{"protocol":"${p.kind}","event":${p.bytes}}` : p.bytes]);
    for (const [stream, name] of [
      [contexts, 'contexts'],
      [agui, 'agui'],
      [a2a, 'a2a'],
    ] as const) {
      await stream.waitForEvents(shown(name).length, 10_000);
      expect(stream.events().map((e) => [e.id, e.data])).toEqual(shown(name));
    }
    // Ending on an analytics event: the streams that skip it never learn its id (it is for admins),
    // so the client keeps its own until the next event it is shown.
    await fcallPublish(redis, capPrefix, 'analytics', user, '{"type":"PAGE_VIEW"}');
    const again = await open(capHub, '/api/v1/stream/contexts', user, { 'Last-Event-ID': newest.id });
    const next = await fcallPublish(redis, capPrefix, 'agui', user, '{"type":"NEXT"}');
    await again.waitForEvents(1, 10_000);
    expect(again.frames().map((f) => [f.id, f.data])).toEqual([[next, '{"protocol":"agui","event":{"type":"NEXT"}}']]);
  });

  it('delivers a plain PUBLISH live without an id, and keeps it out of the history', async () => {
    const user = uid('plain');
    const agui = await positioned(capHub, '/api/v1/stream/agui', user);
    const contexts = await positioned(capHub, '/api/v1/stream/contexts', user);
    const position = agui.lastEventId() as string;
    expect(position).toBe(`${await epochOf(capPrefix, user)}:0-0`);
    const receivers = await redis.publish(`${capPrefix}:agui`, JSON.stringify({ user_id: user, event: { plain: 1 } }));
    expect(receivers).toBeGreaterThanOrEqual(1);
    await agui.waitForEvents(1, 10_000);
    await contexts.waitForEvents(1, 10_000);
    expect(agui.events().map((e) => [e.id, e.data])).toEqual([[undefined, '{"plain":1}']]);
    expect(contexts.events().map((e) => [e.id, e.data])).toEqual([
      [undefined, '{"protocol":"agui","event":{"plain":1}}'],
    ]);
    expect(agui.raw()).toBe(`id:${position}\n\ndata:{"plain":1}\n\n`);
    expect(agui.lastEventId()).toBe(position);

    const id = await publish(capPrefix, 'agui', user, { withId: 1 });
    expect(parseId(id).seq).toBe(1);
    await agui.waitForEvents(2, 10_000);
    expect(agui.events()[1]?.id).toBe(id);

    const resumed = await open(capHub, '/api/v1/stream/agui', user, { 'Last-Event-ID': position });
    const marker = await publish(capPrefix, 'agui', user, { marker: 1 });
    await resumed.waitFor((s) => messages(s).some((m) => m.id === marker), 10_000, 'the marker');
    expect(resumed.events().map((e) => [e.id, e.data])).toEqual([
      [id, '{"withId":1}'],
      [marker, '{"marker":1}'],
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('the Publisher API and FCALL', () => {
  let redis: OwnRedis;
  let hub: HubProcess;
  let publisher: Publisher;
  const prefix = uniquePrefix();

  beforeAll(async () => {
    redis = await OwnRedis.start({ persistence: 'aof' });
    hub = await startReadyHub({ REDIS_URL: redis.url, SSEHUB_CHANNEL_PREFIX: prefix, SSEHUB_MAX_EVENT_BYTES: '4096' });
    publisher = await Publisher.connectRedis({ url: redis.url, channelPrefix: prefix, maxEventBytes: 4096 });
  }, 30_000);

  afterAll(async () => {
    await publisher?.close();
    await hub?.stop();
    await redis?.destroy();
  });

  it('publishes with an id that the stream shows, and rejects bad events with EventRejectedError', async () => {
    const user = uid('pub');
    const stream = await openPositioned(hub, '/api/v1/stream/contexts', user);
    const first = await publisher.publish('system', user, { type: 'OBJECT', n: 1 });
    expect(first).toEqual({ id: expect.stringMatching(/^[0-9a-z]+:\d+-1$/), receivers: 1 });
    const second = await publisher.publish('a2a', user, '{"type":"STRING","n":2}');
    const third = await publisher.publish('agui', user, Buffer.from('{"type":"BUFFER","n":3}'));
    expect([second, third].map((p) => parseId(p.id).seq)).toEqual([2, 3]);
    const events = await stream.waitForEvents(3, 10_000);
    expect(events.map((e) => [e.id, e.data])).toEqual([
      [first.id, '{"protocol":"system","event":{"type":"OBJECT","n":1}}'],
      [second.id, '{"protocol":"a2a","event":{"type":"STRING","n":2}}'],
      [third.id, '{"protocol":"agui","event":{"type":"BUFFER","n":3}}'],
    ]);

    const bad: Array<[string, () => Promise<unknown>]> = [
      ['unknown kind', () => publisher.publish('nope' as Kind, user, '{"n":1}')],
      ['empty user', () => publisher.publish('agui', '', '{"n":1}')],
      ['array', () => publisher.publish('agui', user, '[1]')],
      ['not json', () => publisher.publish('agui', user, 'not json')],
      ['too deep', () => publisher.publish('agui', user, `${'{"a":'.repeat(70)}1${'}'.repeat(70)}`)],
      ['too large', () => publisher.publish('agui', user, JSON.stringify({ pad: 'x'.repeat(5000) }))],
    ];
    for (const [what, attempt] of bad) {
      const outcome = await attempt().then(
        () => 'published',
        (err: unknown) => err,
      );
      expect([what, outcome instanceof EventRejectedError]).toEqual([what, true]);
    }
    await sleep(200);
    expect(stream.events()).toHaveLength(3);
    stream.close();
  });

  it('answers FCALL with bad input with a clear error and a good one with the id', async () => {
    const user = uid('fcall');
    const client = await strictClient(redis.url);
    try {
      const call = (...args: string[]): Promise<unknown> =>
        client.call('FCALL', 'ssehub_publish', '0', ...args).then(
          (value) => value,
          (err: Error) => err,
        );
      const errorOf = async (...args: string[]): Promise<string> => {
        const outcome = await call(...args);
        return outcome instanceof Error ? outcome.message : `returned ${String(outcome)}`;
      };
      // The hub loaded the library with its own limit (4096 bytes) and kinds.
      const notAnObject = 'ERR ssehub: event must be a JSON object, from its { to its } without surrounding whitespace';
      expect(await errorOf('nope', user, '{}', prefix)).toBe(
        'ERR ssehub: unknown kind nope (agui, a2a, system, analytics)',
      );
      expect(await errorOf('agui', '', '{}', prefix)).toBe('ERR ssehub: user_id must be 1 to 2048 bytes');
      expect(await errorOf('agui', user, '[1]', prefix)).toBe(notAnObject);
      expect(await errorOf('agui', user, 'not json', prefix)).toBe(notAnObject);
      expect(await errorOf('agui', user, '"string"', prefix)).toBe(notAnObject);
      expect(await errorOf('agui', user, JSON.stringify({ pad: 'x'.repeat(5000) }), prefix)).toBe(
        'ERR ssehub: event must be 1 to 4096 bytes',
      );
      expect(await errorOf('agui')).toBe('ERR ssehub: user_id must be 1 to 2048 bytes');
      // None of those took a place in the user's history.
      const stream = await openPositioned(hub, '/api/v1/stream/agui', user);
      expect(parseId(stream.lastEventId()).seq).toBe(0);
      const id = await call('agui', user, '{"ok":true}', prefix);
      expect(id).toEqual(expect.stringMatching(/^[0-9a-z]+:\d+-1$/));
      expect((await stream.waitForEvents(1, 10_000)).map((e) => [e.id, e.data])).toEqual([[id, '{"ok":true}']]);
      stream.close();
    } finally {
      client.disconnect();
    }
  });

  it("waits for a replica to put the library back, and never writes the defaults over the deployment's limits", async () => {
    const user = uid('reload');
    const client = await strictClient(redis.url);
    const limitsOf = async (of: string): Promise<string | undefined> => {
      const [, settings] = (await client.call('FCALL_RO', 'ssehub_version', '0')) as [number, string];
      return settings.split(';').find((entry) => entry.startsWith(`${of}=`));
    };
    try {
      const own = await limitsOf(prefix);
      expect(own).toMatch(new RegExp(`^${prefix}=4096,`));
      // Another deployment's replica, loading at the same moment, wrote a library without this one.
      await client.call('FUNCTION', 'LOAD', 'REPLACE', redisLibrary(new Map([['other', DEFAULT_HISTORY_SETTINGS]])));
      const { id } = await publisher.publish('system', user, { type: 'AFTER_RELOAD' });
      expect(parseId(id).seq).toBe(1);
      expect(await limitsOf(prefix)).toBe(own);

      // With no replica of its deployment connected, the publisher fails and loads nothing: every
      // publish under way (a burst of one user, others' too) waits for the same 3 s, not 3 s each,
      // and the next ones fail at once for a while.
      const orphan = uniquePrefix();
      const lonely = await Publisher.connectRedis({ url: redis.url, channelPrefix: orphan });
      try {
        const startedAt = Date.now();
        const burst = ['a', 'a', 'a', 'b', 'c'].map((who, n) =>
          lonely.publish('system', `${user}-${who}`, { type: 'NOBODY', n }).catch((err: unknown) => err),
        );
        const refusals = await Promise.all(burst);
        expect(Date.now() - startedAt).toBeLessThan(LIBRARY_WAIT_MS + 1500);
        for (const refusal of refusals) {
          expect(refusal).toBeInstanceOf(TransportUnavailableError);
          expect((refusal as Error).message).toMatch(/no limits loaded for prefix/);
        }
        const againAt = Date.now();
        await expect(lonely.publish('system', user, { type: 'NOBODY' })).rejects.toThrow(TransportUnavailableError);
        expect(Date.now() - againAt).toBeLessThan(500);
      } finally {
        await lonely.close();
      }
      expect(await limitsOf(orphan)).toBeUndefined();
    } finally {
      client.disconnect();
    }
  });

  it('rejects quickly with TransportUnavailableError while Redis is down, and never delivers those events later', async () => {
    const user = uid('down');
    const stream = await openPositioned(hub, '/api/v1/stream/agui', user);
    const before = await publisher.publish('agui', user, JSON.stringify({ tag: 'before' }));
    await stream.waitForEvents(1, 10_000);

    await redis.stop();
    const failedTags: string[] = [];
    const latencies: number[] = [];
    const attempt = async (tag: string): Promise<{ id?: string; error?: unknown }> => {
      const startedAt = Date.now();
      try {
        return { id: (await publisher.publish('agui', user, JSON.stringify({ tag }))).id };
      } catch (error) {
        latencies.push(Date.now() - startedAt);
        failedTags.push(tag);
        return { error };
      } finally {
        expect(Date.now() - startedAt).toBeLessThan(FAIL_FAST_MS);
      }
    };
    for (let i = 1; i <= 3; i++) {
      const outcome = await attempt(`lost-${i}`);
      expect(outcome.id).toBeUndefined();
      expect(outcome.error).toBeInstanceOf(TransportUnavailableError);
    }
    // Bad input is still told apart from the outage.
    await expect(publisher.publish('agui', user, '[1]')).rejects.toBeInstanceOf(EventRejectedError);

    await redis.restart();
    await until(() => isReady(hub), 20_000, 'the hub to resubscribe');
    // The publisher reconnects on its own; until it has, publishes keep failing fast (and are never queued).
    let after: string | undefined;
    for (let i = 1; after === undefined; i++) {
      const outcome = await attempt(`retry-${i}`);
      if (outcome.id !== undefined) after = outcome.id;
      else {
        expect(outcome.error).toBeInstanceOf(TransportUnavailableError);
        expect(i).toBeLessThan(200);
        await sleep(50);
      }
    }
    const sentinel = (await publisher.publish('agui', user, JSON.stringify({ tag: 'sentinel' }))).id;
    await stream.waitFor((s) => messages(s).some((m) => m.id === sentinel), 15_000, 'the sentinel');
    await sleep(300);

    // AOF kept the old history, but this Redis is another run than the one that wrote it: the
    // user's history starts over in a new epoch, and the open stream is told so with one reset.
    // The reset stands for what the new history held when the stream caught up; what came after
    // is delivered.
    const oldEpoch = parseId(before.id).epoch;
    const newEpoch = parseId(after).epoch;
    expect(newEpoch).not.toBe(oldEpoch);
    expect(parseId(sentinel).epoch).toBe(newEpoch);
    const [reset] = resets(stream);
    expect([resets(stream).length, resetReason(reset), parseId(reset?.id).epoch]).toEqual([
      1,
      'history_lost',
      newEpoch,
    ]);
    const owed = [after, sentinel].filter((id) => comparePositions(id, reset?.id as string) > 0);
    expect(stream.events().map((e) => [e.event, e.id])).toEqual([
      [undefined, before.id],
      ['reset', reset?.id],
      ...owed.map((id) => [undefined, id]),
    ]);

    // An id of the old history earns the same reset, at the newest event.
    const returning = await openAt(hub, '/api/v1/stream/agui', user, { 'Last-Event-ID': `${oldEpoch}:0-0` });
    const [returned] = await returning.waitForEvents(1, 15_000);
    expect([returned?.event, resetReason(returned), returned?.id]).toEqual(['reset', 'history_lost', sentinel]);
    // The new history, replayed from its origin, holds what was published since, and none of the failed events.
    const replay = await openAt(hub, '/api/v1/stream/agui', user, { 'Last-Event-ID': `${newEpoch}:0-0` });
    await replay.waitFor((s) => messages(s).some((m) => m.id === sentinel), 15_000, 'the replayed sentinel');
    const tags = replay
      .events()
      .map((e) => (e.event === 'reset' ? 'reset' : (JSON.parse(e.data) as { tag: string }).tag));
    expect(tags).toEqual([expect.stringMatching(/^retry-\d+$/), 'sentinel']);
    expect(replay.events().map((e) => e.id)).toEqual([after, sentinel]);
    for (const s of [stream, returning, replay]) {
      for (const tag of failedTags) expect(s.raw()).not.toContain(`"${tag}"`);
    }
    returning.close();
    console.log(
      summaryLine('Publisher API across a Redis restart (AOF)', {
        failed_fast: failedTags.length,
        max_fail_ms: Math.max(...latencies),
        delivered: messages(stream).length,
        failed_events_seen: 0,
      }),
    );
    stream.close();
    replay.close();
  }, 60_000);
});
