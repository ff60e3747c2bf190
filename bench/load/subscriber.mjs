// @ts-check
/**
 * Subscriber worker: a separate process, forked by the coordinator (bench/load/coordinator.mjs),
 * that holds many SSE connections at once. It parses the stream itself on raw http.request
 * responses (no EventSource library, to keep the client cheap), tracks every connection's
 * sequence numbers for loss, duplicates and order, records publish-to-receive latency in a
 * histogram, and reconnects like a browser's EventSource (after `retry:` or 1 s, sending
 * Last-Event-ID) when a server closes a stream.
 *
 * IPC protocol (coordinator -> worker):
 *   {cmd:'open', conns:[ConnSpec], secret?, concurrency}  -> {type:'opened', opened, failed, statuses, errors}
 *   {cmd:'reset', expectedPerConn}                         -> {type:'reset'}    start measuring
 *   {cmd:'report', expected:number[]}                       -> {type:'report', ...}  expected per user index
 *   {cmd:'drop'}                                            -> {type:'dropped'}  every stream closed by the client, no reconnect
 *   {cmd:'reopen', resume, concurrency}                     -> {type:'reopened', opened, failed, statuses, errors}
 *                                                              every dropped stream opened again, with its Last-Event-ID when resume
 *   {cmd:'close'}                                           -> {type:'closed'}   then exits
 * worker -> coordinator, every 200 ms while something changed:
 *   {type:'progress', delivered, warm, open}
 */
import http from 'node:http';
import { SignJWT } from 'jose';
import { Histogram } from './histogram.mjs';
import { nowMicros } from './clock.mjs';
import { parseEvent } from './event.mjs';

/**
 * @typedef {object} ConnSpec
 * @property {string} host
 * @property {number} port
 * @property {string} path
 * @property {string} user          user id (the JWT subject)
 * @property {number} userIndex     index into the scenario's user list (the publisher's per-user counts)
 * @property {boolean} auth         send `Authorization: Bearer <jwt>`
 */

const DEFAULT_RETRY_MS = 1000;
const parsed = { seq: 0, t: 0 };

let measuring = false;
let closing = false;
/** Between 'drop' and 'reopen': streams the client closed itself stay closed. */
let suspended = false;
let delivered = 0;
let warmCount = 0;
let openCount = 0;
let histogram = new Histogram();
let firstRecv = 0;
let lastRecv = 0;
/** @type {Map<string, string>} */
const tokens = new Map();
/** @type {Conn[]} */
let conns = [];
/** @type {Record<string, number>} */
let errorCounts = {};

/** @param {string} key */
function countError(key) {
  errorCounts[key] = (errorCounts[key] ?? 0) + 1;
}

class Conn {
  /** @param {ConnSpec} spec */
  constructor(spec) {
    this.spec = spec;
    /** @type {http.ClientRequest | null} */
    this.req = null;
    this.buf = '';
    /** @type {string | null} */
    this.data = null;
    this.eventType = '';
    /** @type {string | null} */
    this.pendingId = null;
    this.lastEventId = '';
    this.retryMs = DEFAULT_RETRY_MS;
    this.warm = false;
    this.isOpen = false;
    /** Which sequence numbers arrived (1 = seen). */
    this.seen = new Uint8Array(64);
    this.maxSeq = 0;
    this.unique = 0;
    this.dups = 0;
    this.ooo = 0;
    this.reconnects = 0;
    this.resets = 0;
    this.heartbeats = 0;
    this.foreign = 0;
  }

  /** @param {number} expected */
  resetStats(expected) {
    this.seen = new Uint8Array(Math.max(16, expected + 2));
    this.maxSeq = 0;
    this.unique = 0;
    this.dups = 0;
    this.ooo = 0;
  }

