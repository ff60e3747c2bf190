import { randomBytes } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { NOOP_LOGGER, type HubLogger } from '../../log';
import type { EventId } from '../../history/event-id';
import { HistoryReadAbandonedError, type HistoryQuery, type HistoryRead } from '../../history/history';
import { EVENT_KINDS, type EventKind, isEventKind } from '../../routing';
import { PUBLISHER_CONNECTION_OPTIONS, RedisEvents, type BatchItem } from './events';
import { DEFAULT_HISTORY_SETTINGS, type HistorySettings, userKeys } from './library';
import { ChannelSubscriber } from './subscriber';
import { keySlot, SLOT_COUNT } from './slot';
import { answerOrClose } from './unanswered';
import { admitEnvelope, isRejectedMessage } from '../../wire/envelope';
import { peekEnvelopeUserId } from '../../wire/peek-user-id';
import { admitUserRecords } from '../../wire/user-records';
import type { PublishQuotaLimits } from '../../limits';
import type {
  BatchPublisher,
  Published,
  QuotaStore,
  TicketStore,
  Transport,
  TransportHandler,
  UserSubscriptions,
} from '../transport';

export interface RedisAddress {
  host: string;
  port: number;
}

export interface RedisTransportOptions {
  /** A single Redis; with `sentinels`, only its credentials and database are used. */
  url?: string;
  /** Sentinels to ask for the current primary of `sentinelName` (Redis Sentinel). */
  sentinels?: RedisAddress[];
  sentinelName?: string;
  /** Seed nodes of a Redis Cluster; the library is loaded on every primary, channels are sharded. */
  clusterNodes?: RedisAddress[];
  /** Channels and keys start with `<prefix>:` (default `ssehub`). */
  channelPrefix?: string;
  /** The limits the function library is loaded with (the configuration table's defaults for what is left out). */
  history?: Partial<HistorySettings>;
  /** The hub's logger by default. */
  logger?: HubLogger;
  /**
   * How often the replica proves its subscription delivers: it publishes a probe on its own
   * channel and expects it back within as long (default 1000 ms).
   */
  selfCheckIntervalMs?: number;
  /**
   * Also take plain `PUBLISH <prefix>:<kind> <envelope>` messages (live only, every replica
   * receives every one). Default true.
   */
  kindChannels?: boolean;
  /** How long a user's channel stays subscribed after the user's last stream here closed (default 5000 ms). */
  releaseDelayMs?: number;
  /** Publishes count only once this many Redis replicas confirmed them (WAIT); default 0. */
  minReplicas?: number;
  minReplicasTimeoutMs?: number;
}

/** How long a history read waits for its connection to come back before failing. */
const READ_WAIT_MS = 2000;
/** A page is bounded in entries and bytes: a read unanswered this long means a stuck connection or Redis. */
const HISTORY_READ_TIMEOUT_MS = 10_000;
const DEFAULT_CHANNEL_PREFIX = 'ssehub';
const SELF_CHECK_INTERVAL_MS = 1000;
/** How many more timeouts a probe is waited for while its subscriber keeps reading messages. */
const MAX_PROBE_WAITS_WHILE_READING = 30;
const RELEASE_DELAY_MS = 5000;

function timeoutAfter(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => setTimeout(resolve, ms, 'timeout').unref());
}

/** Exponential reconnect backoff, capped so a restarted Redis is picked up within two seconds. */
function reconnectDelay(attempt: number): number {
  return Math.min(50 * 2 ** Math.min(attempt, 10), 2000) + Math.floor(Math.random() * 100);
}

const SUBSCRIBER_OPTIONS: RedisOptions = {
  connectionName: 'ssehub-subscriber',
  autoResubscribe: false,
  // subscribeAll() runs on every 'ready'; SSUBSCRIBEs resent by the client as well would count twice.
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: null,
};

