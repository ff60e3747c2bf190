import { availableParallelism, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { parseEventId } from '../src/history/event-id';
import { userKeys } from '../src/transport/redis/library';
import { type HubProcess, metricValue } from '../test/helpers/hub-process';
import { sleep } from '../test/helpers/sse-client';
import { mintToken } from '../test/helpers/tokens';
import { Crowd, type HammerResultSummary, PeakSampler, publishBatch, quantile, summarize, tally } from './crowd';
import type { StreamSpec } from './crowd-protocol';
import type { Criteria, FaultBench, Outcome } from './harness';

/**
 * The scenarios about load rather than a broken dependency: a burst past Redis's pub/sub output
 * buffer, a reconnect storm, stalled readers, a maximal history replay, and a user publishing flat
 * out. Each runs on the same bench (two replicas, 20 browser-like streams, 50 events/s through the
 * webhooks) and adds load of its own, mostly from a crowd process.
 */

/** A scenario's own load around its fault: set up before the bench's publisher starts, checked after it settled. */
export interface Staged {
  fault(): Promise<void>;
  outcome(): Promise<Outcome>;
  close(): Promise<void>;
}

export interface LoadScenario {
  name: string;
  inQuick: boolean;
  /** Replica settings: the limits the scenario leans on. */
  env: Record<string, string>;
  criteria: Criteria;
  stage: (bench: FaultBench) => Promise<Staged>;
}

const quick = process.env.FAULTS === 'quick';
const STRICT: Criteria = { resetAllowed: false, recoverWithinMs: 15_000, maxRssMb: 400 };
const STREAM = '/api/v1/stream/agui';
const MiB = 1024 * 1024;

/** A webhook p99 on two shared cores: well above the ~5 ms of an idle replica, well below a blocked event loop. */
const WEBHOOK_P99_MS = 50;

async function metricSum(bench: FaultBench, series: string): Promise<number> {
  const values = await Promise.all(
    bench.hubs.map((hub) => (hub.child.exitCode === null ? metricValue(hub, series).catch(() => 0) : 0)),
  );
  return values.reduce((sum, value) => sum + value, 0);
}

/**
 * The longest event-loop stall of each replica since the previous call, in ms: prom-client's lag
 * histogram restarts at every scrape of /metrics, so this is only meaningful where nothing else
 * scrapes the replicas in between. It tells a replica that kept up from a machine whose cores were
 * busy elsewhere (the load generators run on the same cores).
 */
async function eventLoopStallMs(bench: FaultBench): Promise<number[]> {
  return Promise.all(
    bench.hubs.map(async (hub) => Math.round((await metricValue(hub, 'nodejs_eventloop_lag_max_seconds')) * 1000)),
  );
}

/** The steady publisher's webhook p99 so far, for rows that report it without a bound on it. */
function webhookP99(bench: FaultBench): string {
  const p99 = quantile(
    bench.webhookPublisher.latencies.map((sample) => sample.ms),
    0.99,
  );
  return `webhook p99 ${p99} ms (load average ${loadavg()[0]?.toFixed(1)} on ${availableParallelism()} cores)`;
}

function padded(type: string, n: number, bytes: number): Record<string, unknown> {
  const bare = JSON.stringify({ type, n, pad: '' });
  return { type, n, pad: 'x'.repeat(Math.max(0, bytes - bare.length)) };
}

function nothingStaged(fault: () => Promise<void>, outcome: () => Promise<Outcome>): Staged {
  return { fault, outcome, close: async () => undefined };
}

// --- 1. A burst past the pub/sub output buffer ------------------------------------------------

const BURST_EVENTS = 1000;
const BURST_EVENT_BYTES = 4 * 1024;
const PUBSUB_LIMIT = '256kb';

/**
 * Redis cuts a subscriber whose unread pub/sub output passes `client-output-buffer-limit pubsub`,
 * and every event of the burst that cut it is then only in history. The burst is one MULTI of
 * publishes (a backend using the wire contract may well send its events so): Redis writes to
 * subscribers only between commands, so the whole transaction's messages pile up in the output
 * buffer at once. Pipelined publishes alone would not do it: Redis interleaves them with writes to
 * the subscribers, and the kernel's socket buffers absorb megabytes before Redis buffers anything.
 */
const outputBufferOverflow: LoadScenario = {
  name: `pub/sub output buffer overflow (MULTI of ${BURST_EVENTS} × 4 KiB, limit ${PUBSUB_LIMIT})`,
  inQuick: true,
  env: {},
  criteria: STRICT,
  stage: async (bench) => {
    let cuts = 0;
    return nothingStaged(
      async () => {
        const before = await metricSum(bench, 'ssehub_transport_resubscribes_total');
        await bench.redisCommand('CONFIG', 'SET', 'client-output-buffer-limit', `pubsub ${PUBSUB_LIMIT} 0 0`);
        const redis = new Redis(bench.redis.url);
        try {
          const transaction = redis.multi();
          const users: string[] = [];
          for (let n = 0; n < BURST_EVENTS; n++) {
            const user = bench.users[n % bench.users.length] as string;
            const { meta, history } = userKeys('ssehub', user);
            const event = JSON.stringify(padded('BURST', n, BURST_EVENT_BYTES));
            transaction.call('FCALL', 'ssehub_publish', '2', meta, history, 'agui', event);
            users.push(user);
          }
          const sentAt = Date.now();
          const results = (await transaction.exec()) ?? [];
          results.forEach(([err, id], n) => {
            if (err === null) bench.webhookPublisher.acknowledge(users[n] as string, String(id), sentAt);
          });
        } finally {
          redis.disconnect();
        }
        // The fault is over once the replicas noticed: the cut shows as a resubscribe.
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline) {
          cuts = (await metricSum(bench, 'ssehub_transport_resubscribes_total')) - before;
          if (cuts > 0) break;
          await sleep(50);
        }
      },
      async () => ({
        notes: [`subscriber cut and resubscribed ${cuts}×`],
        problems: cuts > 0 ? [] : ['the burst did not overflow any subscriber (no resubscribe)'],
      }),
    );
  },
};

