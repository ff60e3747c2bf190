import { execFileSync } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis } from 'ioredis';
import { OwnRedisCluster } from '../helpers/redis-cluster';
import { OwnRedisSentinel } from '../helpers/redis-sentinel';
import { waitUntil } from '../helpers/redis-server';

/** Pids whose command line mentions dir: the helpers put their config path in every process title. */
function processesUnder(dir: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', dir], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    // pgrep exits 1 when nothing matches.
    return [];
  }
}

/** Retries a command until it succeeds, for the moments clients need to find the new topology. */
async function eventually<T>(attempt: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * A shard-channel subscriber on a bare socket, so what the server pushes is seen as sent,
 * without a client library's handling in between.
 */
function rawSsubscribe(
  port: number,
  channel: string,
): { socket: Socket; received: () => string; closed: () => boolean } {
  let data = '';
  let closed = false;
  const socket = createConnection({ host: '127.0.0.1', port });
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    data += chunk;
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    closed = true;
  });
  socket.write(`*2\r\n$10\r\nSSUBSCRIBE\r\n$${Buffer.byteLength(channel)}\r\n${channel}\r\n`);
  return { socket, received: () => data, closed: () => closed };
}

describe('OwnRedisCluster', () => {
  let cluster: OwnRedisCluster;
  let client: Cluster;
  const extra: Redis[] = [];
  const sockets: Socket[] = [];
  // One hash tag: the value and the shard channel share a slot, so one migration moves both.
  const channel = '{topo}:events';
  const valueKey = '{topo}:value';
  const slot = calculateSlot(valueKey);

  beforeAll(async () => {
    cluster = await OwnRedisCluster.start();
    client = new Cluster(
      cluster.seeds.split(',').map((seed) => ({ host: '127.0.0.1', port: Number(seed.split(':')[1]) })),
    );
  }, 40_000);

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    for (const redis of extra) redis.disconnect();
    client?.disconnect();
    if (!cluster) return;
    expect(processesUnder(cluster.dir).length).toBeGreaterThan(0);
    await cluster.close();
    expect(processesUnder(cluster.dir)).toEqual([]);
  }, 20_000);

  test('reports three primaries with one replica each, covering every slot', async () => {
    const nodes = await cluster.nodes();
    const primaries = nodes.filter((n) => n.role === 'primary');
    const replicas = nodes.filter((n) => n.role === 'replica');
    expect(primaries).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    for (const replica of replicas) expect(primaries.map((p) => p.id)).toContain(replica.primaryId);
    const covered = primaries.flatMap((p) => p.slots).reduce((sum, [from, to]) => sum + to - from + 1, 0);
    expect(covered).toBe(16384);
  });

  test('SET/GET through Cluster reaches keys on every primary', async () => {
    const byPrimary = new Map<number, string>();
    for (let i = 0; byPrimary.size < 3; i++) {
      const key = `key-${i}`;
      const port = await cluster.primaryForKey(key);
      if (!byPrimary.has(port)) byPrimary.set(port, key);
    }
    for (const key of byPrimary.values()) await client.set(key, `value of ${key}`);
    for (const [port, key] of byPrimary) {
      expect(await client.get(key)).toBe(`value of ${key}`);
      // Read from the node itself: the key really lives on the primary the helper named.
      const direct = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
      extra.push(direct);
      expect(await direct.call('GET', [key])).toBe(`value of ${key}`);
    }
  });

  test('SPUBLISH through Cluster reaches an SSUBSCRIBE on the owning primary', async () => {
    const owner = await cluster.primaryForKey(channel);
    const subscriber = new Redis({ host: '127.0.0.1', port: owner });
    extra.push(subscriber);
    const messages: string[] = [];
    subscriber.on('smessage', (_channel: string, message: string) => messages.push(message));
    await subscriber.ssubscribe(channel);
    await client.spublish(channel, 'hello');
    await waitUntil(async () => (messages.includes('hello') ? undefined : 'no message'), 5000, 'no smessage');
  });

  test('migrateSlot moves a slot with its keys while writes go on, and Cluster follows', async () => {
    await client.set(valueKey, 'before migration');
    const source = await cluster.primaryForSlot(slot);
    const target = (await cluster.nodes()).find((n) => n.role === 'primary' && n.port !== source)?.port ?? 0;

    const subscriber = new Redis({ host: '127.0.0.1', port: source });
    extra.push(subscriber);
    const events: string[] = [];
    subscriber.on('smessage', (_c: string, message: string) => events.push(`smessage ${message}`));
    subscriber.on('moved', () => events.push('moved'));
    subscriber.on('close', () => events.push('close'));
    await subscriber.ssubscribe(channel);
    const clusterSubscriber = new Cluster(
      cluster.seeds.split(',').map((seed) => ({ host: '127.0.0.1', port: Number(seed.split(':')[1]) })),
      { shardedSubscribers: true },
    );
    const clusterEvents: string[] = [];
    clusterSubscriber.on('smessage', (_c: string, message: string) => clusterEvents.push(message));
    await clusterSubscriber.ssubscribe(channel);
    const raw = rawSsubscribe(source, channel);
    sockets.push(raw.socket);
    await waitUntil(async () => (raw.received().includes('ssubscribe') ? undefined : 'no reply'), 2000, 'raw');

    // Writes to the migrating slot, so keys land on both sides and clients meet ASK redirections.
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await client.set(`{topo}:load:${written}`, String(written));
        written++;
      }
    })();
    await cluster.migrateSlot(slot, target);
    writing = false;
    await writer;

    expect(await cluster.primaryForSlot(slot)).toBe(target);
    expect(await client.get(valueKey)).toBe('before migration');
    for (let i = 0; i < written; i++) expect(await client.get(`{topo}:load:${i}`)).toBe(String(i));
    // Redis 7 drops the old owner's shard subscriptions with an unsolicited sunsubscribe push and
    // keeps the connection: a subscriber that does not resubscribe elsewhere goes silent.
    await waitUntil(
      async () => (raw.received().includes('sunsubscribe') ? undefined : 'no sunsubscribe push'),
      3000,
      'the old owner did not drop the shard subscription',
    );
    expect(raw.closed()).toBe(false);
    expect(events).toContain('moved');
    await client.spublish(channel, 'after migration');
    // ioredis's Cluster takes the push as a redirection and subscribes again on the new owner.
    await waitUntil(
      async () => (clusterEvents.includes('after migration') ? undefined : 'not received'),
      5000,
      'the Cluster subscriber did not follow the slot',
    );
    clusterSubscriber.disconnect();
    expect(events).not.toContain('smessage after migration');
  }, 30_000);

  test('reshard moves slots between primaries with redis-cli', async () => {
    const [from, to] = (await cluster.nodes()).filter((n) => n.role === 'primary');
    if (!from || !to) throw new Error('expected primaries');
    const count = (n: { slots: Array<[number, number]> }) => n.slots.reduce((sum, [a, b]) => sum + b - a + 1, 0);
    await cluster.reshard(from.port, to.port, 10);
    const after = await cluster.nodes();
    expect(count(after.find((n) => n.port === from.port) ?? { slots: [] })).toBe(count(from) - 10);
    expect(count(after.find((n) => n.port === to.port) ?? { slots: [] })).toBe(count(to) + 10);
    expect(await client.get(valueKey)).toBe('before migration');
  }, 30_000);

  test('a killed primary fails over to its replica and writes to its slots work again', async () => {
    const primary = await cluster.primaryForSlot(slot);
    const nodes = await cluster.nodes();
    const primaryId = nodes.find((n) => n.port === primary)?.id;
    const replica = nodes.find((n) => n.role === 'replica' && n.primaryId === primaryId);
    expect(replica).toBeDefined();

    const onPrimary = new Redis({ host: '127.0.0.1', port: primary, retryStrategy: () => null });
    const onReplica = new Redis({ host: '127.0.0.1', port: replica?.port ?? 0, retryStrategy: () => null });
    extra.push(onPrimary, onReplica);
    const primaryEvents: string[] = [];
    const replicaEvents: string[] = [];
    onPrimary.on('close', () => primaryEvents.push('close'));
    onPrimary.on('error', (err: Error) => primaryEvents.push(`error ${err.message}`));
    onReplica.on('smessage', (_c: string, message: string) => replicaEvents.push(`smessage ${message}`));
    onReplica.on('moved', () => replicaEvents.push('moved'));
    onReplica.on('close', () => replicaEvents.push('close'));
    await onPrimary.ssubscribe(channel);
    // A replica accepts SSUBSCRIBE: the shard's primary forwards its shard messages to its replicas.
    await onReplica.ssubscribe(channel);
    await client.spublish(channel, 'before failover');
    await waitUntil(
      async () => (replicaEvents.length > 0 ? undefined : 'no message'),
      3000,
      'the replica subscriber got nothing',
    );

    await cluster.kill(primary);
    const promoted = await cluster.waitForFailover(primary);
    expect(promoted).toBe(replica?.port);

    await eventually(() => client.set(valueKey, 'after failover'), 10_000);
    expect(await client.get(valueKey)).toBe('after failover');
    expect(primaryEvents).toContain('close');
    await client.spublish(channel, 'after failover');
    await waitUntil(
      async () => (replicaEvents.length > 1 ? undefined : 'no message'),
      3000,
      'the promoted replica subscriber got nothing',
    );
    // A shard subscription on a replica survives its promotion without any push or reconnect.
    expect(replicaEvents).toEqual(['smessage before failover', 'smessage after failover']);
  }, 30_000);
});

