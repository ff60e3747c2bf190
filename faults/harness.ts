import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { comparePositions, parseEventId } from '../src/history/event-id';
import { startReadyHub, type HubProcess } from '../test/helpers/hub-process';
import { OwnPostgres } from '../test/helpers/postgres-server';
import { OwnRedisCluster } from '../test/helpers/redis-cluster';
import { OwnRedisSentinel } from '../test/helpers/redis-sentinel';
import { OwnRedis } from '../test/helpers/redis-server';
import { ResumingClient } from '../test/helpers/resuming-client';
import { sleep } from '../test/helpers/sse-client';
import { mintToken } from '../test/helpers/tokens';
import { quantile, type Tally } from './crowd';
import { TcpProxy } from '../test/helpers/tcp-proxy';

/** One row of the published table. */
export interface FaultRow {
  scenario: string;
  acknowledged: number;
  /** Publishes whose outcome the hub could not know (504): neither counted as lost nor as acknowledged. */
  unknown: number;
  delivered: number;
  lost: number;
  duplicated: number;
  resets: number;
  /** From the fault to the first replica reporting not ready; undefined when none did. */
  detectMs: number | undefined;
  /** From the end of the fault to every replica ready and every stream taking events again. */
  recoverMs: number | undefined;
  peakRssMb: number;
  pass: boolean;
  why: string;
  /** Figures a scenario reports besides the columns (a p99, a bound and what was measured against it). */
  notes?: string;
}

export interface Criteria {
  /** Events may be lost if the stream was told with an in-band reset (the store itself lost them). */
  resetAllowed: boolean;
  recoverWithinMs: number;
  /** How soon a replica must report itself not ready, where the fault makes it unable to serve. */
  detectWithinMs?: number;
  /** The fault slows the replicas down but must never make one report itself not ready. */
  staysReady?: boolean;
  /** Peak resident memory any replica may reach. */
  maxRssMb: number;
  /** Highest 99th percentile of the steady publisher's webhook calls over the run; unchecked when undefined. */
  webhookP99Ms?: number;
  /** Every webhook call of the steady publisher must be answered 202 (nothing refused, timed out or unknown). */
  webhooksAllAccepted?: boolean;
}

/** What a scenario measured beyond the bench's own streams, merged into its row. */
export interface Outcome {
  /** Streams of the scenario's own (a crowd), counted with the bench's. */
  tally?: Tally;
  notes?: string[];
  problems?: string[];
}

const READY_POLL_MS = 100;

/** Resident memory of a process, from /proc; 0 once it is gone. */
export function rssMb(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** An event a replica answered 202 for, and when its webhook call started. */
export interface Acknowledged {
  id: string;
  sentAt: number;
}

/**
 * Publishes through the webhooks with a `service` token, as a client library would: the first
 * replica that answers wins, and only a 202 counts as published. Keeps every acknowledged id per
 * user, which is what the streams are checked against.
 */
export class WebhookPublisher {
  /** Publishes whose outcome the hub could not know (504). */
  unknown = 0;
  /** Publishes not answered 202 or 504: refused, timed out, or another status. */
  refused = 0;
  /** How long each publish took, from its first attempt to its last answer. */
  readonly latencies: Array<{ sentAt: number; ms: number }> = [];
  private readonly acknowledged = new Map<string, Acknowledged[]>();

  private constructor(private readonly token: string) {}

  static async create(): Promise<WebhookPublisher> {
    return new WebhookPublisher(await mintToken('fault-publisher', { roles: ['service'] }));
  }

  /** The acknowledged events of `user`, in the order their answers came. */
  acknowledgedFor(user: string): readonly Acknowledged[] {
    return this.acknowledged.get(user) ?? [];
  }

  ids(user: string): string[] {
    return this.acknowledgedFor(user).map((event) => event.id);
  }

  /** Counts an event published another way (a burst straight into Redis) as acknowledged for `user`. */
  acknowledge(user: string, id: string, sentAt = Date.now()): void {
    const events = this.acknowledged.get(user) ?? [];
    events.push({ id, sentAt });
    this.acknowledged.set(user, events);
  }

  async publish(urls: string[], user: string, fields: Record<string, unknown>): Promise<void> {
    const sentAt = Date.now();
    for (const url of urls) {
      try {
        const res = await fetch(`${url}/api/v1/webhook/agui`, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ user_id: user, ...fields }),
          signal: AbortSignal.timeout(8000),
        });
        if (res.status === 202) {
          const { id } = (await res.json()) as { id: string };
          this.latencies.push({ sentAt, ms: Date.now() - sentAt });
          this.acknowledge(user, id, sentAt);
          return;
        }
        await res.body?.cancel();
        this.latencies.push({ sentAt, ms: Date.now() - sentAt });
        if (res.status === 504) {
          this.unknown++;
          return;
        }
        // 503 (transport down, draining): not published; a publisher retries later.
        this.refused++;
        return;
      } catch {
        // Refused (replica gone) or timed out: the next replica, as a client library would.
      }
    }
    this.refused++;
  }
}

