// @ts-check
/**
 * Publisher: a separate process, forked by the coordinator. Publishes benchmark events either as
 * fast as possible or at a fixed rate, each carrying its per-user sequence number and its send
 * time (see event.mjs), and reports per user how many were acknowledged.
 *
 * Modes (msg.via):
 *   'ssehub'   FCALL ssehub_publish 0 <kind> <user_id> <event-json>   (pipelined over one ioredis connection)
 *   'ssehub-keys'  FCALL ssehub_publish 2 <meta> <history> <kind> <event-json>  (library v6: the user's keys
 *              under `prefix`, from the compiled hub's userKeys, so it works wherever the hub does)
 *   'redis'    PUBLISH <channel> {"user_id":..,"event":<event-json>}   (the hand-written baseline)
 *   'nchan'    HTTP POST <base>/pub/<user_id> with the event as body (keep-alive agent)
 *   'webhook'  HTTP POST <base>/api/v1/webhook/<kind>, one event per request with its user_id, a service token
 *   'batch'    HTTP POST <base>/api/v1/webhook/batch, BATCH events per request
 *
 * IPC: {cmd:'publish', via, users:string[], events, rate?, durationS?, warmup?, ...}
 *        -> {type:'published', sent, ok, failed, perUser:number[], startUs, endUs, errors}
 *      {cmd:'close'} -> exits
 * With warmup:true every listed user gets one event with seq 0 (not measured).
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import { Redis } from 'ioredis';
import { makeEvent } from './event.mjs';
import { nowMicros } from './clock.mjs';

/** Commands per pipeline and pipelines in flight when publishing as fast as possible. */
const BATCH = 200;
const WINDOW = 8;
/** Concurrent HTTP publishes to Nchan (one lane per group of users, so a user's events stay in order). */
const HTTP_LANES = 32;

/** @type {Redis | null} */
let redis = null;
/** @type {string | null} */
let redisUrl = null;
/** @type {http.Agent | null} */
let agent = null;

/** @param {string} url */
async function redisFor(url) {
  if (redis && redisUrl === url) return redis;
  if (redis) redis.disconnect();
  redis = new Redis(url, { maxRetriesPerRequest: 1, enableAutoPipelining: false, lazyConnect: true });
  redisUrl = url;
  await redis.connect();
  return redis;
}

/**
 * @typedef {object} PublishJob
 * @property {'ssehub'|'ssehub-keys'|'redis'|'nchan'|'batch'|'webhook'} via
 * @property {string} [webhookBase]     batch, webhook: http://127.0.0.1:port of a replica
 * @property {string} [token]           batch, webhook: a service token
 * @property {string[]} users
 * @property {number} events            total events (ignored with rate, see durationS)
 * @property {number} [rate]            events per second; as fast as possible when absent
 * @property {number} [durationS]       with rate: how long
 * @property {boolean} [warmup]         one seq-0 event per user
 * @property {string} [redisUrl]
 * @property {string} [kind]            ssehub event kind (agui)
 * @property {string} [prefix]          ssehub-keys: the hub's SSEHUB_CHANNEL_PREFIX (default ssehub)
 * @property {string} [channel]         baseline channel
 * @property {string} [nchanBase]       http://127.0.0.1:port
 */

/**
 * The i-th event of a run goes to user i mod U with that user's next sequence number, so every
 * user's sequence is 1..n in publish order.
 * @param {number} i
 * @param {number} userCount
 */
function slot(i, userCount) {
  return { user: i % userCount, seq: Math.floor(i / userCount) + 1 };
}

