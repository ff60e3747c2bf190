import type { Client } from 'pg';
import { metricValue, startReadyHub, type HubProcess } from '../helpers/hub-process';
import {
  SHARED_DATABASE_URL,
  connectPg,
  dropSchema,
  sqlPublish,
  uniqueSchema,
  compareOutboxIds,
  parseOutboxId,
} from '../helpers/postgres-server';
import {
  openStream,
  sleep,
  type SseFrame,
  type SseStream,
  shownAs,
  streamsFor,
  type StreamName,
} from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * The Postgres outbox transport (SSEHUB_TRANSPORT=postgres) on the shared Postgres: real hub
 * processes (dist/main.js), each test in a schema of its own. Publishing through
 * `<schema>.publish(kind, user_id, event)`, in and out of transactions, and through the
 * webhooks; ordering by (transaction id, row id) with transactions committing out of order;
 * resume and resets from the outbox table; bad rows; concurrent schema creation; metrics.
 */

type Kind = 'agui' | 'a2a' | 'system' | 'analytics';

const ID_PATTERN = /^([0-9a-z]{1,32}):(\d+)-(\d+)$/;
const WAIT_MS = 15_000;

const byId = <T extends { id: string }>(a: T, b: T): number => compareOutboxIds(a.id, b.id);

const PATHS: Record<StreamName, string> = {
  agui: '/api/v1/stream/agui',
  a2a: '/api/v1/stream/a2a',
  contexts: '/api/v1/stream/contexts',
  analytics: '/api/v1/analytics/stream',
};

const messages = (stream: SseStream): SseFrame[] => stream.events().filter((e) => e.event === undefined);
const resets = (stream: SseStream): SseFrame[] => stream.events().filter((e) => e.event === 'reset');
const resetReason = (frame: SseFrame | undefined): string | undefined =>
  frame?.event === 'reset' ? (JSON.parse(frame.data) as { reason: string }).reason : undefined;

/** A published event as the test knows it. */
interface Sent {
  id: string;
  kind: Kind;
  user: string;
  /** The event's bytes as a stream must show them (unwrapped). */
  bytes: string;
  label: string;
}

/** What a stream must show for `sent`, in delivery order: [id, data]. */
function expectedOn(stream: StreamName, user: string, sent: Sent[]): Array<[string, string]> {
  return sent
    .filter((s) => s.user === user && streamsFor(s.kind).includes(stream))
    .sort(byId)
    .map((s) => [s.id, shownAs(stream, s.kind, s.bytes)]);
}

/** Every data frame of a stream (events and resets), as [event type, id, data]. */
function shown(stream: SseStream): Array<[string, string | undefined, string]> {
  return stream.events().map((e) => [e.event ?? 'message', e.id, e.data]);
}

