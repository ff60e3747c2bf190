#!/usr/bin/env node
// @ts-check
/**
 * Does the publish load spread over a Redis Cluster's shards? The same stream of history-backed
 * publishes (FCALL ssehub_publish, 2 keys per user, ~150-byte event, 1,000 users) goes once to a
 * single Redis and once to a cluster of three primaries (no replicas), each node a private
 * redis-server. Per node it prints the events it ran, its CPU (used_cpu_user + used_cpu_sys) per
 * event it ran and per event published cluster-wide, and its share of the cluster's CPU.
 *
 *   node bench/redis-cluster-spread.mjs [--quick] [--events n]
 *
 * One subscriber per primary holds every user channel of that primary's slots, as the hub's
 * replicas do together. Events go 200 at a time through ioredis with auto-pipelining (Cluster
 * routes each FCALL to the primary of its user's slot and pipelines per node).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { Cluster, Redis } from 'ioredis';
import { freePort, sleep, spawnChild, stopChild, waitForPort } from './lib/procs.mjs';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const library = require(join(REPO, 'dist', 'transport', 'redis', 'library.js'));
const { keySlot } = require(join(REPO, 'dist', 'transport', 'redis', 'slot.js'));

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const eventsArg = argv.indexOf('--events');
const EVENTS = eventsArg >= 0 ? Number(argv[eventsArg + 1]) : quick ? 20_000 : 100_000;
const USERS = 1000;
const PREFIX = 'ssehub';
const SETTINGS = new Map([[PREFIX, library.DEFAULT_HISTORY_SETTINGS]]);
const EVENT = JSON.stringify({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'x'.repeat(96) });
const users = Array.from({ length: USERS }, (_, i) => `user-${i}`);

/** @param {boolean} cluster */
async function startNode(cluster) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'bench-spread-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  if (cluster) args.push('--cluster-enabled', 'yes', '--cluster-port', String(await freePort()));
  const child = spawnChild('redis-server', [...args, '--loglevel', 'warning'], { stdio: 'ignore' });
  await waitForPort(port, 5000);
  return { port, child, dir };
}

/** @param {Redis} node */
async function cpuSeconds(node) {
  const info = await node.info('cpu');
  const field = (/** @type {string} */ name) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? 0);
  return field('used_cpu_user') + field('used_cpu_sys');
}

/** @param {Redis} node */
async function fcalls(node) {
  const line = (await node.info('commandstats')).split('\n').find((l) => l.startsWith('cmdstat_fcall:'));
  return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
}

/**
 * 200 calls at a time; the clients pipeline what is issued in one tick (per node, on a cluster).
 * @param {Redis | Cluster} client
 */
async function publishAll(client) {
  for (let sent = 0; sent < EVENTS; ) {
    const calls = [];
    for (let i = 0; i < 200 && sent < EVENTS; i++, sent++) {
      const { meta, history } = library.userKeys(PREFIX, users[sent % USERS]);
      calls.push(client.call('FCALL', 'ssehub_publish', '2', meta, history, 'agui', EVENT));
    }
    await Promise.all(calls);
  }
}

/**
 * @param {Redis[]} nodes one connection per primary
 * @param {Redis | Cluster} client
 * @param {(channel: string) => number} ownerOf index of the primary serving a channel
 */
