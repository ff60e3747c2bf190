// @ts-check
/**
 * Coordinator: runs one scenario against one target. It starts the target (its own Redis and
 * server processes), forks subscriber workers and a publisher, opens the connections, warms every
 * connection up with one unmeasured event, reads the servers' RSS and CPU from /proc around the
 * measured phase, publishes, waits until every expected delivery arrived (or nothing more arrives),
 * and merges the workers' reports.
 */
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Histogram } from './histogram.mjs';
import { forkNode, machineCpu, procSum, sleep, stopChild } from '../lib/procs.mjs';
import { BENCH_SECRET } from '../lib/targets.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * @typedef {object} Scenario
 * @property {string} id
 * @property {string} title
 * @property {number} users
 * @property {number} connsPerUser
 * @property {number} events        as fast as possible (0 with rate or idle)
 * @property {number} [rate]        events/s
 * @property {number} [durationS]
 * @property {boolean} [idle]       no events: memory only
 * @property {'batch'|'webhook'|'plain'} [publishVia]  publish the measured events through the hub's batch webhook,
 *                                  its single-event webhook (ssehub targets only), or as plain PUBLISH envelopes on the
 *                                  kind channel (ssehub; the baseline publishes so anyway; not Nchan)
 * @property {boolean} [reopen]     idle: then every stream is closed by its client and opened again with the
 *                                  same token (a reconnect or another tab: the token was seen before), timed
 * @property {number} [stormEventsPerUser]  reconnect storm: every stream is closed by its client, this many events
 *                                  per user are published meanwhile, then every client reconnects at once with
 *                                  Last-Event-ID; measured until every missed event arrived
 * @property {number} [idleCpuS]    idle: also read the servers' CPU over this many seconds, per heartbeat received
 * @property {number} workers       subscriber processes
 * @property {number} idleTimeoutMs  stop waiting after this long without a new delivery
 * @property {number} settleMs      pause before reading RSS after the connections opened
 */

/**
 * A child process with an IPC channel and a request/response helper.
 */
export class Peer {
  /** @param {string} module @param {string} name */
  constructor(module, name) {
    this.name = name;
    this.child = forkNode(join(HERE, module));
    /** @type {{delivered: number, warm: number, open: number}} */
    this.progress = { delivered: 0, warm: 0, open: 0 };
    /** @type {Array<{type: string, resolve: (m: any) => void, reject: (e: Error) => void}>} */
    this.waiters = [];
    /** @type {string[]} */
    this.errors = [];
    this.child.on('message', (/** @type {any} */ msg) => {
      if (msg.type === 'progress') {
        this.progress = msg;
        return;
      }
      if (msg.type === 'error') {
        this.errors.push(msg.message);
        const w = this.waiters.shift();
        w?.reject(new Error(`${this.name}: ${msg.message}`));
        return;
      }
      const i = this.waiters.findIndex((w) => w.type === msg.type);
      if (i !== -1) this.waiters.splice(i, 1)[0].resolve(msg);
    });
    this.child.once('exit', (code, signal) => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`${this.name} exited (${code ?? signal})`));
    });
  }

  /**
   * @param {object} msg
   * @param {string} replyType
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  request(msg, replyType, timeoutMs = 600_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no '${replyType}' in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        type: replyType,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send(msg);
    });
  }

  async close() {
    if (this.child.exitCode === null && this.child.connected) {
      await this.request({ cmd: 'close' }, 'closed', 5000).catch(() => undefined);
    }
    await stopChild(this.child, 'SIGKILL', 1000);
  }
}

/**
 * Waits until the workers report every expected delivery, nothing more arrived for
 * `idleTimeoutMs`, or 10 minutes passed.
 * @param {Peer[]} workers @param {number} expectedTotal @param {number} idleTimeoutMs @param {number} pollMs
 */
export async function untilDelivered(workers, expectedTotal, idleTimeoutMs, pollMs) {
  let last = -1;
  let lastChange = Date.now();
  const hardDeadline = Date.now() + 600_000;
  for (;;) {
    const delivered = workers.reduce((n, w) => n + w.progress.delivered, 0);
    if (delivered >= expectedTotal) return;
    if (delivered !== last) {
      last = delivered;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > idleTimeoutMs || Date.now() > hardDeadline) return;
    await sleep(pollMs);
  }
}

