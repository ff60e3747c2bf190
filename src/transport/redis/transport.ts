import { Redis } from 'ioredis';
import { NOOP_LOGGER, type HubLogger } from '../../log';
import type { EventId } from '../../history/event-id';
import { HistoryReadAbandonedError, type HistoryQuery, type HistoryRead } from '../../history/history';
import { type EventKind, isEventKind } from '../../routing';
import { DEFAULT_HISTORY_SETTINGS, PUBLISHER_CONNECTION_OPTIONS, RedisEvents, type HistorySettings } from './events';
import { admitEnvelope, isRejectedMessage } from '../../wire/envelope';
import { peekEnvelopeUserId } from '../../wire/peek-user-id';
import type { PublishQuotaLimits } from '../../limits';
import type { Published, QuotaStore, TicketStore, Transport, TransportHandler } from '../transport';

export interface RedisTransportOptions {
  url: string;
  /** Channels are `<prefix>:<kind>`; history keys start with `<prefix>:` too (default `ssehub`). */
  channelPrefix?: string;
  /** The stand-alone server's defaults (the configuration table's) for what is left out. */
  history?: Partial<HistorySettings>;
  /** The hub's logger by default. */
  logger?: HubLogger;
  /** How often the subscriber connection is probed; a probe unanswered for as long forces a reconnect. */
  livenessIntervalMs?: number;
}

/** How long a history read waits for its connection to come back before failing. */
const READ_WAIT_MS = 2000;
/** A page is bounded in entries and bytes: a read unanswered this long means a stuck connection or Redis. */
const HISTORY_READ_TIMEOUT_MS = 10_000;

const DEFAULT_CHANNEL_PREFIX = 'ssehub';
/**
 * A frozen Redis (SIGSTOP, a stalled host) keeps its sockets open and answers nothing: a PING
 * unanswered this long marks the subscription down, so readiness turns 503 within about two
 * intervals instead of after client timeouts.
 */
const LIVENESS_INTERVAL_MS = 1000;

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (char) => `\\${char}`);
}

/** Exponential reconnect backoff, capped so a restarted Redis is picked up within two seconds. */
function reconnectDelay(attempt: number): number {
  return Math.min(50 * 2 ** Math.min(attempt, 10), 2000) + Math.floor(Math.random() * 100);
}

/**
 * Redis pub/sub transport. Publisher and subscriber use separate connections; the publisher
 * never queues while Redis is unreachable (a stale event delivered minutes later is worse
 * than a clear error), and the subscriber resubscribes itself after every reconnect so the
 * hub knows exactly when it is listening again.
 */
