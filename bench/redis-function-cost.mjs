#!/usr/bin/env node
// @ts-check
/**
 * Redis CPU per published event: the function library of version 5 (0 keys, global epoch, JSON
 * validated in Lua) against version 6 (2 keys per user, per-user epoch, no JSON parsing), and plain
 * PUBLISH as the floor. Everything runs against a private redis-server; nothing else is started.
 *
 *   node bench/redis-function-cost.mjs [--quick] [--events n] [--users n] [--reps n] [--history-max n]
 *
 * Variants, all with the same ~150-byte AG-UI TEXT_MESSAGE_CONTENT event:
 *   v5 single    FCALL ssehub_publish 0 agui <user> <event>            (bench/baselines/redis-library-v5.lua)
 *   v6 single    FCALL ssehub_publish 2 <meta> <history> agui <event>  (src/transport/redis/functions, via dist/)
 *   v6 batch16   FCALL ssehub_publish_batch 2 <meta> <history> agui <event> x 16, reported per event
 *   PUBLISH      PUBLISH ssehub:agui {"user_id":..,"event":..}          (the kind-channel path, no history)
 *
 * Two views of the cost, both per event:
 *   - cmdstat usec: INFO commandstats, usec / events of the FCALL (or PUBLISH) itself: the time
 *     Redis spent executing the command, nested calls included, without reading it off the socket
 *     or writing replies and messages out.
 *   - CPU: used_cpu_user + used_cpu_sys (INFO cpu) of the whole server over the run: everything,
 *     networking and the pub/sub fan-out included, plus whatever background work Redis does.
 * Commands a function calls are counted in commandstats too (Redis 7), which gives the split of a
 * function's time by command printed after the table.
 *
 * A subscriber connection stands in for one replica that holds every user: it SSUBSCRIBEs every
 * user channel (so each v6 SPUBLISH reaches one subscriber, as it does when the user's stream is
 * open somewhere) and SUBSCRIBEs the kind channels, as a hub does (so each v5 PUBLISH and plain
 * PUBLISH also reaches one subscriber). It only counts the bytes it reads, to stay cheap.
 *
 * Each variant runs --reps times (default 3), interleaved (v5, v6, v6 batch, PUBLISH, v5, ...)
 * so drift on the shared machine spreads over all of them; the median is reported. One unmeasured
 * pass per variant first creates every user's keys, so the measured runs see existing histories
 * below their count cap (the default 1000; --history-max n makes them trim, at steady state once
 * every user has n events).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { machineCpu } from './lib/procs.mjs';
import { startRedis } from './lib/targets.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');
const require = createRequire(import.meta.url);

const PREFIX = 'ssehub';
const KIND = 'agui';
/** Events per FCALL of ssehub_publish_batch. */
const BATCH = 16;
/**
 * Calibration functions, in a library of their own (it stays loaded while ssehub's is replaced):
 * the cost of an FCALL that does nothing, and of one that makes a single redis.call (TIME, the
 * cheapest command), tell the fixed cost of a call and the overhead of each redis.call apart
 * from the commands' own time.
 */
const CALIBRATION_LIBRARY = [
  '#!lua name=ssehub_bench',
  "redis.register_function('ssehub_bench_noop', function(keys, args) return 1 end)",
  "redis.register_function('ssehub_bench_time', function(keys, args) return redis.call('TIME')[1] end)",
].join('\n');
/** Events per pipeline, and pipelines in flight: as bench/load/publisher.mjs. */
const PIPELINE_EVENTS = 208;
const WINDOW = 8;