/** @param {PublishJob} job */
async function publish(job) {
  const users = job.users;
  const U = users.length;
  const perUser = new Array(U).fill(0);
  /** @type {Record<string, number>} */
  const errors = {};
  let ok = 0;
  let failed = 0;
  /** @param {unknown} err */
  const fail = (err) => {
    failed++;
    const key = String(/** @type {any} */ (err)?.message ?? err).slice(0, 120);
    errors[key] = (errors[key] ?? 0) + 1;
  };

  const total = job.warmup ? U : job.rate ? Math.round(job.rate * (job.durationS ?? 10)) : job.events;
  /** @param {number} i */
  const target = (i) => (job.warmup ? { user: i, seq: 0 } : slot(i, U));

  /** Sends events [from, to) and resolves when all are acknowledged. */
  /** @type {(from: number, to: number) => Promise<void>} */
  let sendRange;
  if (job.via === 'nchan' || job.via === 'webhook') {
    agent ??= new http.Agent({ keepAlive: true, maxSockets: HTTP_LANES * 2 });
    const webhook = job.via === 'webhook';
    const base = new URL(/** @type {string} */ (webhook ? job.webhookBase : job.nchanBase));
    /** @type {Record<string, string>} */
    const auth = webhook ? { Authorization: `Bearer ${job.token}` } : {};
    /** @param {number} i */
    const post = (i) =>
      new Promise((resolve) => {
        const { user, seq } = target(i);
        const event = makeEvent(seq, nowMicros());
        // The webhook takes the event with its user_id as one more top-level member.
        const body = webhook ? `{"user_id":${JSON.stringify(users[user])},${event.slice(1)}` : event;
        const req = http.request(
          {
            host: base.hostname,
            port: base.port,
            path: webhook ? `/api/v1/webhook/${job.kind ?? 'agui'}` : `/pub/${encodeURIComponent(users[user])}`,
            method: 'POST',
            agent: /** @type {http.Agent} */ (agent),
            headers: { ...auth, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
          },
          (res) => {
            res.resume();
            res.on('end', () => {
              if (res.statusCode && res.statusCode >= 200 && res.statusCode < 300) {
                ok++;
                if (seq > 0) perUser[user]++;
              } else fail(new Error(`HTTP ${res.statusCode}`));
              resolve(undefined);
            });
          },
        );
        req.on('error', (err) => {
          fail(err);
          resolve(undefined);
        });
        req.end(body);
      });
    sendRange = async (from, to) => {
      // Lanes partition the users, so one user's events are never in flight together.
      const lanes = Math.min(HTTP_LANES, U);
      await Promise.all(
        Array.from({ length: lanes }, async (_, lane) => {
          for (let i = from; i < to; i++) if (target(i).user % lanes === lane) await post(i);
        }),
      );
    };
  } else if (job.via === 'batch') {
    agent ??= new http.Agent({ keepAlive: true, maxSockets: HTTP_LANES * 2 });
    const base = new URL(/** @type {string} */ (job.webhookBase));
    const kind = job.kind ?? 'agui';
    sendRange = (from, to) =>
      new Promise((resolve) => {
        /** @type {number[]} */
        const owners = [];
        const items = [];
        for (let i = from; i < to; i++) {
          const { user, seq } = target(i);
          items.push(
            `{"kind":"${kind}","user_id":${JSON.stringify(users[user])},"event":${makeEvent(seq, nowMicros())}}`,
          );
          owners.push(seq > 0 ? user : -1);
        }
        const body = `[${items.join(',')}]`;
        const req = http.request(
          {
            host: base.hostname,
            port: base.port,
            path: '/api/v1/webhook/batch',
            method: 'POST',
            agent: /** @type {http.Agent} */ (agent),
            headers: {
              Authorization: `Bearer ${job.token}`,
              'Content-Type': 'application/json',
              'Content-Length': Buffer.byteLength(body),
            },
          },
          (res) => {
            /** @type {Buffer[]} */
            const chunks = [];
            res.on('data', (chunk) => chunks.push(chunk));
            res.on('end', () => {
              if (res.statusCode !== 207) {
                for (let k = 0; k < owners.length; k++) fail(new Error(`HTTP ${res.statusCode}`));
              } else {
                /** @type {{results: Array<{status: number, error?: string}>}} */
                const answer = JSON.parse(Buffer.concat(chunks).toString());
                answer.results.forEach((r, k) => {
                  if (r.status !== 202) fail(new Error(`item ${r.status}: ${r.error}`));
                  else {
                    ok++;
                    if (owners[k] >= 0) perUser[owners[k]]++;
                  }
                });
              }
              resolve(undefined);
            });
          },
        );
        req.on('error', (err) => {
          for (let k = 0; k < owners.length; k++) fail(err);
          resolve(undefined);
        });
        req.end(body);
      });
  } else {
    const client = await redisFor(/** @type {string} */ (job.redisUrl));
    const kind = job.kind ?? 'agui';
    const channel = job.channel ?? 'baseline:events';
    /** @type {Array<{meta: string, history: string}>} */
    let keys = [];
    if (job.via === 'ssehub-keys') {
      // The hub's own key layout (dist/), so a change there cannot leave the bench publishing elsewhere.
      const { userKeys } = createRequire(import.meta.url)('../../dist/transport/redis/library.js');
      keys = users.map((u) => userKeys(job.prefix ?? 'ssehub', u));
    }
    sendRange = async (from, to) => {
      const pipeline = client.pipeline();
      /** @type {number[]} */
      const owners = [];
      for (let i = from; i < to; i++) {
        const { user, seq } = target(i);
        const event = makeEvent(seq, nowMicros());
        if (job.via === 'ssehub') pipeline.call('FCALL', 'ssehub_publish', '0', kind, users[user], event);
        else if (job.via === 'ssehub-keys') {
          pipeline.call('FCALL', 'ssehub_publish', '2', keys[user].meta, keys[user].history, kind, event);
        } else pipeline.publish(channel, `{"user_id":${JSON.stringify(users[user])},"event":${event}}`);
        owners.push(seq > 0 ? user : -1);
      }
      const results = (await pipeline.exec()) ?? [];
      results.forEach(([err], k) => {
        if (err) fail(err);
        else {
          ok++;
          if (owners[k] >= 0) perUser[owners[k]]++;
        }
      });
    };
  }

  const startUs = nowMicros();
  if (job.rate && !job.warmup) {
    // Fixed rate: every millisecond or so, send whatever is due by now.
    const rate = job.rate;
    let sent = 0;
    /** @type {Promise<void>[]} */
    const pending = [];
    while (sent < total) {
      const due = Math.min(total, Math.floor(((nowMicros() - startUs) / 1e6) * rate) + 1);
      if (due > sent) {
        pending.push(sendRange(sent, due));
        sent = due;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(pending);
  } else if (job.via === 'nchan' || job.via === 'webhook') {
    await sendRange(0, total);
  } else {
    // As fast as possible: pipelines of BATCH commands, WINDOW of them in flight.
    // Batch requests run concurrently: no more in flight than keeps one user's events in one of them, in order.
    const window = job.via === 'batch' ? Math.max(1, Math.min(WINDOW, Math.floor(U / BATCH))) : WINDOW;
    /** @type {Set<Promise<void>>} */
    const inflight = new Set();
    for (let from = 0; from < total; from += BATCH) {
      const p = sendRange(from, Math.min(total, from + BATCH)).finally(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size >= window) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  }
  const endUs = nowMicros();
  return { type: 'published', sent: total, ok, failed, perUser, startUs, endUs, errors };
}

process.on('message', (/** @type {any} */ msg) => {
  if (msg.cmd === 'publish') {
    publish(msg.job).then(
      (result) => process.send?.(result),
      (err) => process.send?.({ type: 'error', message: String(err?.stack ?? err) }),
    );
  } else if (msg.cmd === 'close') {
    redis?.disconnect();
    agent?.destroy();
    process.send?.({ type: 'closed' }, () => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