/**
 * One subscriber connection and what it proves: a single Redis (or the primary the sentinels
 * name) has one; a Cluster has one per primary, holding the channels of that primary's slots.
 */
interface Shard {
  /** `host:port` of the primary, or `primary` for a single Redis. */
  readonly key: string;
  readonly subscriber: ChannelSubscriber;
  /** A channel of this replica's own, in a slot this shard serves, for the self-check. */
  readonly probeChannel: string;
  listening: boolean;
  /** The subscriber's client id on its Redis, for counting the subscriptions Redis really holds. */
  clientId: string | undefined;
  probing: boolean;
  probe: { sequence: string; heard: () => void } | undefined;
  /** Messages read off this shard's subscriber so far: a self-check tells a busy reader from a dead one by it. */
  messagesRead: number;
}

/**
 * Redis transport. A replica subscribes to the channel of each user who has a stream open on it
 * (sharded pub/sub: SSUBSCRIBE), so it receives only its own users' events. Publisher, history
 * reader and subscribers use separate connections; the publisher never queues while Redis is
 * unreachable (a stale event delivered minutes later is worse than a clear error), and each
 * subscriber resubscribes itself after every reconnect so the hub knows exactly when it is
 * listening again. A probe published on the replica's own channel every second proves each
 * subscription delivers; a missed probe reconnects it and fills every stream's gap from history.
 */
export class RedisTransport implements Transport, TicketStore, QuotaStore, UserSubscriptions, BatchPublisher {
  readonly name = 'redis';
  /** `<ms>` is the Redis clock at publish (never going backwards for a user). */
  readonly idsCarryPublishTime = true;
  private readonly maxEventBytes: number;
  private readonly publisher: Redis | Cluster;
  /** Replays can be large; they get their own connection so publishes never queue behind them. */
  private readonly historyReader: Redis | Cluster;
  private readonly history: RedisEvents;
  private readonly events: RedisEvents;
  private readonly shards = new Map<string, Shard>();
  /** Cluster: which shard serves each slot, as last reconciled. */
  private slotOwners: string[] = [];
  private log: HubLogger;
  private readonly channelPrefix: string;
  private readonly replicaId = randomBytes(8).toString('hex');
  private readonly kindChannels: Map<string, EventKind>;
  /** User channel -> user id, for every channel this replica subscribes. */
  private readonly users = new Map<string, string>();
  /** Users whose last stream closed, by when their channel is released unless they came back. */
  private readonly releasing = new Map<string, number>();
  private readonly releaseDelayMs: number;
  private probeSequence = 0;
  private handler: TransportHandler | undefined;
  private subscribedBefore = false;
  private closing = false;
  private timer: NodeJS.Timeout | undefined;
  private libraryCheck: Promise<void> | undefined;

  constructor(private readonly options: RedisTransportOptions) {
    this.log = (options.logger ?? NOOP_LOGGER).child({ component: 'redis-transport' });
    this.channelPrefix = options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX;
    const history: HistorySettings = { ...DEFAULT_HISTORY_SETTINGS, ...options.history };
    this.maxEventBytes = history.maxEventBytes;
    this.releaseDelayMs = options.releaseDelayMs ?? RELEASE_DELAY_MS;
    this.kindChannels = new Map(
      options.kindChannels === false ? [] : EVENT_KINDS.map((kind) => [`${this.channelPrefix}:${kind}`, kind]),
    );
    this.publisher = this.connect({ connectionName: 'ssehub-publisher', ...PUBLISHER_CONNECTION_OPTIONS });
    this.historyReader = this.connect({
      connectionName: 'ssehub-history',
      ...PUBLISHER_CONNECTION_OPTIONS,
      // Reads time out in readHistory, which can tell when Redis is done with one it gave up on.
      commandTimeout: undefined,
    });
    this.historyReader.setMaxListeners(0);
    const eventsOptions = {
      settings: history,
      minReplicas: options.minReplicas,
      minReplicasTimeoutMs: options.minReplicasTimeoutMs,
      log: this.log,
    };
    this.events = new RedisEvents(this.publisher, this.channelPrefix, eventsOptions);
    this.history = new RedisEvents(this.historyReader, this.channelPrefix, eventsOptions);
    this.publisher.on('error', (err: Error) => this.log.warn({ err }, 'redis publisher error'));
    this.historyReader.on('error', (err: Error) => this.log.warn({ err }, 'redis history reader error'));
    const publisher = this.publisher;
    const prepare = (): void => {
      this.events.prepare().catch((err: Error) => this.log.error({ err }, 'loading the ssehub Redis functions failed'));
    };
    publisher.on('close', () => this.events.forgetLibrary());
    if (publisher instanceof Cluster) {
      publisher.on('ready', () => {
        prepare();
        this.reconcileShards();
      });
      // Failovers, slot moves and added nodes: channels follow their slots, new primaries get the library.
      publisher.on('refresh', () => this.reconcileShards());
      publisher.on('+node', prepare);
    } else {
      publisher.on('ready', prepare);
      this.addShard(
        'primary',
        this.connectSubscriber(),
        this.probeChannelFor(() => true),
      );
    }
  }

