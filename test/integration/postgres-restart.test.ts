import type { Client } from 'pg';
import { metricValue, startReadyHub, type HubProcess } from '../helpers/hub-process';
import { OwnPostgres, connectPg, sqlPublish, compareOutboxIds, parseOutboxId } from '../helpers/postgres-server';
import { openStream, sleep, type SseFrame, type SseStream, shownAs, streamsFor } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * The Postgres outbox transport across a database outage: a private cluster (OwnPostgres)
 * stopped in `immediate` mode (every backend killed, no checkpoint) under two live hubs and a
 * steady publisher, then started again. Open streams must catch up from their position: every
 * committed event once, in id order, no reset.
 */

type Kind = 'agui' | 'a2a' | 'system' | 'analytics';
type StreamName = 'agui' | 'a2a' | 'contexts';

const ID_PATTERN = /^([0-9a-z]{1,32}):(\d+)-(\d+)$/;
const PATHS: Record<StreamName, string> = {
  agui: '/api/v1/stream/agui',
  a2a: '/api/v1/stream/a2a',
  contexts: '/api/v1/stream/contexts',
};

async function probe(hub: HubProcess, path: string): Promise<{ status: number; body: unknown }> {
  try {
    const res = await fetch(`${hub.url}${path}`, { signal: AbortSignal.timeout(3000) });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  } catch (err) {
    return { status: 0, body: (err as Error).message };
  }
}

const isReady = async (hub: HubProcess): Promise<boolean> => (await probe(hub, '/readyz')).status === 200;
const messages = (stream: SseStream): SseFrame[] => stream.events().filter((e) => e.event === undefined);
const resets = (stream: SseStream): SseFrame[] => stream.events().filter((e) => e.event === 'reset');

async function openAt(
  hub: HubProcess,
  stream: StreamName,
  user: string,
  headers: Record<string, string> = {},
): Promise<SseStream> {
  const conn = await openStream(hub.url, PATHS[stream], { token: await mintToken(user), headers });
  expect(conn.status).toBe(200);
  return conn;
}

async function positioned(hub: HubProcess, stream: StreamName, user: string): Promise<SseStream> {
  const conn = await openAt(hub, stream, user);
  await conn.waitForPosition(15_000, 'the opening position');
  expect(conn.frames()[0]?.id).toMatch(ID_PATTERN);
  return conn;
}

