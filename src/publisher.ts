import { loadOptional } from './optional-peer';
import type { EventKind } from './routing';
import { TransportUnavailableError, type Published } from './transport/transport';
import { serializeEvent } from './events/serialize';
import type { EventInput } from './events/types';
import { toEventBytes } from './wire/publishable';

export interface RedisPublisherOptions {
  /** e.g. redis://127.0.0.1:6379 */
  url: string;
  /** The hub's SSEHUB_CHANNEL_PREFIX. */
  channelPrefix?: string;
  /** The hub's SSEHUB_MAX_EVENT_BYTES. */
  maxEventBytes?: number;
}

export interface PostgresPublisherOptions {
  /** e.g. postgres://app@127.0.0.1:5432/app */
  url: string;
  /** The hub's SSEHUB_PG_SCHEMA; the hub must have created it (it does at start). */
  schema?: string;
  /** The hub's SSEHUB_MAX_EVENT_BYTES. */
  maxEventBytes?: number;
}

/** Anything that can publish with history: a transport, or a Redis connection through the ssehub functions. */
export interface PublishTarget {
  publish(kind: EventKind, userId: string, event: Buffer): Promise<Published>;
}

/**
 * Publishes events the way the webhook does, from TypeScript: checked here, then given an id,
 * recorded in the user's history and delivered as one step. Fails fast while the transport
 * is down (TransportUnavailableError) and refuses bad events with EventRejectedError.
 */
export class Publisher {
  private constructor(
    private readonly target: PublishTarget,
    private readonly maxEventBytes: number,
    private readonly onClose: () => Promise<void>,
  ) {}

  /** Publishes through a transport in this process (an embedded hub's). */
  static forTransport(target: PublishTarget, maxEventBytes = 1024 * 1024): Publisher {
    return new Publisher(target, maxEventBytes, async () => undefined);
  }

  /** Publishes to the hubs behind one Redis, from any process. */
  static async connectRedis(options: RedisPublisherOptions): Promise<Publisher> {
    const { Redis } = loadOptional('redis', () => require('ioredis') as typeof import('ioredis'));
    const { PUBLISHER_CONNECTION_OPTIONS, RedisEvents } = loadOptional(
      'redis',
      () => require('./transport/redis/events') as typeof import('./transport/redis/events'),
    );
    const redis = new Redis(options.url, {
      connectionName: 'ssehub-external-publisher',
      ...PUBLISHER_CONNECTION_OPTIONS,
      lazyConnect: true,
    });
    redis.on('error', () => {
      // Surfaced to callers through rejected publishes; reconnects continue in the background.
    });
    try {
      await redis.connect();
    } catch (err) {
      redis.disconnect();
      throw new TransportUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
    const events = new RedisEvents(redis, options.channelPrefix ?? 'ssehub');
    return new Publisher(
      { publish: (kind, userId, event) => events.publish(kind, userId, event) },
      options.maxEventBytes ?? 1024 * 1024,
      async () => {
        await redis.quit().catch(() => redis.disconnect());
      },
    );
  }

  /**
   * Publishes to the hubs on one Postgres outbox, each event in its own transaction. To publish
   * inside your own transaction, run `SELECT <schema>.publish($1, $2, $3)` on its connection.
   */
  static async connectPostgres(options: PostgresPublisherOptions): Promise<Publisher> {
    const { Pool } = loadOptional('postgres', () => require('pg') as typeof import('pg'));
    const { Outbox } = require('./transport/postgres/outbox') as typeof import('./transport/postgres/outbox');
    const { SESSION_OPTIONS } = require('./transport/postgres/schema') as typeof import('./transport/postgres/schema');
    const pool = new Pool({
      connectionString: options.url,
      options: SESSION_OPTIONS,
      max: 4,
      connectionTimeoutMillis: 3000,
      query_timeout: 5000,
    });
    pool.on('error', () => {
      // Surfaced to callers through rejected publishes; the pool opens fresh connections.
    });
    try {
      (await pool.connect()).release();
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw new TransportUnavailableError(`postgres: ${(err as Error).message}`, { cause: err });
    }
    const outbox = new Outbox(pool, options.schema ?? 'ssehub');
    return new Publisher(
      { publish: (kind, userId, event) => outbox.publish(kind, userId, event) },
      options.maxEventBytes ?? 1024 * 1024,
      async () => {
        await pool.end().catch(() => undefined);
      },
    );
  }

  /** `event` is a JSON object: a value to serialize, or its exact bytes as a string or Buffer. */
  async publish<K extends EventKind>(kind: K, userId: string, event: EventInput<K>): Promise<Published> {
    const bytes = toEventBytes(kind, userId, await serializeEvent(kind, event), this.maxEventBytes);
    return this.target.publish(kind, userId, bytes);
  }

  async close(): Promise<void> {
    await this.onClose();
  }
}