  private get isCluster(): boolean {
    return this.publisher instanceof Cluster;
  }

  /** A connection to the primary (the URL's, or the one the sentinels name), or to the cluster. */
  private connect(options: RedisOptions): Redis | Cluster {
    const common: RedisOptions = { ...options, retryStrategy: reconnectDelay, lazyConnect: true };
    const { sentinels, sentinelName, clusterNodes, url } = this.options;
    const credentials = url ? new URL(url) : undefined;
    const auth = this.auth();
    if (clusterNodes && clusterNodes.length > 0 && options.connectionName !== SUBSCRIBER_OPTIONS.connectionName) {
      return new Cluster(clusterNodes, {
        redisOptions: { ...common, ...auth },
        enableOfflineQueue: options.enableOfflineQueue ?? true,
        lazyConnect: true,
        clusterRetryStrategy: reconnectDelay,
        // A failover or slot move is seen within a second, not at the next failed command.
        slotsRefreshInterval: 1000,
      });
    }
    if (sentinels && sentinels.length > 0) {
      return new Redis({
        ...common,
        ...auth,
        sentinels,
        name: sentinelName ?? 'mymaster',
        db: credentials && credentials.pathname.length > 1 ? Number(credentials.pathname.slice(1)) : undefined,
        // A primary that turned replica (a failover the sentinels have not told about yet) is left at once.
        failoverDetector: true,
        sentinelRetryStrategy: reconnectDelay,
      });
    }
    if (!url) throw new Error('redis transport: set url, sentinels and sentinelName, or clusterNodes');
    return new Redis(url, common);
  }

  /** The URL's credentials, which every connection uses, whatever the topology. */
  private auth(): Pick<RedisOptions, 'username' | 'password'> {
    const credentials = this.options.url ? new URL(this.options.url) : undefined;
    return {
      username: credentials?.username || undefined,
      password: credentials?.password ? decodeURIComponent(credentials.password) : undefined,
    };
  }

  /** The subscriber of a single Redis or Sentinel-named primary (a Cluster's are made per primary). */
  private connectSubscriber(): Redis {
    const connection = this.connect(SUBSCRIBER_OPTIONS);
    if (connection instanceof Cluster) throw new Error('redis transport: a cluster subscriber is one per primary');
    return connection;
  }

  /** A probe channel of this replica's in a slot `owns` accepts (any, outside a Cluster). */
  private probeChannelFor(owns: (slot: number) => boolean): string {
    for (let i = 0; ; i++) {
      const { channel } = userKeys(this.channelPrefix, `probe:${this.replicaId}:${i}`);
      if (owns(keySlot(channel))) return channel;
    }
  }