async function postWebhook(
  hub: HubProcess,
  kind: Kind,
  body: string,
): Promise<{ status: number; id?: string; error?: string }> {
  try {
    const res = await fetch(`${hub.url}/api/v1/webhook/${kind}`, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${await mintToken('svc', { roles: ['service'] })}`,
        'Content-Type': 'application/json',
      },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    const json = (await res.json().catch(() => ({}))) as { id?: string };
    return { status: res.status, id: json.id };
  } catch (err) {
    return { status: 0, error: (err as Error).message };
  }
}

/**
 * A publisher that reconnects by itself and tells apart what it knows: `ok` (an id came
 * back: committed), `failed` (it never reached the server: not published) and `maybe`
 * (the statement was sent and the connection died before the answer: it may have committed).
 */
class SqlPublisher {
  private client: Client | undefined;
  constructor(private readonly url: string) {}

  async publish(
    kind: Kind,
    user: string,
    event: string,
  ): Promise<{ outcome: 'ok' | 'failed' | 'maybe'; id?: string; error?: string }> {
    let client = this.client;
    if (client === undefined) {
      try {
        client = await connectPg(this.url, { queryTimeoutMs: 5000 });
        this.client = client;
      } catch (err) {
        return { outcome: 'failed', error: `connect: ${(err as Error).message}` };
      }
    }
    try {
      return { outcome: 'ok', id: await sqlPublish(client, 'ssehub', kind, user, event) };
    } catch (err) {
      const e = err as { code?: string; message: string };
      if (e.code === '22023') return { outcome: 'failed', error: `rejected: ${e.message}` };
      this.client = undefined;
      await client.end().catch(() => undefined);
      // pg refuses to send anything on a connection that already failed: that statement never left.
      if (/not queryable/.test(e.message)) return { outcome: 'failed', error: e.message };
      return { outcome: 'maybe', error: `${e.code ?? ''} ${e.message}`.trim() };
    }
  }

  async close(): Promise<void> {
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
  }
}

const HUB_ROLE = 'ssehub_hub';

// A database stopped under live processes is timing-sensitive on a loaded machine: a failed test
// runs once more (on fresh users), and its first error is printed so that it is never hidden.
jest.retryTimes(1, { logErrorsBeforeRetry: true });

describe('Postgres stopped (immediate) and started again under two live hubs', () => {
  let pg: OwnPostgres;
  let hubs: [HubProcess, HubProcess];
  const opened: SseStream[] = [];

  beforeAll(async () => {
    pg = await OwnPostgres.start();
    // The hubs log in as a role of their own, so a test can lock them out while publishers go on.
    const admin = await connectPg(pg.url);
    await admin.query(`CREATE ROLE ${HUB_ROLE} LOGIN SUPERUSER`);
    await admin.end();
    // The default schema (ssehub) on a database of its own.
    const env = { SSEHUB_TRANSPORT: 'postgres', DATABASE_URL: pg.urlAs(HUB_ROLE), SSEHUB_DRAIN_MS: '0' };
    hubs = (await Promise.all([startReadyHub(env), startReadyHub(env)])) as [HubProcess, HubProcess];
  }, 30_000);

  afterEach(async () => {
    for (const stream of opened.splice(0)) stream.close();
    // A failed test may leave the database down: the next one starts from a running one.
    if (pg !== undefined && !pg.isRunning) {
      await pg.start();
      await until(async () => (await isReady(hubs[0])) && (await isReady(hubs[1])), 20_000, 'both hubs to be ready');
    }
  }, 30_000);

  afterAll(async () => {
    await Promise.all((hubs ?? []).map((hub) => hub.stop('SIGKILL')));
    await pg?.destroy();
  });

  async function outage(what: (stoppedAt: number) => Promise<void>): Promise<{ stoppedAt: number; startedAt: number }> {
    const [a, b] = hubs;
    await pg.stop('immediate');
    const stoppedAt = Date.now();
    await until(async () => !(await isReady(a)) && !(await isReady(b)), 15_000, 'both hubs to report the outage');
    for (const hub of hubs) {
      expect(await probe(hub, '/readyz')).toEqual({ status: 503, body: expect.anything() });
      expect(await probe(hub, '/health')).toEqual({
        status: 200,
        body: expect.objectContaining({ status: 'degraded' }),
      });
      expect(await metricValue(hub, 'ssehub_transport_listening')).toBe(0);
    }
    await what(stoppedAt);
    const left = 1500 - (Date.now() - stoppedAt);
    if (left > 0) await sleep(left);
    await pg.start();
    const startedAt = Date.now();
    await until(async () => (await isReady(a)) && (await isReady(b)), 20_000, 'both hubs to be ready again');
    for (const hub of hubs) {
      expect(await probe(hub, '/health')).toEqual({ status: 200, body: expect.objectContaining({ status: 'ok' }) });
    }
    return { stoppedAt, startedAt };
  }

  it('delivers every committed event to every open stream exactly once, in id order, without a reset', async () => {
    const [a, b] = hubs;
    const hubByName = { A: a, B: b } as const;
    const users = [uid('u1'), uid('u2'), uid('u3')] as const;
    const [u1, u2, u3] = users;
    const layout: Array<{ user: string; stream: StreamName; hub: 'A' | 'B' }> = [
      { user: u1, stream: 'agui', hub: 'A' },
      { user: u1, stream: 'contexts', hub: 'B' },
      { user: u2, stream: 'a2a', hub: 'B' },
      { user: u2, stream: 'contexts', hub: 'A' },
      { user: u3, stream: 'agui', hub: 'A' },
      { user: u3, stream: 'agui', hub: 'B' },
      { user: u3, stream: 'contexts', hub: 'A' },
      { user: u3, stream: 'contexts', hub: 'B' },
    ];
    const clients = await Promise.all(
      layout.map(async (spec) => {
        const conn = await positioned(hubByName[spec.hub], spec.stream, spec.user);
        opened.push(conn);
        return { ...spec, conn };
      }),
    );

    interface Attempt {
      n: number;
      user: string;
      kind: Kind;
      via: 'sql' | 'A' | 'B';
      bytes: string;
      outcome: 'ok' | 'failed' | 'maybe';
      id?: string;
      error?: string;
      startedAt: number;
    }
    const attempts: Attempt[] = [];
    const publisher = new SqlPublisher(pg.url);
    const KINDS: Kind[] = ['agui', 'a2a', 'agui', 'system', 'analytics'];
    const publishOnce = async (n: number, user: string, kind: Kind, via: Attempt['via']): Promise<Attempt> => {
      const bytes = `{"n":${n},"via":"${via}"}`;
      const startedAt = Date.now();
      let attempt: Attempt;
      if (via === 'sql') {
        attempt = { n, user, kind, via, bytes, startedAt, ...(await publisher.publish(kind, user, bytes)) };
      } else {
        const { status, id, error } = await postWebhook(
          hubByName[via],
          kind,
          `{"user_id":${JSON.stringify(user)},${bytes.slice(1)}`,
        );
        // 503: refused, not published. 504 or no answer: it may have been.
        const outcome =
          status === 202 && id ? 'ok' : status === 503 || (status >= 400 && status < 500) ? 'failed' : 'maybe';
        attempt = { n, user, kind, via, bytes, startedAt, outcome, id, error: error ?? `http ${status}` };
      }
      attempts.push(attempt);
      return attempt;
    };

    // Mostly SQL, every third publish through a webhook (A and B in turn); one every ~20 ms, never retried.
    let running = true;
    let n = 0;
    const loop = (async () => {
      const t0 = Date.now();
      while (running) {
        n++;
        const via: Attempt['via'] = n % 3 !== 0 ? 'sql' : n % 6 === 0 ? 'A' : 'B';
        await publishOnce(n, users[n % 3] as string, KINDS[n % 5] as Kind, via);
        const wait = t0 + n * 20 - Date.now();
        if (wait > 0) await sleep(wait);
      }
    })();
    const ok = (): Attempt[] => attempts.filter((x) => x.outcome === 'ok');

    try {
      await until(() => ok().length >= 30, 20_000, '30 publishes before the outage');
      const webhookDuringOutage: number[] = [];
      const { stoppedAt, startedAt } = await outage(async (downSince) => {
        for (const hub of hubs) {
          const refused = await postWebhook(hub, 'agui', `{"user_id":${JSON.stringify(u1)},"outage":true}`);
          webhookDuringOutage.push(refused.status);
        }
        await until(
          () => attempts.filter((x) => x.startedAt > downSince && x.outcome === 'failed').length >= 10,
          15_000,
          'refused publishes',
        );
      });
      const readyAt = Date.now();
      const since = (via: Attempt['via']): number => ok().filter((x) => x.via === via && x.startedAt >= readyAt).length;
      await until(() => since('sql') >= 10 && since('A') >= 3 && since('B') >= 3, 20_000, 'publishes after recovery');
      running = false;
      await loop;

      // A last event per user and kind, after everything else.
      for (const user of users) {
        for (const kind of ['agui', 'a2a'] as const) {
          const sentinel = await publishOnce(++n, user, kind, 'sql');
          expect(sentinel.outcome).toBe('ok');
        }
      }

      const byN = new Map(attempts.map((x) => [x.n, x]));
      const expectedFor = (c: (typeof clients)[number]): Attempt[] =>
        ok()
          .filter((x) => x.user === c.user && streamsFor(x.kind).includes(c.stream))
          .sort((x, y) => compareOutboxIds(x.id as string, y.id as string));
      const arrived = await Promise.all(
        clients.map((c) =>
          c.conn
            .waitFor((s) => s.events().some((m) => m.id === expectedFor(c).at(-1)?.id), 30_000, 'its last event')
            .then(
              () => true,
              () => false,
            ),
        ),
      );
      await sleep(300);

      const summary: string[] = [];
      const checks: Array<() => void> = [];
      for (const [index, c] of clients.entries()) {
        const name = `${c.user.slice(0, 2)}/${c.stream}@${c.hub}`;
        const expected = expectedFor(c);
        const received = messages(c.conn).map((m) => {
          const data = JSON.parse(m.data) as { n?: number; event?: { n?: number } };
          return { id: m.id as string, data: m.data, n: (c.stream === 'contexts' ? data.event?.n : data.n) as number };
        });
        const counts = new Map<number, number>();
        for (const r of received) counts.set(r.n, (counts.get(r.n) ?? 0) + 1);
        const lost = expected.filter((x) => !counts.has(x.n));
        const duplicated = [...counts.entries()].filter(([, count]) => count > 1).map(([k]) => k);
        const maybes = received.filter((r) => byN.get(r.n)?.outcome === 'maybe');
        const failedSeen = received.filter((r) => byN.get(r.n)?.outcome === 'failed' || !byN.has(r.n));
        summary.push(
          `${name}: exp=${expected.length} recv=${received.length} lost=${lost.length} dup=${duplicated.length} maybe=${maybes.length} resets=${resets(c.conn).length}`,
        );
        checks.push(() => {
          expect([
            name,
            arrived[index],
            resets(c.conn).length,
            lost.map((x) => x.n),
            duplicated,
            failedSeen.map((r) => r.n),
          ]).toEqual([name, true, 0, [], [], []]);
          for (let i = 1; i < received.length; i++) {
            expect([
              name,
              compareOutboxIds((received[i] as { id: string }).id, (received[i - 1] as { id: string }).id) > 0,
            ]).toEqual([name, true]);
          }
          // Every committed event of this user and stream, once, in order, with its id and exact bytes.
          const acknowledged = received.filter((r) => byN.get(r.n)?.outcome === 'ok');
          expect(acknowledged.map((r) => [r.id, r.data])).toEqual(
            expected.map((x) => [x.id, shownAs(c.stream, x.kind, x.bytes)]),
          );
          // A publish whose outcome is unknown shows at most once, on this user's streams of its kind.
          for (const r of maybes) {
            const attempt = byN.get(r.n) as Attempt;
            expect([attempt.user, streamsFor(attempt.kind).includes(c.stream)]).toEqual([c.user, true]);
          }
        });
      }
      const failures = attempts.filter((x) => x.outcome !== 'ok');
      console.log(
        `[postgres-restart] immediate stop: published_ok=${ok().length} failed=${attempts.filter((x) => x.outcome === 'failed').length} ` +
          `maybe=${attempts.filter((x) => x.outcome === 'maybe').length} ` +
          `committed_before_hubs_ready=${ok().filter((x) => x.startedAt >= startedAt && x.startedAt < readyAt).length} ` +
          `down_ms=${startedAt - stoppedAt} ready_after_ms=${readyAt - startedAt} webhook_during_outage=${webhookDuringOutage.join(',')} ` +
          `errors=${JSON.stringify([...new Set(failures.map((f) => f.error?.replace(/\d+/g, '#')))].slice(0, 8))}\n  ${summary.join('\n  ')}`,
      );

      expect(webhookDuringOutage).toEqual([503, 503]);
      // Webhooks refused during the outage answered 503 (not published), never something else.
      for (const f of failures.filter((x) => x.via !== 'sql' && x.outcome === 'failed'))
        expect(f.error).toBe('http 503');
      expect(failures.filter((f) => f.error?.startsWith('rejected'))).toEqual([]);
      expect(attempts.filter((x) => x.outcome === 'failed').length).toBeGreaterThan(0);
      expect(new Set(ok().map((x) => x.id)).size).toBe(ok().length);
      // Postgres kept its data: one epoch before and after.
      expect(new Set(ok().map((x) => parseOutboxId(x.id).epoch)).size).toBe(1);
      for (const check of checks) check();
      for (const hub of hubs) expect(await metricValue(hub, 'ssehub_transport_listening')).toBe(1);
    } finally {
      running = false;
      await loop;
      await publisher.close();
    }
  }, 60_000);

  it('survives publishes in flight when the database stops: they fail (503/504), nothing crashes, and none is delivered later', async () => {
    const [a, b] = hubs;
    const user = uid('inflight');
    const streams = [await positioned(a, 'agui', user), await positioned(b, 'agui', user)];
    opened.push(...streams);
    // Hold the table so the webhooks' INSERTs wait inside the database when it goes down.
    const blocker = await connectPg(pg.url);
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE ssehub.outbox IN EXCLUSIVE MODE');
    const inFlight = [a, b, a, b].map((hub, i) =>
      postWebhook(hub, 'agui', JSON.stringify({ user_id: user, inflight: i })),
    );
    await until(
      async () => (await blocker.query('SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted')).rows[0]?.n >= 4,
      15_000,
      'the publishes to wait on the lock',
    );
    const answers = await new Promise<Array<{ status: number }>>((resolve, reject) => {
      void outage(async () => {
        resolve(await Promise.all(inFlight));
      }).catch(reject);
    });
    await blocker.end().catch(() => undefined);
    // The statement was sent and the connection broke: outcome unknown (504), or refused (503).
    for (const answer of answers) expect([503, 504]).toContain(answer.status);
    await until(async () => (await isReady(a)) && (await isReady(b)), 20_000, 'both hubs to be ready again');
    for (const hub of hubs) expect(hub.child.exitCode).toBeNull();
    const marker = await postWebhook(a, 'agui', JSON.stringify({ user_id: user, marker: true }));
    expect(marker.status).toBe(202);
    for (const stream of streams)
      await stream.waitFor((st) => st.events().some((e) => e.id === marker.id), 15_000, 'the marker');
    // Their transactions were lost with the server: the streams got only the marker.
    for (const stream of streams) expect(messages(stream).map((e) => e.data)).toEqual(['{"marker":true}']);
  }, 40_000);

  it('gives a stream that resumes with Last-Event-ID while the database is down its missed events once it is back', async () => {
    const [a, b] = hubs;
    const user = uid('resume');
    let publisher = await connectPg(pg.url);
    try {
      const sent: Array<{ id: string; kind: Kind; bytes: string }> = [];
      const publish = async (kind: Kind, bytes: string): Promise<string> => {
        const id = await sqlPublish(publisher, 'ssehub', kind, user, bytes);
        sent.push({ id, kind, bytes });
        return id;
      };
      const first = await positioned(a, 'agui', user);
      opened.push(first);
      await publish('agui', '{"seen":1}');
      const lastSeen = await publish('agui', '{"seen":2}');
      await first.waitFor((s) => s.lastEventId() === lastSeen, 15_000, 'the events seen');
      first.close();
      const missed = [
        await publish('agui', '{"missed":1}'),
        await publish('a2a', '{"missed":2}'),
        await publish('system', '{"missed":3}'),
        await publish('agui', '{"missed":4}'),
      ];
      expect(missed).toHaveLength(4);

      let aguiBack: SseStream | undefined;
      let ctxBack: SseStream | undefined;
      const failuresBefore = await metricValue(b, 'ssehub_history_read_failures_total');
      await outage(async () => {
        aguiBack = await openAt(b, 'agui', user, { 'Last-Event-ID': lastSeen });
        ctxBack = await openAt(b, 'contexts', user, { 'Last-Event-ID': lastSeen });
        opened.push(aguiBack, ctxBack);
        // Their history reads failed: the database is down.
        await until(
          async () => (await metricValue(b, 'ssehub_history_read_failures_total')) >= failuresBefore + 2,
          15_000,
          'the history reads to fail',
        );
        await sleep(200);
        // Held: nothing sent yet, neither events nor a reset.
        expect([aguiBack.events(), ctxBack.events()]).toEqual([[], []]);
      });
      // The outage took the publisher's connection with it.
      await publisher.end().catch(() => undefined);
      publisher = await connectPg(pg.url);
      const resumedAgui = aguiBack as SseStream;
      const resumedCtx = ctxBack as SseStream;
      const live = await publish('agui', '{"live":1}');
      const after = (stream: StreamName): Array<[string, string | undefined, string]> =>
        sent
          .filter((s) => compareOutboxIds(s.id, lastSeen) > 0 && streamsFor(s.kind).includes(stream))
          .map((s) => ['message', s.id, shownAs(stream, s.kind, s.bytes)]);
      for (const stream of [resumedAgui, resumedCtx]) {
        await stream.waitFor((s) => s.events().some((e) => e.id === live), 20_000, 'the live event after the outage');
      }
      await sleep(200);
      const frames = (s: SseStream): Array<[string, string | undefined, string]> =>
        s.events().map((e) => [e.event ?? 'message', e.id, e.data]);
      expect(frames(resumedAgui)).toEqual(after('agui'));
      expect(frames(resumedCtx)).toEqual(after('contexts'));
      expect(resumedAgui.isEnded() || resumedCtx.isEnded()).toBe(false);
    } finally {
      await publisher.end().catch(() => undefined);
    }
  }, 40_000);
  it('catches the hubs up on everything committed while they could not reach the database (locked out, publishers going on)', async () => {
    const [a, b] = hubs;
    const users = [uid('lo1'), uid('lo2')] as const;
    const layout: Array<{ user: string; stream: StreamName; hub: HubProcess; where: string }> = [
      { user: users[0], stream: 'agui', hub: a, where: 'A' },
      { user: users[0], stream: 'contexts', hub: b, where: 'B' },
      { user: users[1], stream: 'contexts', hub: a, where: 'A' },
      { user: users[1], stream: 'a2a', hub: b, where: 'B' },
    ];
    const clients = await Promise.all(
      layout.map(async (spec) => {
        const conn = await positioned(spec.hub, spec.stream, spec.user);
        opened.push(conn);
        return { ...spec, conn };
      }),
    );
    const admin = await connectPg(pg.url);
    const sent: Array<{ id: string; user: string; kind: Kind; bytes: string; phase: string }> = [];
    const KINDS: Kind[] = ['agui', 'a2a', 'system', 'analytics'];
    const publishSome = async (phase: string, count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        const user = users[i % 2] as string;
        const kind = KINDS[i % 4] as Kind;
        const bytes = `{"phase":"${phase}","i":${i}}`;
        sent.push({ id: await sqlPublish(admin, 'ssehub', kind, user, bytes), user, kind, bytes, phase });
      }
    };
    let lockedOut = false;
    try {
      await publishSome('before', 8);
      // Lock the hubs out: their sessions are ended, and they cannot log in again.
      await admin.query(`ALTER ROLE ${HUB_ROLE} NOLOGIN`);
      lockedOut = true;
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [HUB_ROLE]);
      await until(
        async () => !(await isReady(a)) && !(await isReady(b)),
        15_000,
        'both hubs to report the lost database',
      );
      for (const hub of hubs) {
        expect(await probe(hub, '/health')).toEqual({
          status: 200,
          body: expect.objectContaining({ status: 'degraded' }),
        });
      }
      // Committed while no hub can read: in a transaction, and one by one.
      await admin.query('BEGIN');
      await publishSome('locked-out-tx', 6);
      await admin.query('COMMIT');
      await publishSome('locked-out', 10);
      const refused = await postWebhook(a, 'agui', `{"user_id":${JSON.stringify(users[0])},"refused":true}`);
      await sleep(1000);
      expect(await isReady(a)).toBe(false);

      await admin.query(`ALTER ROLE ${HUB_ROLE} LOGIN`);
      lockedOut = false;
      await until(async () => (await isReady(a)) && (await isReady(b)), 20_000, 'both hubs to log in again');
      await publishSome('after', 8);

      const arrived = await Promise.all(
        clients.map((c) => {
          const last = sent
            .filter((x) => x.user === c.user && streamsFor(x.kind).includes(c.stream))
            .sort((x, y) => compareOutboxIds(x.id, y.id))
            .at(-1);
          return c.conn
            .waitFor((s) => s.events().some((e) => e.id === last?.id), 20_000, 'its last event')
            .then(
              () => true,
              () => false,
            );
        }),
      );
      await sleep(200);
      console.log(
        `[postgres-restart] locked out: webhook_while_locked_out=${refused.status} ${clients.map((c, i) => `${c.stream}@${c.where}:${messages(c.conn).length}${arrived[i] ? '' : '(incomplete)'}`).join(' ')}`,
      );
      for (const c of clients) {
        const name = `${c.stream}@${c.where}`;
        const expected = sent
          .filter((x) => x.user === c.user && streamsFor(x.kind).includes(c.stream))
          .sort((x, y) => compareOutboxIds(x.id, y.id))
          .map((x) => ['message', x.id, shownAs(c.stream, x.kind, x.bytes)]);
        expect([name, c.conn.events().map((e) => [e.event ?? 'message', e.id, e.data])]).toEqual([name, expected]);
      }
      expect(refused.status).toBe(503);
    } finally {
      if (lockedOut) await admin.query(`ALTER ROLE ${HUB_ROLE} LOGIN`).catch(() => undefined);
      await admin.end().catch(() => undefined);
    }
  }, 40_000);
});
