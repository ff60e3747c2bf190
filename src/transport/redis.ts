import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { EVENT_KINDS, type EventKind } from '../routing';
import { TransportUnavailableError, type MessageSink, type Transport } from './transport';

export interface RedisTransportOptions {
  url: string;
  /** Channels are `<prefix>:<kind>`. */
  channelPrefix: string;
  logger: Logger;
  /** How often the subscriber connection is probed; a probe unanswered for as long forces a reconnect. */
  livenessIntervalMs?: number;
}

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
export class RedisTransport implements Transport {
  readonly name = 'redis';
  private readonly kindToChannel = new Map<EventKind, string>();
  /** One pattern for all kinds, so messages on unknown kinds are seen (and counted) too. */
  private readonly pattern: string;
  private readonly channelPrefixLength: number;
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  private readonly log: Logger;
  private readonly resubscribedListeners: Array<() => void> = [];
  private sink: MessageSink | undefined;
  private listening = false;
  private subscribedBefore = false;
  private closing = false;
  private livenessTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: RedisTransportOptions) {
    this.log = options.logger.child({ component: 'redis-transport' });
    for (const kind of EVENT_KINDS) this.kindToChannel.set(kind, `${options.channelPrefix}:${kind}`);
    this.pattern = `${escapeGlob(options.channelPrefix)}:*`;
    this.channelPrefixLength = Buffer.byteLength(options.channelPrefix) + 1;
    this.publisher = new Redis(options.url, {
      connectionName: 'ssehub-publisher',
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
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
    this.publisher.on('error', (err: Error) => this.log.warn({ err: err.message }, 'redis publisher error'));
    this.subscriber.on('error', (err: Error) => this.log.warn({ err: err.message }, 'redis subscriber error'));
    this.subscriber.on('ready', () => void this.subscribe());
    this.subscriber.on('close', () => this.markDown('connection closed'));
    this.subscriber.on('pmessageBuffer', (_pattern: Buffer, channel: Buffer, message: Buffer) => {
      if (this.sink) this.sink(channel.toString('utf8', this.channelPrefixLength), message);
    });
  }

  async start(sink: MessageSink): Promise<void> {
    this.sink = sink;
    // Connection failures are retried in the background; readiness reports them meanwhile.
    this.publisher.connect().catch((err: Error) => this.log.warn({ err: err.message }, 'redis publisher not connected yet'));
    this.subscriber.connect().catch((err: Error) => this.log.warn({ err: err.message }, 'redis subscriber not connected yet'));
    const interval = this.options.livenessIntervalMs ?? 5000;
    this.livenessTimer = setInterval(() => void this.probe(interval), interval);
    this.livenessTimer.unref();
  }

  async publish(kind: EventKind, envelope: Buffer): Promise<number> {
    const channel = this.kindToChannel.get(kind) as string;
    try {
      return await this.publisher.publish(channel, envelope);
    } catch (err) {
      throw new TransportUnavailableError(`redis publish failed: ${(err as Error).message}`, { cause: err });
    }
  }

  isListening(): boolean {
    return this.listening;
  }

  onResubscribed(listener: () => void): void {
    this.resubscribedListeners.push(listener);
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.livenessTimer);
    this.listening = false;
    await Promise.allSettled([this.subscriber.quit(), this.publisher.quit()]);
    this.subscriber.disconnect();
    this.publisher.disconnect();
  }

  private async subscribe(): Promise<void> {
    try {
      await this.subscriber.psubscribe(this.pattern);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'redis subscribe failed; reconnecting');
      this.subscriber.disconnect(true);
      return;
    }
    this.listening = true;
    this.log.info({ pattern: this.pattern }, 'listening for events');
    if (this.subscribedBefore) for (const listener of this.resubscribedListeners) listener();
    this.subscribedBefore = true;
  }

  private markDown(why: string): void {
    if (this.closing) return;
    if (this.listening) this.log.warn({ why }, 'redis subscription lost; reconnecting');
    this.listening = false;
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
