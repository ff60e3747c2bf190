import { userKeys } from '../../src/transport/redis/library';
import { keySlot } from '../../src/transport/redis/slot';
import { metricValue, startReadyHub, uniquePrefix, type HubProcess } from '../helpers/hub-process';
import { OwnRedisCluster } from '../helpers/redis-cluster';
import { redisCall } from '../helpers/redis-server';
import { openStream, type SseStream } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { until, uid } from '../helpers/wait';

/**
 * Three replicas on a Redis Cluster of three primaries with a replica each: users' keys and
 * channels live on the primary of their slot, and each replica subscribes a user's channel on
 * that primary only.
 */
describe('three replicas on a Redis Cluster', () => {
  const prefix = uniquePrefix();
  let cluster: OwnRedisCluster;
  let hubs: HubProcess[];
  const streams: SseStream[] = [];
  let service: string;

  const open = async (hub: HubProcess, user: string, lastEventId?: string): Promise<SseStream> => {
    const stream = await openStream(hub.url, '/api/v1/stream/agui', {
      token: await mintToken(user),
      headers: lastEventId === undefined ? {} : { 'last-event-id': lastEventId },
    });
    streams.push(stream);
    await stream.waitForPosition(5000, 'the stream position');
    return stream;
  };
  const publish = async (hub: HubProcess, user: string, n: number): Promise<string> => {
    const res = await fetch(`${hub.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'SHARDED', n }),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as { id: string }).id;
  };

  /** Users until every primary serves at least `each` of them. */
  const usersOnEveryShard = async (each: number): Promise<Map<string, number>> => {
    const owners = new Map<string, number>();
    const perPrimary = new Map<number, number>();
    for (let i = 0; [...perPrimary.values()].filter((n) => n >= each).length < 3; i++) {
      const user = uid(`shard-user-${i}`);
      const port = await cluster.primaryForKey(userKeys(prefix, user).meta);
      owners.set(user, port);
      perPrimary.set(port, (perPrimary.get(port) ?? 0) + 1);
    }
    return owners;
  };

  beforeAll(async () => {
    cluster = await OwnRedisCluster.start();
    const env = { SSEHUB_REDIS_CLUSTER_NODES: cluster.seeds, SSEHUB_CHANNEL_PREFIX: prefix };
    hubs = await Promise.all([startReadyHub(env), startReadyHub(env), startReadyHub(env)]);
    service = await mintToken('cluster-backend', { roles: ['service'] });
  }, 60_000);

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.close();
  });

  afterAll(async () => {
    await Promise.all((hubs ?? []).map((hub) => hub.stop()));
    await cluster?.close();
  });

  it("keeps a user's keys and channel in one slot, whatever the user id", () => {
    for (const user of ['plain', 'with{braces}', '{}', '}{', '%7B', 'ünï €', '{a}{b}']) {
      const { meta, history, channel } = userKeys(prefix, user);
      expect(new Set([keySlot(meta), keySlot(history), keySlot(channel)]).size).toBe(1);
    }
    // Distinct users, distinct tags: braces and percent signs cannot make two users share keys.
    const metas = ['a{b}', 'a%7Bb%7D', 'a{b%7D', 'a%7Bb}'].map((user) => userKeys(prefix, user).meta);
    expect(new Set(metas).size).toBe(4);
  });

  it('delivers every event exactly once, in order, to every stream of its user, across shards and replicas', async () => {
    const owners = await usersOnEveryShard(2);
    const users = [...owners.keys()];
    const streamsByUser = new Map<string, SseStream[]>();
    for (const [i, user] of users.entries()) {
      const here = [await open(hubs[i % 3] as HubProcess, user), await open(hubs[(i + 1) % 3] as HubProcess, user)];
      streamsByUser.set(user, here);
    }
    const sent = new Map<string, string[]>(users.map((user) => [user, []]));
    for (let n = 0; n < users.length * 5; n++) {
      const user = users[n % users.length] as string;
      sent.get(user)?.push(await publish(hubs[n % 3] as HubProcess, user, n));
    }
    for (const user of users) {
      const expected = sent.get(user) as string[];
      for (const stream of streamsByUser.get(user) as SseStream[]) {
        const events = await stream.waitForEvents(expected.length, 10_000);
        // Isolation: only this user's events, each once.
        expect(events.map((e) => e.id)).toEqual(expected);
      }
    }
    // Each replica received one message per event of the users it holds, nothing else.
    const received = await Promise.all(
      hubs.map((hub) => metricValue(hub, 'ssehub_redis_messages_total{channel="user"}')),
    );
    const expectedPerHub = hubs.map((_, h) =>
      users.reduce(
        (sum, user, i) => sum + (i % 3 === h || (i + 1) % 3 === h ? (sent.get(user) as string[]).length : 0),
        0,
      ),
    );
    expect(received).toEqual(expectedPerHub);
  });

  it('resumes a stream on another replica from its Last-Event-ID', async () => {
    const user = uid('cluster-resumer');
    const [a, b] = hubs as [HubProcess, HubProcess];
    const first = await open(a, user);
    const ids = [await publish(a, user, 1), await publish(b, user, 2)];
    await first.waitForEvents(2, 5000);
    first.close();
    ids.push(await publish(a, user, 3), await publish(b, user, 4));
    const resumed = await open(b, user, ids[1]);
    ids.push(await publish(a, user, 5));
    expect((await resumed.waitForEvents(3, 5000)).map((e) => e.id)).toEqual(ids.slice(2));
  });

  it('loads the function library on a primary added later, and serves users whose slot moved there', async () => {
    const user = uid('newcomer');
    const [a, b] = hubs as [HubProcess, HubProcess];
    const stream = await open(b, user);
    const before = await publish(a, user, 1);
    const added = await cluster.addPrimary();
    await until(
      async () =>
        String(await redisCall(added, ['FUNCTION', 'LIST', 'LIBRARYNAME', 'ssehub'])).includes('ssehub_publish'),
      10_000,
      'the replicas to load the library on the new primary',
    );
    await cluster.migrateSlot(keySlot(userKeys(prefix, user).meta), added);
    // A slot moved from a healthy primary keeps the user's epoch: no reset, the stream goes on.
    const after = [await publish(a, user, 2), await publish(b, user, 3)];
    const events = await stream.waitForEvents(3, 10_000);
    expect(events.map((e) => e.id)).toEqual([before, ...after]);
    expect(events.map((e) => e.event)).toEqual([undefined, undefined, undefined]);
    expect(after.every((id) => id.split(':')[0] === before.split(':')[0])).toBe(true);
  }, 60_000);
});
