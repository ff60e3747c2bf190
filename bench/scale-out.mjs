#!/usr/bin/env node
// @ts-check
/**
 * Does a replica's CPU fall as replicas are added? A fixed stream of events to a fixed set of
 * users, each with one open SSE stream on exactly one of N replicas (N = 1, 2, 4), published two
 * ways, and each replica's CPU per event published cluster-wide:
 *
 *   user path   FCALL ssehub_publish 2 <meta> <history> agui <event> (library v6): the event goes to
 *               the user's shard channel, which only the replica holding the user subscribes.
 *   kind path   PUBLISH ssehub:agui {"user_id":..,"event":..} (SSEHUB_REDIS_KIND_CHANNELS=true,
 *               the default): every replica receives every event and drops the ones of users it
 *               does not hold after reading only the user id.
 *
 *   node bench/scale-out.mjs [--quick] [--replicas 1,2,4] [--users n] [--rate n] [--seconds n] [--profile dir]
 *
 * Full: 10,000 users (10,000 streams), 2,000 events/s for 10 s per path and N. --quick: 1,000
 * users, 2,000 events/s for 2 s. Users are spread evenly: user i streams from replica i mod N.
 *
 * For each N: one Redis and N replicas (`node dist/main.js`, both paths enabled, so both windows
 * measure the same processes), the streams opened with the benchmark's subscriber workers
 * (bench/load/subscriber.mjs) and warmed up (one event per user through the user path, until every
 * stream has it: the per-user subscriptions are then live). Then, per path, one publisher process
 * (bench/load/publisher.mjs) sends events at the fixed rate, uniformly over all users (round
 * robin), pipelined. Each replica's CPU (utime + stime, /proc/<pid>/stat) over the window, from
 * the first publish until every event was delivered (or nothing arrived for 3 s), divided by the
 * events published cluster-wide is its µs per published event; the ratio is against the single
 * replica of N = 1 on the same path. An idle window before the first path (same length, nothing
 * published, at most 3 s) gives each replica's CPU per second without events (heartbeats,
 * self-check probes, timers), which does not fall with N. Each replica's /metrics deltas over the window show what it took
 * off Redis: ssehub_redis_messages_total{channel="user"} and {channel="kind"}, and
 * ssehub_events_skipped_total (events of users it does not hold, dropped unparsed); the
 * subscribers count deliveries and losses against the per-user sequence numbers.
 *
 * Everything shares this machine (replicas, Redis, subscriber workers, publisher), so the
 * replicas' CPU is what to compare, not throughput. /proc CPU is counted in clock ticks (10 ms),
 * which limits the precision of small windows (--quick). --profile dir writes a V8 CPU profile
 * of every replica (node --cpu-prof) into dir when it exits.
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { resolve } from 'node:path';
import { Peer, untilDelivered } from './load/coordinator.mjs';
import { freePort, machineCpu, procSample, sleep } from './lib/procs.mjs';
import { BENCH_SECRET, SSEHUB_MAIN, startNodeServer, startRedis } from './lib/targets.mjs';

const PREFIX = 'ssehub';
const KIND = 'agui';
/** Streams per subscriber worker process. */
const CONNS_PER_WORKER = 5000;
const IDLE_TIMEOUT_MS = 3000;