async function measure(nodes, client, ownerOf) {
  const subscribers = nodes.map((node) => new Redis(node.options.port ?? 0, { host: '127.0.0.1' }));
  await Promise.all(
    subscribers.map(async (subscriber, i) => {
      const channels = users.map((user) => library.userKeys(PREFIX, user).channel).filter((c) => ownerOf(c) === i);
      const bySlot = new Map();
      for (const channel of channels) bySlot.set(keySlot(channel), [...(bySlot.get(keySlot(channel)) ?? []), channel]);
      for (const batch of bySlot.values()) await subscriber.ssubscribe(...batch);
    }),
  );
  // One unmeasured pass creates every user's keys.
  await publishAll(client);
  const cpuBefore = await Promise.all(nodes.map(cpuSeconds));
  const callsBefore = await Promise.all(nodes.map(fcalls));
  await publishAll(client);
  await sleep(200);
  const cpu = (await Promise.all(nodes.map(cpuSeconds))).map((after, i) => after - (cpuBefore[i] ?? 0));
  const calls = (await Promise.all(nodes.map(fcalls))).map((after, i) => after - (callsBefore[i] ?? 0));
  for (const subscriber of subscribers) subscriber.disconnect();
  return nodes.map((_, i) => ({ events: calls[i] ?? 0, cpu: cpu[i] ?? 0 }));
}

async function main() {
  // A single Redis, as the reference.
  const single = await startNode(false);
  const singleNode = new Redis(single.port, { host: '127.0.0.1', enableAutoPipelining: true });
  await singleNode.call('FUNCTION', 'LOAD', 'REPLACE', library.redisLibrary(SETTINGS));
  const [alone] = await measure([singleNode], singleNode, () => 0);
  singleNode.disconnect();
  await stopChild(single.child);
  rmSync(single.dir, { recursive: true, force: true });

  // Three primaries.
  const started = await Promise.all([0, 1, 2].map(() => startNode(true)));
  execFileSync('redis-cli', ['--cluster', 'create', ...started.map((n) => `127.0.0.1:${n.port}`), '--cluster-yes'], {
    stdio: 'ignore',
  });
  const nodes = started.map((n) => new Redis(n.port, { host: '127.0.0.1' }));
  for (;;) {
    const states = await Promise.all(nodes.map((node) => node.cluster('INFO')));
    if (states.every((info) => String(info).includes('cluster_state:ok'))) break;
    await sleep(100);
  }
  for (const node of nodes) await node.call('FUNCTION', 'LOAD', 'REPLACE', library.redisLibrary(SETTINGS));
  const cluster = new Cluster(
    started.map((n) => ({ host: '127.0.0.1', port: n.port })),
    { enableAutoPipelining: true },
  );
  await cluster.ping();
  const ports = started.map((n) => n.port);
  const ownerOf = (/** @type {string} */ channel) =>
    ports.indexOf(Number(String(cluster.slots[keySlot(channel)]?.[0] ?? '').split(':')[1]));
  const shards = await measure(nodes, cluster, ownerOf);
  cluster.disconnect();
  for (const node of nodes) node.disconnect();
  for (const n of started) {
    await stopChild(n.child);
    rmSync(n.dir, { recursive: true, force: true });
  }

  const us = (/** @type {number} */ seconds, /** @type {number} */ events) => ((seconds * 1e6) / events).toFixed(1);
  const total = shards.reduce((sum, s) => sum + s.cpu, 0);
  console.log(`Redis CPU per history-backed publish, ${EVENTS.toLocaleString('en-US')} events to ${USERS} users`);
  console.log('node          events run   CPU µs/event run   CPU µs/event published   share of CPU');
  console.log(
    `single        ${String(alone?.events).padStart(10)}   ${us(alone?.cpu ?? 0, alone?.events ?? 1).padStart(16)}   ${us(alone?.cpu ?? 0, EVENTS).padStart(22)}   100%`,
  );
  shards.forEach((s, i) => {
    console.log(
      `shard ${i + 1}       ${String(s.events).padStart(10)}   ${us(s.cpu, s.events || 1).padStart(16)}   ${us(s.cpu, EVENTS).padStart(22)}   ${((s.cpu / total) * 100).toFixed(0).padStart(3)}%`,
    );
  });
  const busiest = Math.max(...shards.map((s) => s.cpu));
  console.log(
    `busiest shard: ${(busiest / (alone?.cpu ?? 1)).toFixed(2)}x the single Redis's CPU for the same events (1/3 = 0.33x is an even spread)`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