  /**
   * Opens (or reopens) the stream. Resolves with the status code, or 0 on a network error.
   * @returns {Promise<number>}
   */
  connect() {
    return new Promise((resolve) => {
      const { host, port, path, user, auth } = this.spec;
      /** @type {Record<string, string>} */
      const headers = { Accept: 'text/event-stream', 'Cache-Control': 'no-cache' };
      if (auth) headers.Authorization = `Bearer ${tokens.get(user)}`;
      if (this.lastEventId !== '') headers['Last-Event-ID'] = this.lastEventId;
      let settled = false;
      const req = http.request({ host, port, path, method: 'GET', headers, agent: false });
      this.req = req;
      req.on('socket', (socket) => socket.setNoDelay(true));
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          settled = true;
          resolve(res.statusCode ?? 0);
          res.resume();
          req.destroy();
          return;
        }
        this.isOpen = true;
        openCount++;
        settled = true;
        resolve(200);
        this.buf = '';
        this.data = null;
        this.eventType = '';
        this.pendingId = null;
        res.setEncoding('latin1');
        res.on('data', (chunk) => this.onChunk(chunk));
        res.on('close', () => this.onClosed());
      });
      req.on('error', (err) => {
        if (!settled) {
          settled = true;
          countError(/** @type {NodeJS.ErrnoException} */ (err).code ?? err.message);
          resolve(0);
        }
      });
      req.end();
    });
  }

  onClosed() {
    if (this.isOpen) {
      this.isOpen = false;
      openCount--;
    }
    if (closing || suspended) return;
    this.reconnects++;
    const again = () => {
      if (closing || suspended) return;
      void this.connect().then((status) => {
        if (status !== 200 && !closing) {
          countError(`reconnect_status_${status}`);
          setTimeout(again, this.retryMs);
        }
      });
    };
    setTimeout(again, this.retryMs);
  }

  /** @param {string} chunk */
  onChunk(chunk) {
    const now = nowMicros();
    const text = this.buf === '' ? chunk : this.buf + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl === -1) break;
      let end = nl;
      if (end > start && text.charCodeAt(end - 1) === 13) end--;
      if (end === start) {
        this.dispatch(now);
      } else {
        const c = text.charCodeAt(start);
        const colon = text.indexOf(':', start);
        if (colon === start) {
          // comment
        } else {
          const field = colon === -1 || colon > end ? text.slice(start, end) : text.slice(start, colon);
          let valueStart = colon === -1 || colon > end ? end : colon + 1;
          if (valueStart < end && text.charCodeAt(valueStart) === 32) valueStart++;
          const value = text.slice(valueStart, end);
          if (c === 100 && field === 'data') this.data = this.data === null ? value : `${this.data}\n${value}`;
          else if (field === 'id') this.pendingId = value;
          else if (field === 'event') this.eventType = value;
          else if (field === 'retry') {
            const ms = Number(value);
            if (Number.isInteger(ms) && ms >= 0) this.retryMs = ms;
          }
        }
      }
      start = nl + 1;
    }
    this.buf = start === text.length ? '' : text.slice(start);
  }

  /** @param {number} now */
  dispatch(now) {
    if (this.pendingId !== null) {
      this.lastEventId = this.pendingId;
      this.pendingId = null;
    }
    const data = this.data;
    const type = this.eventType;
    this.data = null;
    this.eventType = '';
    if (data === null) return;
    if (type !== '' && type !== 'message') {
      if (type === 'heartbeat') this.heartbeats++;
      else if (type === 'reset') this.resets++;
      else countError(`event_${type}`);
      return;
    }
    if (!parseEvent(data, parsed)) {
      this.foreign++;
      return;
    }
    const seq = parsed.seq;
    if (seq === 0) {
      if (!this.warm) {
        this.warm = true;
        warmCount++;
      }
      return;
    }
    if (!measuring) {
      countError('event_before_measurement');
      return;
    }
    if (seq >= this.seen.length) {
      const grown = /** @type {Uint8Array} */ new Uint8Array(Math.max(seq + 1, this.seen.length * 2));
      grown.set(this.seen);
      this.seen = grown;
    }
    if (this.seen[seq] === 1) {
      this.dups++;
      return;
    }
    this.seen[seq] = 1;
    this.unique++;
    if (seq < this.maxSeq) this.ooo++;
    else this.maxSeq = seq;
    delivered++;
    histogram.record(now - parsed.t);
    if (firstRecv === 0) firstRecv = now;
    lastRecv = now;
  }

  close() {
    this.req?.destroy();
    this.req = null;
  }
}

/**
 * @param {ConnSpec[]} specs
 * @param {string | undefined} secret
 * @param {number} concurrency
 */
async function openAll(specs, secret, concurrency) {
  if (secret) {
    const key = new TextEncoder().encode(secret);
    const now = Math.floor(Date.now() / 1000);
    for (const spec of specs) {
      if (!spec.auth || tokens.has(spec.user)) continue;
      const token = await new SignJWT({ sub: spec.user, roles: [] })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuedAt(now)
        .setExpirationTime(now + 4 * 3600)
        .sign(key);
      tokens.set(spec.user, token);
    }
  }
  const fresh = specs.map((spec) => new Conn(spec));
  conns = conns.concat(fresh);
  return connectAll(fresh, concurrency);
}