// --- 2. A reconnect storm ---------------------------------------------------------------------

const STORM_USERS = quick ? 200 : 1000;
const STORM_STREAMS_PER_USER = 5;
const STORM_WITHIN_MS = 20_000;

/**
 * 5,000 streams on one replica, each holding an id; the replica is killed and every stream comes
 * back at once on the other with Last-Event-ID, while an event is published to each user in the gap.
 */
const reconnectStorm: LoadScenario = {
  name: `reconnect storm: ${STORM_USERS * STORM_STREAMS_PER_USER} streams, replica SIGKILL`,
  inQuick: true,
  env: {},
  criteria: STRICT,
  stage: async (bench) => {
    const crowd = Crowd.start();
    const acknowledged = new Map<string, string[]>();
    const service = await bench.serviceToken();
    const users = Array.from({ length: STORM_USERS }, (_, i) => `storm-user-${i}`);
    const [first, second] = bench.hubs.map((hub) => hub.url) as [string, string];
    const specs: StreamSpec[] = [];
    for (const user of users) {
      const token = await mintToken(user);
      for (let i = 0; i < STORM_STREAMS_PER_USER; i++) {
        specs.push({ user, token, path: STREAM, replicas: [first, second], stall: false, reconnect: true });
      }
    }
    const publishToAll = async (round: number): Promise<void> => {
      const items = users.map((user) => ({ user, event: { type: 'STORM', round } }));
      const ids = await publishBatch(second, service, items);
      ids.forEach((id, i) => {
        const user = users[i] as string;
        if (id !== undefined) acknowledged.set(user, [...(acknowledged.get(user) ?? []), id]);
      });
    };
    await crowd.open(specs, 200);
    // Each stream holds an id before the kill, so every reconnect is a resume.
    await publishToAll(1);
    await crowd.waitForEvents(() => 1, 30_000, 'the first event');
    let killedAt = 0;
    let caughtUpMs = 0;
    let replayed = 0;
    const survivor = bench.hubs[1] as HubProcess;
    return {
      fault: async () => {
        const replayedBefore = await metricValue(survivor, 'ssehub_history_replayed_total');
        killedAt = Date.now();
        await bench.hubs[0]?.stop('SIGKILL');
        await publishToAll(2);
        await crowd.waitForEvents(() => 2, STORM_WITHIN_MS, 'the event published during the storm');
        caughtUpMs = Date.now() - killedAt;
        replayed = (await metricValue(survivor, 'ssehub_history_replayed_total')) - replayedBefore;
        await bench.replaceHub(0, 'SIGKILL');
      },
      outcome: async () => {
        const streams = await crowd.report();
        const unmoved = streams.filter((stream) => stream.connections < 2).length;
        const backMs = Math.max(...streams.map((stream) => stream.lastConnectedAt)) - killedAt;
        const problems: string[] = [];
        if (unmoved > 0) problems.push(`${unmoved} storm streams never reconnected`);
        return {
          tally: tally(streams, (user) => acknowledged.get(user) ?? []),
          notes: [
            `${streams.length} streams reconnected within ${backMs} ms, all caught up ${caughtUpMs} ms after the kill (${replayed} events replayed from history)`,
          ],
          problems,
        };
      },
      close: () => crowd.close(),
    };
  },
};