function serviceToken() {
  return new SignJWT({ sub: 'bench-publisher', roles: ['service'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(BENCH_SECRET));
}

/** Closes every stream from the client side and waits until the servers let go of them. */
async function dropAll(/** @type {Peer[]} */ workers) {
  await Promise.all(workers.map((w) => w.request({ cmd: 'drop' }, 'dropped')));
  // The servers see the FINs within a few ms; the pause keeps their close work out of the next reading.
  await sleep(1500);
}

/**
 * Idle streams closed by their clients and opened again with the same tokens: the cost of a
 * reconnect (or of another tab) whose token the server has seen before.
 * @param {import('../lib/targets.mjs').Running} run
 * @param {Peer[]} workers
 * @param {number} concurrency
 * @param {{log: (line: string) => void}} io
 */
async function reopenAll(run, workers, concurrency, io) {
  await dropAll(workers);
  const cpu0 = procSum(run.serverPids()).cpuUs;
  const started = Date.now();
  const reopened = await Promise.all(
    workers.map((w) => w.request({ cmd: 'reopen', resume: false, concurrency }, 'reopened', 300_000)),
  );
  const reopenMs = Date.now() - started;
  const opened = reopened.reduce((n, o) => n + o.opened, 0);
  const failed = reopened.reduce((n, o) => n + o.failed, 0);
  if (failed > 0) io.log(`  ${failed} streams failed to reopen`);
  return {
    reopened: opened,
    reopenFailed: failed,
    reopenMs,
    reopenCpuUsPerConn: (procSum(run.serverPids()).cpuUs - cpu0) / Math.max(1, opened),
  };
}

/**
 * Every client drops its stream, events are published while they are away, then all reconnect at
 * once with Last-Event-ID (a replica died and its clients came to this one): measured from the
 * first reconnect until every missed event arrived.
 * @param {import('../lib/targets.mjs').Running} run
 * @param {Peer[]} workers
 * @param {Peer} publisher
 * @param {string[]} users
 * @param {Scenario} scenario
 * @param {{log: (line: string) => void}} io
 */
async function reconnectStorm(run, workers, publisher, users, scenario, io) {
  const perUser = /** @type {number} */ (scenario.stormEventsPerUser);
  await Promise.all(workers.map((w) => w.request({ cmd: 'reset', expectedPerConn: perUser }, 'reset')));
  await dropAll(workers);
  const pub = await publisher.request(
    { cmd: 'publish', job: { ...run.publish, users, events: perUser * users.length } },
    'published',
    900_000,
  );
  const expected = /** @type {number[]} */ (pub.perUser);
  const expectedTotal = expected.reduce((n, e) => n + e, 0) * scenario.connsPerUser;
  const cpu0 = procSum(run.serverPids()).cpuUs;
  const redisCpu0 = procSum([run.redisPid]).cpuUs;
  const started = Date.now();
  const reopening = Promise.all(
    workers.map((w) =>
      w.request({ cmd: 'reopen', resume: true, concurrency: 100_000, retries: 10 }, 'reopened', 300_000),
    ),
  );
  const reopened = await reopening;
  const allOpenMs = Date.now() - started;
  await untilDelivered(workers, expectedTotal, scenario.idleTimeoutMs, 20);
  const stormMs = Date.now() - started;
  const cpu1 = procSum(run.serverPids()).cpuUs;
  const redisCpu1 = procSum([run.redisPid]).cpuUs;
  await sleep(300);
  const reports = await Promise.all(workers.map((w) => w.request({ cmd: 'report', expected }, 'report')));
  const sum = (/** @type {string} */ key) => reports.reduce((n, r) => n + r[key], 0);
  const failed = reopened.reduce((n, o) => n + o.failed, 0);
  if (failed > 0) io.log(`  ${failed} streams could not reconnect in 10 tries`);
  return {
    storm: true,
    published: pub.ok,
    expectedDeliveries: expectedTotal,
    deliveries: sum('delivered'),
    lost: sum('lost'),
    connsWithLoss: sum('connsWithLoss'),
    dups: sum('dups'),
    ooo: sum('ooo'),
    resets: sum('resets'),
    reconnectRefused: failed,
    allOpenMs,
    stormMs,
    serverCpuSeconds: (cpu1 - cpu0) / 1e6,
    redisCpuSeconds: (redisCpu1 - redisCpu0) / 1e6,
    stormCpuUsPerConn:
      (cpu1 - cpu0) /
      Math.max(
        1,
        reopened.reduce((n, o) => n + o.opened, 0),
      ),
  };
}

/**
 * @param {import('../lib/targets.mjs').Target} target
 * @param {Scenario} scenario
 * @param {{log: (line: string) => void, targetOptions?: import('../lib/targets.mjs').StartOptions}} io
 */
export async function runScenario(target, scenario, io) {
  const tag = randomBytes(3).toString('hex');
  const users = Array.from({ length: scenario.users }, (_, i) => `${scenario.id.toLowerCase()}-${tag}-u${i}`);
  const totalConns = scenario.users * scenario.connsPerUser;
  const workerCount = Math.max(1, Math.min(scenario.workers, totalConns));
  /** @type {Record<string, any>} */
  const result = {
    target: target.name,
    scenario: scenario.id,
    users: scenario.users,
    conns: totalConns,
    workers: workerCount,
  };

  const ssehub = target.name.startsWith('ssehub');
  if ((scenario.publishVia === 'batch' || scenario.publishVia === 'webhook') && !ssehub) {
    return { ...result, skipped: 'the webhooks are ssehub-only' };
  }
  if (scenario.publishVia === 'plain' && target.name.startsWith('nchan')) {
    return { ...result, skipped: 'Nchan has no Redis PUBLISH path' };
  }
  const workers = Array.from({ length: workerCount }, (_, i) => new Peer('subscriber.mjs', `subscriber ${i + 1}`));
  const publisher = new Peer('publisher.mjs', 'publisher');
  /** @type {import('../lib/targets.mjs').Running | null} */
  let running = null;
  try {
    const startAt = Date.now();
    running = await target.start(io.targetOptions);
    result.startMs = Date.now() - startAt;
    const run = running;
    await sleep(scenario.settleMs >= 1000 ? 300 : 100);
    const idleServer = procSum(run.serverPids());
    result.serverProcesses = idleServer.pids;
    result.rssBeforeBytes = idleServer.rssBytes;

    // Connections: replica by connection index (half on each of two), worker by connection index.
    /** @type {any[][]} */
    const perWorker = workers.map(() => []);
    let k = 0;
    for (let u = 0; u < users.length; u++) {
      for (let c = 0; c < scenario.connsPerUser; c++, k++) {
        const endpoint = run.endpoints[k % run.endpoints.length];
        perWorker[k % workerCount].push({
          host: endpoint.host,
          port: endpoint.port,
          path: run.pathFor(users[u]),
          user: users[u],
          userIndex: u,
          auth: run.auth,
        });
      }
    }
    const concurrency = Math.max(8, Math.floor(256 / workerCount));
    // Tokens are signed before the clock starts: the open phase times the server, not the load generator.
    const openCpu0 = procSum(run.serverPids()).cpuUs;
    const openStarted = Date.now();
    const opened = await Promise.all(
      workers.map((w, i) =>
        w.request({ cmd: 'open', conns: perWorker[i], secret: BENCH_SECRET, concurrency }, 'opened', 300_000),
      ),
    );
    result.opened = opened.reduce((n, o) => n + o.opened, 0);
    result.openFailed = opened.reduce((n, o) => n + o.failed, 0);
    result.openMs = Date.now() - openStarted;
    result.openCpuUsPerConn = (procSum(run.serverPids()).cpuUs - openCpu0) / Math.max(1, result.opened);
    if (result.openFailed > 0) {
      /** @type {Record<string, number>} */
      const statuses = {};
      for (const o of opened) for (const [s, n] of Object.entries(o.statuses)) statuses[s] = (statuses[s] ?? 0) + n;
      /** @type {Record<string, number>} */
      const errors = {};
      for (const o of opened) for (const [s, n] of Object.entries(o.errors)) errors[s] = (errors[s] ?? 0) + n;
      result.openStatuses = statuses;
      result.openErrors = errors;
      io.log(
        `  ${result.openFailed} of ${totalConns} connections failed to open: ${JSON.stringify({ statuses, errors })}`,
      );
    }
    if (result.opened === 0) throw new Error('no connection could be opened');

    // Warm-up: one seq-0 event per user, until every connection has seen one (subscriptions are live end to end).
    const warmStarted = Date.now();
    let warm = 0;
    for (let round = 0; round < 6; round++) {
      const pending = await Promise.all(workers.map((w) => w.request({ cmd: 'unwarmed' }, 'unwarmed')));
      const unwarmed = [...new Set(pending.flatMap((p) => p.users))];
      if (unwarmed.length === 0) break;
      await publisher.request(
        { cmd: 'publish', job: { ...run.publish, users: unwarmed.map((u) => users[u]), events: 0, warmup: true } },
        'published',
      );
      const deadline = Date.now() + 1000 + round * 1000;
      while (Date.now() < deadline) {
        await sleep(50);
        warm = workers.reduce((n, w) => n + w.progress.warm, 0);
        if (warm >= result.opened) break;
      }
    }
    await sleep(100);
    warm = workers.reduce((n, w) => n + w.progress.warm, 0);
    result.warm = warm;
    result.warmupMs = Date.now() - warmStarted;
    if (warm < result.opened)
      io.log(`  warning: only ${warm} of ${result.opened} connections received the warm-up event`);

    await sleep(scenario.settleMs);
    const afterOpen = procSum(run.serverPids());
    result.rssAfterOpenBytes = afterOpen.rssBytes;
    result.rssPerConnBytes = result.opened > 0 ? (afterOpen.rssBytes - idleServer.rssBytes) / result.opened : NaN;
    if (run.metrics) {
      result.serverMetricsAfterOpen = Object.fromEntries(
        Object.entries(await run.metrics()).filter(([, v]) => v !== 0),
      );
    }

    if (scenario.stormEventsPerUser) {
      Object.assign(result, await reconnectStorm(run, workers, publisher, users, scenario, io));
      // A hub without history (the baseline) loses the missed events by design: reported, not a failure.
      result.ok = run.alive() && result.reconnectRefused === 0;
      return result;
    }

    if (scenario.idle) {
      result.idle = true;
      if (scenario.reopen) Object.assign(result, await reopenAll(run, workers, concurrency, io));
      if (scenario.idleCpuS) {
        // Heartbeats are all an idle hub writes: its CPU over the window per heartbeat received is the cost of keeping streams alive.
        await Promise.all(workers.map((w) => w.request({ cmd: 'reset', expectedPerConn: 1 }, 'reset')));
        const idleCpu0 = procSum(run.serverPids()).cpuUs;
        await sleep(scenario.idleCpuS * 1000);
        const idleCpu1 = procSum(run.serverPids()).cpuUs;
        const reports = await Promise.all(workers.map((w) => w.request({ cmd: 'report', expected: [] }, 'report')));
        const heartbeats = reports.reduce((n, r) => n + r.heartbeats, 0);
        result.idleSeconds = scenario.idleCpuS;
        result.heartbeats = heartbeats;
        result.serverCpuSeconds = (idleCpu1 - idleCpu0) / 1e6;
        result.cpuUsPerHeartbeat = heartbeats > 0 ? (idleCpu1 - idleCpu0) / heartbeats : NaN;
      }
      result.ok = result.opened > 0 && warm > 0 && run.alive();
      if (!run.alive()) result.error = 'a server process exited during the scenario';
      return result;
    }

    const expectedPerConn = scenario.rate
      ? Math.ceil((scenario.rate * (scenario.durationS ?? 10)) / scenario.users)
      : Math.ceil(scenario.events / scenario.users);
    await Promise.all(workers.map((w) => w.request({ cmd: 'reset', expectedPerConn }, 'reset')));

    const clientPids = [...workers, publisher].map((p) => /** @type {number} */ (p.child.pid));
    const metrics0 = run.metrics ? await run.metrics() : undefined;
    const cpu0 = procSum(run.serverPids()).cpuUs;
    const redisCpu0 = procSum([run.redisPid]).cpuUs;
    const clientCpu0 = procSum(clientPids).cpuUs;
    const machine0 = machineCpu();
    /** @type {Record<string, unknown>} */
    const via = {};
    if (scenario.publishVia === 'batch' || scenario.publishVia === 'webhook') {
      const endpoint = run.endpoints[0];
      via.via = scenario.publishVia;
      via.webhookBase = `http://${endpoint.host}:${endpoint.port}`;
      via.token = await serviceToken();
    } else if (scenario.publishVia === 'plain' && ssehub) {
      via.via = 'redis';
      via.channel = `ssehub:${run.publish.kind ?? 'agui'}`;
    }
    const published = publisher.request(
      {
        cmd: 'publish',
        job: {
          ...run.publish,
          ...via,
          users,
          events: scenario.events,
          rate: scenario.rate,
          durationS: scenario.durationS,
        },
      },
      'published',
      900_000,
    );
    const pub = await published;
    const expected = /** @type {number[]} */ (pub.perUser);
    let expectedTotal = 0;
    for (const w of perWorker) for (const spec of w) expectedTotal += expected[spec.userIndex] ?? 0;

    await untilDelivered(workers, expectedTotal, scenario.idleTimeoutMs, 50);
    // Let the last progress messages and any stragglers (duplicates) land.
    await sleep(Math.min(300, scenario.settleMs));
    const cpu1 = procSum(run.serverPids());
    const redisCpu1 = procSum([run.redisPid]).cpuUs;
    const clientCpu1 = procSum(clientPids).cpuUs;
    const machine1 = machineCpu();
    if (run.metrics && metrics0) {
      const metrics1 = await run.metrics();
      /** @type {Record<string, number>} */
      const delta = {};
      for (const [k, v] of Object.entries(metrics1)) {
        const d =
          k.startsWith('nodejs_') || k.startsWith('process_') || k.startsWith('sse_active')
            ? v
            : v - (metrics0[k] ?? 0);
        if (d !== 0) delta[k] = d;
      }
      result.serverMetrics = delta;
    }
    const reports = await Promise.all(workers.map((w) => w.request({ cmd: 'report', expected }, 'report')));

    const hist = new Histogram();
    let firstRecv = Infinity;
    let lastRecv = 0;
    /** @type {Record<string, number>} */
    const clientErrors = {};
    const sum = (/** @type {string} */ key) => reports.reduce((n, r) => n + r[key], 0);
    for (const r of reports) {
      hist.merge(r.histogram);
      if (r.firstRecv > 0) firstRecv = Math.min(firstRecv, r.firstRecv);
      lastRecv = Math.max(lastRecv, r.lastRecv);
      for (const [e, n] of Object.entries(r.errors)) clientErrors[e] = (clientErrors[e] ?? 0) + n;
    }
    const deliveries = sum('delivered');
    const pubSeconds = (pub.endUs - pub.startUs) / 1e6;
    const spanSeconds = lastRecv > 0 ? (lastRecv - pub.startUs) / 1e6 : NaN;
    Object.assign(result, {
      published: pub.ok,
      publishFailed: pub.failed,
      publishErrors: pub.errors,
      publishSeconds: pubSeconds,
      publishPerSec: pub.ok / pubSeconds,
      expectedDeliveries: expectedTotal,
      deliveries,
      deliverySeconds: spanSeconds,
      deliveriesPerSec: deliveries / spanSeconds,
      latencyMs: {
        p50: hist.quantile(0.5) / 1000,
        p90: hist.quantile(0.9) / 1000,
        p99: hist.quantile(0.99) / 1000,
        max: hist.max / 1000,
        mean: hist.mean() / 1000,
      },
      lost: sum('lost'),
      connsWithLoss: sum('connsWithLoss'),
      dups: sum('dups'),
      ooo: sum('ooo'),
      extra: sum('extra'),
      reconnects: sum('reconnects'),
      resets: sum('resets'),
      foreign: sum('foreign'),
      openAtEnd: sum('open'),
      clientErrors,
      serverCpuSeconds: (cpu1.cpuUs - cpu0) / 1e6,
      redisCpuSeconds: (redisCpu1 - redisCpu0) / 1e6,
      loadGeneratorCpuSeconds: (clientCpu1 - clientCpu0) / 1e6,
      machineBusyPct:
        machine1.total > machine0.total
          ? (100 * (machine1.busy - machine0.busy)) / (machine1.total - machine0.total)
          : NaN,
      cpuUsPerDelivery: deliveries > 0 ? (cpu1.cpuUs - cpu0) / deliveries : NaN,
      redisCpuUsPerDelivery: deliveries > 0 ? (redisCpu1 - redisCpu0) / deliveries : NaN,
      rssEndBytes: cpu1.rssBytes,
    });
    result.redisOutputBufferDisconnects = run.redisOutputBufferDisconnects();
    if (result.redisOutputBufferDisconnects > 0) {
      io.log(
        `  redis dropped ${result.redisOutputBufferDisconnects} client(s) over client-output-buffer-limit (a subscriber that fell behind)`,
      );
    }
    result.ok = deliveries > 0;
    if (!run.alive()) {
      result.ok = false;
      result.error = 'a server process exited during the scenario';
      result.serverLogs = run.logs();
    }
    return result;
  } catch (err) {
    result.ok = false;
    result.error = /** @type {Error} */ (err).message;
    if (running) result.serverLogs = running.logs();
    return result;
  } finally {
    const stopAt = Date.now();
    await Promise.all([...workers.map((w) => w.close()), publisher.close()]);
    if (running) await running.stop();
    result.stopMs = Date.now() - stopAt;
  }
}