/**
 * Connects streams with at most `concurrency` connects in flight, each refused one tried again up to `retries` times.
 * @param {Conn[]} fresh
 * @param {number} concurrency
 * @param {number} [retries]
 */
async function connectAll(fresh, concurrency, retries = 0) {
  /** @type {Record<string, number>} */
  const statuses = {};
  let next = 0;
  let opened = 0;
  let failed = 0;
  const lane = async () => {
    while (next < fresh.length) {
      const conn = fresh[next++];
      let status = await conn.connect();
      // A reconnecting EventSource tries again after its retry delay when refused.
      for (let attempt = 0; status !== 200 && attempt < retries && !closing; attempt++) {
        await new Promise((r) => setTimeout(r, conn.retryMs));
        status = await conn.connect();
      }
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === 200) opened++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  return { opened, failed, statuses };
}

let lastProgress = '';
const progressTimer = setInterval(() => {
  const msg = { type: 'progress', delivered, warm: warmCount, open: openCount };
  const key = `${delivered}/${warmCount}/${openCount}`;
  if (key !== lastProgress) {
    lastProgress = key;
    process.send?.(msg);
  }
}, 100);

/** @param {any} msg */
async function onMessage(msg) {
  switch (msg.cmd) {
    case 'open': {
      const result = await openAll(msg.conns, msg.secret, msg.concurrency ?? 100);
      process.send?.({ type: 'opened', ...result, errors: errorCounts });
      break;
    }
    case 'drop': {
      suspended = true;
      for (const conn of conns) conn.close();
      process.send?.({ type: 'dropped' });
      break;
    }
    case 'reopen': {
      suspended = false;
      if (!msg.resume) for (const conn of conns) conn.lastEventId = '';
      const result = await connectAll(conns, msg.concurrency ?? conns.length, msg.retries ?? 0);
      process.send?.({ type: 'reopened', ...result, errors: errorCounts });
      break;
    }
    case 'unwarmed': {
      /** @type {number[]} */
      const users = [...new Set(conns.filter((c) => !c.warm).map((c) => c.spec.userIndex))];
      process.send?.({ type: 'unwarmed', users });
      break;
    }
    case 'reset': {
      for (const conn of conns) conn.resetStats(msg.expectedPerConn ?? 64);
      histogram = new Histogram();
      delivered = 0;
      firstRecv = 0;
      lastRecv = 0;
      errorCounts = {};
      for (const conn of conns) {
        conn.reconnects = 0;
        conn.resets = 0;
        conn.heartbeats = 0;
        conn.foreign = 0;
      }
      measuring = true;
      process.send?.({ type: 'reset' });
      break;
    }
    case 'report': {
      /** @type {number[]} */
      const expected = msg.expected;
      let lost = 0;
      let dups = 0;
      let ooo = 0;
      let extra = 0;
      let reconnects = 0;
      let resets = 0;
      let heartbeats = 0;
      let foreign = 0;
      let connsWithLoss = 0;
      for (const conn of conns) {
        const want = expected[conn.spec.userIndex] ?? 0;
        // Only sequence numbers 1..want were published; anything above would be a bug upstream.
        let inRange = 0;
        for (let s = 1; s <= want && s < conn.seen.length; s++) inRange += conn.seen[s];
        extra += conn.unique - inRange;
        const missing = want - inRange;
        lost += missing;
        if (missing > 0) connsWithLoss++;
        dups += conn.dups;
        ooo += conn.ooo;
        reconnects += conn.reconnects;
        resets += conn.resets;
        heartbeats += conn.heartbeats;
        foreign += conn.foreign;
      }
      process.send?.({
        type: 'report',
        conns: conns.length,
        open: openCount,
        delivered,
        lost,
        connsWithLoss,
        dups,
        ooo,
        extra,
        reconnects,
        resets,
        heartbeats,
        foreign,
        firstRecv,
        lastRecv,
        histogram: histogram.toJSON(),
        errors: errorCounts,
      });
      break;
    }
    case 'close': {
      closing = true;
      measuring = false;
      for (const conn of conns) conn.close();
      clearInterval(progressTimer);
      process.send?.({ type: 'closed' }, () => process.exit(0));
      break;
    }
    default:
      break;
  }
}

process.on('message', (msg) => {
  onMessage(msg).catch((err) => {
    process.send?.({ type: 'error', message: String(err?.stack ?? err) });
  });
});
process.on('disconnect', () => process.exit(0));