/** @param {string[]} argv */
function parseArgs(argv) {
  const opts = { quick: false, events: 0, users: 1000, reps: 3, historyMax: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive integer`);
      return v;
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--events') opts.events = num();
    else if (a === '--users') opts.users = num();
    else if (a === '--reps') opts.reps = num();
    else if (a === '--history-max') opts.historyMax = num();
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node bench/redis-function-cost.mjs [--quick] [--events n] [--users n] [--reps n] [--history-max n]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (opts.events === 0) opts.events = opts.quick ? 20_000 : 100_000;
  return opts;
}

/** The AG-UI event every variant publishes: a TEXT_MESSAGE_CONTENT delta, 150 bytes. */
function makeEvent() {
  const head = '{"type":"TEXT_MESSAGE_CONTENT","messageId":"msg_01JD3Z8Q4K7N2M5P","delta":"';
  const words = 'The quick brown fox jumps over the lazy dog while streaming tokens to the browser. ';
  const body = words.repeat(3).slice(0, 150 - head.length - 2);
  return `${head}${body}"}`;
}

/**
 * The v6 library, rendered by the compiled hub (dist/), so the bench runs exactly what the hub loads.
 * @param {number} historyMax  0 = default
 */
function v6Library(historyMax) {
  let lib;
  try {
    lib = require(join(REPO, 'dist', 'transport', 'redis', 'library.js'));
  } catch (err) {
    throw new Error(`dist/ missing or stale (run npm run build): ${/** @type {Error} */ (err).message}`);
  }
  const settings = { ...lib.DEFAULT_HISTORY_SETTINGS };
  if (historyMax) settings.historyMax = historyMax;
  return {
    source: /** @type {string} */ (lib.redisLibrary(new Map([[PREFIX, settings]]))),
    version: /** @type {number} */ (lib.LIBRARY_VERSION),
    /** @type {(prefix: string, user: string) => {meta: string, history: string, channel: string}} */
    userKeys: lib.userKeys,
  };
}

/**
 * A subscriber that reads and discards everything (a stand-in for one replica's subscriber
 * connection); it counts bytes so the run can show the messages really went out.
 * @param {number} port
 * @param {string[]} shardChannels
 * @param {string[]} channels
 */
async function startSubscriber(port, shardChannels, channels) {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let bytes = 0;
  socket.on('data', (chunk) => {
    bytes += chunk.length;
  });
  /** @param {string[]} args */
  const resp = (args) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  // Batches of 100, like the hub's subscriber (src/transport/redis/subscriber.ts).
  for (let i = 0; i < shardChannels.length; i += 100)
    socket.write(resp(['SSUBSCRIBE', ...shardChannels.slice(i, i + 100)]));
  socket.write(resp(['SUBSCRIBE', ...channels]));
  return {
    bytes: () => bytes,
    close: () => socket.destroy(),
  };
}

/**
 * @typedef {object} Variant
 * @property {string} name
 * @property {'v5' | 'v6' | 'none'} library   which ssehub library must be loaded
 * @property {number} eventsPerCommand
 * @property {(pipeline: import('ioredis').ChainableCommander, call: number) => void} add   queues command number `call`
 * @property {string} stat         the commandstats entry of the command itself
 */

/** @param {string} info */
function parseInfo(info) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) out[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return out;
}

/** @param {string} text @returns {Record<string, {calls: number, usec: number}>} */
function commandStats(text) {
  /** @type {Record<string, {calls: number, usec: number}>} */
  const out = {};
  for (const [key, value] of Object.entries(parseInfo(text))) {
    if (!key.startsWith('cmdstat_')) continue;
    const calls = Number(/calls=(\d+)/.exec(value)?.[1] ?? 0);
    const usec = Number(/usec=(\d+)/.exec(value)?.[1] ?? 0);
    out[key.slice('cmdstat_'.length)] = { calls, usec };
  }
  return out;
}

/** @param {Redis} admin */
async function serverCpuSeconds(admin) {
  const cpu = parseInfo(/** @type {string} */ (await admin.info('cpu')));
  return Number(cpu.used_cpu_user) + Number(cpu.used_cpu_sys);
}

/**
 * Sends `calls` commands of the variant, pipelined, WINDOW pipelines in flight, and checks replies.
 * @param {Redis} client
 * @param {Variant} variant
 * @param {number} calls
 */