/** @param {string[]} argv */
function parseArgs(argv) {
  /** @type {{quick: boolean, replicas: number[], users: number, rate: number, seconds: number, profileDir?: string}} */
  const opts = { quick: false, replicas: [1, 2, 4], users: 0, rate: 2000, seconds: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const num = () => {
      const v = Number(value());
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--replicas') opts.replicas = value().split(',').map(Number);
    else if (a === '--users') opts.users = num();
    else if (a === '--rate') opts.rate = num();
    else if (a === '--seconds') opts.seconds = num();
    else if (a === '--profile') opts.profileDir = resolve(value());
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node bench/scale-out.mjs [--quick] [--replicas 1,2,4] [--users n] [--rate n] [--seconds n] [--profile dir]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (opts.users === 0) opts.users = opts.quick ? 1000 : 10_000;
  if (opts.seconds === 0) opts.seconds = opts.quick ? 2 : 10;
  if (opts.replicas.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('--replicas needs whole numbers');
  return opts;
}

/** The counters that show what a replica took off Redis and delivered. */
const METRICS = {
  user: 'ssehub_redis_messages_total{channel="user"}',
  kind: 'ssehub_redis_messages_total{channel="kind"}',
  skipped: 'ssehub_events_skipped_total',
  frames: 'ssehub_frames_delivered_total',
};

/** @param {number} port @returns {Promise<Record<keyof typeof METRICS, number>>} */
async function scrape(port) {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
    (r) => r.text(),
    () => '',
  );
  const out = { user: 0, kind: 0, skipped: 0, frames: 0 };
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    const key = line.slice(0, space);
    const value = Number(line.slice(space + 1));
    for (const [name, series] of /** @type {[keyof typeof METRICS, string][]} */ (Object.entries(METRICS))) {
      // frames_delivered has a stream label: summed over it.
      if (key === series || (name === 'frames' && key.startsWith(`${series}{`))) out[name] += value;
    }
  }
  return out;
}

/**
 * One N: Redis, N replicas, the streams; then the idle window and both paths.
 * @param {number} replicas
 * @param {ReturnType<typeof parseArgs>} opts
 * @param {string[]} users
 */
async function runReplicas(replicas, opts, users) {
  const redis = await startRedis();
  /** @type {Awaited<ReturnType<typeof startNodeServer>>[]} */
  const hubs = [];
  /** @type {Peer[]} */
  let workers = [];
  let publisher;
  try {
    for (let i = 0; i < replicas; i++) {
      const port = await freePort();
      hubs.push(
        await startNodeServer(
          `replica ${i + 1}`,
          SSEHUB_MAIN,
          {
            PORT: String(port),
            HOST: '127.0.0.1',
            NODE_ENV: 'production',
            LOG_LEVEL: 'warn',
            SSEHUB_TRANSPORT: 'redis',
            REDIS_URL: redis.url,
            SSEHUB_CHANNEL_PREFIX: PREFIX,
            SSEHUB_REDIS_KIND_CHANNELS: 'true',
            SSEHUB_JWT_SECRET: BENCH_SECRET,
            SSEHUB_DRAIN_MS: '0',
          },
          port,
          '/readyz',
          opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : [],
        ),
      );
    }
    const workerCount = Math.max(1, Math.ceil(users.length / CONNS_PER_WORKER));
    workers = Array.from({ length: workerCount }, (_, i) => new Peer('subscriber.mjs', `subscriber ${i + 1}`));
    publisher = new Peer('publisher.mjs', 'publisher');
    /** @type {any[][]} */
    const perWorker = workers.map(() => []);
    users.forEach((user, u) => {
      perWorker[u % workerCount].push({
        host: '127.0.0.1',
        port: hubs[u % replicas].port,
        path: `/api/v1/stream/${KIND}`,
        user,
        userIndex: u,
        auth: true,
      });
    });
    const openStarted = Date.now();
    const opened = await Promise.all(
      workers.map((w, i) =>
        w.request(
          { cmd: 'open', conns: perWorker[i], secret: BENCH_SECRET, concurrency: Math.floor(128 / workerCount) },
          'opened',
          120_000,
        ),
      ),
    );
    const openCount = opened.reduce((n, o) => n + o.opened, 0);
    if (openCount < users.length) {
      console.log(
        `  only ${openCount} of ${users.length} streams opened: ${JSON.stringify(opened.map((o) => o.statuses))}`,
      );
    }
    const openMs = Date.now() - openStarted;

    // Warm-up through the user path: a stream that got its seq-0 event has a live subscription.
    const userJob = { via: 'ssehub-keys', redisUrl: redis.url, kind: KIND, prefix: PREFIX };
    let warm = 0;
    for (let round = 0; round < 6 && warm < openCount; round++) {
      const pending = await Promise.all(workers.map((w) => w.request({ cmd: 'unwarmed' }, 'unwarmed')));
      const unwarmed = [...new Set(pending.flatMap((p) => p.users))];
      if (unwarmed.length === 0) break;
      await publisher.request(
        { cmd: 'publish', job: { ...userJob, users: unwarmed.map((u) => users[u]), events: 0, warmup: true } },
        'published',
      );
      const deadline = Date.now() + 1000 + round * 1000;
      while (Date.now() < deadline) {
        await sleep(50);
        warm = workers.reduce((n, w) => n + w.progress.warm, 0);
        if (warm >= openCount) break;
      }
    }
    warm = workers.reduce((n, w) => n + w.progress.warm, 0);
    if (warm < openCount) console.log(`  warning: only ${warm} of ${openCount} streams got the warm-up event`);
    await sleep(500);

    const pids = hubs.map((h) => h.pid);
    // Idle: what each replica spends with its streams open and nothing published.
    const idle0 = pids.map((pid) => procSample(pid).cpuUs);
    const idleStarted = Date.now();
    await sleep(Math.min(opts.seconds, 3) * 1000);
    const idleS = (Date.now() - idleStarted) / 1000;
    // CPU ms per second without events.
    const idleMsPerS = pids.map((pid, i) => (procSample(pid).cpuUs - idle0[i]) / 1000 / idleS);

    const windows = [];
    for (const path of /** @type {const} */ (['user', 'kind'])) {
      const job =
        path === 'user'
          ? userJob
          : { via: 'redis', redisUrl: redis.url, channel: `${PREFIX}:${KIND}` /* {"user_id":..,"event":..} */ };
      const expectedPerConn = Math.ceil((opts.rate * opts.seconds) / users.length);
      await Promise.all(workers.map((w) => w.request({ cmd: 'reset', expectedPerConn }, 'reset')));
      const metrics0 = await Promise.all(hubs.map((h) => scrape(h.port)));
      const cpu0 = pids.map((pid) => procSample(pid).cpuUs);
      const redisCpu0 = procSample(redis.pid).cpuUs;
      const machine0 = machineCpu();
      const started = Date.now();
      const pub = await publisher.request(
        { cmd: 'publish', job: { ...job, users, events: 0, rate: opts.rate, durationS: opts.seconds } },
        'published',
        120_000,
      );
      const expected = /** @type {number[]} */ (pub.perUser);
      const expectedTotal = expected.reduce((a, b) => a + b, 0);
      await untilDelivered(workers, expectedTotal, IDLE_TIMEOUT_MS, 20);
      const cpu1 = pids.map((pid) => procSample(pid).cpuUs);
      const redisCpu1 = procSample(redis.pid).cpuUs;
      const machine1 = machineCpu();
      const windowS = (Date.now() - started) / 1000;
      await sleep(200);
      const metrics1 = await Promise.all(hubs.map((h) => scrape(h.port)));
      const reports = await Promise.all(workers.map((w) => w.request({ cmd: 'report', expected }, 'report')));
      const sum = (/** @type {string} */ key) => reports.reduce((n, r) => n + r[key], 0);
      windows.push({
        path,
        published: pub.ok,
        publishFailed: pub.failed,
        publishErrors: pub.errors,
        publishSeconds: (pub.endUs - pub.startUs) / 1e6,
        windowS,
        delivered: sum('delivered'),
        lost: sum('lost'),
        dups: sum('dups'),
        reconnects: sum('reconnects'),
        redisCpuUs: redisCpu1 - redisCpu0,
        machineBusyPct:
          machine1.total > machine0.total
            ? (100 * (machine1.busy - machine0.busy)) / (machine1.total - machine0.total)
            : Number.NaN,
        perReplica: hubs.map((_, i) => ({
          cpuUs: cpu1[i] - cpu0[i],
          idleMsPerS: idleMsPerS[i],
          user: metrics1[i].user - metrics0[i].user,
          kind: metrics1[i].kind - metrics0[i].kind,
          skipped: metrics1[i].skipped - metrics0[i].skipped,
          frames: metrics1[i].frames - metrics0[i].frames,
        })),
      });
    }
    const alive = hubs.every((h) => h.child.exitCode === null && h.child.signalCode === null);
    return {
      replicas,
      opened: openCount,
      warm,
      openMs,
      alive,
      windows,
      logs: alive ? '' : hubs.map((h) => h.output().slice(-2000)).join('\n'),
    };
  } finally {
    await Promise.all([...workers.map((w) => w.close()), publisher?.close()]);
    for (const hub of hubs) await hub.stop('SIGTERM');
    await redis.stop();
  }
}

/** @param {number} n @param {number} [digits] */
const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');
/** @param {number} n */
const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(SSEHUB_MAIN)) throw new Error('dist/main.js missing: run npm run build');
  const started = Date.now();
  console.log(
    `scale-out: ${opts.users.toLocaleString('en-US')} users x 1 stream, ${opts.rate} events/s for ${opts.seconds} s per path, ` +
      `replicas ${opts.replicas.join(', ')}; ${cpus().length} CPUs shared by everything`,
  );
  const users = Array.from({ length: opts.users }, (_, i) => `so-u${i}`);
  const results = [];
  for (const n of opts.replicas) {
    const r = await runReplicas(n, opts, users);
    results.push(r);
    console.log(
      `  N=${n}: ${r.opened} streams open (${r.openMs} ms), ${r.warm} warm${r.alive ? '' : ', A REPLICA EXITED'}`,
    );
    if (!r.alive) console.log(r.logs);
  }

  for (const path of /** @type {const} */ (['user', 'kind'])) {
    console.log('');
    console.log(
      path === 'user'
        ? "### User path: FCALL ssehub_publish 2 <meta> <history> (v6), each replica subscribes its own users' shard channels"
        : `### Kind path: PUBLISH ${PREFIX}:${KIND} {"user_id":..,"event":..}, every replica receives every event`,
    );
    console.log('');
    console.log(
      '| N | replica | published | delivered (all) | lost | CPU ms | µs / published event | x N=1 | idle CPU ms/s | marginal µs / event | x N=1 | msgs user | msgs kind | skipped | frames |',
    );
    console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const base = results.find((r) => r.replicas === 1)?.windows.find((w) => w.path === path);
    const baseUs = base ? base.perReplica[0].cpuUs / base.published : Number.NaN;
    /**
     * What events add: the replica's CPU over the window less what it spent idle for as long
     * (heartbeats, timers, the self-check), per event published. Fixed costs do not fall with N.
     * @param {{ cpuUs: number, idleMsPerS: number }} p
     * @param {{ windowS: number, published: number }} w
     */
    const marginal = (p, w) => (p.cpuUs - p.idleMsPerS * 1000 * w.windowS) / w.published;
    const baseMarginal = base ? marginal(base.perReplica[0], base) : Number.NaN;
    for (const r of results) {
      const w = r.windows.find((x) => x.path === path);
      if (!w) continue;
      w.perReplica.forEach((p, i) => {
        const us = p.cpuUs / w.published;
        console.log(
          `| ${r.replicas} | ${i + 1} | ${i === 0 ? int(w.published) : ''} | ${i === 0 ? int(w.delivered) : ''} | ${
            i === 0 ? int(w.lost) : ''
          } | ${fmt(p.cpuUs / 1000, 0)} | ${fmt(us, 2)} | ${fmt(us / baseUs, 2)} | ${fmt(p.idleMsPerS, 1)} | ${fmt(
            marginal(p, w),
            2,
          )} | ${fmt(marginal(p, w) / baseMarginal, 2)} | ${int(
            p.user,
          )} | ${int(p.kind)} | ${int(p.skipped)} | ${int(p.frames)} |`,
        );
      });
    }
    console.log('');
    for (const r of results) {
      const w = r.windows.find((x) => x.path === path);
      if (!w) continue;
      const worst = Math.max(...w.perReplica.map((p) => p.cpuUs / w.published));
      const worstMarginal = Math.max(...w.perReplica.map((p) => marginal(p, w)));
      const total = w.perReplica.reduce((n, p) => n + p.cpuUs, 0) / w.published;
      const failed =
        w.publishFailed > 0 ? `, ${w.publishFailed} publishes FAILED ${JSON.stringify(w.publishErrors)}` : '';
      console.log(
        `  N=${r.replicas}: busiest replica ${fmt(worst, 2)} µs/event (${fmt(worst / baseUs, 2)}x N=1, ideal ${fmt(
          1 / r.replicas,
          2,
        )}x; marginal ${fmt(worstMarginal, 2)} µs/event, ${fmt(worstMarginal / baseMarginal, 2)}x), all replicas ${fmt(total, 2)} µs/event; delivered ${int(w.delivered)} of ${int(w.published)} published, lost ${int(
          w.lost,
        )}, dup ${int(w.dups)}, reconnects ${int(w.reconnects)}; redis ${fmt(w.redisCpuUs / w.published, 2)} µs/event; ` +
          `published in ${fmt(w.publishSeconds, 1)} s (${int(w.published / w.publishSeconds)}/s), window ${fmt(w.windowS, 1)} s, machine busy ${fmt(
            w.machineBusyPct,
            0,
          )} %${failed}`,
      );
    }
  }
  const four = results.find((r) => r.replicas === 4)?.windows.find((w) => w.path === 'user');
  const one = results.find((r) => r.replicas === 1)?.windows.find((w) => w.path === 'user');
  if (four && one) {
    const baseUs = one.perReplica[0].cpuUs / one.published;
    const worst = Math.max(...four.perReplica.map((p) => p.cpuUs / four.published));
    console.log('');
    console.log(
      `Goal (user path): each of 4 replicas <= 0.3x the single replica: busiest ${fmt(worst / baseUs, 2)}x: ${
        worst / baseUs <= 0.3 ? 'met' : 'NOT met'
      }`,
    );
  }
  console.log('');
  console.log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exit(1);
});