export class RedisTransport implements Transport, TicketStore, QuotaStore {
  readonly name = 'redis';
  /** `<ms>` is the Redis clock at publish (never going backwards for a user). */
  readonly idsCarryPublishTime = true;
  /** One pattern for all kinds, so messages on unknown kinds are seen (and counted) too. */
  private readonly pattern: string;
  private readonly channelPrefixLength: number;
  private readonly maxEventBytes: number;
  private readonly publisher: Redis;
  /** Replays can be large; they get their own connection so publishes never queue behind them. */
  private readonly historyReader: Redis;
  private readonly history: RedisEvents;
  private readonly subscriber: Redis;
  private readonly events: RedisEvents;
  private log: HubLogger;
  private readonly channelPrefix: string;
  private handler: TransportHandler | undefined;
  private listening = false;
  private subscribedBefore = false;
  private closing = false;
  private livenessTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: RedisTransportOptions) {
    this.log = (options.logger ?? NOOP_LOGGER).child({ component: 'redis-transport' });
    this.channelPrefix = options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX;
    const history: HistorySettings = { ...DEFAULT_HISTORY_SETTINGS, ...options.history };
    this.maxEventBytes = history.maxEventBytes;
    this.pattern = `${escapeGlob(this.channelPrefix)}:*`;
    this.channelPrefixLength = Buffer.byteLength(this.channelPrefix) + 1;
    this.publisher = new Redis(options.url, {
      connectionName: 'ssehub-publisher',
      ...PUBLISHER_CONNECTION_OPTIONS,
      retryStrategy: reconnectDelay,
      lazyConnect: true,
    });
    this.subscriber = new Redis(options.url, {
      connectionName: 'ssehub-subscriber',
      autoResubscribe: false,
      // subscribe() runs on every 'ready'; a PSUBSCRIBE resent by the client as well would count twice.
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: null,
      retryStrategy: reconnectDelay,
      lazyConnect: true,
    });
    this.historyReader = new Redis(options.url, {
      connectionName: 'ssehub-history',
      ...PUBLISHER_CONNECTION_OPTIONS,
      // Reads time out in readHistory, which can tell when Redis is done with one it gave up on.
      commandTimeout: undefined,
      retryStrategy: reconnectDelay,
      lazyConnect: true,
    });
    this.historyReader.setMaxListeners(0);
    this.events = new RedisEvents(this.publisher, this.channelPrefix, history);
    this.history = new RedisEvents(this.historyReader, this.channelPrefix, history);
    this.publisher.on('error', (err: Error) => this.log.warn({ err }, 'redis publisher error'));
    this.historyReader.on('error', (err: Error) => this.log.warn({ err }, 'redis history reader error'));
    this.publisher.on('ready', () => {
      this.events.prepare().catch((err: Error) => this.log.error({ err }, 'loading the ssehub Redis functions failed'));
    });
    this.subscriber.on('error', (err: Error) => this.log.warn({ err }, 'redis subscriber error'));
    this.subscriber.on('ready', () => void this.subscribe());
    this.subscriber.on('close', () => this.markDown('connection closed'));
    this.subscriber.on('pmessageBuffer', (_pattern: Buffer, channel: Buffer, message: Buffer) => {
      const handler = this.handler;
      if (!handler) return;
      const kind = channel.toString('utf8', this.channelPrefixLength);
      // Every replica sees every event; most are for users it does not hold, and need no full parse.
      if (isEventKind(kind)) {
        const userId = peekEnvelopeUserId(message);
        if (userId !== undefined && !handler.holds(userId)) {
          handler.skipped();
          return;
        }
      }
      const admitted = admitEnvelope(kind, message, this.maxEventBytes);
      if (isRejectedMessage(admitted)) handler.rejected(admitted);
      else handler.event(admitted);
    });
  }

  async start(handler: TransportHandler): Promise<void> {
    this.handler = handler;
    if (this.options.logger === undefined) this.log = handler.log.child({ component: 'redis-transport' });
    // Connection failures are retried in the background; readiness reports them meanwhile.
    this.publisher.connect().catch((err: Error) => this.log.warn({ err }, 'redis publisher not connected yet'));
    this.historyReader
      .connect()
      .catch((err: Error) => this.log.warn({ err }, 'redis history reader not connected yet'));
    this.subscriber.connect().catch((err: Error) => this.log.warn({ err }, 'redis subscriber not connected yet'));
    const interval = this.options.livenessIntervalMs ?? LIVENESS_INTERVAL_MS;
    this.livenessTimer = setInterval(() => {
      void this.probe(interval);
      void this.probeCommandConnection(
        this.publisher,
        'publisher',
        PUBLISHER_CONNECTION_OPTIONS.commandTimeout ?? interval,
      );
      void this.probeCommandConnection(this.historyReader, 'history reader', HISTORY_READ_TIMEOUT_MS);
    }, interval);
    this.livenessTimer.unref();
  }

  publish(kind: EventKind, userId: string, event: Buffer): Promise<Published> {
    return this.events.publish(kind, userId, event);
  }

  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    // After an outage the subscriber may be back before the connection history is read through.
    await this.historyReaderReady(READ_WAIT_MS);
    const call = this.history.readHistory(userId, after, query);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // Redis still runs a command whose answer nobody waits for; the caller learns when it is done.
        const settled = call.then(
          () => undefined,
          () => undefined,
        );
        reject(
          new HistoryReadAbandonedError(`redis: history read timed out after ${HISTORY_READ_TIMEOUT_MS} ms`, settled),
        );
      }, HISTORY_READ_TIMEOUT_MS);
    });
    try {
      return await Promise.race([call, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publish quotas on the publishing connection, so every replica counts against one window. */
  takeQuota(name: string, limits: PublishQuotaLimits, bytes: number): Promise<number> {
    return this.events.takeQuota(name, limits, bytes);
  }

  private historyReaderReady(timeoutMs: number): Promise<void> {
    if (this.historyReader.status === 'ready' || this.closing) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.historyReader.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.historyReader.once('ready', done);
    });
  }

  async putTicket(key: string, value: string, ttlMs: number): Promise<void> {
    await this.publisher.set(this.ticketKey(key), value, 'PX', ttlMs);
  }

  async takeTicket(key: string): Promise<string | undefined> {
    const value = await this.publisher.call('GETDEL', this.ticketKey(key));
    return typeof value === 'string' ? value : undefined;
  }

  private ticketKey(key: string): string {
    return `${this.channelPrefix}:ticket:${key}`;
  }

  /** Subscribed, and able to publish and read history: a replica that cannot publish is not ready for webhooks. */
  isListening(): boolean {
    return this.listening && this.publisher.status === 'ready' && this.historyReader.status === 'ready';
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.livenessTimer);
    this.listening = false;
    await Promise.allSettled([this.subscriber.quit(), this.publisher.quit(), this.historyReader.quit()]);
    this.historyReader.disconnect();
    this.subscriber.disconnect();
    this.publisher.disconnect();
  }

  private async subscribe(): Promise<void> {
    // Messages may arrive in the same read as the PSUBSCRIBE reply, before the await below returns.
    this.handler?.subscribing();
    try {
      await this.subscriber.psubscribe(this.pattern);
    } catch (err) {
      this.log.error({ err }, 'redis subscribe failed; reconnecting');
      this.subscriber.disconnect(true);
      return;
    }
    this.listening = true;
    this.log.info({ pattern: this.pattern }, 'listening for events');
    const again = this.subscribedBefore;
    this.subscribedBefore = true;
    this.handler?.subscribed(again);
  }

  private markDown(why: string): void {
    if (this.closing) return;
    if (this.listening) this.log.warn({ why }, 'redis subscription lost; reconnecting');
    this.listening = false;
  }

  /**
   * Commands on a half-open connection time out (commandTimeout) but the socket would stay; a
   * failed PING replaces it, so publishing and replays recover as soon as Redis answers again.
   */
  private async probeCommandConnection(connection: Redis, role: string, timeoutMs: number): Promise<void> {
    if (this.closing || connection.status !== 'ready') return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timeout')), timeoutMs);
    });
    try {
      await Promise.race([connection.ping(), timedOut]);
    } catch {
      // Dropping the connection also fails the commands still waiting on it, reads given up on included.
      if (!this.closing && connection.status === 'ready') {
        this.log.warn({ role }, 'redis connection did not answer PING; reconnecting');
        connection.disconnect(true);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A half-open TCP connection never errors by itself, and the subscriber would then wait
   * forever for messages that never come. An unanswered PING forces a reconnect.
   */
  private async probe(timeoutMs: number): Promise<void> {
    if (!this.listening || this.closing) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const result = await Promise.race([this.subscriber.ping(), timedOut]);
      if (result === 'timeout' && !this.closing) {
        this.log.warn('redis subscriber did not answer PING; reconnecting');
        this.markDown('ping timeout');
        this.subscriber.disconnect(true);
      }
    } catch {
      // The connection is already failing; 'close' handles it.
    } finally {
      clearTimeout(timer);
    }
  }
}