async function publish(client, variant, calls) {
  const perPipeline = Math.max(1, Math.round(PIPELINE_EVENTS / variant.eventsPerCommand));
  let failed = 0;
  /** @type {string | undefined} */
  let firstError;
  /** @type {Set<Promise<void>>} */
  const inflight = new Set();
  for (let from = 0; from < calls; from += perPipeline) {
    const pipeline = client.pipeline();
    const to = Math.min(calls, from + perPipeline);
    for (let c = from; c < to; c++) variant.add(pipeline, c);
    const p = pipeline.exec().then((results) => {
      for (const [err] of results ?? []) {
        if (err) {
          failed++;
          firstError ??= err.message;
        }
      }
    });
    const tracked = p.finally(() => inflight.delete(tracked));
    inflight.add(tracked);
    if (inflight.size >= WINDOW) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  return { failed, firstError };
}

/** @param {number[]} values */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Busy share of all CPUs between two /proc/stat readings.
 * @param {{busy: number, total: number}} a
 * @param {{busy: number, total: number}} b
 */
function busyPct(a, b) {
  return b.total > a.total ? (100 * (b.busy - a.busy)) / (b.total - a.total) : Number.NaN;
}

/** @param {number} n @param {number} [digits] */
const fmt = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const event = makeEvent();
  const users = Array.from({ length: opts.users }, (_, i) => `user-${String(i).padStart(5, '0')}`);
  const v6 = v6Library(opts.historyMax);
  const v5Source = readFileSync(join(HERE, 'baselines', 'redis-library-v5.lua'), 'utf8');
  const keys = users.map((u) => v6.userKeys(PREFIX, u));
  const envelopes = users.map((u) => `{"user_id":${JSON.stringify(u)},"event":${event}}`);
  const batchArgs = Array.from({ length: BATCH }, () => [KIND, event]).flat();

  /** @type {Variant[]} */
  const variants = [
    {
      name: 'v5 ssehub_publish',
      library: 'v5',
      eventsPerCommand: 1,
      stat: 'fcall',
      add: (p, c) => void p.call('FCALL', 'ssehub_publish', '0', KIND, users[c % users.length], event),
    },
    {
      name: `v${v6.version} ssehub_publish`,
      library: 'v6',
      eventsPerCommand: 1,
      stat: 'fcall',
      add: (p, c) => {
        const k = keys[c % keys.length];
        p.call('FCALL', 'ssehub_publish', '2', k.meta, k.history, KIND, event);
      },
    },
    {
      name: `v${v6.version} ssehub_publish_batch x${BATCH}`,
      library: 'v6',
      eventsPerCommand: BATCH,
      stat: 'fcall',
      add: (p, c) => {
        const k = keys[c % keys.length];
        p.call('FCALL', 'ssehub_publish_batch', '2', k.meta, k.history, ...batchArgs);
      },
    },
    {
      name: 'PUBLISH (kind channel)',
      library: 'v6',
      eventsPerCommand: 1,
      stat: 'publish',
      add: (p, c) => void p.publish(`${PREFIX}:${KIND}`, envelopes[c % envelopes.length]),
    },
    {
      name: 'FCALL empty function',
      library: 'none',
      eventsPerCommand: 1,
      stat: 'fcall',
      add: (p) => void p.call('FCALL', 'ssehub_bench_noop', '0'),
    },
    {
      name: 'FCALL one redis.call(TIME)',
      library: 'none',
      eventsPerCommand: 1,
      stat: 'fcall',
      add: (p) => void p.call('FCALL', 'ssehub_bench_time', '0'),
    },
  ];

  const redis = await startRedis();
  const admin = new Redis(redis.url, { lazyConnect: true, enableAutoPipelining: false });
  const client = new Redis(redis.url, { lazyConnect: true, enableAutoPipelining: false });
  await admin.connect();
  await client.connect();
  const subscriber = await startSubscriber(
    redis.port,
    keys.map((k) => k.channel),
    ['agui', 'a2a', 'system', 'analytics'].map((kind) => `${PREFIX}:${kind}`),
  );
  /** @type {'v5' | 'v6' | ''} */
  let loaded = '';
  await admin.call('FUNCTION', 'LOAD', 'REPLACE', CALIBRATION_LIBRARY);
  /** @param {'v5' | 'v6' | 'none'} library */
  const load = async (library) => {
    if (loaded === library || library === 'none') return;
    // Both register ssehub_publish, so only one is loaded at a time; their keys differ, so both histories stay.
    await admin.call('FUNCTION', 'LOAD', 'REPLACE', library === 'v5' ? v5Source : v6.source);
    loaded = library;
  };
  if (opts.historyMax) await admin.hset(`${PREFIX}:config`, 'history_max', String(opts.historyMax));

  try {
    console.log(
      `redis-function-cost: ${opts.events.toLocaleString('en-US')} events per run, ${opts.users} users, ` +
        `${Buffer.byteLength(event)}-byte event, ${opts.reps} runs per variant (interleaved), ` +
        `history cap ${opts.historyMax || 'default (1000)'}, redis ${
          parseInfo(/** @type {string} */ (await admin.info('server'))).redis_version
        }`,
    );
    // Unmeasured: every user's keys exist (and with --history-max, histories are at their cap) before the measured runs.
    const warmEvents = Math.max(opts.users * (opts.historyMax || 1), Math.min(opts.events, 10_000));
    for (const variant of variants) {
      await load(variant.library);
      const r = await publish(client, variant, Math.ceil(warmEvents / variant.eventsPerCommand));
      if (r.failed > 0) throw new Error(`${variant.name}: ${r.failed} commands failed, e.g. ${r.firstError}`);
    }

    const machine0 = machineCpu();
    /** @type {Map<string, Array<{cmdUs: number, cpuUs: number, wallS: number, nested: Record<string, {calls: number, usec: number}>, subscriberBytes: number}>>} */
    const runs = new Map(variants.map((v) => [v.name, []]));
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const variant of variants) {
        await load(variant.library);
        const calls = Math.ceil(opts.events / variant.eventsPerCommand);
        const events = calls * variant.eventsPerCommand;
        await admin.config('RESETSTAT');
        const bytes0 = subscriber.bytes();
        const cpu0 = await serverCpuSeconds(admin);
        const t0 = process.hrtime.bigint();
        const r = await publish(client, variant, calls);
        const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
        const cpu1 = await serverCpuSeconds(admin);
        const stats = commandStats(/** @type {string} */ (await admin.info('commandstats')));
        if (r.failed > 0) throw new Error(`${variant.name}: ${r.failed} commands failed, e.g. ${r.firstError}`);
        const own = stats[variant.stat] ?? { calls: 0, usec: 0 };
        if (own.calls !== calls)
          throw new Error(`${variant.name}: commandstats counted ${own.calls} calls of ${calls}`);
        /** @type {Record<string, {calls: number, usec: number}>} */
        const nested = {};
        for (const [name, s] of Object.entries(stats)) {
          if (name !== variant.stat && !name.startsWith('config') && name !== 'info') nested[name] = s;
        }
        // Let the subscriber read what is still on its way before the next variant counts.
        await new Promise((resolve) => setTimeout(resolve, 50));
        runs.get(variant.name)?.push({
          cmdUs: own.usec / events,
          cpuUs: ((cpu1 - cpu0) * 1e6) / events,
          wallS,
          nested: Object.fromEntries(
            Object.entries(nested).map(([name, s]) => [name, { calls: s.calls / events, usec: s.usec / events }]),
          ),
          subscriberBytes: (subscriber.bytes() - bytes0) / events,
        });
      }
    }

    /** @type {Record<string, {cmdUs: number, cpuUs: number}>} */
    const med = {};
    console.log('');
    console.log(
      `machine busy during the runs: ${fmt(busyPct(machine0, machineCpu()), 0)} % of ${cpus().length} CPUs (everything on the machine, this bench included)`,
    );
    console.log('');
    console.log(
      '| variant | events/cmd | cmdstat µs/event median | min | runs | server CPU µs/event median | min | runs | events/s | subscriber bytes/event |',
    );
    console.log('|---|---:|---:|---:|---|---:|---:|---|---:|---:|');
    for (const variant of variants) {
      const rs = runs.get(variant.name) ?? [];
      const cmdUs = median(rs.map((r) => r.cmdUs));
      const cpuUs = median(rs.map((r) => r.cpuUs));
      med[variant.name] = { cmdUs, cpuUs };
      const rate = median(rs.map((r) => opts.events / r.wallS));
      console.log(
        `| ${variant.name} | ${variant.eventsPerCommand} | ${fmt(cmdUs)} | ${fmt(Math.min(...rs.map((r) => r.cmdUs)))} | ${rs
          .map((r) => fmt(r.cmdUs))
          .join(' / ')} | ${fmt(cpuUs)} | ${fmt(Math.min(...rs.map((r) => r.cpuUs)))} | ${rs
          .map((r) => fmt(r.cpuUs))
          .join(' / ')} | ${fmt(rate, 0)} | ${fmt(median(rs.map((r) => r.subscriberBytes)), 0)} |`,
      );
    }

    const [v5s, v6s, v6b, pub, noop, oneCall] = variants.map((v) => med[v.name]);
    console.log('');
    console.log('Ratios of medians (cmdstat / server CPU):');
    console.log(`  v5 single / v6 single:   ${fmt(v5s.cmdUs / v6s.cmdUs)}x / ${fmt(v5s.cpuUs / v6s.cpuUs)}x`);
    console.log(`  v5 single / v6 batch16:  ${fmt(v5s.cmdUs / v6b.cmdUs)}x / ${fmt(v5s.cpuUs / v6b.cpuUs)}x`);
    console.log(`  v6 single / v6 batch16:  ${fmt(v6s.cmdUs / v6b.cmdUs)}x / ${fmt(v6s.cpuUs / v6b.cpuUs)}x`);
    console.log(`  v6 single / PUBLISH:     ${fmt(v6s.cmdUs / pub.cmdUs)}x / ${fmt(v6s.cpuUs / pub.cpuUs)}x`);
    console.log(`  v6 batch16 / PUBLISH:    ${fmt(v6b.cmdUs / pub.cmdUs)}x / ${fmt(v6b.cpuUs / pub.cpuUs)}x`);
    console.log('');
    console.log('Goals (median cmdstat µs per event: the FCALL itself):');
    const goal = (
      /** @type {string} */ label,
      /** @type {{cmdUs: number, cpuUs: number}} */ m,
      /** @type {number} */ max,
    ) =>
      console.log(
        `  ${label}: ${fmt(m.cmdUs)} µs (goal <= ${max} µs): ${m.cmdUs <= max ? 'met' : 'NOT met'}; whole server ${fmt(m.cpuUs)} µs CPU per event`,
      );
    goal('v6 ssehub_publish', v6s, 8);
    goal(`v6 ssehub_publish_batch x${BATCH}, per event`, v6b, 5);

    // Where a function's time goes. commandstats times each command a function calls, but not what
    // redis.call itself costs around it (argument conversion, checks, the reply turned into Lua
    // values); the calibration functions measure that: an empty FCALL, and one with one TIME call.
    const stats = (/** @type {string} */ name) => {
      const rs = runs.get(name) ?? [];
      return [...rs].sort((a, b) => a.cmdUs - b.cmdUs)[Math.floor(rs.length / 2)];
    };
    const timeUs = stats('FCALL one redis.call(TIME)').nested.time?.usec ?? 0;
    const perCall = oneCall.cmdUs - noop.cmdUs - timeUs;
    console.log('');
    console.log(
      `Calibration: an FCALL costs ${fmt(noop.cmdUs)} µs doing nothing; each redis.call adds ~${fmt(perCall)} µs around the command's own time.`,
    );
    console.log(
      'Split of each function, per event (median run): commands called inside (calls per event, µs per event):',
    );
    for (const variant of variants.slice(0, 3)) {
      const mid = stats(variant.name);
      const nested = Object.entries(mid.nested).filter(([, s]) => s.calls > 0);
      const parts = nested
        .sort((a, b) => b[1].usec - a[1].usec)
        .map(([name, s]) => `${name} ${fmt(s.calls, 2)}x ${fmt(s.usec, 2)}`);
      const inside = nested.reduce((n, [, s]) => n + s.usec, 0);
      const calls = nested.reduce((n, [, s]) => n + s.calls, 0);
      const fixed = noop.cmdUs / variant.eventsPerCommand;
      const around = calls * perCall;
      console.log(`  ${variant.name}: ${fmt(mid.cmdUs)} µs per event =`);
      console.log(`    ${fmt(inside)} in the commands (${parts.join(', ')})`);
      console.log(`    + ${fmt(around)} redis.call overhead (${fmt(calls, 2)} calls x ${fmt(perCall)})`);
      console.log(`    + ${fmt(fixed)} FCALL fixed cost`);
      console.log(
        `    + ${fmt(mid.cmdUs - inside - around - fixed)} the rest: Lua code, and argument and reply conversion beyond the calibration's (XADD and HSET carry more arguments, HMGET returns more values than TIME)`,
      );
    }
    console.log('');
    console.log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    subscriber.close();
    client.disconnect();
    admin.disconnect();
    await redis.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exit(1);
});
