import { request, type IncomingMessage } from 'node:http';
import { Redis } from 'ioredis';
import { SHARED_REDIS_URL, metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { ResumingClient } from '../helpers/resuming-client';
import { openStream, parseFrames, sleep, type SseFrame, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until } from '../helpers/wait';

/**
 * Resumption under failure, with real hub processes on the shared Redis: clients that lose
 * their replica (SIGKILL, SIGTERM drain) or are cut as too slow come back with their
 * Last-Event-ID and must end up with every event of their user for their stream exactly
 * once, in order, with no reset.
 */

const KINDS = ['agui', 'a2a', 'system'] as const;
type Kind = (typeof KINDS)[number];
type Stream = 'agui' | 'a2a' | 'contexts';
const CARRIES: Record<Stream, readonly Kind[]> = { agui: ['agui'], a2a: ['a2a'], contexts: ['agui', 'a2a', 'system'] };
const SLOW_CONSUMER = 'ssehub_disconnects_total{reason="slow_consumer"}';
/** Events a replica sent from history to streams that opened with a Last-Event-ID. */
const REPLAYED = 'ssehub_history_replayed_total';
/** Reconnect delay of the resuming clients (until a drain's retry hint overrides it). */
const RECONNECT_MS = 250;
/**
 * Events per publish in the slow-consumer scenario: 6 x 8 KB stays under its 64 KB outbound
 * bound even when a socket has no room left, so only the stalled tab can overflow it.
 */
const BATCH = 6;

/** Removes everything a scenario left in the shared Redis under its prefix. */
async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}

interface PublishedEvent {
  n: number;
  user: string;
  kind: Kind;
  id: string;
  via: 'fcall' | 'webhook';
}

function seqOf(id: string): number {
  const match = /^[0-9a-z]+:\d+-(\d+)$/.exec(id);
  if (!match) throw new Error(`not an event id: ${id}`);
  return Number(match[1]);
}

/**
 * Publishes one event at a time, at a steady pace, alternating users and kinds: through
 * `FCALL ssehub_publish`, and every other event through a replica's webhook when one is set.
 * Each id comes back from the publish call, so `published` is the ground truth.
 */
class LoadPublisher {
  readonly published: PublishedEvent[] = [];
  /** Replica whose webhook takes every other event; undefined for FCALL only. */
  webhookTarget: string | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private inFlight: Promise<unknown> = Promise.resolve();
  private failure: Error | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly users: string[],
    private readonly serviceToken: string,
    private readonly intervalMs = 5,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  count(via?: 'fcall' | 'webhook'): number {
    return via === undefined ? this.published.length : this.published.filter((p) => p.via === via).length;
  }

  /** Resolves once the publish in flight now (if any) has been answered. */
  async settle(): Promise<void> {
    await this.inFlight.catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    if (this.failure) throw this.failure;
  }

  private async run(): Promise<void> {
    for (let n = 0; !this.stopped; n++) {
      const user = this.users[n % this.users.length] as string;
      const kind = KINDS[Math.floor(n / this.users.length) % KINDS.length] as Kind;
      const target = n % 2 === 1 ? this.webhookTarget : undefined;
      const attempt = target === undefined ? this.fcall(kind, user, n) : this.webhook(target, kind, user, n);
      this.inFlight = attempt;
      try {
        const id = await attempt;
        this.published.push({ n, user, kind, id, via: target === undefined ? 'fcall' : 'webhook' });
      } catch (err) {
        // The outcome of this publish is unknown: the comparison could not be trusted any more.
        this.failure = new Error(
          `publish #${n} (${kind} for ${user} via ${target ?? 'FCALL'}) failed: ${(err as Error).message}`,
        );
        return;
      }
      await sleep(this.intervalMs);
    }
  }

  private async fcall(kind: Kind, user: string, n: number): Promise<string> {
    const event = JSON.stringify({ type: 'LOAD', kind, n });
    return String(await this.redis.call('FCALL', 'ssehub_publish', '0', kind, user, event, this.prefix));
  }