function expectIncreasing(stream: SseStream, what: string): void {
  const ids = messages(stream).map((m) => m.id as string);
  for (let i = 1; i < ids.length; i++) {
    if (compareOutboxIds(ids[i] as string, ids[i - 1] as string) <= 0) {
      throw new Error(`${what}: id ${ids[i]} after ${ids[i - 1]} (ids ${JSON.stringify(ids)})`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-test fixture: a schema of its own, and everything opened is closed and dropped after.

interface Fixture {
  schema: string;
  hubs: HubProcess[];
  clients: Client[];
  streams: SseStream[];
}

let fx: Fixture;

beforeEach(() => {
  fx = { schema: uniqueSchema(), hubs: [], clients: [], streams: [] };
});

afterEach(async () => {
  for (const stream of fx.streams.splice(0)) stream.close();
  await Promise.all(fx.clients.splice(0).map((client) => client.end().catch(() => undefined)));
  await Promise.all(fx.hubs.splice(0).map((hub) => hub.stop('SIGKILL')));
  await dropSchema(SHARED_DATABASE_URL, fx.schema);
}, 30_000);

function hubEnv(schema: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    SSEHUB_TRANSPORT: 'postgres',
    DATABASE_URL: SHARED_DATABASE_URL,
    SSEHUB_PG_SCHEMA: schema,
    SSEHUB_DRAIN_MS: '0',
    ...extra,
  };
}

async function startHubs(count: number, extra: Record<string, string> = {}, schema = fx.schema): Promise<HubProcess[]> {
  const started = await Promise.allSettled(Array.from({ length: count }, () => startReadyHub(hubEnv(schema, extra))));
  for (const result of started) if (result.status === 'fulfilled') fx.hubs.push(result.value);
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return started.map((r) => (r as PromiseFulfilledResult<HubProcess>).value);
}

async function pg(): Promise<Client> {
  const client = await connectPg(SHARED_DATABASE_URL);
  fx.clients.push(client);
  return client;
}

async function open(
  hub: HubProcess,
  stream: StreamName,
  user: string,
  options: { headers?: Record<string, string>; query?: string } = {},
): Promise<SseStream> {
  const token = await mintToken(user, { roles: stream === 'analytics' ? ['admin'] : [] });
  const conn = await openStream(hub.url, PATHS[stream] + (options.query ?? ''), { token, headers: options.headers });
  fx.streams.push(conn);
  expect(conn.status).toBe(200);
  return conn;
}

/** Opens a stream and waits for its opening position (an `id:` line alone). */
async function positioned(hub: HubProcess, stream: StreamName, user: string): Promise<SseStream> {
  const conn = await open(hub, stream, user);
  await conn.waitForPosition(WAIT_MS, `the opening position of ${stream}`);
  const first = conn.frames()[0];
  expect(first?.hasData).toBe(false);
  expect(first?.id).toMatch(ID_PATTERN);
  return conn;
}

async function waitForId(stream: SseStream, id: string, what: string): Promise<void> {
  await stream.waitFor((s) => s.events().some((m) => m.id === id), WAIT_MS, `${what} (id ${id})`);
}

function webhookBody(user: string, event: Record<string, unknown>): { body: string; bytes: string } {
  // user_id first: the delivered event is the body with `"user_id":"…",` cut out.
  const bytes = JSON.stringify(event);
  return { body: `{"user_id":${JSON.stringify(user)},${bytes.slice(1)}`, bytes };
}

async function postWebhook(
  hub: HubProcess,
  kind: string,
  body: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const token = await mintToken('svc', { roles: ['service'] });
  const res = await fetch(`${hub.url}/api/v1/webhook/${kind}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  return { status: res.status, json };
}

async function webhookPublish(
  hub: HubProcess,
  kind: Kind,
  user: string,
  event: Record<string, unknown>,
  label: string,
): Promise<Sent> {
  const { body, bytes } = webhookBody(user, event);
  const { status, json } = await postWebhook(hub, kind, body);
  expect([label, status, json.transport]).toEqual([label, 202, 'postgres']);
  expect(json.id).toEqual(expect.stringMatching(ID_PATTERN));
  return { id: json.id as string, kind, user, bytes, label };
}

async function publishSql(client: Client, kind: Kind, user: string, bytes: string, label: string): Promise<Sent> {
  const id = await sqlPublish(client, fx.schema, kind, user, bytes);
  expect(id).toMatch(ID_PATTERN);
  return { id, kind, user, bytes, label };
}

async function rowCount(client: Client, where = 'true', params: unknown[] = []): Promise<number> {
  const result = await client.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM "${fx.schema}".outbox WHERE ${where}`,
    params,
  );
  return Number(result.rows[0]?.n);
}

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: fan-out across replicas', () => {
  it('delivers every event (SQL autocommit, multi-event transactions, webhooks on both replicas) once, in id order, to exactly the streams of its user and kind', async () => {
    const [h1, h2] = (await startHubs(2)) as [HubProcess, HubProcess];
    const u1 = uid('alice');
    const u2 = uid('bob');
    const layout: Array<{ hub: HubProcess; where: string; stream: StreamName; user: string }> = [
      { hub: h1, where: 'h1', stream: 'agui', user: u1 },
      { hub: h1, where: 'h1', stream: 'agui', user: u1 },
      { hub: h1, where: 'h1', stream: 'a2a', user: u1 },
      { hub: h1, where: 'h1', stream: 'contexts', user: u1 },
      { hub: h1, where: 'h1', stream: 'analytics', user: u1 },
      { hub: h1, where: 'h1', stream: 'agui', user: u2 },
      { hub: h1, where: 'h1', stream: 'contexts', user: u2 },
      { hub: h2, where: 'h2', stream: 'agui', user: u1 },
      { hub: h2, where: 'h2', stream: 'a2a', user: u1 },
      { hub: h2, where: 'h2', stream: 'contexts', user: u1 },
      { hub: h2, where: 'h2', stream: 'contexts', user: u1 },
      { hub: h2, where: 'h2', stream: 'a2a', user: u2 },
      { hub: h2, where: 'h2', stream: 'contexts', user: u2 },
    ];
    const conns = await Promise.all(
      layout.map(async (l) => ({ ...l, conn: await positioned(l.hub, l.stream, l.user) })),
    );
    // Every stream opens in the same epoch, whichever replica it is on.
    expect(new Set(conns.map((c) => parseOutboxId(c.conn.lastEventId()).epoch)).size).toBe(1);

    const KINDS: Kind[] = ['agui', 'a2a', 'system', 'analytics', 'agui'];
    const sent: Sent[] = [];
    const autocommit = await pg();
    const transactional = await pg();

    // Four lanes at once, so transactions commit in an order of their own.
    const sqlLane = async (): Promise<void> => {
      for (let n = 0; n < 15; n++) {
        const user = n % 3 === 2 ? u2 : u1;
        const kind = KINDS[n % KINDS.length] as Kind;
        // Bytes as written: spacing, a big integer, escapes and line breaks survive untouched.
        const bytes =
          n % 4 === 1
            ? `{\n  "lane": "sql",\n  "n": ${n}\n}`
            : `{"lane":"sql", "n":${n}, "big":123456789012345678901234567890, "s":"h\\u00e9 \\"q\\" é"}`;
        sent.push(await publishSql(autocommit, kind, user, bytes, `sql#${n}`));
      }
    };
    const txLane = async (): Promise<void> => {
      for (let t = 0; t < 5; t++) {
        await transactional.query('BEGIN');
        const inTx: Sent[] = [];
        for (let i = 0; i < 3; i++) {
          const user = (t + i) % 4 === 3 ? u2 : u1;
          const kind = KINDS[(t + i) % KINDS.length] as Kind;
          inTx.push(await publishSql(transactional, kind, user, `{"lane":"tx","t":${t},"i":${i}}`, `tx#${t}.${i}`));
        }
        await transactional.query('COMMIT');
        // One transaction: one transaction id, rows in the order they were inserted.
        expect(new Set(inTx.map((s) => parseOutboxId(s.id).tx)).size).toBe(1);
        expect([...inTx].sort(byId).map((s) => s.label)).toEqual(inTx.map((s) => s.label));
        sent.push(...inTx);
      }
    };
    const webhookLane = (hub: HubProcess, name: string) => async (): Promise<void> => {
      for (let n = 0; n < 8; n++) {
        const user = n % 4 === 3 ? u2 : u1;
        const kind = KINDS[(n + 1) % KINDS.length] as Kind;
        sent.push(await webhookPublish(hub, kind, user, { lane: name, n, note: 'via "webhook" é' }, `${name}#${n}`));
      }
    };
    await Promise.all([sqlLane(), txLane(), webhookLane(h1, 'wh1')(), webhookLane(h2, 'wh2')()]);

    // Sentinels, after everything else committed: each stream's last expected event.
    await transactional.query('BEGIN');
    for (const user of [u1, u2]) {
      for (const kind of ['agui', 'a2a', 'analytics'] as const) {
        sent.push(await publishSql(transactional, kind, user, `{"sentinel":"${kind}"}`, `sentinel ${kind}`));
      }
    }
    await transactional.query('COMMIT');

    expect(new Set(sent.map((s) => s.id)).size).toBe(sent.length);
    expect(new Set(sent.map((s) => parseOutboxId(s.id).epoch))).toEqual(
      new Set([parseOutboxId(conns[0]?.conn.lastEventId()).epoch]),
    );

    for (const c of conns) {
      const expected = expectedOn(c.stream, c.user, sent);
      const last = expected.at(-1) as [string, string];
      await waitForId(c.conn, last[0], `${c.stream}@${c.where} of ${c.user}: its last event`);
    }
    await sleep(300); // anything duplicated or misrouted would show by now
    for (const c of conns) {
      const what = `${c.stream}@${c.where} of ${c.user === u1 ? 'u1' : 'u2'}`;
      expect([what, shown(c.conn)]).toEqual([
        what,
        expectedOn(c.stream, c.user, sent).map(([id, data]) => ['message', id, data]),
      ]);
      expectIncreasing(c.conn, what);
    }
    // Nothing of u1 anywhere on u2's streams, and the other way round (by content too).
    for (const c of conns) {
      const other = c.user === u1 ? u2 : u1;
      for (const s of sent.filter((x) => x.user === other)) expect(c.conn.raw()).not.toContain(`id:${s.id}\n`);
    }
    console.log(
      `[postgres-outbox] fan-out: published=${sent.length} (sql=15, tx=15, webhooks=16, sentinels=6) streams=${conns.length} ` +
        conns.map((c) => `${c.stream}@${c.where}:${messages(c.conn).length}`).join(' '),
    );
  }, 40_000);
});

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: transactions', () => {
  it('never delivers a publish whose transaction rolled back (whole, failed, or to a savepoint)', async () => {
    const [h1, h2] = (await startHubs(2)) as [HubProcess, HubProcess];
    const user = uid('rb');
    const streams = [
      await positioned(h1, 'agui', user),
      await positioned(h1, 'contexts', user),
      await positioned(h2, 'contexts', user),
    ];
    const client = await pg();
    const kept: Sent[] = [];
    const rolledBack: string[] = [];

    // A whole transaction rolled back.
    await client.query('BEGIN');
    rolledBack.push((await publishSql(client, 'agui', user, '{"rolled":"whole-1"}', 'rb1')).id);
    rolledBack.push((await publishSql(client, 'system', user, '{"rolled":"whole-2"}', 'rb2')).id);
    await client.query('ROLLBACK');

    // A transaction that fails after a good publish (a bad one aborts it): nothing of it lands.
    await client.query('BEGIN');
    rolledBack.push((await publishSql(client, 'agui', user, '{"rolled":"aborted"}', 'rb3')).id);
    await expect(sqlPublish(client, fx.schema, 'agui', user, '[1]')).rejects.toMatchObject({ code: '22023' });
    await client.query('ROLLBACK');

    // A savepoint rolled back inside a committed transaction: only what it covered is gone.
    await client.query('BEGIN');
    kept.push(await publishSql(client, 'agui', user, '{"kept":1}', 'kept1'));
    await client.query('SAVEPOINT s1');
    rolledBack.push((await publishSql(client, 'agui', user, '{"rolled":"savepoint"}', 'rb4')).id);
    await client.query('ROLLBACK TO SAVEPOINT s1');
    kept.push(await publishSql(client, 'system', user, '{"kept":2}', 'kept2'));
    await client.query('COMMIT');

    // The marker: once it is in, anything earlier would have been.
    kept.push(await publishSql(client, 'agui', user, '{"marker":true}', 'marker'));
    for (const stream of streams) await waitForId(stream, kept.at(-1)?.id as string, 'the marker');
    await sleep(200);
    expect(shown(streams[0] as SseStream)).toEqual(expectedOn('agui', user, kept).map(([id, d]) => ['message', id, d]));
    for (const stream of streams.slice(1)) {
      expect(shown(stream)).toEqual(expectedOn('contexts', user, kept).map(([id, d]) => ['message', id, d]));
    }
    for (const stream of streams) {
      expect(stream.raw()).not.toContain('rolled');
      for (const id of rolledBack) expect(stream.raw()).not.toContain(`id:${id}\n`);
    }
    expect(await rowCount(client, 'user_id = $1', [user])).toBe(3);

    // Resuming from before all of it replays the committed events only.
    const resumed = await open(h2, 'contexts', user, {
      headers: { 'Last-Event-ID': streams[2]?.frames()[0]?.id as string },
    });
    await waitForId(resumed, kept.at(-1)?.id as string, 'the replayed marker');
    await sleep(100);
    expect(shown(resumed)).toEqual(expectedOn('contexts', user, kept).map(([id, d]) => ['message', id, d]));
  });

  for (const ending of ['COMMIT', 'ROLLBACK'] as const) {
    it(`delivers by (transaction id, row id) when an early transaction commits last (it ends with ${ending}), and resumes from every id on the other replica`, async () => {
      // A fast poll, so the reader wakes many times while A is still open.
      const [h1, h2] = (await startHubs(2, { SSEHUB_PG_POLL_MS: '100' })) as [HubProcess, HubProcess];
      const user = uid('ooo');
      const other = uid('other');
      const layout: Array<{ hub: HubProcess; other: HubProcess; where: string; stream: StreamName }> = [
        { hub: h1, other: h2, where: 'h1', stream: 'agui' },
        { hub: h1, other: h2, where: 'h1', stream: 'contexts' },
        { hub: h2, other: h1, where: 'h2', stream: 'a2a' },
        { hub: h2, other: h1, where: 'h2', stream: 'contexts' },
        { hub: h2, other: h1, where: 'h2', stream: 'agui' },
      ];
      const conns = await Promise.all(
        layout.map(async (l) => ({ ...l, conn: await positioned(l.hub, l.stream, user) })),
      );
      const otherConn = await positioned(h1, 'contexts', other);
      const [a, b, c] = [await pg(), await pg(), await pg()];

      // A begins and publishes first, so its transaction id is the lowest; it stays open.
      await a.query('BEGIN');
      const fromA = [
        await publishSql(a, 'agui', user, '{"tx":"A","n":1}', 'A1'),
        await publishSql(a, 'a2a', user, '{"tx":"A","n":2}', 'A2'),
      ];
      // B (autocommit) and C (a transaction) publish and commit while A is open.
      const fromB = [await publishSql(b, 'agui', user, '{"tx":"B","n":1}', 'B1')];
      await c.query('BEGIN');
      const fromC = [
        await publishSql(c, 'system', user, '{"tx":"C","n":1}', 'C1'),
        await publishSql(c, 'a2a', user, '{"tx":"C","n":2}', 'C2'),
        await publishSql(c, 'agui', user, '{"tx":"C","n":3}', 'C3'),
      ];
      await c.query('COMMIT');
      const otherEvent = await publishSql(b, 'agui', other, '{"tx":"other"}', 'other');
      expect(compareOutboxIds(fromA[1]?.id as string, fromB[0]?.id as string)).toBeLessThan(0);
      expect(compareOutboxIds(fromB[0]?.id as string, fromC[0]?.id as string)).toBeLessThan(0);

      // Several polls and wake-ups happen while A is open; A's rows are not skipped for them.
      await sleep(1500);
      await a.query(ending);
      const committed = [...(ending === 'COMMIT' ? fromA : []), ...fromB, ...fromC];

      // A marker after A ended: every stream's last event.
      await b.query('BEGIN');
      const markers = [
        await publishSql(b, 'agui', user, '{"marker":"agui"}', 'M1'),
        await publishSql(b, 'a2a', user, '{"marker":"a2a"}', 'M2'),
      ];
      await b.query('COMMIT');
      const all = [...committed, ...markers];
      for (const s of conns) {
        await waitForId(
          s.conn,
          (expectedOn(s.stream, user, all).at(-1) as [string, string])[0],
          `${s.stream}@${s.where}: the marker`,
        );
      }
      await waitForId(otherConn, otherEvent.id, "the other user's event");
      await sleep(200);
      for (const s of conns) {
        const what = `${s.stream}@${s.where}`;
        expect([what, shown(s.conn)]).toEqual([
          what,
          expectedOn(s.stream, user, all).map(([id, d]) => ['message', id, d]),
        ]);
        expectIncreasing(s.conn, what);
        expect(s.conn.raw()).not.toContain('"other"');
        if (ending === 'ROLLBACK') expect(s.conn.raw()).not.toContain('"A"');
      }
      expect(shown(otherConn)).toEqual([['message', otherEvent.id, `{"protocol":"agui","event":{"tx":"other"}}`]]);

      // Resume from every id each stream got, on the other replica: exactly the later events, then live.
      const resumed: Array<{ stream: StreamName; from: string; where: string; conn: SseStream }> = [];
      for (const s of conns) {
        for (const frame of messages(s.conn)) {
          const from = frame.id as string;
          resumed.push({
            stream: s.stream,
            from,
            where: s.where === 'h1' ? 'h2' : 'h1',
            conn: await open(s.other, s.stream, user, { headers: { 'Last-Event-ID': from } }),
          });
        }
      }
      // Published at once: live events racing the replays are held and de-duplicated, never lost.
      await b.query('BEGIN');
      const live = [
        await publishSql(b, 'agui', user, '{"live":"agui"}', 'L1'),
        await publishSql(b, 'a2a', user, '{"live":"a2a"}', 'L2'),
      ];
      await b.query('COMMIT');
      const everything = [...all, ...live];
      for (const r of resumed) {
        const expected = expectedOn(r.stream, user, everything).filter(([id]) => compareOutboxIds(id, r.from) > 0);
        await waitForId(
          r.conn,
          (expected.at(-1) as [string, string])[0],
          `resumed ${r.stream}@${r.where} from ${r.from}`,
        );
      }
      await sleep(200);
      for (const r of resumed) {
        const what = `${r.stream}@${r.where} resumed from ${r.from}`;
        const expected = expectedOn(r.stream, user, everything).filter(([id]) => compareOutboxIds(id, r.from) > 0);
        expect([what, shown(r.conn)]).toEqual([what, expected.map(([id, d]) => ['message', id, d])]);
      }
    }, 40_000);
  }
});

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: resume with Last-Event-ID', () => {
  it('resumes on another replica with exactly the missed events, then goes on live', async () => {
    const [h1, h2] = (await startHubs(2)) as [HubProcess, HubProcess];
    const user = uid('resume');
    const client = await pg();
    const sent: Sent[] = [];

    const agui1 = await positioned(h1, 'agui', user);
    const ctx1 = await positioned(h1, 'contexts', user);
    // A stream that saw nothing but its opening position, and left.
    const blank = await positioned(h1, 'contexts', user);
    const blankPosition = blank.lastEventId() as string;
    blank.close();

    for (const [kind, n] of [
      ['agui', 1],
      ['a2a', 2],
      ['system', 3],
      ['agui', 4],
    ] as const) {
      sent.push(await publishSql(client, kind, user, `{"phase":"seen","n":${n}}`, `seen${n}`));
    }
    await waitForId(agui1, expectedOn('agui', user, sent).at(-1)?.[0] as string, 'the agui events');
    await waitForId(ctx1, expectedOn('contexts', user, sent).at(-1)?.[0] as string, 'the contexts events');
    const aguiLast = agui1.lastEventId() as string;
    const ctxLast = ctx1.lastEventId() as string;
    expect(aguiLast).toBe(sent[3]?.id);
    expect(ctxLast).toBe(sent[3]?.id);
    agui1.close();
    ctx1.close();

    // Missed while disconnected: through SQL, a transaction, and the webhook on each replica.
    const missed: Sent[] = [];
    missed.push(await publishSql(client, 'a2a', user, '{"phase":"missed","n":1}', 'missed1'));
    missed.push(await webhookPublish(h1, 'agui', user, { phase: 'missed', n: 2 }, 'missed2'));
    await client.query('BEGIN');
    missed.push(await publishSql(client, 'analytics', user, '{"phase":"missed","n":3}', 'missed3'));
    missed.push(await publishSql(client, 'system', user, '{"phase":"missed","n":4}', 'missed4'));
    await client.query('COMMIT');
    missed.push(await webhookPublish(h2, 'agui', user, { phase: 'missed', n: 5 }, 'missed5'));
    missed.push(await publishSql(client, 'a2a', user, '{"phase":"missed","n":6}', 'missed6'));

    const agui2 = await open(h2, 'agui', user, { headers: { 'Last-Event-ID': aguiLast } });
    const ctx2 = await open(h2, 'contexts', user, { query: `?last_event_id=${encodeURIComponent(ctxLast)}` });
    const fromBlank = await open(h2, 'contexts', user, { headers: { 'Last-Event-ID': blankPosition } });
    const aguiMissed = expectedOn('agui', user, missed);
    const ctxMissed = expectedOn('contexts', user, missed);
    await waitForId(agui2, aguiMissed.at(-1)?.[0] as string, 'the missed agui events');
    await waitForId(ctx2, ctxMissed.at(-1)?.[0] as string, 'the missed contexts events');
    await waitForId(fromBlank, ctxMissed.at(-1)?.[0] as string, 'everything since the opening position');

    const live: Sent[] = [
      await webhookPublish(h2, 'agui', user, { phase: 'live', n: 1 }, 'live1'),
      await publishSql(client, 'system', user, '{"phase":"live","n":2}', 'live2'),
      await webhookPublish(h1, 'agui', user, { phase: 'live', n: 3 }, 'live3'),
    ];
    const after = [...missed, ...live];
    await waitForId(agui2, expectedOn('agui', user, after).at(-1)?.[0] as string, 'the live agui events');
    await waitForId(ctx2, expectedOn('contexts', user, after).at(-1)?.[0] as string, 'the live contexts events');
    await waitForId(fromBlank, expectedOn('contexts', user, after).at(-1)?.[0] as string, 'the live events');
    await sleep(200);
    const asShown = (stream: StreamName, list: Sent[]): Array<[string, string, string]> =>
      expectedOn(stream, user, list).map(([id, d]) => ['message', id, d]);
    expect(shown(agui2)).toEqual(asShown('agui', after));
    expect(shown(ctx2)).toEqual(asShown('contexts', after));
    expect(shown(fromBlank)).toEqual(asShown('contexts', [...sent, ...after]));
    for (const s of [agui2, ctx2, fromBlank]) expectIncreasing(s, 'resumed stream');
  });

  it('answers ids it cannot resume from with a reset: unknown_id, history_lost, replay_limit; replays up to the cap', async () => {
    const [hub] = (await startHubs(1, { SSEHUB_REPLAY_MAX: '5' })) as [HubProcess];
    const client = await pg();
    const resetsOf = (reason: string): Promise<number> =>
      metricValue(hub, `ssehub_history_resets_total{reason="${reason}"}`);

    const user = uid('garbage');
    const first = await publishSql(client, 'agui', user, '{"n":1}', 'n1');
    const second = await publishSql(client, 'agui', user, '{"n":2}', 'n2');
    const head = parseOutboxId(second.id);
    const unknownBefore = await resetsOf('unknown_id');
    const lostBefore = await resetsOf('history_lost');
    const otherEpoch = head.epoch === 'zz0other0zz' ? 'zz1other1zz' : 'zz0other0zz';
    const cases: Array<[string, string]> = [
      ['garbage', 'unknown_id'],
      ['x'.repeat(200), 'unknown_id'],
      [`${head.epoch}:not-an-id`, 'unknown_id'],
      // Well-formed, but far ahead of anything published.
      [`${head.epoch}:${head.tx + 1_000_000n}-${head.row + 1_000_000n}`, 'unknown_id'],
      // Well-formed, from another incarnation of the outbox.
      [`${otherEpoch}:${first.id.split(':')[1]}`, 'history_lost'],
    ];
    let newest = second.id;
    for (const [lastEventId, reason] of cases) {
      const stream = await open(hub, 'agui', user, { headers: { 'Last-Event-ID': lastEventId } });
      const [reset] = await stream.waitForEvents(1, WAIT_MS);
      expect([lastEventId, reset?.event, resetReason(reset)]).toEqual([lastEventId, 'reset', reason]);
      expect(JSON.parse(reset?.data ?? '')).toEqual({ type: 'reset', reason, message: expect.any(String) });
      // The reset moves the client to a position at or past the user's newest event.
      expect(reset?.id).toMatch(ID_PATTERN);
      expect(parseOutboxId(reset?.id).epoch).toBe(head.epoch);
      expect(compareOutboxIds(reset?.id as string, newest)).toBeGreaterThanOrEqual(0);
      const live = await publishSql(
        client,
        'agui',
        user,
        `{"after":${JSON.stringify(lastEventId.slice(0, 20))}}`,
        'live',
      );
      newest = live.id;
      await waitForId(stream, live.id, 'the live event after the reset');
      expect(stream.events().map((e) => [e.event ?? 'message', e.id])).toEqual([
        ['reset', reset?.id],
        ['message', live.id],
      ]);
      expect(compareOutboxIds(live.id, reset?.id as string)).toBeGreaterThan(0);
      stream.close();
    }
    expect((await resetsOf('unknown_id')) - unknownBefore).toBe(4);
    expect((await resetsOf('history_lost')) - lostBefore).toBe(1);

    // At the cap (5 missed): replayed.
    const atCap = uid('atcap');
    const start = await publishSql(client, 'agui', atCap, '{"n":0}', 'n0');
    const five: Sent[] = [];
    for (let n = 1; n <= 5; n++) five.push(await publishSql(client, 'agui', atCap, `{"n":${n}}`, `n${n}`));
    const replay = await open(hub, 'agui', atCap, { headers: { 'Last-Event-ID': start.id } });
    await waitForId(replay, five[4]?.id as string, 'the fifth replayed event');
    await sleep(100);
    expect(shown(replay)).toEqual(five.map((s) => ['message', s.id, s.bytes]));

    // Over the cap (10 missed): a reset, then live events.
    const overCap = uid('overcap');
    const from = await publishSql(client, 'agui', overCap, '{"n":0}', 'n0');
    let last = from;
    for (let n = 1; n <= 10; n++) last = await publishSql(client, 'agui', overCap, `{"n":${n}}`, `n${n}`);
    const limitBefore = await resetsOf('replay_limit');
    const over = await open(hub, 'agui', overCap, { headers: { 'Last-Event-ID': from.id } });
    const [reset] = await over.waitForEvents(1, WAIT_MS);
    expect([reset?.event, resetReason(reset)]).toEqual(['reset', 'replay_limit']);
    expect(compareOutboxIds(reset?.id as string, last.id)).toBeGreaterThanOrEqual(0);
    const live = await publishSql(client, 'agui', overCap, '{"n":11}', 'n11');
    await waitForId(over, live.id, 'the live event after replay_limit');
    expect(over.events().map((e) => [e.event ?? 'message', e.id, e.event ? undefined : e.data])).toEqual([
      ['reset', reset?.id, undefined],
      ['message', live.id, '{"n":11}'],
    ]);
    expect((await resetsOf('replay_limit')) - limitBefore).toBe(1);
  });

  it('answers an id older than the retention (SSEHUB_HISTORY_TTL_MS) with a reset (trimmed) once pruned, and resumes from a retained id', async () => {
    const [hub] = (await startHubs(1, { SSEHUB_HISTORY_TTL_MS: '2000' })) as [HubProcess];
    const client = await pg();
    const user = uid('ttl');
    const old = [
      await publishSql(client, 'agui', user, '{"old":1}', 'old1'),
      await publishSql(client, 'agui', user, '{"old":2}', 'old2'),
    ];
    const oldRows = old.map((s) => parseOutboxId(s.id).row.toString());
    // Pruning runs every min(ttl/2, 60 s): the rows go within a few seconds.
    await until(
      async () => (await rowCount(client, 'id = ANY($1::bigint[])', [oldRows])) === 0,
      WAIT_MS,
      'the prune of the old rows',
    );
    const kept = await publishSql(client, 'agui', user, '{"kept":1}', 'kept');
    const trimmedBefore = await metricValue(hub, 'ssehub_history_resets_total{reason="trimmed"}');

    const stale = await open(hub, 'agui', user, { headers: { 'Last-Event-ID': old[0]?.id as string } });
    const [reset] = await stale.waitForEvents(1, WAIT_MS);
    expect([reset?.event, resetReason(reset)]).toEqual(['reset', 'trimmed']);
    expect(compareOutboxIds(reset?.id as string, kept.id)).toBeGreaterThanOrEqual(0);
    expect(stale.raw()).not.toContain('"old"');

    const fresh = await open(hub, 'agui', user, { headers: { 'Last-Event-ID': kept.id } });
    const live = await publishSql(client, 'agui', user, '{"live":1}', 'live');
    await waitForId(fresh, live.id, 'the live event');
    await waitForId(stale, live.id, 'the live event after the reset');
    await sleep(100);
    expect(shown(fresh)).toEqual([['message', live.id, '{"live":1}']]);
    expect(stale.events().map((e) => [e.event ?? 'message', e.id])).toEqual([
      ['reset', reset?.id],
      ['message', live.id],
    ]);
    expect((await metricValue(hub, 'ssehub_history_resets_total{reason="trimmed"}')) - trimmedBefore).toBe(1);
  });

  it("moves an idle stream's last id along with everyone's events at heartbeats, so it outlives the retention without a reset", async () => {
    const [hub] = (await startHubs(1, { SSEHUB_HISTORY_TTL_MS: '2000', SSEHUB_HEARTBEAT_MS: '300' })) as [HubProcess];
    const client = await pg();
    const idleUser = uid('idle');
    const busyUser = uid('busy');
    const idle = await positioned(hub, 'agui', idleUser);
    const opening = idle.lastEventId() as string;
    // Only another user publishes; the idle stream shows none of it but its id moves past it.
    const others = [];
    for (let i = 0; i < 3; i++) others.push(await publishSql(client, 'agui', busyUser, `{"busy":${i}}`, `busy${i}`));
    const newest = others[others.length - 1]?.id as string;
    await idle.waitFor(
      (st) => compareOutboxIds(st.lastEventId() as string, newest) >= 0,
      WAIT_MS,
      "the idle stream's id to pass the other user's events",
    );
    expect(messages(idle)).toEqual([]);
    // Once those rows are pruned, the opening id is older than the retention, the refreshed one is not.
    const otherRows = others.map((o) => parseOutboxId(o.id).row.toString());
    await until(
      async () => (await rowCount(client, 'id = ANY($1::bigint[])', [otherRows])) === 0,
      WAIT_MS,
      "the prune of the other user's rows",
    );
    const refreshed = idle.lastEventId() as string;
    const missed = await publishSql(client, 'agui', idleUser, '{"missed":1}', 'missed');
    const resumed = await open(hub, 'agui', idleUser, { headers: { 'Last-Event-ID': refreshed } });
    await waitForId(resumed, missed.id, 'the event published after the refreshed id');
    expect(resets(resumed)).toEqual([]);
    const stale = await open(hub, 'agui', idleUser, { headers: { 'Last-Event-ID': opening } });
    const [reset] = await stale.waitForEvents(1, WAIT_MS);
    expect([reset?.event, resetReason(reset)]).toEqual(['reset', 'trimmed']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: the publish function validates', () => {
  it('raises SQLSTATE 22023 ("ssehub: …") for every bad input and inserts nothing; accepts the limits exactly', async () => {
    const [hub] = (await startHubs(1, { SSEHUB_MAX_EVENT_BYTES: '4096' })) as [HubProcess];
    const client = await pg();
    const user = uid('valid');
    const stream = await positioned(hub, 'agui', user);
    const sizedEvent = (bytes: number, filler = 'x'): string => {
      const overhead = '{"p":""}'.length;
      const unit = Buffer.byteLength(filler);
      const text = `{"p":"${filler.repeat(Math.floor((bytes - overhead) / unit))}${'y'.repeat((bytes - overhead) % unit)}"}`;
      expect(Buffer.byteLength(text)).toBe(bytes);
      return text;
    };
    const bad: Array<[string, string | null, string | null, string | null]> = [
      ['unknown kind', 'nope', user, '{}'],
      ['kind in capitals', 'AGUI', user, '{}'],
      ['empty kind', '', user, '{}'],
      ['NULL kind', null, user, '{}'],
      ['empty user_id', 'agui', '', '{}'],
      ['user_id of 513 characters', 'agui', 'u'.repeat(513), '{}'],
      ['NULL user_id', 'agui', null, '{}'],
      ['not JSON', 'agui', user, 'not json'],
      ['empty event', 'agui', user, ''],
      ['truncated JSON', 'agui', user, '{"a":1'],
      ['two values', 'agui', user, '{"a":1} {"b":2}'],
      ['an array', 'agui', user, '[1]'],
      ['a string', 'agui', user, '"string"'],
      ['a number', 'agui', user, '1'],
      ['JSON null', 'agui', user, 'null'],
      ['NULL event', 'agui', user, null],
      ['one byte over SSEHUB_MAX_EVENT_BYTES', 'agui', user, sizedEvent(4097)],
      ['over the limit in bytes, not in characters', 'agui', user, `{"p":"${'é'.repeat(2100)}"}`],
      ['user_id of 257 astral characters (514 UTF-16 units)', 'agui', '😀'.repeat(257), '{}'],
      ['nested 65 levels', 'agui', user, `${'{"d":'.repeat(65)}1${'}'.repeat(65)}`],
      [
        'nested 65 levels behind a string with brackets and an escaped quote',
        'agui',
        user,
        `{"s":"\\"[[[{{","t":${'['.repeat(64)}${']'.repeat(64)}}`,
      ],
    ];
    // Postgres 16 tests JSON without raising; older servers raise the cast's own error (no
    // subtransaction per publish just to rename it).
    const version = Number(
      (await client.query<{ server_version_num: string }>('SHOW server_version_num')).rows[0]?.server_version_num,
    );
    const notJson = new Set(['not JSON', 'empty event', 'truncated JSON', 'two values']);
    const outcomes: Array<[string, unknown, unknown]> = [];
    for (const [what, kind, userId, event] of bad) {
      const outcome = await client.query(`SELECT "${fx.schema}".publish($1, $2, $3) AS id`, [kind, userId, event]).then(
        (result) => ({ code: 'no error', message: `returned ${JSON.stringify(result.rows[0]?.id)}` }),
        (err: { code?: string; message: string }) => ({ code: err.code, message: err.message }),
      );
      outcomes.push([what, outcome.code, outcome.message.startsWith('ssehub:') ? 'ssehub:' : outcome.message]);
    }
    expect(outcomes).toEqual(
      bad.map(([what]) =>
        notJson.has(what) && version < 160000
          ? [what, '22P02', expect.stringContaining('invalid input syntax for type json')]
          : [what, '22023', 'ssehub:'],
      ),
    );
    expect(await rowCount(client)).toBe(0);

    // The limits themselves are accepted.
    const accepted = [
      await publishSql(client, 'agui', user, sizedEvent(4096), 'exactly the limit'),
      await publishSql(client, 'agui', user, sizedEvent(4096, 'é'), 'exactly the limit in two-byte characters'),
      await publishSql(client, 'agui', user, `${'{"d":'.repeat(64)}1${'}'.repeat(64)}`, 'nested exactly 64 levels'),
      await publishSql(client, 'agui', user, '{}', 'empty object'),
    ];
    const longUser = 'u'.repeat(512);
    const longStream = await positioned(hub, 'agui', longUser);
    const forLong = await publishSql(client, 'agui', longUser, '{"long":true}', 'user_id of 512 characters');
    expect(await rowCount(client)).toBe(5);
    await waitForId(stream, accepted[3]?.id as string, 'the accepted events');
    await waitForId(longStream, forLong.id, 'the event for the 512-character user');
    await sleep(100);
    expect(shown(stream)).toEqual(accepted.map((s) => ['message', s.id, s.bytes]));
    expect(shown(longStream)).toEqual([['message', forLong.id, '{"long":true}']]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: bad rows', () => {
  it('skips rows inserted behind the function (counted by reason) without stalling, and never shows them to anyone', async () => {
    const [h1, h2] = (await startHubs(2, { SSEHUB_MAX_EVENT_BYTES: '4096' })) as [HubProcess, HubProcess];
    const alice = uid('alice');
    const bob = uid('bob');
    const streams = {
      aliceAgui1: await positioned(h1, 'agui', alice),
      aliceCtx1: await positioned(h1, 'contexts', alice),
      aliceCtx2: await positioned(h2, 'contexts', alice),
      aliceA2a2: await positioned(h2, 'a2a', alice),
      bobAgui1: await positioned(h1, 'agui', bob),
      bobCtx1: await positioned(h1, 'contexts', bob),
      bobAgui2: await positioned(h2, 'agui', bob),
      bobCtx2: await positioned(h2, 'contexts', bob),
    };
    const bobStart = streams.bobCtx2.lastEventId() as string;
    const reasons = [
      'malformed_json',
      'duplicate_member',
      'not_an_object',
      'unknown_kind',
      'invalid_user_id',
      'too_large',
      'too_deep',
    ] as const;
    const rejected = async (hub: HubProcess): Promise<Record<string, number>> =>
      Object.fromEntries(
        await Promise.all(
          reasons.map(async (r) => [r, await metricValue(hub, `ssehub_events_rejected_total{reason="${r}"}`)]),
        ),
      ) as Record<string, number>;
    const before = [await rejected(h1), await rejected(h2)];

    const client = await pg();
    const raw = async (kind: string, userId: string, event: string): Promise<void> => {
      await client.query(`INSERT INTO "${fx.schema}".outbox (kind, user_id, event) VALUES ($1, $2, $3)`, [
        kind,
        userId,
        event,
      ]);
    };
    const good: Sent[] = [];
    good.push(await publishSql(client, 'agui', alice, '{"good":1}', 'good1'));
    // Event text that would smuggle members into an envelope built around it.
    await raw('agui', alice, `{"a":1},"user_id":"${bob}"`);
    await raw('agui', alice, 'not json');
    good.push(await publishSql(client, 'agui', alice, '{"good":2}', 'good2'));
    await raw('agui', alice, '[1,2]');
    await raw('bogus', alice, '{"bogus":1}');
    await raw('agui', '', '{"nobody":1}');
    await raw('agui', 'x'.repeat(513), '{"toolong":1}');
    await raw('agui', alice, `{"p":"${'x'.repeat(5000)}"}`);
    await raw('agui', alice, `${'{"d":'.repeat(70)}1${'}'.repeat(70)}`);
    await raw('system', alice, '{"a":1},"event":{"smuggled":2}');
    await raw('agui', bob, `{"x":1},"user_id":"${alice}"`);
    // Bad rows inside a transaction with good ones.
    await client.query('BEGIN');
    good.push(await publishSql(client, 'a2a', alice, '{"good":3}', 'good3'));
    await raw('a2a', alice, '"just a string"');
    good.push(await publishSql(client, 'system', alice, '{"good":4}', 'good4'));
    await client.query('COMMIT');
    // A well-formed row inserted directly is an event like any other.
    await raw('agui', alice, '{"good":5,"raw":true}');
    const rawRow = await client.query<{ id: string; tx: string }>(
      `SELECT id::text, tx::text FROM "${fx.schema}".outbox WHERE event = '{"good":5,"raw":true}'`,
    );
    const epoch = parseOutboxId(good[0]?.id).epoch;
    good.push({
      id: `${epoch}:${rawRow.rows[0]?.tx}-${rawRow.rows[0]?.id}`,
      kind: 'agui',
      user: alice,
      bytes: '{"good":5,"raw":true}',
      label: 'good5 (raw)',
    });
    const aliceLast = await publishSql(client, 'a2a', alice, '{"good":6}', 'good6');
    const aliceLastAgui = await publishSql(client, 'agui', alice, '{"good":7}', 'good7');
    good.push(aliceLast, aliceLastAgui);
    const bobMarker = await publishSql(client, 'agui', bob, '{"bob":"marker"}', 'bob marker');

    // The reader went on past every bad row.
    await waitForId(streams.aliceAgui1, aliceLastAgui.id, "alice's last agui event");
    await waitForId(streams.aliceCtx1, aliceLastAgui.id, "alice's last event (h1)");
    await waitForId(streams.aliceCtx2, aliceLastAgui.id, "alice's last event (h2)");
    await waitForId(streams.aliceA2a2, aliceLast.id, "alice's last a2a event");
    for (const s of [streams.bobAgui1, streams.bobCtx1, streams.bobAgui2, streams.bobCtx2])
      await waitForId(s, bobMarker.id, "bob's marker");
    await sleep(300);

    const asShown = (stream: StreamName, user: string, list: Sent[]): Array<[string, string, string]> =>
      expectedOn(stream, user, list).map(([id, d]) => ['message', id, d]);
    expect(shown(streams.aliceAgui1)).toEqual(asShown('agui', alice, good));
    expect(shown(streams.aliceCtx1)).toEqual(asShown('contexts', alice, good));
    expect(shown(streams.aliceCtx2)).toEqual(asShown('contexts', alice, good));
    expect(shown(streams.aliceA2a2)).toEqual(asShown('a2a', alice, good));
    expect(shown(streams.bobAgui1)).toEqual(asShown('agui', bob, [bobMarker]));
    expect(shown(streams.bobCtx1)).toEqual(asShown('contexts', bob, [bobMarker]));
    expect(shown(streams.bobAgui2)).toEqual(asShown('agui', bob, [bobMarker]));
    expect(shown(streams.bobCtx2)).toEqual(asShown('contexts', bob, [bobMarker]));

    // Counted once per replica, by reason. The smuggling rows are malformed as events on their
    // own, or a duplicate member once wrapped in an envelope: either reason is fine.
    for (const [index, hub] of [h1, h2].entries()) {
      const after = await rejected(hub);
      const delta = Object.fromEntries(reasons.map((r) => [r, (after[r] ?? 0) - (before[index]?.[r] ?? 0)])) as Record<
        (typeof reasons)[number],
        number
      >;
      const what = `h${index + 1}`;
      expect([what, delta.malformed_json + delta.duplicate_member]).toEqual([what, 4]);
      expect([
        what,
        delta.not_an_object,
        delta.unknown_kind,
        delta.invalid_user_id,
        delta.too_large,
        delta.too_deep,
      ]).toEqual([what, 2, 1, 2, 1, 1]);
    }

    // Replays skip them the same way, on the other replica too.
    const replayAlice = await open(h2, 'agui', alice, { headers: { 'Last-Event-ID': good[0]?.id as string } });
    const replayBob = await open(h1, 'contexts', bob, { headers: { 'Last-Event-ID': bobStart } });
    await waitForId(replayAlice, aliceLastAgui.id, "alice's replayed events");
    await waitForId(replayBob, bobMarker.id, "bob's replayed marker");
    await sleep(100);
    expect(shown(replayAlice)).toEqual(asShown('agui', alice, good).slice(1));
    expect(shown(replayBob)).toEqual(asShown('contexts', bob, [bobMarker]));
  });
});

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: schema creation', () => {
  it('starts against an existing schema with a role that may only read, write and publish (no CREATE)', async () => {
    const [owner] = (await startHubs(1)) as [HubProcess];
    const admin = await pg();
    const role = `${fx.schema}_app`;
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await admin.query(`REVOKE CREATE ON SCHEMA public FROM ${role}`);
      await admin.query(`GRANT USAGE ON SCHEMA ${fx.schema} TO ${role}`);
      await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${fx.schema} TO ${role}`);
      await admin.query(`GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${fx.schema} TO ${role}`);
      const privileges = await admin.query<{ db: boolean; schema: boolean }>(
        `SELECT has_database_privilege($1, current_database(), 'CREATE') AS db, has_schema_privilege($1, $2, 'CREATE') AS schema`,
        [role, fx.schema],
      );
      expect(privileges.rows[0]).toEqual({ db: false, schema: false });
      const url = new URL(SHARED_DATABASE_URL);
      url.username = role;
      const restricted = await startReadyHub(hubEnv(fx.schema, { DATABASE_URL: url.toString() }));
      fx.hubs.push(restricted);
      const user = uid('restricted');
      const stream = await positioned(restricted, 'agui', user);
      const sent = await webhookPublish(restricted, 'agui', user, { via: 'restricted' }, 'restricted');
      await waitForId(stream, sent.id, 'the event published by the restricted replica');
      const other = await positioned(owner, 'agui', user);
      const resumed = await open(restricted, 'agui', user, {
        headers: { 'Last-Event-ID': other.lastEventId() as string },
      });
      const later = await publishSql(admin, 'agui', user, '{"later":1}', 'later');
      await waitForId(resumed, later.id, 'the later event on the restricted replica');
    } finally {
      for (const hub of fx.hubs.splice(0)) await hub.stop('SIGKILL');
      await admin.query(`DROP OWNED BY ${role}`);
      await admin.query(`DROP ROLE ${role}`);
    }
  });

  it('starts three replicas at once against a fresh schema, and a restarted replica against the existing one, all in one epoch', async () => {
    const hubs = await startHubs(3);
    const user = uid('migrate');
    const client = await pg();
    const tables = await client.query<{ table_name: string }>(
      'SELECT table_name FROM information_schema.tables WHERE table_schema = $1',
      [fx.schema],
    );
    expect(tables.rows.map((r) => r.table_name)).toContain('outbox');

    const streams = await Promise.all(hubs.map((hub) => positioned(hub, 'contexts', user)));
    const epochs = new Set(streams.map((s) => parseOutboxId(s.lastEventId()).epoch));
    expect(epochs.size).toBe(1);
    const sent: Sent[] = [await publishSql(client, 'agui', user, '{"n":1}', 'n1')];
    for (const [i, hub] of hubs.entries()) sent.push(await webhookPublish(hub, 'system', user, { via: i }, `via${i}`));
    for (const s of streams) await waitForId(s, sent.at(-1)?.id as string, 'the events');
    for (const s of streams)
      expect(shown(s)).toEqual(expectedOn('contexts', user, sent).map(([id, d]) => ['message', id, d]));

    // A replica restarted against the existing schema: same epoch, same history.
    const third = hubs[2] as HubProcess;
    await third.stop();
    fx.hubs.splice(fx.hubs.indexOf(third), 1);
    const [again] = (await startHubs(1)) as [HubProcess];
    const reopened = await open(again, 'contexts', user, { headers: { 'Last-Event-ID': sent[0]?.id as string } });
    const after = await publishSql(client, 'a2a', user, '{"n":2}', 'n2');
    sent.push(after);
    await waitForId(reopened, after.id, 'the event after the restart');
    expect(parseOutboxId(after.id).epoch).toBe([...epochs][0]);
    expect(shown(reopened)).toEqual(expectedOn('contexts', user, sent.slice(1)).map(([id, d]) => ['message', id, d]));
    for (const s of streams.slice(0, 2)) await waitForId(s, after.id, 'the event after the restart');

    // Again, two at once against the existing schema, while a publisher is busy on it.
    const busy = (async () => {
      const publisher = await pg();
      for (let n = 0; n < 20; n++) await publishSql(publisher, 'analytics', user, `{"busy":${n}}`, 'busy');
    })();
    const more = await startHubs(2);
    await busy;
    for (const hub of more) {
      const s = await positioned(hub, 'agui', user);
      expect(parseOutboxId(s.lastEventId()).epoch).toBe([...epochs][0]);
    }
  });

  it('starts three replicas at once against a database where the schema is being created for the first time (again, fresh)', async () => {
    // A second race, on another fresh schema: creation must be safe however the starts interleave.
    const hubs = await startHubs(3, { SSEHUB_PG_POLL_MS: '50' });
    const user = uid('race');
    const streams = await Promise.all(hubs.map((hub) => positioned(hub, 'agui', user)));
    const client = await pg();
    const event = await publishSql(client, 'agui', user, '{"race":true}', 'race');
    for (const s of streams) {
      await waitForId(s, event.id, 'the event');
      expect(shown(s)).toEqual([['message', event.id, '{"race":true}']]);
    }
    for (const hub of hubs) expect(hub.output()).not.toMatch(/"level":(50|60)/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('postgres outbox: publishing connections', () => {
  it('answers 503 for a publish whose session the server ended mid-statement, and publishes the next ones on live connections', async () => {
    const [hub] = (await startHubs(1)) as [HubProcess];
    const admin = await pg();
    const user = uid('ended');
    const stream = await positioned(hub, 'agui', user);
    for (let round = 0; round < 3; round++) {
      // The webhooks' INSERTs wait on the lock; their sessions are then ended (SQLSTATE 57P01), as a restart does.
      await admin.query('BEGIN');
      await admin.query(`LOCK TABLE "${fx.schema}".outbox IN EXCLUSIVE MODE`);
      const inFlight = [0, 1].map((i) => postWebhook(hub, 'agui', webhookBody(user, { round, ended: i }).body));
      await until(
        async () =>
          (
            await admin.query<{ n: number }>(
              'SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = $1::regclass',
              [`"${fx.schema}".outbox`],
            )
          ).rows[0]?.n === 2,
        WAIT_MS,
        'both publishes to wait on the lock',
      );
      await admin.query(
        `SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE NOT l.granted AND l.relation = $1::regclass`,
        [`"${fx.schema}".outbox`],
      );
      expect((await Promise.all(inFlight)).map((r) => r.status)).toEqual([503, 503]);
      await admin.query('ROLLBACK');
      // The ended sessions were not handed to these.
      const next = await Promise.all(
        [0, 1, 2].map((i) => postWebhook(hub, 'agui', webhookBody(user, { round, next: i }).body)),
      );
      expect(next.map((r) => r.status)).toEqual([202, 202, 202]);
      for (const published of next)
        await waitForId(stream, published.json.id as string, 'the publishes after the ended sessions');
    }
    // Only the acknowledged publishes were delivered; the ones whose sessions ended were not.
    const delivered = messages(stream).map((m) => JSON.parse(m.data) as { round: number; next: number });
    const key = (e: { round: number; next: number }): number => e.round * 10 + e.next;
    expect(delivered.map(key).sort((x, y) => x - y)).toEqual([0, 1, 2, 10, 11, 12, 20, 21, 22]);
  });
});

describe('postgres outbox: configuration', () => {
  it.each([
    ['a schema name that is not a lowercase identifier', { SSEHUB_PG_SCHEMA: 'Bad-Schema' }],
    ['a schema name with a quote', { SSEHUB_PG_SCHEMA: 'x"; drop table y; --' }],
    ['a poll interval below 50 ms', { SSEHUB_PG_POLL_MS: '10' }],
    ['no DATABASE_URL', { DATABASE_URL: '' }],
  ])('refuses to start with %s', async (_what, env) => {
    const started = startReadyHub(hubEnv(fx.schema, env)).then(
      (hub) => {
        fx.hubs.push(hub);
        return 'started';
      },
      (err: Error) => err.message,
    );
    expect(await started).toMatch(/^hub exited with 1 before listening/);
  });
});

describe('postgres outbox: metrics', () => {
  it('counts rows read and wake-ups, reports lag and the listening gauge, and falls back to polling without notifications', async () => {
    const [hub] = (await startHubs(1, { SSEHUB_PG_POLL_MS: '200' })) as [HubProcess];
    const user = uid('metrics');
    const stream = await positioned(hub, 'contexts', user);
    const client = await pg();
    const sent: Sent[] = [];
    for (let n = 1; n <= 6; n++) {
      sent.push(await publishSql(client, n % 2 === 0 ? 'a2a' : 'agui', user, `{"n":${n}}`, `n${n}`));
      await sleep(20);
    }
    await waitForId(stream, sent.at(-1)?.id as string, 'the events');
    // The outbox held exactly these rows; the reader read each (at least) once.
    expect(await rowCount(client)).toBe(6);
    expect(await metricValue(hub, 'ssehub_outbox_rows_read_total')).toBeGreaterThanOrEqual(6);
    expect(await metricValue(hub, 'ssehub_outbox_wakeups_total{source="notify"}')).toBeGreaterThan(0);
    expect(await metricValue(hub, 'ssehub_outbox_wakeups_total{source="poll"}')).toBeGreaterThanOrEqual(0);
    const lag = await metricValue(hub, 'ssehub_outbox_lag_seconds');
    expect(Number.isFinite(lag)).toBe(true);
    expect(lag).toBeGreaterThanOrEqual(0);
    expect(await metricValue(hub, 'ssehub_transport_listening')).toBe(1);
    expect(await metricValue(hub, 'ssehub_events_received_total{kind="agui"}')).toBe(3);
    expect(await metricValue(hub, 'ssehub_events_received_total{kind="a2a"}')).toBe(3);
    const health = await (await fetch(`${hub.url}/health`)).json();
    expect(health).toEqual(expect.objectContaining({ status: 'ok' }));

    // Without the trigger's NOTIFY, the poll (SSEHUB_PG_POLL_MS) still finds new rows.
    await client.query(`ALTER TABLE "${fx.schema}".outbox DISABLE TRIGGER USER`);
    const polledBefore = await metricValue(hub, 'ssehub_outbox_wakeups_total{source="poll"}');
    const quiet = await publishSql(client, 'system', user, '{"quiet":true}', 'quiet');
    await waitForId(stream, quiet.id, 'the event published without a notification');
    expect(await metricValue(hub, 'ssehub_outbox_wakeups_total{source="poll"}')).toBeGreaterThan(polledBefore);
    expect(messages(stream).map((m) => m.id)).toEqual([...sent, quiet].map((x) => x.id));
  });
});