/**
 * Replicas on a Redis of their own, one browser-like stream per user that follows them across
 * failures, and a steady publisher through the webhooks: a fault is injected into this, and the
 * row says what the users saw.
 */
export class FaultBench {
  readonly hubs: HubProcess[] = [];
  readonly clients: ResumingClient[] = [];
  private publishing = false;
  private publisher: Promise<void> | undefined;
  private sequence = 0;
  private peakRss = 0;
  private sampler: NodeJS.Timeout | undefined;
  private readySince: number | undefined;
  private notReadyAt: number | undefined;

  private constructor(
    private readonly store: BenchStore,
    private readonly env: Record<string, string>,
    readonly users: string[],
    private readonly webhooks: WebhookPublisher,
  ) {}

  static async start(options: {
    replicas: number;
    users: number;
    persistence?: 'none' | 'aof';
    topology?: Topology;
    /** Settings of the replicas beyond the store's (limits a scenario tests). */
    env?: Record<string, string>;
    /** The replicas reach their (single) Redis through a TCP proxy the scenario controls. */
    proxied?: boolean;
  }): Promise<FaultBench> {
    const store = await startStore(options.topology ?? 'single', options.persistence ?? 'none', {
      proxied: options.proxied,
    });
    const env = { ...store.env, SSEHUB_DRAIN_MS: '1000', ...options.env };
    const users = Array.from({ length: options.users }, (_, i) => `fault-user-${i}`);
    const bench = new FaultBench(store, env, users, await WebhookPublisher.create());
    for (let i = 0; i < options.replicas; i++) bench.hubs.push(await startReadyHub(env));
    for (const user of users) {
      const client = new ResumingClient({
        path: '/api/v1/stream/agui',
        token: await mintToken(user),
        replicas: () => bench.liveHubUrls(),
        name: user,
      });
      bench.clients.push(client);
    }
    await Promise.all(bench.clients.map((client) => client.opened()));
    bench.sampler = setInterval(() => bench.sample(), READY_POLL_MS);
    return bench;
  }

  /** The single Redis of a bench on one (the default topology). */
  get redis(): OwnRedis {
    if (!(this.store.server instanceof OwnRedis)) throw new Error('this bench runs on a Redis Cluster or Sentinel');
    return this.store.server;
  }

  get cluster(): OwnRedisCluster {
    if (!(this.store.server instanceof OwnRedisCluster)) throw new Error('this bench does not run on a Redis Cluster');
    return this.store.server;
  }

  get sentinel(): OwnRedisSentinel {
    if (!(this.store.server instanceof OwnRedisSentinel)) throw new Error('this bench does not run on Sentinel');
    return this.store.server;
  }

  /** The steady publisher, whose acknowledged ids the bench's streams are checked against. */
  get webhookPublisher(): WebhookPublisher {
    return this.webhooks;
  }

  /** A `service` token like the steady publisher's, for scenarios that publish beside it. */
  serviceToken(): Promise<string> {
    return mintToken('fault-publisher', { roles: ['service'] });
  }

  get postgres(): OwnPostgres {
    if (!(this.store.server instanceof OwnPostgres)) throw new Error('this bench does not run on Postgres');
    return this.store.server;
  }

  /** The proxy between the replicas and their Redis, on a bench started with `proxied`. */
  get proxy(): TcpProxy {
    if (this.store.proxy === undefined) throw new Error('this bench runs without a proxy');
    return this.store.proxy;
  }

  /** Events shown on all streams so far, to tell whether a fault holds delivery back. */
  delivered(): number {
    return this.clients.reduce((sum, client) => sum + client.events().length, 0);
  }