  private addShard(key: string, connection: Redis, probeChannel: string): Shard {
    const shard: Shard = {
      key,
      subscriber: new ChannelSubscriber(connection, this.log, this.isCluster),
      probeChannel,
      listening: false,
      clientId: undefined,
      probing: false,
      probe: undefined,
      messagesRead: 0,
    };
    this.shards.set(key, shard);
    connection.on('error', (err: Error) => this.log.warn({ err, shard: key }, 'redis subscriber error'));
    connection.on('ready', () => void this.subscribe(shard));
    connection.on('close', () => this.markDown(shard, 'connection closed'));
    // A slot of this shard moved away: Redis dropped its channels with a bare SUNSUBSCRIBE.
    connection.on('moved', () => this.refreshTopology());
    connection.on('smessageBuffer', (channel: Buffer, message: Buffer) => {
      shard.messagesRead++;
      this.userMessage(shard, channel, message);
    });
    connection.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      shard.messagesRead++;
      this.kindMessage(channel, message);
    });
    if (this.handler)
      connection.connect().catch((err: Error) => this.log.warn({ err }, 'redis subscriber not connected yet'));
    return shard;
  }

  private refreshTopology(): void {
    if (this.publisher instanceof Cluster && !this.closing) this.publisher.refreshSlotsCache();
  }

  /**
   * Follows the cluster's slot map: a subscriber per primary, each user's channel on the primary
   * that serves its slot. Channels that moved are caught up from history once resubscribed.
   */
  private reconcileShards(): void {
    const cluster = this.publisher;
    if (!(cluster instanceof Cluster) || this.closing) return;
    const owners = cluster.slots.map((nodes) => nodes?.[0] ?? '');
    if (owners.length < SLOT_COUNT || owners.some((owner) => owner === '')) return;
    const changed = owners.some((owner, slot) => owner !== this.slotOwners[slot]);
    if (!changed) return;
    this.slotOwners = owners;
    const primaries = new Set(owners);
    for (const key of primaries) {
      if (this.shards.has(key)) continue;
      const [host, port] = [key.slice(0, key.lastIndexOf(':')), Number(key.slice(key.lastIndexOf(':') + 1))];
      const connection = new Redis({
        ...SUBSCRIBER_OPTIONS,
        host,
        port,
        retryStrategy: reconnectDelay,
        lazyConnect: true,
        ...this.auth(),
      });
      this.addShard(
        key,
        connection,
        this.probeChannelFor((slot) => owners[slot] === key),
      );
    }
    // Replays read through their own connection: it must see the new slot map before they run.
    if (this.historyReader instanceof Cluster) this.historyReader.refreshSlotsCache();
    const receiving = new Set<Shard>();
    for (const [channel] of this.users) {
      const owner = owners[keySlot(channel)] as string;
      for (const shard of this.shards.values()) {
        if (shard.key !== owner && shard.subscriber.wanted.has(channel)) shard.subscriber.remove(channel);
      }
      const target = this.shards.get(owner);
      if (target && !target.subscriber.wanted.has(channel)) {
        void target.subscriber.add(channel);
        receiving.add(target);
      }
    }
    for (const [key, shard] of this.shards) {
      if (primaries.has(key)) continue;
      this.shards.delete(key);
      shard.subscriber.connection.disconnect();
    }
    // A shard still connecting subscribes and catches every stream up once it is ready.
    const ready = [...receiving].filter((shard) => shard.listening);
    if (ready.length > 0 && this.handler) {
      // Events published to a moved channel's new primary before it was subscribed there come from history.
      this.log.info(
        { shards: ready.map((shard) => shard.key) },
        'user channels moved with their slots; catching their streams up',
      );
      this.handler.subscribing();
      void Promise.all(ready.map((shard) => shard.subscriber.flushed())).then(() => this.handler?.subscribed(true));
    }
  }

  private shardOf(channel: string): Shard | undefined {
    if (!this.isCluster) return this.shards.get('primary');
    return this.shards.get(this.slotOwners[keySlot(channel)] ?? '');
  }

  async start(handler: TransportHandler): Promise<void> {
    this.handler = handler;
    if (this.options.logger === undefined) this.log = handler.log.child({ component: 'redis-transport' });
    // Connection failures are retried in the background; readiness reports them meanwhile.
    const connections: Array<[Redis | Cluster, string]> = [
      [this.publisher, 'publisher'],
      [this.historyReader, 'history reader'],
      ...[...this.shards.values()].map((shard): [Redis, string] => [shard.subscriber.connection, 'subscriber']),
    ];
    for (const [connection, role] of connections) {
      connection.connect().catch((err: Error) => this.log.warn({ err }, `redis ${role} not connected yet`));
    }
    const interval = this.options.selfCheckIntervalMs ?? SELF_CHECK_INTERVAL_MS;
    this.timer = setInterval(() => {
      for (const shard of this.shards.values()) void this.selfCheck(shard, interval);
      if (!this.isCluster) {
        void this.probeCommandConnection(
          this.publisher as Redis,
          'publisher',
          PUBLISHER_CONNECTION_OPTIONS.commandTimeout ?? interval,
        );
        void this.probeCommandConnection(this.historyReader as Redis, 'history reader', HISTORY_READ_TIMEOUT_MS);
      }
      this.releaseIdle();
      this.keepLibrary();
    }, interval);
    this.timer.unref();
  }

  /**
   * Makes sure the function library still holds this deployment's limits, once per self-check.
   * Replicas of two deployments loading it at the same moment can each write their own view of it
   * (FUNCTION LOAD replaces the whole library), and a FUNCTION DELETE removes it: a replica's own
   * publishes reload it when they find it missing, but a backend's FCALL would fail until then.
   */
  private keepLibrary(): void {
    if (this.libraryCheck !== undefined || this.closing || this.publisher.status !== 'ready') return;
    this.libraryCheck = this.events
      .ensureLoaded()
      .catch((err: Error) => this.log.warn({ err }, 'checking the ssehub Redis functions failed'))
      .finally(() => {
        this.libraryCheck = undefined;
      });
  }

  /**
   * Subscribes this replica to the user's channel; resolves once events published from now on
   * reach it (at once while Redis is unreachable: the resubscription then catches every stream up).
   */
  watch(userId: string): Promise<void> {
    this.releasing.delete(userId);
    const { channel } = userKeys(this.channelPrefix, userId);
    if (!this.users.has(channel)) {
      this.users.set(channel, userId);
      this.handler?.metrics.userChannels?.(this.users.size);
    }
    return this.shardOf(channel)?.subscriber.add(channel) ?? Promise.resolve();
  }

  /** The user's last stream here closed: the channel goes after a delay, unless a stream opens again. */
  release(userId: string): void {
    this.releasing.set(userId, Date.now() + this.releaseDelayMs);
  }

  private releaseIdle(): void {
    const now = Date.now();
    for (const [userId, at] of this.releasing) {
      if (at > now) continue;
      this.releasing.delete(userId);
      if (this.handler?.holds(userId)) continue;
      const { channel } = userKeys(this.channelPrefix, userId);
      this.users.delete(channel);
      for (const shard of this.shards.values()) shard.subscriber.remove(channel);
    }
    this.handler?.metrics.userChannels?.(this.users.size);
  }

  publish(kind: EventKind, userId: string, event: Buffer): Promise<Published> {
    return this.events.publish(kind, userId, event);
  }

  publishBatch(userId: string, items: readonly BatchItem[]): Promise<{ ids: string[]; receivers: number }> {
    return this.events.publishBatch(userId, items);
  }

  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    // After an outage the subscriber may be back before the connection history is read through.
    await this.historyReaderReady(READ_WAIT_MS);
    // Over when Redis answers, or when the connection it went out on closes (nothing will answer it then).
    const call = answerOrClose(this.historyReader, this.history.readHistory(userId, after, query));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // Redis still runs a command whose answer nobody waits for; the caller learns when it is
        // done (answered, or its connection closed).
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

  /**
   * Subscribed, and able to publish and read history: a replica that cannot publish is not ready
   * for webhooks, nor is one whose deployment the function library does not hold yet (a backend's
   * FCALL would fail).
   */
  isListening(): boolean {
    if (this.shards.size === 0 || !this.events.holdsLimits()) return false;
    for (const shard of this.shards.values()) if (!shard.listening) return false;
    return this.publisher.status === 'ready' && this.historyReader.status === 'ready';
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    const subscribers = [...this.shards.values()].map((shard) => shard.subscriber.connection);
    for (const shard of this.shards.values()) shard.listening = false;
    await Promise.allSettled([
      ...subscribers.map((connection) => connection.quit()),
      this.publisher.quit(),
      this.historyReader.quit(),
    ]);
    this.historyReader.disconnect();
    for (const connection of subscribers) connection.disconnect();
    this.publisher.disconnect();
  }

  private userMessage(shard: Shard, channel: Buffer, message: Buffer): void {
    const handler = this.handler;
    if (!handler) return;
    const name = channel.toString('utf8');
    if (name === shard.probeChannel) {
      if (shard.probe?.sequence === message.toString('latin1')) shard.probe.heard();
      return;
    }
    const userId = this.users.get(name);
    // A channel released while its message was on the way.
    if (userId === undefined) return;
    handler.metrics.messageReceived?.('user');
    if (!handler.holds(userId)) {
      handler.skipped();
      return;
    }
    admitUserRecords(
      userId,
      message,
      this.maxEventBytes,
      (event) => handler.event(event),
      (rejected) => handler.rejected(rejected),
    );
  }

  /** A plain PUBLISH on a kind channel: every replica gets it, and reads its user before parsing it. */
  private kindMessage(channel: Buffer, message: Buffer): void {
    const handler = this.handler;
    const kind = this.kindChannels.get(channel.toString('utf8'));
    if (!handler || kind === undefined || !isEventKind(kind)) return;
    handler.metrics.messageReceived?.('kind');
    const userId = peekEnvelopeUserId(message);
    if (userId !== undefined && !handler.holds(userId)) {
      handler.skipped();
      return;
    }
    const admitted = admitEnvelope(kind, message, this.maxEventBytes);
    if (isRejectedMessage(admitted)) handler.rejected(admitted);
    else handler.event(admitted);
  }

  private async subscribe(shard: Shard): Promise<void> {
    // Messages may arrive in the same read as the first SSUBSCRIBE reply, before the await below returns.
    this.handler?.subscribing();
    const { connection } = shard.subscriber;
    try {
      // Asked before the connection enters subscriber mode, where only (un)subscribe commands go.
      shard.clientId = String(await connection.client('ID'));
      // A plain PUBLISH reaches every node of a Cluster: one shard takes the kind channels.
      const takesKinds = !this.isCluster || shard.key === [...this.shards.keys()][0];
      if (this.kindChannels.size > 0 && takesKinds) await connection.subscribe(...this.kindChannels.keys());
      await shard.subscriber.subscribeAll([shard.probeChannel]);
    } catch (err) {
      this.log.error({ err, shard: shard.key }, 'redis subscribe failed; reconnecting');
      connection.disconnect(true);
      return;
    }
    shard.listening = true;
    this.log.info({ shard: shard.key, users: shard.subscriber.wanted.size }, 'listening for events');
    const again = this.subscribedBefore;
    this.subscribedBefore = true;
    this.handler?.subscribed(again);
  }

  private markDown(shard: Shard, why: string): void {
    if (this.closing) return;
    if (shard.listening) this.log.warn({ why, shard: shard.key }, 'redis subscription lost; reconnecting');
    shard.listening = false;
    // A Cluster primary that went away is replaced by its replica: the slot map says which.
    this.refreshTopology();
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
      // A PING its connection dropped fails at the close, while the connection is not ready: a
      // PING sent on a dead socket must not time out later and drop the fresh one that replaced it.
      await Promise.race([answerOrClose(connection, connection.ping()), timedOut]);
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
   * Redis can drop a shard subscription without a word to the client (client libraries have lost
   * them after failovers and slot moves): the subscriptions Redis counts for the subscriber must
   * be at least those the subscriber holds as confirmed.
   */
  private async subscriptionsDropped(shard: Shard): Promise<boolean> {
    const node = this.commandNodeOf(shard);
    if (!node || shard.clientId === undefined) return false;
    try {
      const line = String(await node.call('CLIENT', 'LIST', 'ID', shard.clientId));
      const held = /\bssub=(\d+)/.exec(line);
      return held !== null && Number(held[1]) < shard.subscriber.confirmedCount;
    } catch {
      // Unanswered: the probe of the next second decides.
      return false;
    }
  }

  /** A command connection to the shard's Redis. */
  private commandNodeOf(shard: Shard): Redis | undefined {
    const publisher = this.publisher;
    if (!(publisher instanceof Cluster)) return publisher;
    return publisher.nodes('master').find((node) => `${node.options.host}:${node.options.port}` === shard.key);
  }

  /**
   * Proves a subscription delivers: a probe published on this replica's own channel must come
   * back within `timeoutMs`. A subscriber on a frozen or half-open connection, or one whose
   * subscriptions Redis dropped without a word, misses it: the replica turns unready, reconnects,
   * resubscribes and fills every stream's gap from history.
   */
  private async selfCheck(shard: Shard, timeoutMs: number): Promise<void> {
    if (!shard.listening || this.closing || shard.probing || this.publisher.status !== 'ready') return;
    shard.probing = true;
    const sequence = String(++this.probeSequence);
    let timer: NodeJS.Timeout | undefined;
    let wasHeard = false;
    const heard = new Promise<'heard'>((resolve) => {
      shard.probe = {
        sequence,
        heard: () => {
          wasHeard = true;
          resolve('heard');
        },
      };
    });
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    let read = shard.messagesRead;
    try {
      const sent = this.publisher.spublish(shard.probeChannel, sequence).then(
        (receivers) => (receivers === 0 ? ('unsubscribed' as const) : heard),
        () => 'timeout' as const,
      );
      let outcome: string = await Promise.race([heard, timedOut, sent]);
      // A burst queued in Redis ahead of the probe keeps the subscriber reading for longer than
      // the timeout: while messages keep coming it is behind, not lost (a reconnect would throw the
      // queued messages away, and plain PUBLISHes have no history to bring them back).
      for (
        let waits = 0;
        outcome === 'timeout' && shard.messagesRead !== read && waits < MAX_PROBE_WAITS_WHILE_READING;
        waits++
      ) {
        read = shard.messagesRead;
        outcome = await Promise.race([heard, timeoutAfter(timeoutMs)]);
      }
      if (outcome === 'timeout') {
        // A replica too busy to run its timers on time runs them before reading its sockets: let
        // what arrived meanwhile be read before calling the probe lost.
        await new Promise((resolve) => setImmediate(resolve));
        if (wasHeard) outcome = 'heard';
      }
      if (outcome === 'heard' && (await this.subscriptionsDropped(shard))) outcome = 'subscriptions dropped';
      if (outcome !== 'heard' && shard.listening && !this.closing) {
        this.log.warn(
          { why: outcome, shard: shard.key },
          'redis self-check: the probe did not come back; resubscribing',
        );
        this.handler?.metrics.selfCheckFailed?.();
        this.markDown(shard, `self-check ${outcome}`);
        shard.subscriber.connection.disconnect(true);
      }
    } finally {
      clearTimeout(timer);
      shard.probe = undefined;
      shard.probing = false;
    }
  }
}
