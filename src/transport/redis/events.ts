import type { Redis, RedisOptions } from 'ioredis';
import type { PublishQuotaLimits } from '../../limits';
import { parseEventId, type EventId } from '../../history/event-id';
import { planReplay, type HistoryEntry, type HistoryQuery, type HistoryRead } from '../../history/history';
import {
  HISTORY_FUNCTION,
  PUBLISH_COUNTED_FUNCTION,
  QUOTA_FUNCTION,
  REDIS_LIBRARY,
  DEFAULT_HISTORY_MAX,
  DEFAULT_HISTORY_MAX_BYTES,
  DEFAULT_HISTORY_TTL_MS,
} from './library';
import {
  EventRejectedError,
  PublishOutcomeUnknownError,
  TransportUnavailableError,
  type Published,
} from '../transport';

export interface HistorySettings {
  historyMax: number;
  historyMaxBytes: number;
  historyTtlMs: number;
  maxEventBytes: number;
}

export const DEFAULT_HISTORY_SETTINGS: HistorySettings = {
  historyMax: DEFAULT_HISTORY_MAX,
  historyMaxBytes: DEFAULT_HISTORY_MAX_BYTES,
  historyTtlMs: DEFAULT_HISTORY_TTL_MS,
  maxEventBytes: 1024 * 1024,
};

/**
 * For connections that publish and read history: never queue while disconnected, never
 * resend after a reconnect (a publish that reached Redis would run twice, with two ids), and
 * give up on a command Redis does not answer. A publish that timed out may or may not have
 * happened; the caller is told it failed.
 */
export const PUBLISHER_CONNECTION_OPTIONS: Pick<
  RedisOptions,
  'enableOfflineQueue' | 'autoResendUnfulfilledCommands' | 'maxRetriesPerRequest' | 'commandTimeout'
> = {
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 3000,
};

const EPOCH_PATTERN = /^[0-9a-z]{1,32}$/;

type Reply = Buffer | number | null | Reply[];

function text(reply: Reply | undefined): string {
  return Buffer.isBuffer(reply) ? reply.toString('utf8') : String(reply ?? '');
}

function streamPosition(epoch: string, streamId: string): EventId | undefined {
  return streamId === '' ? undefined : parseEventId(`${epoch}:${streamId}`);
}

/** Redis errors that mean "not now" (connection, failover, memory) rather than "not this event". */
function classify(err: unknown): Error {
  const message = (err as Error).message ?? String(err);
  if (message.startsWith('ERR ssehub:')) return new EventRejectedError(message.slice('ERR ssehub: '.length));
  // Sent, but unanswered: unlike a refusal to send while disconnected, Redis may have run it.
  if (/timed out|Connection is closed/i.test(message)) {
    return new PublishOutcomeUnknownError(`redis: ${message}`, { cause: err });
  }
  return new TransportUnavailableError(`redis: ${message}`, { cause: err });
}

/**
 * Publishing with history, and history reads, over one ioredis connection through the
 * ssehub Function library. The library (and, for replicas, the retention settings) is
 * (re)loaded by `prepare()` on every connect; a call that finds it missing (Redis restarted
 * without persistence) loads it and retries once.
 */
export class RedisEvents {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** Replicas own the retention settings; external publishers leave them alone. */
    private readonly settings?: HistorySettings,
  ) {}

  async prepare(): Promise<void> {
    await this.redis.call('FUNCTION', 'LOAD', 'REPLACE', REDIS_LIBRARY);
    if (this.settings) {
      await this.redis.hset(`${this.prefix}:config`, {
        history_max: this.settings.historyMax,
        history_max_bytes: this.settings.historyMaxBytes,
        history_ttl_ms: this.settings.historyTtlMs,
        max_event_bytes: this.settings.maxEventBytes,
      });
    }
  }

  async publish(kind: string, userId: string, event: Buffer): Promise<Published> {
    const reply = (await this.fcall(PUBLISH_COUNTED_FUNCTION, [kind, userId, event, this.prefix])) as Reply[];
    return { id: text(reply[0]), receivers: Number(reply[1]) };
  }

  /**
   * Counts one publish of `bytes` against the quota `name` for the current window; the
   * milliseconds until the window ends when it does not fit (nothing is counted then), else 0.
   */
  async takeQuota(name: string, limits: PublishQuotaLimits, bytes: number): Promise<number> {
    const key = `${this.prefix}:q:${name}`;
    const args = [key, limits.events, limits.bytes, limits.windowMs, bytes].map(String);
    return Number(await this.fcall(QUOTA_FUNCTION, args));
  }

  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    const from = after === undefined ? '' : `${after.ms}-${after.seq}`;
    const args = [userId, from, String(query.maxEntries), String(query.maxBytes), this.prefix];
    const reply = (await this.fcall(HISTORY_FUNCTION, args)) as Reply[];
    const epoch = text(reply[0]);
    // It goes into every id this replica writes; anything else in that key was not put there by ssehub.
    if (!EPOCH_PATTERN.test(epoch))
      throw new TransportUnavailableError(`redis: ${this.prefix}:epoch holds an invalid value`);
    const page: HistoryEntry[] = [];
    for (const raw of (reply[3] as Reply[] | null) ?? []) {
      const [streamId, fields] = raw as [Buffer, Reply[]];
      const id = streamPosition(epoch, streamId.toString('utf8'));
      if (!id) continue;
      let kind = '';
      let event: Buffer = Buffer.alloc(0);
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const name = text(fields[i]);
        if (name === 'k') kind = text(fields[i + 1]);
        else if (name === 'e') event = fields[i + 1] as Buffer;
      }
      page.push({ id, kind, event });
    }
    return planReplay(
      after,
      {
        epoch,
        last: streamPosition(epoch, text(reply[1])),
        first: streamPosition(epoch, text(reply[2])),
        page,
        ttlMs: Number(text(reply[4])) || DEFAULT_HISTORY_TTL_MS,
      },
      query.replayMax,
    );
  }

  private async fcall(name: string, args: Array<string | Buffer>): Promise<Reply> {
    try {
      return (await this.redis.callBuffer('FCALL', name, '0', ...args)) as Reply;
    } catch (err) {
      if (!/Function not found/i.test((err as Error).message ?? '')) throw classify(err);
    }
    try {
      await this.prepare();
      return (await this.redis.callBuffer('FCALL', name, '0', ...args)) as Reply;
    } catch (err) {
      throw classify(err);
    }
  }
}