  liveHubUrls(): string[] {
    return this.hubs.filter((hub) => hub.child.exitCode === null && hub.child.signalCode === null).map((h) => h.url);
  }

  /** An admin connection to the bench's Redis, for CLIENT KILL, FLUSHALL and the like. */
  async redisCommand(...args: string[]): Promise<unknown> {
    const admin = new Redis(this.redis.url, { maxRetriesPerRequest: 1 });
    try {
      return await admin.call(args[0] as string, ...args.slice(1));
    } finally {
      admin.disconnect();
    }
  }

  async replaceHub(index: number, signal: NodeJS.Signals): Promise<void> {
    await this.hubs[index]?.stop(signal);
    this.hubs[index] = await startReadyHub(this.env);
  }

  startPublishing(perSecond: number): void {
    this.publishing = true;
    const interval = 1000 / perSecond;
    this.publisher = (async () => {
      while (this.publishing) {
        const started = Date.now();
        void this.publishOne();
        await sleep(Math.max(0, interval - (Date.now() - started)));
      }
    })();
  }

  async stopPublishing(): Promise<void> {
    this.publishing = false;
    await this.publisher;
    // Let publishes in flight finish (each times out within seconds).
    await sleep(3500);
  }

  private async publishOne(): Promise<void> {
    const seq = ++this.sequence;
    const user = this.users[seq % this.users.length] as string;
    await this.webhooks.publish(this.liveHubUrls(), user, { type: 'FAULT', seq });
  }

  private sample(): void {
    for (const hub of this.hubs) this.peakRss = Math.max(this.peakRss, rssMb(hub.child.pid));
    void Promise.all(
      this.liveHubUrls().map((url) =>
        fetch(`${url}/readyz`, { signal: AbortSignal.timeout(READY_POLL_MS * 5) }).then(
          (res) => res.status === 200,
          () => false,
        ),
      ),
    ).then((ready) => {
      const all = ready.length > 0 && ready.every(Boolean);
      const now = Date.now();
      if (!all && this.notReadyAt === undefined) this.notReadyAt = now;
      if (all && this.readySince === undefined) this.readySince = now;
      if (!all) this.readySince = undefined;
    });
  }

  /**
   * Injects `fault` under load and measures: publishes for `warmupMs`, then the fault, then
   * publishes until every replica is ready and every stream takes events again, then checks
   * that each stream holds every acknowledged event of its user exactly once.
   */
  async run(
    scenario: string,
    criteria: Criteria,
    fault: () => Promise<void>,
    outcome?: () => Promise<Outcome>,
  ): Promise<FaultRow> {
    this.startPublishing(50);
    await sleep(1000);
    const faultAt = Date.now();
    this.notReadyAt = undefined;
    await fault();
    const faultEnded = Date.now();
    this.readySince = undefined;
    const recoveredAt = await this.recovery(faultEnded + criteria.recoverWithinMs + 10_000);
    await sleep(1000);
    await this.stopPublishing();
    await this.settle();
    const row = this.row(scenario, criteria, {
      detectMs: this.notReadyAt === undefined ? undefined : this.notReadyAt - faultAt,
      recoverMs: recoveredAt === undefined ? undefined : recoveredAt - faultEnded,
    });
    const during = { from: faultAt, to: faultEnded };
    return withOutcome(row, this.webhookOutcome(criteria, during), await (outcome?.() ?? Promise.resolve({})));
  }

  /**
   * The steady publisher's webhook latency and refusals, where the criteria ask about them. The
   * p99 outside the fault and the machine's load are there to tell the replica's share from the
   * machine's: the suite shares its cores with the replicas, Redis and whatever else runs.
   */
  private webhookOutcome(criteria: Criteria, fault: { from: number; to: number }): Outcome {
    const notes: string[] = [];
    const problems: string[] = [];
    if (criteria.webhookP99Ms !== undefined) {
      const all = this.webhooks.latencies;
      const p99 = quantile(
        all.map((sample) => sample.ms),
        0.99,
      );
      const outside = quantile(
        all.filter((sample) => sample.sentAt < fault.from || sample.sentAt > fault.to).map((sample) => sample.ms),
        0.99,
      );
      notes.push(
        `webhook p99 ${p99} ms (${outside} ms outside the fault; load average ${loadavg()[0]?.toFixed(1)} on ${availableParallelism()} cores)`,
      );
      if (p99 > criteria.webhookP99Ms) problems.push(`webhook p99 ${p99} ms over ${criteria.webhookP99Ms}`);
    }
    if (criteria.webhooksAllAccepted) {
      const refused = this.webhooks.refused + this.webhooks.unknown;
      if (refused > 0) problems.push(`${refused} webhook calls not answered 202`);
    }
    return { notes, problems };
  }