// --- 3. Stalled readers and large events ------------------------------------------------------

const STALLED_USERS = 20;
const STALLED_PER_USER_PER_REPLICA = 50;
const STALLED = STALLED_USERS * STALLED_PER_USER_PER_REPLICA * 2;
const LARGE_EVENT_BYTES = 64_000;
const STALL_BUFFER_BYTES = 128 * 1024;
const STALL_MAX_EVENT_BYTES = 64 * 1024;
/** A replica's own footprint under the bench's load, with room (it idles near 80 MB). */
const REPLICA_BASE_MB = 150;
/** Worst case if no frame were shared between streams: every stalled stream's buffer full, plus the frame that overflowed it. */
const STALLED_RSS_BOUND_MB = Math.round(
  REPLICA_BASE_MB + ((STALLED / 2) * (STALL_BUFFER_BYTES + STALL_MAX_EVENT_BYTES)) / MiB,
);

/** Users whose stalled streams get large events at one time: 100 streams. */
const STALLED_WAVE_USERS = 1;

/**
 * Readers that never read: their sockets fill, the replicas queue up to SSEHUB_BUFFER_MAX_BYTES per
 * stream and then cut them (`slow_consumer`), while the bench's healthy streams go on.
 *
 * All the stalled streams are open at once, but the large events go to 100 of them at a time:
 * before a replica queues a byte, the kernel takes up to about 3.5 MB into a stalled loopback
 * connection's socket buffers (the send buffer grows towards net.ipv4.tcp_wmem's maximum), and
 * 2,000 of them at once pass the kernel's TCP memory pressure threshold on a small machine, which
 * then slows every TCP connection on it, the bench's and other programs' alike (its Redis
 * self-check probes too). 100 stay well under it; the streams of a wave are closed once cut, as
 * their clients would be.
 */