describe('OwnRedisSentinel', () => {
  let setup: OwnRedisSentinel;
  let client: Redis;

  beforeAll(async () => {
    setup = await OwnRedisSentinel.start();
    client = new Redis({ sentinels: setup.sentinelAddresses, name: setup.name });
    // While the old primary is gone the client reports ECONNREFUSED and "All sentinels are unreachable"
    // (none names a reachable primary yet) and retries; unheard, those errors only clutter the output.
    client.on('error', () => undefined);
  }, 30_000);

  afterAll(async () => {
    client?.disconnect();
    if (!setup) return;
    expect(processesUnder(setup.dir).length).toBeGreaterThan(0);
    await setup.close();
    expect(processesUnder(setup.dir)).toEqual([]);
  }, 20_000);

  test('sentinels name the primary and ioredis writes to it', async () => {
    expect(setup.sentinels.split(',')).toHaveLength(3);
    const primary = await setup.primaryPort();
    expect(setup.serverPorts).toContain(primary);
    await client.set('sentinel-key', 'one');
    const direct = new Redis({ host: '127.0.0.1', port: primary });
    try {
      expect(await direct.call('GET', ['sentinel-key'])).toBe('one');
    } finally {
      direct.disconnect();
    }
  });

  test('failover promotes the replica and ioredis writes to the new primary', async () => {
    const old = await setup.primaryPort();
    const promoted = await setup.failover();
    expect(promoted).not.toBe(old);
    expect(setup.serverPorts).toContain(promoted);
    await eventually(() => client.set('sentinel-key', 'two'), 10_000);
    expect(await client.get('sentinel-key')).toBe('two');
  }, 30_000);
});