  /** When every replica is ready and an event published now reaches every stream. */
  private async recovery(deadline: number): Promise<number | undefined> {
    while (Date.now() < deadline) {
      if (this.readySince !== undefined) {
        const counts = this.clients.map((client) => client.events().length);
        const ready = this.readySince;
        while (Date.now() < deadline) {
          if (this.clients.every((client, i) => client.events().length > (counts[i] ?? 0)))
            return Math.max(ready, Date.now());
          await sleep(50);
        }
      }
      await sleep(50);
    }
    return undefined;
  }

  /** Waits until every stream has every acknowledged event of its user (or a while has passed). */
  private async settle(): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const complete = this.clients.every((client, i) => {
        const expected = this.webhooks.ids(this.users[i] as string);
        const got = new Set(client.events().map((event) => event.id));
        return expected.every((id) => got.has(id));
      });
      if (complete) return;
      await sleep(100);
    }
  }

  private row(
    scenario: string,
    criteria: Criteria,
    times: { detectMs: number | undefined; recoverMs: number | undefined },
  ): FaultRow {
    let acknowledged = 0;
    let delivered = 0;
    let lost = 0;
    let duplicated = 0;
    let resets = 0;
    let lostWithoutReset = 0;
    const untold: string[] = [];
    this.clients.forEach((client, i) => {
      const expected = this.webhooks.ids(this.users[i] as string);
      const received = client.events().map((event) => event.id);
      const got = new Set(received);
      const clientResets = client.resets();
      acknowledged += expected.length;
      delivered += received.length;
      duplicated += received.length - got.size;
      resets += clientResets.length;
      for (const id of expected) {
        if (got.has(id)) continue;
        lost++;
        // A loss the client was told of: a reset reached it after the event was acknowledged.
        const told = clientResets.some((reset) => isAtOrAfter(reset.id, id) || epochOf(reset.id) !== epochOf(id));
        if (!told) {
          lostWithoutReset++;
          // Enough to find the event in the hubs' logs: the user, its id, and what the client had seen around it.
          if (untold.length < 3)
            untold.push(
              `${this.users[i]} ${id} (last seen ${received.filter((r) => !isAtOrAfter(r, id)).pop() ?? 'none'})`,
            );
        }
      }
    });
    const problems: string[] = [];
    if (duplicated > 0) problems.push(`${duplicated} duplicated`);
    if (criteria.resetAllowed ? lostWithoutReset > 0 : lost > 0) {
      problems.push(
        criteria.resetAllowed
          ? `${lostWithoutReset} lost without a reset: ${untold.join(', ')}`
          : `${lost} lost (${lostWithoutReset} without a reset${untold.length > 0 ? `: ${untold.join(', ')}` : ''})`,
      );
    }
    if (
      criteria.detectWithinMs !== undefined &&
      (times.detectMs === undefined || times.detectMs > criteria.detectWithinMs)
    ) {
      problems.push(`not detected within ${criteria.detectWithinMs} ms`);
    }
    if (criteria.staysReady && times.detectMs !== undefined) problems.push('a replica reported not ready');
    if (times.recoverMs === undefined || times.recoverMs > criteria.recoverWithinMs) {
      problems.push(`recovery over ${criteria.recoverWithinMs} ms`);
    }
    if (this.peakRss > criteria.maxRssMb) problems.push(`RSS ${this.peakRss.toFixed(0)} MB over ${criteria.maxRssMb}`);
    return {
      scenario,
      acknowledged,
      unknown: this.webhooks.unknown,
      delivered,
      lost,
      duplicated,
      resets,
      ...times,
      peakRssMb: Math.round(this.peakRss),
      pass: problems.length === 0,
      why: problems.join('; '),
    };
  }

  async close(): Promise<void> {
    clearInterval(this.sampler);
    for (const client of this.clients) client.close();
    await Promise.all(this.hubs.map((hub) => hub.stop()));
    await this.store.destroy();
  }
}