const stalledReaders: LoadScenario = {
  name: `${STALLED} stalled streams, 64 KB events`,
  inQuick: false,
  env: {
    SSEHUB_BUFFER_MAX_BYTES: String(STALL_BUFFER_BYTES),
    SSEHUB_MAX_EVENT_BYTES: String(STALL_MAX_EVENT_BYTES),
    SSEHUB_MAX_CONNECTIONS_PER_USER: String(STALLED_PER_USER_PER_REPLICA),
    // The byte bound is what is tested; the stall timer only makes sure no stream outlives the scenario.
    SSEHUB_WRITE_STALL_MS: '10000',
  },
  criteria: { ...STRICT, maxRssMb: STALLED_RSS_BOUND_MB, webhooksAllAccepted: true },
  stage: async (bench) => {
    const crowd = Crowd.start();
    const users = Array.from({ length: STALLED_USERS }, (_, i) => `stalled-user-${i}`);
    const specs: StreamSpec[] = [];
    for (const user of users) {
      const token = await mintToken(user);
      for (const hub of bench.hubs) {
        for (let i = 0; i < STALLED_PER_USER_PER_REPLICA; i++) {
          specs.push({ user, token, path: STREAM, replicas: [hub.url], stall: true, reconnect: false });
        }
      }
    }
    await crowd.open(specs, 200);
    const cutBefore = await metricSum(bench, 'ssehub_disconnects_total{reason="slow_consumer"}');
    let cut = 0;
    let published = 0;
    let kernel: PeakSampler | undefined;
    const service = await bench.serviceToken();
    return {
      fault: async () => {
        kernel = await PeakSampler.kernelTcpMemory();
        for (let wave = 0; wave * STALLED_WAVE_USERS < STALLED_USERS; wave++) {
          const waveUsers = users.slice(wave * STALLED_WAVE_USERS, (wave + 1) * STALLED_WAVE_USERS);
          const target = (STALLED * (wave + 1) * STALLED_WAVE_USERS) / STALLED_USERS;
          // Rounds of large events until every stalled stream of the wave was cut (or plainly never will be).
          for (let round = 0; round < 15 && cut < target; round++) {
            const result = await crowd.hammer({
              replica: bench.hubs[round % 2]?.url as string,
              token: service,
              kind: 'agui',
              users: waveUsers,
              eventBytes: LARGE_EVENT_BYTES,
              concurrency: 4,
              count: waveUsers.length * 16,
            });
            published += result.statuses['202'] ?? 0;
            cut = (await metricSum(bench, 'ssehub_disconnects_total{reason="slow_consumer"}')) - cutBefore;
          }
          await crowd.drop(waveUsers);
        }
        kernel.stop();
      },
      outcome: async () => ({
        notes: [
          `${published} events of 64 KB to the stalled users; ${cut} streams cut as slow_consumer; RSS bound ${STALLED_RSS_BOUND_MB} MB`,
          webhookP99(bench),
          `kernel TCP buffers peaked at ${Math.round((kernel?.peak ?? 0) / MiB)} MB machine-wide`,
        ],
        problems: cut >= STALLED ? [] : [`only ${cut} of ${STALLED} stalled streams cut`],
      }),
      close: () => crowd.close(),
    };
  },
};

// --- 4. A maximal history resumed from four streams -------------------------------------------

/** SSEHUB_HISTORY_MAX_BYTES's default: the scenario runs the replicas as shipped. */
const HISTORY_BUDGET = 16 * MiB;
const HEAVY_EVENT_BYTES = 64_000;
const HEAVY_EVENTS = Math.floor(HISTORY_BUDGET / HEAVY_EVENT_BYTES);
/** The heavy user's history, once more for Redis's stream overhead and the replay pages in its output buffers, and slack. */
const REDIS_GROWTH_BOUND = 2 * HISTORY_BUDGET + 8 * MiB;

/**
 * A plain user fills its history to the byte budget with large events, then resumes all of it
 * from the start on four streams at once while the bench's publisher goes on: replays are read in
 * pages and paced by the sockets, so neither Redis nor the replica's event loop is held.
 */
const maximalHistory: LoadScenario = {
  name: `maximal history (${HEAVY_EVENTS} × 64 KB) resumed on 4 streams`,
  inQuick: false,
  env: {},
  criteria: { ...STRICT, webhookP99Ms: WEBHOOK_P99_MS, webhooksAllAccepted: true },
  stage: async (bench) => {
    const crowd = Crowd.start();
    const heavy = 'heavy-user';
    const token = await mintToken(heavy);
    const memory = await PeakSampler.redisMemory(bench.redis.url);
    const baseline = memory.peak;
    const hub = bench.hubs[0]?.url as string;
    const filled = await crowd.hammer({
      replica: hub,
      token,
      kind: 'agui',
      users: [heavy],
      eventBytes: HEAVY_EVENT_BYTES,
      concurrency: 1,
      count: HEAVY_EVENTS,
    });
    const ids = filled.ids[heavy] ?? [];
    if (ids.length !== HEAVY_EVENTS) throw new Error(`filling the history: ${JSON.stringify(filled.statuses)}`);
    const epoch = parseEventId(ids[0] as string)?.epoch;
    let replayMs = 0;
    let stallMs: number[] = [];
    return {
      fault: async () => {
        const started = Date.now();
        await eventLoopStallMs(bench);
        const streams = [1, 2, 3, 4].map(
          (): StreamSpec => ({
            user: heavy,
            token,
            path: STREAM,
            replicas: [hub],
            lastEventId: `${epoch}:0-0`,
            stall: false,
            reconnect: false,
          }),
        );
        await crowd.open(streams, 4);
        await crowd.waitForEvents(() => HEAVY_EVENTS, 60_000, 'the whole history');
        replayMs = Date.now() - started;
        stallMs = await eventLoopStallMs(bench);
      },
      outcome: async () => {
        memory.stop();
        const growth = memory.peak - baseline;
        const problems: string[] = [];
        if (growth > REDIS_GROWTH_BOUND) {
          problems.push(`Redis used_memory grew ${(growth / MiB).toFixed(1)} MB, over ${REDIS_GROWTH_BOUND / MiB}`);
        }
        return {
          tally: tally(await crowd.report(), () => ids),
          notes: [
            `4 × ${HEAVY_EVENTS} events replayed in ${replayMs} ms; the replicas' event loops stalled at most ${stallMs.join(' / ')} ms meanwhile`,
            `Redis used_memory peak ${(memory.peak / MiB).toFixed(1)} MB, +${(growth / MiB).toFixed(1)} MB over the empty store (bound +${REDIS_GROWTH_BOUND / MiB})`,
          ],
          problems,
        };
      },
      close: async () => {
        memory.stop();
        await crowd.close();
      },
    };
  },
};

