// @ts-check
/**
 * Scenario sizes. Full sizes are the issue's; --quick is small enough for CI (checks that the
 * harness and every target still work, asserts nothing about timing); --scale shrinks the full
 * sizes for development.
 */

/** @typedef {import('../load/coordinator.mjs').Scenario} Scenario */

/** @type {Record<string, Scenario>} */
export const FULL = {
  B1: {
    id: 'B1',
    title: 'throughput: 1,000 users x 1 connection, 100,000 events as fast as possible',
    users: 1000,
    connsPerUser: 1,
    events: 100_000,
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B2: {
    id: 'B2',
    title: 'burst: 1,000 users x 1 connection, 300,000 events as fast as possible',
    users: 1000,
    connsPerUser: 1,
    events: 300_000,
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B3: {
    id: 'B3',
    title: 'fan-out: 100 users x 100 connections, 2,000 events as fast as possible',
    users: 100,
    connsPerUser: 100,
    events: 2000,
    workers: 4,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B4: {
    id: 'B4',
    title: 'latency: 1,000 users x 1 connection, 500 events/s for 10 s',
    users: 1000,
    connsPerUser: 1,
    events: 0,
    rate: 500,
    durationS: 10,
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B5: {
    id: 'B5',
    title: 'memory: 10,000 idle connections (10,000 users x 1)',
    users: 10_000,
    connsPerUser: 1,
    events: 0,
    idle: true,
    workers: 4,
    idleTimeoutMs: 5000,
    // Give the servers' allocators and garbage collectors a few idle seconds before reading RSS.
    settleMs: 5000,
  },
  B6: {
    id: 'B6',
    title: 'idle CPU: 10,000 idle connections (10,000 users x 1) for 60 s, server CPU per heartbeat',
    users: 10_000,
    connsPerUser: 1,
    events: 0,
    idle: true,
    idleCpuS: 60,
    workers: 4,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B7: {
    id: 'B7',
    title:
      'batch webhook: 1,000 users x 1 connection, 100,000 events as fast as possible, 200 per POST /api/v1/webhook/batch',
    users: 1000,
    connsPerUser: 1,
    events: 100_000,
    publishVia: 'batch',
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B1L: {
    id: 'B1L',
    title: 'throughput, plain PUBLISH: as B1, published as PUBLISH ssehub:agui {"user_id":..,"event":..} (live only)',
    users: 1000,
    connsPerUser: 1,
    events: 100_000,
    publishVia: 'plain',
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B2L: {
    id: 'B2L',
    title:
      'burst, plain PUBLISH: 1,000 users x 1 connection, 300,000 PUBLISHes at 100,000/s (live only; the same rate for every target)',
    users: 1000,
    connsPerUser: 1,
    events: 0,
    // A fixed rate every target's publisher reaches, so that losses compare: as fast as possible,
    // the publisher goes as fast as the hub under test leaves it CPU to.
    rate: 100_000,
    durationS: 3,
    publishVia: 'plain',
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B4W: {
    id: 'B4W',
    title: 'webhook at rate: 1,000 users x 1 connection, 500 events/s for 10 s, one POST /api/v1/webhook/agui each',
    users: 1000,
    connsPerUser: 1,
    events: 0,
    rate: 500,
    durationS: 10,
    publishVia: 'webhook',
    workers: 2,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B8: {
    id: 'B8',
    title:
      'stream open: 10,000 streams opened (first-seen tokens), closed by their clients, opened again (tokens seen)',
    users: 10_000,
    connsPerUser: 1,
    events: 0,
    idle: true,
    reopen: true,
    workers: 4,
    idleTimeoutMs: 5000,
    settleMs: 1000,
  },
  B9: {
    id: 'B9',
    title:
      'reconnect storm: 10,000 streams drop, 2 events per user are published, all 10,000 reconnect at once with Last-Event-ID',
    users: 10_000,
    connsPerUser: 1,
    events: 0,
    stormEventsPerUser: 2,
    workers: 4,
    idleTimeoutMs: 10_000,
    settleMs: 1000,
  },
};

/** @type {Record<string, Scenario>} */
export const QUICK = {
  B1: { ...FULL.B1, users: 50, events: 2000, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B2: { ...FULL.B2, users: 50, events: 5000, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B3: { ...FULL.B3, users: 5, connsPerUser: 10, events: 200, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B4: { ...FULL.B4, users: 50, rate: 200, durationS: 1, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B5: { ...FULL.B5, users: 300, workers: 1, idleTimeoutMs: 2000, settleMs: 300 },
  B6: { ...FULL.B6, users: 300, idleCpuS: 1, workers: 1, idleTimeoutMs: 2000, settleMs: 300 },
  B7: { ...FULL.B7, users: 50, events: 2000, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B1L: { ...FULL.B1L, users: 50, events: 2000, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B2L: { ...FULL.B2L, users: 50, rate: 5000, durationS: 1, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B4W: { ...FULL.B4W, users: 50, rate: 200, durationS: 1, workers: 1, idleTimeoutMs: 2000, settleMs: 200 },
  B8: { ...FULL.B8, users: 300, workers: 1, idleTimeoutMs: 2000, settleMs: 300 },
  B9: { ...FULL.B9, users: 300, workers: 1, idleTimeoutMs: 3000, settleMs: 300 },
};

/**
 * The full scenarios shrunk by `factor` (users, events, duration), for development runs.
 * @param {number} factor
 * @returns {Record<string, Scenario>}
 */
export function scaled(factor) {
  /** @type {Record<string, Scenario>} */
  const out = {};
  for (const [id, s] of Object.entries(FULL)) {
    out[id] = {
      ...s,
      users: Math.max(2, Math.round(s.users * (id === 'B3' ? Math.sqrt(factor) : factor))),
      connsPerUser: id === 'B3' ? Math.max(1, Math.round(s.connsPerUser * Math.sqrt(factor))) : s.connsPerUser,
      events: Math.round(s.events * factor),
      durationS: s.durationS ? Math.max(1, s.durationS * Math.min(1, factor * 4)) : undefined,
      // Heartbeats are 15 s apart by default: a much shorter idle phase would measure none.
      idleCpuS: s.idleCpuS ? Math.max(20, Math.round(s.idleCpuS * Math.min(1, factor * 4))) : undefined,
      workers: Math.max(1, Math.round(s.workers * Math.min(1, factor * 4))),
    };
  }
  return out;
}