/** `postgres`: the Postgres outbox transport instead of Redis, on a cluster of the bench's own. */
export type Topology = 'single' | 'cluster' | 'sentinel' | 'postgres';

/** The Redis under a bench, started on free ports, and the environment that points replicas at it. */
export interface BenchStore {
  server: OwnRedis | OwnRedisCluster | OwnRedisSentinel | OwnPostgres;
  env: Record<string, string>;
  proxy?: TcpProxy;
  destroy(): Promise<void>;
}

export async function startStore(
  topology: Topology,
  persistence: 'none' | 'aof',
  options: { proxied?: boolean } = {},
): Promise<BenchStore> {
  if (topology === 'postgres') {
    const pg = await OwnPostgres.start();
    return {
      server: pg,
      env: { SSEHUB_TRANSPORT: 'postgres', DATABASE_URL: pg.url },
      destroy: () => pg.destroy(),
    };
  }
  if (options.proxied && topology !== 'single') throw new Error('only a single Redis runs behind the proxy');
  if (topology === 'cluster') {
    const cluster = await OwnRedisCluster.start();
    return { server: cluster, env: { SSEHUB_REDIS_CLUSTER_NODES: cluster.seeds }, destroy: () => cluster.close() };
  }
  if (topology === 'sentinel') {
    const sentinel = await OwnRedisSentinel.start();
    return {
      server: sentinel,
      env: { SSEHUB_REDIS_SENTINELS: sentinel.sentinels, SSEHUB_REDIS_SENTINEL_NAME: sentinel.name },
      destroy: () => sentinel.close(),
    };
  }
  const redis = await OwnRedis.start({ persistence });
  if (options.proxied) {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: redis.port });
    return {
      server: redis,
      env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}` },
      proxy,
      destroy: async () => {
        await proxy.close();
        await redis.destroy();
      },
    };
  }
  return { server: redis, env: { REDIS_URL: redis.url }, destroy: () => redis.destroy() };
}

function epochOf(id: string): string | undefined {
  return parseEventId(id)?.epoch;
}

export function isAtOrAfter(a: string, b: string): boolean {
  const left = parseEventId(a);
  const right = parseEventId(b);
  return left !== undefined && right !== undefined && left.epoch === right.epoch && comparePositions(left, right) >= 0;
}

/** A row with a scenario's own streams counted in and its notes and problems added. */
export function withOutcome(row: FaultRow, ...outcomes: Outcome[]): FaultRow {
  const merged = { ...row };
  const notes = row.notes === undefined || row.notes === '' ? [] : [row.notes];
  const problems = row.why === '' ? [] : [row.why];
  for (const outcome of outcomes) {
    if (outcome.tally) {
      merged.acknowledged += outcome.tally.acknowledged;
      merged.delivered += outcome.tally.delivered;
      merged.lost += outcome.tally.lost;
      merged.duplicated += outcome.tally.duplicated;
      merged.resets += outcome.tally.resets;
      if (outcome.tally.lost > 0) problems.push(`${outcome.tally.lost} lost on the scenario's own streams`);
      if (outcome.tally.duplicated > 0)
        problems.push(`${outcome.tally.duplicated} duplicated on the scenario's own streams`);
    }
    notes.push(...(outcome.notes ?? []));
    problems.push(...(outcome.problems ?? []));
  }
  merged.notes = notes.join('; ');
  merged.why = problems.join('; ');
  merged.pass = problems.length === 0;
  return merged;
}

export function formatRow(row: FaultRow): string {
  const ms = (value: number | undefined) => (value === undefined ? '-' : String(value));
  return `| ${row.scenario} | ${row.acknowledged} | ${row.unknown} | ${row.delivered} | ${row.lost} | ${row.duplicated} | ${row.resets} | ${ms(row.detectMs)} | ${ms(row.recoverMs)} | ${row.peakRssMb} | ${row.pass ? 'PASS' : `FAIL: ${row.why}`} | ${row.notes ?? ''} |`;
}

export const TABLE_HEADER =
  '| scenario | acknowledged | unknown (504) | delivered | lost | duplicated | resets | detect ms | recover ms | peak RSS MB | result | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|';