  private async webhook(base: string, kind: Kind, user: string, n: number): Promise<string> {
    const res = await fetch(`${base}/api/v1/webhook/${kind}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${this.serviceToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'LOAD', kind, n }),
    });
    const body = (await res.json()) as { id?: string };
    if (res.status !== 202 || typeof body.id !== 'string')
      throw new Error(`webhook answered ${res.status} ${JSON.stringify(body)}`);
    return body.id;
  }
}

/** The replicas a load balancer would send a new stream to, the client's own first. */
class ReplicaPool {
  private readonly live: HubProcess[];
  constructor(hubs: HubProcess[]) {
    this.live = [...hubs];
  }
  add(hub: HubProcess): void {
    this.live.push(hub);
  }
  remove(hub: HubProcess): void {
    const index = this.live.indexOf(hub);
    if (index >= 0) this.live.splice(index, 1);
  }
  order(home: HubProcess): string[] {
    return [...this.live].sort((x, y) => (x === home ? -1 : y === home ? 1 : 0)).map((hub) => hub.url);
  }
}

interface Tab {
  label: string;
  user: string;
  stream: Stream;
  home: HubProcess;
  client: ResumingClient;
}

interface TabFigures {
  label: string;
  expected: number;
  received: number;
  lost: number;
  duplicated: number;
  unexpected: number;
  resets: number;
  reconnects: number;
}

/** What a message's data says about the event: `<kind>#<n>`, checked against the stream's framing. */
function payloadKey(stream: Stream, data: string): string {
  const parsed = JSON.parse(data) as {
    protocol?: string;
    event?: { kind: string; n: number };
    kind?: string;
    n?: number;
  };
  if (stream === 'contexts') {
    if (parsed.protocol !== parsed.event?.kind) return `bad wrapper ${data}`;
    return `${parsed.event?.kind}#${parsed.event?.n}`;
  }
  return `${parsed.kind}#${parsed.n}`;
}

function expectedFor(tab: Pick<Tab, 'user' | 'stream'>, published: PublishedEvent[]): PublishedEvent[] {
  return published.filter((p) => p.user === tab.user && CARRIES[tab.stream].includes(p.kind));
}

function figuresOf(tab: Tab, published: PublishedEvent[]): TabFigures {
  const expected = expectedFor(tab, published).map((p) => p.id);
  const received = tab.client.events().map((m) => m.id);
  const seen = new Set(received);
  const wanted = new Set(expected);
  return {
    label: tab.label,
    expected: expected.length,
    received: received.length,
    lost: expected.filter((id) => !seen.has(id)).length,
    duplicated: received.length - seen.size,
    unexpected: received.filter((id) => !wanted.has(id)).length,
    resets: tab.client.resets().length,
    reconnects: tab.client.reconnects,
  };
}

function summary(scenario: string, publisher: LoadPublisher, figures: TabFigures[], extra: string): string {
  const tabs = figures
    .map(
      (f) =>
        `${f.label} ${f.received}/${f.expected} lost=${f.lost} dup=${f.duplicated} extra=${f.unexpected} resets=${f.resets} reconnects=${f.reconnects}`,
    )
    .join('; ');
  const total = figures.reduce(
    (sum, f) => ({ lost: sum.lost + f.lost, dup: sum.dup + f.duplicated, reconnects: sum.reconnects + f.reconnects }),
    { lost: 0, dup: 0, reconnects: 0 },
  );
  return (
    `[resume-failover ${scenario}] published=${publisher.count()} (fcall=${publisher.count('fcall')} webhook=${publisher.count('webhook')}) ` +
    `${extra} | totals: lost=${total.lost} duplicated=${total.dup} reconnects=${total.reconnects} | ${tabs}`
  );
}

/** The ids each user got are consecutive: seq counts up by exactly one per event of the user. */
function expectConsecutiveIds(published: PublishedEvent[], users: string[]): void {
  for (const user of users) {
    const seqs = published.filter((p) => p.user === user).map((p) => seqOf(p.id));
    const first = seqs[0] ?? 1;
    expect(seqs).toEqual(seqs.map((_, i) => first + i));
  }
}

/** Waits for every tab to hold its last expected event (or the timeout), then lets stragglers land. */
async function awaitCompletion(tabs: Tab[], published: PublishedEvent[], timeoutMs: number): Promise<void> {
  await Promise.allSettled(
    tabs.map((tab) => {
      const last = expectedFor(tab, published).at(-1)?.id;
      return tab.client.waitFor((c) => c.events().some((m) => m.id === last), timeoutMs, `event ${last}`);
    }),
  );
  await sleep(200);
}

function expectExactlyOnceInOrder(tab: Tab, published: PublishedEvent[]): void {
  const expected = expectedFor(tab, published);
  const received = tab.client.events();
  // One assertion per tab that names it, so a failure says whose stream went wrong.
  expect({ tab: tab.label, ids: received.map((m) => m.id) }).toEqual({
    tab: tab.label,
    ids: expected.map((p) => p.id),
  });
  expect({ tab: tab.label, payloads: received.map((m) => payloadKey(tab.stream, m.data)) }).toEqual({
    tab: tab.label,
    payloads: expected.map((p) => `${p.kind}#${p.n}`),
  });
  expect({ tab: tab.label, resets: tab.client.resets() }).toEqual({ tab: tab.label, resets: [] });
}

/** Events the tab got on its latest connection. */
function onLatestConnection(client: ResumingClient): number {
  const latest = client.connections.length - 1;
  return client.events().filter((m) => m.connection === latest).length;
}

describe('resuming across replica failures', () => {
  const users = ['alice', 'bob', 'carol'];
  let redis: Redis;
  let serviceToken: string;
  const hubs: HubProcess[] = [];
  const tabs: Tab[] = [];
  const prefixes: string[] = [];

  beforeAll(async () => {
    redis = new Redis(SHARED_REDIS_URL);
    serviceToken = await mintToken('load-publisher', { roles: ['service'] });
  });

  afterEach(async () => {
    for (const tab of tabs.splice(0)) tab.client.close();
    await Promise.all(hubs.splice(0).map((hub) => hub.stop('SIGKILL')));
  });

  afterAll(async () => {
    for (const prefix of prefixes) await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });

  async function startHubs(count: number, env: Record<string, string>): Promise<HubProcess[]> {
    const started = await Promise.all(Array.from({ length: count }, () => startReadyHub(env)));
    hubs.push(...started);
    return started;
  }

  /** Per user, an agui (a2a for bob) tab and a contexts tab on each of the given replicas. */
  async function openTabs(pool: ReplicaPool, homes: Array<[string, HubProcess]>): Promise<Tab[]> {
    const opened: Tab[] = [];
    for (const user of users) {
      const token = await mintToken(user);
      for (const [name, home] of homes) {
        for (const stream of [user === 'bob' ? 'a2a' : 'agui', 'contexts'] as Stream[]) {
          const label = `${user}/${stream}@${name}`;
          const client = new ResumingClient({
            path: `/api/v1/stream/${stream}`,
            token,
            replicas: () => pool.order(home),
            reconnectMs: RECONNECT_MS,
            name: label,
          });
          const tab = { label, user, stream, home, client };
          tabs.push(tab);
          opened.push(tab);
        }
      }
    }
    await Promise.all(opened.map((tab) => tab.client.opened()));
    return opened;
  }

  it('loses and repeats nothing when a replica is SIGKILLed mid-stream', async () => {
    const prefix = uniquePrefix();
    prefixes.push(prefix);
    const [a, b] = (await startHubs(2, { REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: prefix })) as [
      HubProcess,
      HubProcess,
    ];
    const pool = new ReplicaPool([a, b]);
    const opened = await openTabs(pool, [
      ['A', a],
      ['B', b],
    ]);
    const onA = opened.filter((t) => t.home === a);
    const onB = opened.filter((t) => t.home === b);

    // FCALL and the webhook of the replica that survives.
    const publisher = new LoadPublisher(redis, prefix, users, serviceToken, 5);
    publisher.webhookTarget = b.url;
    publisher.start();
    try {
      await until(() => opened.every((t) => t.client.events().length >= 5), 20_000, 'every tab to receive events');
      const publishedBeforeKill = publisher.count();
      a.child.kill('SIGKILL');
      pool.remove(a);
      expect(await a.exited).toBeNull(); // killed by the signal
      await until(
        () => onA.every((t) => t.client.connections.length >= 2 && onLatestConnection(t.client) >= 5),
        20_000,
        `A's tabs to resume on B: ${onA.map((t) => t.client.describe()).join(' | ')}`,
      );
      await until(() => publisher.count() >= publishedBeforeKill + 150, 20_000, 'publishing to go on after the kill');
      await publisher.stop();
      await awaitCompletion(opened, publisher.published, 15_000);

      const replayed = await metricValue(b, REPLAYED);
      const figures = opened.map((tab) => figuresOf(tab, publisher.published));
      console.log(
        summary(
          'a: SIGKILL',
          publisher,
          figures,
          `killed A after ${publishedBeforeKill} events; B replayed ${replayed} from history`,
        ),
      );
      // The tabs were away for at least the reconnect delay while events kept coming: some came from history.
      expect(replayed).toBeGreaterThan(0);
      expectConsecutiveIds(publisher.published, users);
      for (const tab of opened) expectExactlyOnceInOrder(tab, publisher.published);
      for (const tab of onA) {
        expect(tab.client.connections.map((c) => c.replica)).toEqual([a.url, b.url]);
        // The reconnect carried the id of the last event the tab had.
        const resumedFrom = tab.client.connections[1]?.lastEventId;
        expect(
          tab.client
            .events()
            .filter((m) => m.connection === 0)
            .at(-1)?.id,
        ).toBe(resumedFrom);
      }
      for (const tab of onB) expect(tab.client.connections).toHaveLength(1);
    } finally {
      await publisher.stop().catch(() => undefined);
    }
  }, 60_000);

  it('loses and repeats nothing through a rolling SIGTERM drain of both replicas', async () => {
    const prefix = uniquePrefix();
    prefixes.push(prefix);
    const env = { REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: prefix, SSEHUB_DRAIN_MS: '1000' };
    const [a, b] = (await startHubs(2, env)) as [HubProcess, HubProcess];
    const pool = new ReplicaPool([a, b]);
    const opened = await openTabs(pool, [
      ['A', a],
      ['B', b],
    ]);

    const publisher = new LoadPublisher(redis, prefix, users, serviceToken, 5);
    publisher.webhookTarget = b.url;
    publisher.start();
    try {
      await until(() => opened.every((t) => t.client.events().length >= 5), 20_000, 'every tab to receive events');

      // Roll A: the balancer keeps sending to it until it is gone; it answers 503 meanwhile.
      const beforeA = publisher.count();
      expect(await a.stop('SIGTERM')).toBe(0);
      pool.remove(a);
      await until(
        () => opened.every((t) => t.client.connections.at(-1)?.replica === b.url && onLatestConnection(t.client) >= 5),
        20_000,
        `every tab to stream from B: ${opened.map((t) => t.client.describe()).join(' | ')}`,
      );

      // A replacement comes up, the webhook moves to it, then B rolls too.
      const [c] = (await startHubs(1, env)) as [HubProcess];
      pool.add(c);
      publisher.webhookTarget = c.url;
      await publisher.settle();
      const replayedOnB = await metricValue(b, REPLAYED);
      const beforeB = publisher.count();
      expect(await b.stop('SIGTERM')).toBe(0);
      pool.remove(b);
      await until(
        () => opened.every((t) => t.client.connections.at(-1)?.replica === c.url && onLatestConnection(t.client) >= 5),
        20_000,
        `every tab to stream from C: ${opened.map((t) => t.client.describe()).join(' | ')}`,
      );
      await publisher.stop();
      await awaitCompletion(opened, publisher.published, 15_000);

      const replayedOnC = await metricValue(c, REPLAYED);
      const figures = opened.map((tab) => figuresOf(tab, publisher.published));
      console.log(
        summary(
          'b: rolling drain',
          publisher,
          figures,
          `SIGTERM A after ${beforeA} events, B after ${beforeB}; replacement C; replayed from history: B ${replayedOnB}, C ${replayedOnC}`,
        ),
      );
      // Drained tabs wait out the hub's retry hint (0.5-3 s) while events keep coming.
      expect(replayedOnB).toBeGreaterThan(0);
      expect(replayedOnC).toBeGreaterThan(0);
      expectConsecutiveIds(publisher.published, users);
      for (const tab of opened) {
        expectExactlyOnceInOrder(tab, publisher.published);
        // Every stream was ended by a drain and resumed with an id; none started over.
        for (const connection of tab.client.connections.slice(1))
          expect(connection.lastEventId).toMatch(/^[0-9a-z]+:\d+-\d+$/);
      }
      for (const tab of opened.filter((t) => t.home === a)) {
        expect(tab.client.connections.map((conn) => conn.replica)).toEqual([a.url, b.url, c.url]);
      }
      for (const tab of opened.filter((t) => t.home === b)) {
        expect(tab.client.connections.map((conn) => conn.replica)).toEqual([b.url, c.url]);
      }
    } finally {
      await publisher.stop().catch(() => undefined);
    }
  }, 60_000);

  it('cuts a client that stops reading, which then resumes from its last complete event with nothing lost or repeated', async () => {
    const prefix = uniquePrefix();
    prefixes.push(prefix);
    const [hub] = (await startHubs(1, {
      REDIS_URL: SHARED_REDIS_URL,
      SSEHUB_CHANNEL_PREFIX: prefix,
      SSEHUB_BUFFER_MAX_BYTES: '65536',
      SSEHUB_HISTORY_MAX: '5000',
      SSEHUB_REPLAY_MAX: '5000',
    })) as [HubProcess];
    const user = 'sloth';
    const token = await mintToken(user);
    const path = '/api/v1/stream/agui';
    const pad = 'x'.repeat(8000);
    const published: string[] = [];
    let n = 0;
    const publishBatch = async (size: number): Promise<void> => {
      const pipeline = redis.pipeline();
      for (let i = 0; i < size; i++) {
        const event = `{"type":"BIG","n":${n++},"pad":"${pad}"}`;
        pipeline.call('FCALL', 'ssehub_publish', '0', 'agui', user, event, prefix);
      }
      for (const [err, id] of (await pipeline.exec()) ?? []) {
        if (err) throw err;
        published.push(String(id));
      }
    };

    const slow = await openPausable(hub.url, path, token);
    // A healthy tab of the same user paces the publisher: it never falls more than a batch behind.
    const fast = await openStream(hub.url, path, { token });
    const slowBefore = await metricValue(hub, SLOW_CONSUMER);
    let resumed: SseStream | undefined;
    try {
      await publishBatch(5);
      await until(() => slow.events().length >= 5, 10_000, 'the slow tab to read its first events');
      slow.pause();

      let cutAfter: number | undefined;
      for (let batch = 0; batch < 500 && cutAfter === undefined; batch++) {
        await publishBatch(BATCH);
        await fast.waitForEvents(published.length, 20_000);
        if ((await metricValue(hub, SLOW_CONSUMER)) > slowBefore) cutAfter = published.length;
      }
      expect(cutAfter).toBeDefined();
      for (let i = 0; i < 4; i++) await publishBatch(BATCH); // and more while it is away

      // The client reads what reached it before the cut, then comes back from the last event it got whole.
      slow.resume();
      await slow.ended;
      const firstEvents = slow.events();
      const resumeFrom = slow.lastEventId();
      expect(resumeFrom).toBeDefined();
      const stream = await openStream(hub.url, path, { token, headers: { 'Last-Event-ID': resumeFrom as string } });
      resumed = stream;
      expect(stream.status).toBe(200);
      const receive = async (id: string | undefined, what: string): Promise<void> => {
        await stream
          .waitFor((st) => st.events().some((e) => e.id === id), 20_000, what)
          .catch(async (err: Error) => {
            const frames = stream.frames().map((f) => `${f.event ?? ''}${f.hasData ? '' : '(no data)'}@${f.id ?? '-'}`);
            throw new Error(
              `${err.message.split(';')[0]}; resumed stream (ended=${stream.isEnded()}) frames: ${frames.join(' ')}; ` +
                `first connection: ${firstEvents.length} events, last ${firstEvents.at(-1)?.id}; published ${published.length}; ` +
                `slow_consumer +${(await metricValue(hub, SLOW_CONSUMER)) - slowBefore}, replayed ${await metricValue(hub, REPLAYED)}`,
            );
          });
      };
      await receive(published.at(-1), 'the replay');
      // Then live events, a batch at a time.
      for (let i = 0; i < 4; i++) {
        await publishBatch(BATCH);
        await receive(published.at(-1), 'live events after the replay');
      }
      await fast.waitForEvents(published.length, 20_000);
      await sleep(200);

      const got = [...firstEvents, ...stream.events()].map((e) => e.id as string);
      const seen = new Set(got);
      const lost = published.filter((id) => !seen.has(id)).length;
      const duplicated = got.length - seen.size;
      const resets = stream.frames().filter((f) => f.event === 'reset').length;
      console.log(
        `[resume-failover c: slow consumer] published=${published.length} (8 KB each) cut after ${cutAfter} | ` +
          `slow tab: ${firstEvents.length} before the cut (${slow.bytes()} bytes read), ${stream.events().length} after resuming from ${resumeFrom}, ` +
          `received=${got.length} lost=${lost} duplicated=${duplicated} resets=${resets} reconnects=1 | ` +
          `fast tab: ${fast.events().length}/${published.length} | slow_consumer +${(await metricValue(hub, SLOW_CONSUMER)) - slowBefore} | ` +
          `replayed from history ${await metricValue(hub, REPLAYED)}`,
      );
      expect(firstEvents.length).toBeLessThan(cutAfter as number);
      expect(got).toEqual(published);
      expect([...firstEvents, ...stream.events()].map((e) => (JSON.parse(e.data) as { n: number }).n)).toEqual(
        published.map((_, i) => i),
      );
      expect(resets).toBe(0);
      expect(fast.events().map((e) => e.id)).toEqual(published);
      expect(await metricValue(hub, SLOW_CONSUMER)).toBe(slowBefore + 1);
    } finally {
      resumed?.close();
      slow.destroy();
      fast.close();
    }
  }, 60_000);
});

interface PausableStream {
  /** Complete frames an EventSource would dispatch, other than heartbeats. */
  events(): SseFrame[];
  /** The last `id:` of a complete frame: what the client holds as its last event id. */
  lastEventId(): string | undefined;
  bytes(): number;
  pause(): void;
  resume(): void;
  ended: Promise<void>;
  destroy(): void;
}

/** An SSE reader that can stop reading its socket, as a stuck tab does. */
function openPausable(baseUrl: string, path: string, token: string): Promise<PausableStream> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, baseUrl),
      { headers: { Accept: 'text/event-stream', Authorization: `Bearer ${token}` }, agent: false },
      (res: IncomingMessage) => {
        let text = '';
        let markEnded: () => void = () => undefined;
        const ended = new Promise<void>((r) => (markEnded = r));
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => markEnded());
        res.on('close', () => markEnded());
        res.on('error', () => markEnded()); // the cut arrives as an aborted response
        const frames = (): SseFrame[] => parseFrames(text);
        resolve({
          events: () => frames().filter((f) => f.hasData && f.event !== 'heartbeat'),
          lastEventId: () => frames().findLast((f) => f.id !== undefined)?.id,
          bytes: () => Buffer.byteLength(text),
          pause: () => res.pause(),
          resume: () => res.resume(),
          ended,
          destroy: () => req.destroy(),
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}
