import type { Redis } from 'ioredis';
import { userKeys } from '../../src/transport/redis/library';
import { admitUserRecords } from '../../src/wire/user-records';
import type { InboundEvent, RejectedMessage } from '../../src/transport/transport';

/**
 * What a test reads of one user's state in Redis (library v6): the meta hash and the history
 * stream under the user's hash tag, and the user's sharded channel. Tests read it through these
 * helpers so that the key layout is spelled out once, by the library's own `userKeys`.
 */

/** The user's meta fields: e (epoch), w (writer run id), n (last id), t, f, x; absent fields missing. */
export async function userMeta(redis: Redis, prefix: string, userId: string): Promise<Record<string, string>> {
  return redis.hgetall(userKeys(prefix, userId).meta);
}

/** The user's epoch as the meta holds it, or undefined when the user has no meta (yet, or any more). */
export async function userEpoch(redis: Redis, prefix: string, userId: string): Promise<string | undefined> {
  return (await redis.hget(userKeys(prefix, userId).meta, 'e')) ?? undefined;
}

/** The user's history entries, XRANGE shape: fields k (kind), e (event), o (bytes appended before). */
export async function userHistory(redis: Redis, prefix: string, userId: string): Promise<Array<[string, string[]]>> {
  return redis.xrange(userKeys(prefix, userId).history, '-', '+');
}

/** The user's history's events, byte for byte, oldest first. */
export async function userHistoryEvents(redis: Redis, prefix: string, userId: string): Promise<Buffer[]> {
  const entries = await redis.xrangeBuffer(userKeys(prefix, userId).history, '-', '+');
  return entries.map(([, fields]) => {
    const at = fields.findIndex((field) => field.toString() === 'e');
    return fields[at + 1] as Buffer;
  });
}

export async function userHistoryLength(redis: Redis, prefix: string, userId: string): Promise<number> {
  return redis.xlen(userKeys(prefix, userId).history);
}

/**
 * The event bytes the user's history holds by the meta's count (t, bytes ever appended, less f,
 * the bytes appended before the oldest entry as last trimmed): what the byte budget is held to.
 */
export async function countedHistoryBytes(redis: Redis, prefix: string, userId: string): Promise<number> {
  const [total, beforeOldest] = await redis.hmget(userKeys(prefix, userId).meta, 't', 'f');
  return Number(total ?? 0) - Number(beforeOldest ?? 0);
}

/** What one message on a user's channel carried, record by record, as a replica reads it. */
export interface ChannelRecords {
  admitted: InboundEvent[];
  rejected: RejectedMessage[];
}

/**
 * Subscribes (SSUBSCRIBE) to users' channels on a connection of its own, as a replica does, and
 * parses every message with the replicas' parser. `messages` grows as messages arrive.
 */
export async function watchUserChannels(
  redis: Redis,
  prefix: string,
  userIds: string[],
  maxEventBytes: number,
): Promise<{ messages: ChannelRecords[]; raw: Buffer[]; close(): void }> {
  const subscriber = redis.duplicate();
  const users = new Map(userIds.map((userId) => [userKeys(prefix, userId).channel, userId]));
  const messages: ChannelRecords[] = [];
  const raw: Buffer[] = [];
  subscriber.on('smessageBuffer', (channel: Buffer, message: Buffer) => {
    const userId = users.get(channel.toString('utf8'));
    if (userId === undefined) throw new Error(`message on a channel not watched: ${channel.toString('utf8')}`);
    const records: ChannelRecords = { admitted: [], rejected: [] };
    admitUserRecords(
      userId,
      message,
      maxEventBytes,
      (event) => records.admitted.push(event),
      (rejected) => records.rejected.push(rejected),
    );
    raw.push(message);
    messages.push(records);
  });
  await subscriber.ssubscribe(...users.keys());
  return { messages, raw, close: () => subscriber.disconnect() };
}