// --- 5. One user publishing flat out ----------------------------------------------------------

const QUOTA_EVENTS = 2000;
const QUOTA_BYTES = 1 * MiB;
const GREEDY_EVENT_BYTES = 2000;
const GREEDY_MS = 6000;

/**
 * A plain user's token publishes to its own webhook as fast as 16 requests in flight per replica
 * allow, on both replicas: one quota counter in Redis must hold across them.
 */
const greedyPublisher: LoadScenario = {
  name: `one user publishing flat out for ${GREEDY_MS / 1000} s (quota ${QUOTA_BYTES / MiB} MiB/min)`,
  // Not in CI's quick set: its webhook p99 bound measures the runner's cores as much as the replica.
  inQuick: false,
  env: { SSEHUB_PUBLISH_QUOTA_EVENTS: String(QUOTA_EVENTS), SSEHUB_PUBLISH_QUOTA_BYTES: String(QUOTA_BYTES) },
  criteria: { ...STRICT, webhookP99Ms: WEBHOOK_P99_MS, webhooksAllAccepted: true },
  stage: async (bench) => {
    const crowd = Crowd.start();
    const greedy = 'greedy-user';
    const token = await mintToken(greedy);
    let result: HammerResultSummary | undefined;
    let stallMs: number[] = [];
    return {
      fault: async () => {
        await eventLoopStallMs(bench);
        const hammered = await Promise.all(
          bench.hubs.map((hub) =>
            crowd.hammer({
              replica: hub.url,
              token,
              kind: 'agui',
              users: [greedy],
              eventBytes: GREEDY_EVENT_BYTES,
              concurrency: 16,
              durationMs: GREEDY_MS,
            }),
          ),
        );
        result = summarize(hammered);
        stallMs = await eventLoopStallMs(bench);
      },
      outcome: async () => {
        if (result === undefined) return { problems: ['the greedy publisher did not run'] };
        const accepted = result.statuses['202'] ?? 0;
        const refused = result.statuses['429'] ?? 0;
        const other = result.calls - accepted - refused;
        const problems: string[] = [];
        if (result.acceptedBytes > QUOTA_BYTES) problems.push(`${result.acceptedBytes} bytes accepted, over the quota`);
        if (accepted > QUOTA_EVENTS) problems.push(`${accepted} events accepted, over the quota`);
        if (refused === 0) problems.push('the quota never refused');
        if (other > 0) problems.push(`${other} greedy calls answered neither 202 nor 429`);
        return {
          notes: [
            `greedy user: ${result.calls} calls (${Math.round(result.calls / (GREEDY_MS / 1000))}/s), ${accepted} accepted (${result.acceptedBytes} B of ${QUOTA_BYTES}), ${refused} × 429`,
            `the replicas' event loops stalled at most ${stallMs.join(' / ')} ms meanwhile`,
          ],
          problems,
        };
      },
      close: () => crowd.close(),
    };
  },
};

export const LOAD_SCENARIOS: LoadScenario[] = [
  outputBufferOverflow,
  reconnectStorm,
  stalledReaders,
  maximalHistory,
  greedyPublisher,
];
