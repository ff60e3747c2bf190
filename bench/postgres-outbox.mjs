#!/usr/bin/env node
// Publish-to-delivery latency and throughput of the Postgres outbox transport.
//
//   npm run build && node bench/postgres-outbox.mjs [--replicas 2] [--connections 200] [--rate 500]
//        [--seconds 10] [--burst 20000] [--publishers 8] [--database postgres://postgres@127.0.0.1:5432/test]
//
// Starts real hub processes (dist/main.js) on a fresh schema, opens SSE streams spread over the
// replicas (one per user), and runs two phases:
//   1. paced: `--rate` events/s for `--seconds`, each published with one autocommitted
//      `SELECT <schema>.publish(...)`; latency = time the stream read the frame minus the time
//      just before the publish was sent (same clock), so it includes the commit, NOTIFY, the
//      reader's query and the SSE write;
//   2. burst: `--burst` events as fast as `--publishers` connections can commit them;
//      throughput = events delivered per second, from the first publish to the last delivery.
// Every event carries a per-user sequence number: lost, duplicated and out-of-order counts are
// reported too. Prints one JSON object per phase.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { SignJWT } from 'jose';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECRET = 'bench-secret-0123456789abcdef0123456789';

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index === -1 ? fallback : process.argv[index + 1];
}

const replicas = Number(option('replicas', 2));
const connections = Number(option('connections', 200));
const rate = Number(option('rate', 500));
const seconds = Number(option('seconds', 10));
const burst = Number(option('burst', 20000));
const publishers = Number(option('publishers', 8));
const database = option('database', process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test');
const schema = `bench_${randomBytes(5).toString('hex')}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function startHub() {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'main.js')], {
    env: {
      PATH: process.env.PATH,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      SSEHUB_JWT_SECRET: SECRET,
      SSEHUB_TRANSPORT: 'postgres',
      DATABASE_URL: database,
      SSEHUB_PG_SCHEMA: schema,
      SSEHUB_MAX_CONNECTIONS_PER_USER: '1000',
      SSEHUB_BUFFER_MAX_EVENTS: '100000',
      SSEHUB_BUFFER_MAX_BYTES: String(256 * 1024 * 1024),
      // No client is cut while it catches up: the replica-wide budget is raised with the per-stream bound.
      SSEHUB_OUTBOUND_MAX_BYTES: String(16 * 1024 * 1024 * 1024),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      output += chunk;
      const port = /"port":(\d+)/.exec(output)?.[1];
      if (port && /listening for outbox rows/.test(output)) resolve({ child, port: Number(port) });
    });
    child.once('exit', (code) => reject(new Error(`hub exited with ${code}: ${output}`)));
  });
}

/** One SSE stream per user; records receive time, sequence and send time of each event. */
function openStream(port, user, token, onEvent) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port,
        path: '/api/v1/stream/agui',
        headers: { authorization: `Bearer ${token}` },
        agent: false,
      },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          buffer += chunk;
          for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = /(?:^|\n)data:(.*)/.exec(frame)?.[1];
            if (data?.startsWith('{"seq"')) onEvent(user, JSON.parse(data), performance.timeOrigin + performance.now());
          }
        });
        resolve(req);
      },
    );
    req.on('error', reject);
  });
}

function percentile(sorted, p) {
  return sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const admin = new pg.Client({ connectionString: database });
  await admin.connect();
  const hubs = [];
  for (let i = 0; i < replicas; i++) hubs.push(await startHub());
  const users = Array.from({ length: connections }, (_, i) => `u${i}`);
  const expected = new Map(users.map((u) => [u, 1]));
  const stats = { delivered: 0, lost: 0, duplicated: 0, outOfOrder: 0, latencies: [], lastAt: 0 };
  const onEvent = (user, event, at) => {
    const want = expected.get(user);
    if (event.seq < want) stats.duplicated++;
    else {
      if (event.seq > want) stats.outOfOrder++;
      expected.set(user, event.seq + 1);
    }
    stats.delivered++;
    stats.latencies.push(at - event.sentAt);
    stats.lastAt = at;
  };
  const streams = [];
  for (let i = 0; i < users.length; i++) {
    const token = await new SignJWT({ sub: users[i] })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(SECRET));
    streams.push(await openStream(hubs[i % hubs.length].port, users[i], token, onEvent));
  }
  await sleep(500);

  const pool = new pg.Pool({ connectionString: database, max: publishers });
  const sequence = new Map(users.map((u) => [u, 0]));
  const sql = `SELECT ${schema}.publish('agui', $1, $2)`;
  const pad = 'x'.repeat(120);
  const publishOne = (i) => {
    const user = users[i % users.length];
    const seq = sequence.get(user) + 1;
    sequence.set(user, seq);
    const event = JSON.stringify({
      seq,
      sentAt: performance.timeOrigin + performance.now(),
      type: 'TEXT_MESSAGE_CONTENT',
      delta: pad,
    });
    return pool.query(sql, [user, event]);
  };
  const reset = () => {
    stats.delivered = 0;
    stats.lost = 0;
    stats.duplicated = 0;
    stats.outOfOrder = 0;
    stats.latencies = [];
  };
  const waitFor = async (count, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    while (stats.delivered < count && Date.now() < deadline) await sleep(20);
  };
  const report = (phase, published, startedAt) => {
    const sorted = stats.latencies.sort((a, b) => a - b);
    const fixed = (v) => (v === null ? null : Number(v.toFixed(2)));
    console.log(
      JSON.stringify({
        phase,
        replicas,
        streams: connections,
        published,
        delivered: stats.delivered,
        lost: published - stats.delivered + stats.duplicated,
        duplicated: stats.duplicated,
        outOfOrder: stats.outOfOrder,
        deliveriesPerSecond: Math.round(stats.delivered / ((stats.lastAt - startedAt) / 1000)),
        latencyMs: {
          p50: fixed(percentile(sorted, 50)),
          p90: fixed(percentile(sorted, 90)),
          p99: fixed(percentile(sorted, 99)),
          max: fixed(sorted.at(-1) ?? null),
        },
      }),
    );
  };

  // Phase 1: paced.
  reset();
  const total = rate * seconds;
  let startedAt = performance.timeOrigin + performance.now();
  const inflight = [];
  for (let i = 0; i < total; i++) {
    const due = startedAt + (i * 1000) / rate;
    const wait = due - (performance.timeOrigin + performance.now());
    if (wait > 1) await sleep(wait);
    inflight.push(publishOne(i));
  }
  await Promise.all(inflight);
  await waitFor(total, 30_000);
  report('paced', total, startedAt);

  // Phase 2: burst.
  reset();
  startedAt = performance.timeOrigin + performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: publishers }, async () => {
      while (next < burst) await publishOne(total + next++);
    }),
  );
  await waitFor(burst, 120_000);
  report('burst', burst, startedAt);

  for (const stream of streams) stream.destroy();
  for (const hub of hubs) hub.child.kill('SIGTERM');
  await pool.end();
  await sleep(500);
  await admin.query(`DROP SCHEMA ${schema} CASCADE`);
  await admin.end();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
