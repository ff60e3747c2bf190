import { Redis } from 'ioredis';
import { recordingLogger } from '../helpers/embedded-hub';
import { OwnRedis } from '../helpers/redis-server';
import { sleep } from '../helpers/sse-client';
import { until } from '../helpers/wait';
import { ChannelSubscriber } from '../../src/transport/redis/subscriber';

/**
 * A user's channel can be released (its last stream closed) while the SSUBSCRIBE that asked for
 * it is still on its way: Redis then holds a channel no stream wants, unless it is dropped again.
 */
describe('a shard channel released while its subscribe is on the way', () => {
  let redis: OwnRedis;
  let admin: Redis;
  let connection: Redis;

  beforeAll(async () => {
    redis = await OwnRedis.start();
    admin = new Redis(redis.url);
    connection = new Redis(redis.url);
  });

  afterAll(async () => {
    admin.disconnect();
    connection.disconnect();
    await redis.destroy();
  });

  const subscribers = async (channel: string): Promise<number> => {
    const reply = (await admin.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
    return Number(reply[1]);
  };

  it('is unsubscribed once Redis confirms it, and not left subscribed for good', async () => {
    await until(() => connection.status === 'ready', 5000, 'the connection');
    const subscriber = new ChannelSubscriber(connection, recordingLogger().logger);
    const channel = 'ssehubtest:{released-in-flight}';
    // Redis holds the SSUBSCRIBE back for a while, so the release comes while it is on the way.
    await admin.call('CLIENT', 'PAUSE', '300', 'ALL');
    const subscribed = subscriber.add(channel);
    await sleep(50);
    subscriber.remove(channel);
    await subscribed;
    await subscriber.flushed();
    await until(async () => (await subscribers(channel)) === 0, 5000, 'Redis to drop the released channel');
    expect(subscriber.has(channel)).toBe(false);
  });
});
