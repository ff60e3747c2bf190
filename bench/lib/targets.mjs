// @ts-check
/**
 * The systems under test. Each start() brings up its own redis-server on a free port (so the
 * shared Redis on 6379 is never touched) and the server(s), and returns what the coordinator needs:
 * endpoints for subscribers, how to publish, and the server pids for /proc readings.
 */
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, sleep, spawnChild, stopChild, waitForPort } from './procs.mjs';
import { findNchan, startNchan } from '../nchan/nchan.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..');
export const SSEHUB_MAIN = join(REPO, 'dist', 'main.js');
const BASELINE_MAIN = join(REPO, 'bench', 'baselines', 'koa-hub.mjs');

/** HS256 key shared by the hubs and the load generator (bench only). */
export const BENCH_SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const BASELINE_CHANNEL = 'baseline:events';

/** A private, non-persistent redis-server. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-'));
  const child = spawnChild(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  let outputBufferDisconnects = 0;
  child.stderr?.on('data', (c) => (output += c));
  // Redis logs (at warning level) every client it drops for exceeding client-output-buffer-limit,
  // e.g. a pub/sub subscriber that does not read fast enough: the cause of lost live-only events.
  child.stdout?.setEncoding('utf8').on('data', (/** @type {string} */ c) => {
    outputBufferDisconnects += c.split('overcoming of output buffer limits').length - 1;
    if (output.length < 20_000) output += c;
  });
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 5000;
  for (;;) {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.ping();
      client.disconnect();
      break;
    } catch {
      client.disconnect();
      if (child.exitCode !== null || Date.now() > deadline) {
        await stopChild(child, 'SIGKILL');
        throw new Error(`redis-server did not start: ${output}`);
      }
      await sleep(50);
    }
  }
  return {
    url,
    port,
    pid: /** @type {number} */ (child.pid),
    /** Clients Redis disconnected for exceeding their output buffer limit so far. */
    outputBufferDisconnects: () => outputBufferDisconnects,
    async stop() {
      await stopChild(child, 'SIGKILL', 2000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts a Node server and waits until it answers on its port.
 * @param {string} name
 * @param {string} main
 * @param {Record<string, string>} env
 * @param {number} port
 * @param {string} [readyPath]  HTTP path that must answer 200 (else: TCP accept is enough)
 * @param {string[]} [nodeArgs]
 */
export async function startNodeServer(name, main, env, port, readyPath, nodeArgs = []) {
  const child = spawnChild(process.execPath, [...nodeArgs, main], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (/** @type {Buffer} */ c) => {
    output += c;
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  try {
    await waitForPort(port, 15_000, gone);
    if (readyPath) {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const status = await fetch(`http://127.0.0.1:${port}${readyPath}`).then(
          (r) => r.status,
          () => 0,
        );
        if (status === 200) break;
        if (gone() || Date.now() > deadline) throw new Error(`${readyPath} answered ${status}`);
        await sleep(50);
      }
    }
  } catch (err) {
    await stopChild(child, 'SIGKILL');
    throw new Error(`${name} did not start: ${/** @type {Error} */ (err).message}\n${output.slice(-4000)}`);
  }
  return {
    port,
    pid: /** @type {number} */ (child.pid),
    child,
    output: () => output,
    /** @param {NodeJS.Signals} [signal] */
    stop: (signal = 'SIGTERM') => stopChild(child, signal, 5000),
  };
}

/**
 * @typedef {object} Running
 * @property {{host: string, port: number}[]} endpoints   subscribers are spread evenly over these
 * @property {string} subscribePath                       '' = per user, see pathFor
 * @property {(user: string) => string} pathFor
 * @property {boolean} auth                               subscribers send a bearer JWT
 * @property {() => number[]} serverPids
 * @property {number} redisPid
 * @property {() => number} redisOutputBufferDisconnects
 * @property {object} publish                            publisher job fields (via, redisUrl, ...)
 * @property {() => string} logs
 * @property {() => boolean} alive      every server process still runs
 * @property {() => Promise<Record<string, number>>} [metrics]  selected server metrics, summed over replicas
 * @property {() => Promise<void>} stop
 */

/**
 * @typedef {object} Target
 * @property {string} name
 * @property {string} label
 * @property {string} description
 * @property {() => {ok: boolean, reason: string}} available
 * @property {boolean} [optional]   skipped (not failed) when unavailable, unless asked for by name
 * @property {(options?: StartOptions) => Promise<Running>} start
 */

/**
 * @typedef {object} StartOptions
 * @property {Record<string, string>} [ssehubEnv]  extra environment for the ssehub replicas (overrides the bench defaults)
 * @property {string} [profileDir]  write a V8 CPU profile of each ssehub replica there (node --cpu-prof), on its exit
 */

const METRIC_PREFIXES = [
  'ssehub_frames_delivered_total',
  'ssehub_events_received_total',
  'ssehub_events_rejected_total',
  'ssehub_disconnects_total',
  'ssehub_connections_rejected_total',
  'ssehub_history_replayed_total',
  'ssehub_history_recovered_total',
  'ssehub_history_resets_total',
  'ssehub_history_read_failures_total',
  'ssehub_transport_resubscribes_total',
  'sse_active_connections',
  'nodejs_heap_size_used_bytes',
  'nodejs_heap_size_total_bytes',
  'nodejs_external_memory_bytes',
  'process_resident_memory_bytes',
];

/**
 * Selected series from each replica's /metrics, summed (diagnostics for the JSON results).
 * @param {number[]} ports
 */
async function scrapeMetrics(ports) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const port of ports) {
    const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
      (r) => r.text(),
      () => '',
    );
    for (const line of text.split('\n')) {
      if (line.startsWith('#') || !METRIC_PREFIXES.some((p) => line.startsWith(p))) continue;
      const space = line.lastIndexOf(' ');
      const value = Number(line.slice(space + 1));
      if (!Number.isFinite(value)) continue;
      const key = line.slice(0, space);
      out[key] = (out[key] ?? 0) + value;
    }
  }
  return out;
}

/** @param {number} replicas @returns {Target} */
function ssehubTarget(replicas) {
  return {
    name: `ssehub${replicas}`,
    label: replicas === 1 ? 'ssehub (1 replica)' : `ssehub (${replicas} replicas)`,
    description: `dist/main.js, Redis transport, ${replicas} process${replicas > 1 ? 'es' : ''} on one Redis`,
    available: () =>
      existsSync(SSEHUB_MAIN)
        ? { ok: true, reason: '' }
        : { ok: false, reason: 'dist/main.js missing: run npm run build' },
    async start(options = {}) {
      const redis = await startRedis();
      /** @type {Awaited<ReturnType<typeof startNodeServer>>[]} */
      const hubs = [];
      try {
        for (let i = 0; i < replicas; i++) {
          const port = await freePort();
          hubs.push(
            await startNodeServer(
              `ssehub replica ${i + 1}`,
              SSEHUB_MAIN,
              {
                PORT: String(port),
                HOST: '127.0.0.1',
                NODE_ENV: 'production',
                LOG_LEVEL: 'info',
                SSEHUB_TRANSPORT: 'redis',
                REDIS_URL: redis.url,
                SSEHUB_JWT_SECRET: BENCH_SECRET,
                // B3 opens 100 streams per user (default cap: 10 per user per stream per replica).
                SSEHUB_MAX_CONNECTIONS_PER_USER: '1000',
                SSEHUB_DRAIN_MS: '0',
                ...options.ssehubEnv,
              },
              port,
              '/readyz',
              options.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}`] : [],
            ),
          );
        }
      } catch (err) {
        for (const hub of hubs) await hub.stop('SIGKILL');
        await redis.stop();
        throw err;
      }
      return {
        endpoints: hubs.map((h) => ({ host: '127.0.0.1', port: h.port })),
        subscribePath: '/api/v1/stream/agui',
        pathFor: () => '/api/v1/stream/agui',
        auth: true,
        serverPids: () => hubs.map((h) => h.pid),
        alive: () => hubs.every((h) => h.child.exitCode === null && h.child.signalCode === null),
        redisPid: redis.pid,
        redisOutputBufferDisconnects: redis.outputBufferDisconnects,
        publish: { via: 'ssehub', redisUrl: redis.url, kind: 'agui' },
        logs: () => hubs.map((h, i) => `--- ssehub replica ${i + 1}\n${h.output().slice(-3000)}`).join('\n'),
        metrics: () => scrapeMetrics(hubs.map((h) => h.port)),
        async stop() {
          for (const hub of hubs) await hub.stop('SIGTERM');
          await redis.stop();
        },
      };
    },
  };
}

/** @type {Target} */
const baselineTarget = {
  name: 'baseline',
  label: 'baseline (hand-written Koa+ioredis)',
  description: 'bench/baselines/koa-hub.mjs: the ~50-line hub from a blog post (naive baseline)',
  available: () => ({ ok: true, reason: '' }),
  async start() {
    const redis = await startRedis();
    const port = await freePort();
    let hub;
    try {
      hub = await startNodeServer(
        'baseline hub',
        BASELINE_MAIN,
        { PORT: String(port), REDIS_URL: redis.url, JWT_SECRET: BENCH_SECRET, CHANNEL: BASELINE_CHANNEL },
        port,
      );
    } catch (err) {
      await redis.stop();
      throw err;
    }
    // The hub subscribes before it listens, but give the SUBSCRIBE a moment anyway.
    await sleep(100);
    const h = hub;
    return {
      endpoints: [{ host: '127.0.0.1', port }],
      subscribePath: '/events',
      pathFor: () => '/events',
      auth: true,
      serverPids: () => [h.pid],
      alive: () => h.child.exitCode === null && h.child.signalCode === null,
      redisPid: redis.pid,
      redisOutputBufferDisconnects: redis.outputBufferDisconnects,
      publish: { via: 'redis', redisUrl: redis.url, channel: BASELINE_CHANNEL },
      logs: () => h.output().slice(-3000),
      async stop() {
        await h.stop('SIGKILL');
        await redis.stop();
      },
    };
  },
};

/** @param {number} workers @returns {Target} */
function nchanTarget(workers) {
  return {
    name: workers === 1 ? 'nchan' : `nchan${workers}`,
    label: `nchan (nginx, ${workers} worker${workers > 1 ? 's' : ''})`,
    description: `nginx + libnginx-mod-nchan, Redis storage, EventSource subscribers, HTTP publishing, worker_processes ${workers}`,
    available: () => findNchan(),
    optional: true,
    async start() {
      const redis = await startRedis();
      let nchan;
      try {
        nchan = await startNchan({ redisUrl: redis.url, workers });
      } catch (err) {
        await redis.stop();
        throw err;
      }
      const n = nchan;
      return {
        endpoints: [{ host: '127.0.0.1', port: n.port }],
        subscribePath: '',
        pathFor: (user) => `/sub/${encodeURIComponent(user)}`,
        auth: false,
        serverPids: () => n.pids(),
        alive: () => n.child.exitCode === null && n.child.signalCode === null,
        redisPid: redis.pid,
        redisOutputBufferDisconnects: redis.outputBufferDisconnects,
        publish: { via: 'nchan', nchanBase: `http://127.0.0.1:${n.port}` },
        logs: () => n.errorLog().slice(-3000),
        async stop() {
          await n.stop();
          await redis.stop();
        },
      };
    },
  };
}

/** @type {Record<string, Target>} */
export const TARGETS = {
  ssehub1: ssehubTarget(1),
  ssehub2: ssehubTarget(2),
  baseline: baselineTarget,
  nchan: nchanTarget(1),
  nchan2: nchanTarget(2),
};

export const DEFAULT_TARGETS = ['ssehub1', 'ssehub2', 'baseline', 'nchan'];
