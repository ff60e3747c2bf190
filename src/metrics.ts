import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { EVENT_KINDS, STREAM_KINDS, type EventKind, type StreamKind } from './routing';
import { REJECT_REASONS, type RejectReason } from './wire/envelope';
import { DISCONNECT_REASONS, type DisconnectReason } from './sse/connection';
import { RESET_REASONS, type ResetReason } from './history/history';
import type { CatchUpMetrics, CatchUpPurpose } from './delivery/catch-up';
import { WAKE_SOURCES, type TransportMetrics, type WakeSource } from './transport/transport';

export const CONNECTION_REJECT_REASONS = ['unauthorized', 'forbidden', 'over_cap', 'replica_full', 'draining'] as const;
export type ConnectionRejectReason = (typeof CONNECTION_REJECT_REASONS)[number];

export const PUBLISH_FORBIDDEN_REASONS = ['other_user', 'kind'] as const;
export type PublishForbiddenReason = (typeof PUBLISH_FORBIDDEN_REASONS)[number];

/**
 * The seed's dashboards label the aggregated stream "context"; keep that label (name and value)
 * so their series stay the same. Everywhere else the stream is named as its route: `contexts`.
 */
const CHANNEL_LABEL: Record<StreamKind, string> = {
  agui: 'agui',
  a2a: 'a2a',
  contexts: 'context',
  analytics: 'analytics',
  multiplexed: 'multiplexed',
};

export interface MetricsSources {
  connections(stream: StreamKind): number;
  connectedUsers(): number;
  transportListening(): boolean;
  /** Bytes queued in user space towards this replica's clients. */
  outboundBytes(): number;
}

export interface MetricsOptions {
  /** The host's registry; the hub registers its metrics there and nothing else (no default process metrics). */
  registry?: Registry;
  /** Put before every metric name, e.g. `myapp_`. */
  prefix?: string;
}

/**
 * Prometheus metrics in a registry of the hub's own. No label carries a user or connection
 * id, so the number of series is fixed whatever the traffic.
 */
export class HubMetrics implements CatchUpMetrics, TransportMetrics {
  readonly registry: Registry;
  private readonly eventsReceived: Counter<'kind'>;
  private readonly eventsRejected: Counter<'reason'>;
  private readonly eventsSkipped: Counter;
  private readonly framesDelivered: Counter<'stream'>;
  private readonly disconnects: Counter<'reason'>;
  private readonly connectionsRejected: Counter<'reason'>;
  private readonly published: Counter<'kind' | 'result'>;
  private readonly resubscribes: Counter;
  private readonly deliveryLatency: Histogram;
  private readonly deliveryLag: Map<EventKind, Histogram.Internal<'kind'>>;
  private readonly historyReplayed: Counter;
  private readonly historyRecovered: Counter;
  private readonly historyResets: Counter<'reason'>;
  private readonly historyReadFailures: Counter;
  private readonly replayPages: Counter;
  private readonly replayBytes: Counter;
  private readonly quotaRefusals: Counter;
  private readonly publishForbidden: Counter<'reason'>;
  private readonly outboxRowsRead: Counter;
  private readonly outboxWakeups: Counter<'source'>;
  private readonly outboxLag: Gauge;
  private readonly redisMessages: Counter<'channel'>;
  private readonly redisUserChannels: Gauge;
  private readonly redisSelfCheckFailures: Counter;
  private readonly outboundBudgetCuts: Counter;

  constructor(sources: MetricsSources, options: MetricsOptions = {}) {
    this.registry = options.registry ?? new Registry();
    const prefix = options.prefix ?? '';
    const registers = [this.registry];

    new Gauge({
      name: `${prefix}sse_active_connections`,
      help: 'Open SSE connections on this replica, by stream (the seed\'s names: "context" is the contexts stream)',
      labelNames: ['channel'],
      registers,
      collect() {
        for (const stream of STREAM_KINDS) this.set({ channel: CHANNEL_LABEL[stream] }, sources.connections(stream));
      },
    });
    new Gauge({
      name: `${prefix}ssehub_connected_users`,
      help: 'Users with at least one open stream on this replica',
      registers,
      collect() {
        this.set(sources.connectedUsers());
      },
    });
    new Gauge({
      name: `${prefix}ssehub_transport_listening`,
      help: '1 while the transport subscription is established, 0 while it is down',
      registers,
      collect() {
        this.set(sources.transportListening() ? 1 : 0);
      },
    });
    new Gauge({
      name: `${prefix}ssehub_outbound_buffered_bytes`,
      help: 'Bytes queued in this replica towards its clients: frames waiting for slow sockets and live frames held behind replays (bounded by SSEHUB_OUTBOUND_MAX_BYTES; the chunk a congested socket holds in Node is not counted)',
      registers,
      collect() {
        this.set(sources.outboundBytes());
      },
    });
    this.outboundBudgetCuts = new Counter({
      name: `${prefix}ssehub_outbound_budget_cuts_total`,
      help: 'Streams cut because the bytes queued towards all clients passed SSEHUB_OUTBOUND_MAX_BYTES, furthest behind first (also counted as disconnects with reason slow_consumer)',
      registers,
    });
    this.eventsReceived = new Counter({
      name: `${prefix}ssehub_events_received_total`,
      help: 'Valid events received from the transport, by kind',
      labelNames: ['kind'],
      registers,
    });
    this.eventsRejected = new Counter({
      name: `${prefix}ssehub_events_rejected_total`,
      help: 'Messages dropped as invalid as they arrived from the transport, by reason; replays drop bad stored entries again without counting them',
      labelNames: ['reason'],
      registers,
    });
    this.eventsSkipped = new Counter({
      name: `${prefix}ssehub_events_skipped_total`,
      help: 'Events dropped unparsed because no stream of their user is open on this replica',
      registers,
    });
    this.framesDelivered = new Counter({
      name: `${prefix}ssehub_frames_delivered_total`,
      help: 'Event frames written to connections, by stream',
      labelNames: ['stream'],
      registers,
    });
    this.disconnects = new Counter({
      name: `${prefix}ssehub_disconnects_total`,
      help: 'Closed SSE connections, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.connectionsRejected = new Counter({
      name: `${prefix}ssehub_connections_rejected_total`,
      help: 'Stream requests refused, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.published = new Counter({
      name: `${prefix}ssehub_published_total`,
      help: 'Events published through this replica (webhook), by kind and result',
      labelNames: ['kind', 'result'],
      registers,
    });
    this.resubscribes = new Counter({
      name: `${prefix}ssehub_transport_resubscribes_total`,
      help: 'Times the transport subscription was re-established after a loss',
      registers,
    });
    this.deliveryLatency = new Histogram({
      name: `${prefix}ssehub_delivery_seconds`,
      help: 'Time from receiving an event from the transport to writing it to every local connection',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    const deliveryLag = new Histogram({
      name: `${prefix}ssehub_delivery_lag_seconds`,
      help: "Time from an event's publish (its id's time, the store's clock) until its frames were handed to this replica's sockets, by kind; live deliveries on transports whose ids carry the time (Redis, memory)",
      labelNames: ['kind'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.deliveryLag = new Map(EVENT_KINDS.map((kind) => [kind, deliveryLag.labels({ kind })]));
    for (const kind of EVENT_KINDS) deliveryLag.zero({ kind });

    this.historyReplayed = new Counter({
      name: `${prefix}ssehub_history_replayed_total`,
      help: 'Events replayed from history to streams that connected with a Last-Event-ID',
      registers,
    });
    this.historyRecovered = new Counter({
      name: `${prefix}ssehub_history_recovered_total`,
      help: 'Events filled in from history for open streams after the transport subscription came back',
      registers,
    });
    this.historyResets = new Counter({
      name: `${prefix}ssehub_history_resets_total`,
      help: 'Reset events sent to streams whose history could not be replayed, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.historyReadFailures = new Counter({
      name: `${prefix}ssehub_history_read_failures_total`,
      help: 'History reads that failed (store unreachable); the stream catches up once it is back',
      registers,
    });

    this.replayPages = new Counter({
      name: `${prefix}ssehub_replay_pages_total`,
      help: 'Pages of history read from the store for replays (each bounded by SSEHUB_REPLAY_PAGE_EVENTS and SSEHUB_REPLAY_PAGE_BYTES)',
      registers,
    });
    this.replayBytes = new Counter({
      name: `${prefix}ssehub_replay_bytes_total`,
      help: 'Event bytes of history read from the store for replays',
      registers,
    });
    this.quotaRefusals = new Counter({
      name: `${prefix}ssehub_publish_quota_refusals_total`,
      help: 'Webhook publishes refused with 429 because the principal used up its publish quota',
      registers,
    });
    this.publishForbidden = new Counter({
      name: `${prefix}ssehub_publish_forbidden_total`,
      help: "Webhook publishes refused with 403, by reason: other_user (user_id not the token's) or kind (system and analytics need the service role)",
      labelNames: ['reason'],
      registers,
    });

    this.outboxRowsRead = new Counter({
      name: `${prefix}ssehub_outbox_rows_read_total`,
      help: 'Rows this replica read from the Postgres outbox (bad rows included)',
      registers,
    });
    this.outboxWakeups = new Counter({
      name: `${prefix}ssehub_outbox_wakeups_total`,
      help: 'Reads of the Postgres outbox, by what started them: notify, poll (fallback timer) or retry (rows waiting on an open transaction)',
      labelNames: ['source'],
      registers,
    });
    this.outboxLag = new Gauge({
      name: `${prefix}ssehub_outbox_lag_seconds`,
      help: 'Age of the oldest committed outbox row this replica has not delivered yet (0 when caught up)',
      registers,
    });

    this.redisMessages = new Counter({
      name: `${prefix}ssehub_redis_messages_total`,
      help: 'Messages this replica took off Redis, by channel: user (the channels of users with a stream open here) or kind (plain PUBLISH, which every replica receives)',
      labelNames: ['channel'],
      registers,
    });
    this.redisUserChannels = new Gauge({
      name: `${prefix}ssehub_redis_user_channels`,
      help: 'User channels this replica subscribes (users with a stream open here, and those released less than SSEHUB_REDIS_RELEASE_DELAY_MS ago)',
      registers,
    });
    this.redisSelfCheckFailures = new Counter({
      name: `${prefix}ssehub_redis_self_check_failures_total`,
      help: "Probes published on this replica's own channel that did not come back in time (each reconnects and resubscribes)",
      registers,
    });

    // Pre-create every labelled series so dashboards and alerts see zeros instead of gaps.
    for (const kind of EVENT_KINDS) this.eventsReceived.inc({ kind }, 0);
    for (const reason of REJECT_REASONS) this.eventsRejected.inc({ reason }, 0);
    for (const stream of STREAM_KINDS) this.framesDelivered.inc({ stream }, 0);
    for (const reason of DISCONNECT_REASONS) this.disconnects.inc({ reason }, 0);
    for (const reason of CONNECTION_REJECT_REASONS) this.connectionsRejected.inc({ reason }, 0);
    for (const reason of RESET_REASONS) this.historyResets.inc({ reason }, 0);
    for (const source of WAKE_SOURCES) this.outboxWakeups.inc({ source }, 0);
    for (const channel of ['user', 'kind']) this.redisMessages.inc({ channel }, 0);
    for (const reason of PUBLISH_FORBIDDEN_REASONS) this.publishForbidden.inc({ reason }, 0);
    for (const kind of EVENT_KINDS) {
      this.published.inc({ kind, result: 'ok' }, 0);
      this.published.inc({ kind, result: 'failed' }, 0);
    }
  }

  eventReceived(kind: EventKind): void {
    this.eventsReceived.inc({ kind });
  }

  eventSkipped(): void {
    this.eventsSkipped.inc();
  }

  eventRejected(reason: RejectReason): void {
    this.eventsRejected.inc({ reason });
  }

  delivered(stream: StreamKind, frames: number): void {
    this.framesDelivered.inc({ stream }, frames);
  }

  disconnected(reason: DisconnectReason): void {
    this.disconnects.inc({ reason });
  }

  outboundBudgetCut(): void {
    this.outboundBudgetCuts.inc();
  }

  connectionRejected(reason: ConnectionRejectReason): void {
    this.connectionsRejected.inc({ reason });
  }

  publishResult(kind: EventKind, ok: boolean): void {
    this.published.inc({ kind, result: ok ? 'ok' : 'failed' });
  }

  resubscribed(): void {
    this.resubscribes.inc();
  }

  historyDelivered(purpose: CatchUpPurpose, events: number): void {
    (purpose === 'connect' ? this.historyReplayed : this.historyRecovered).inc(events);
  }

  historyReset(reason: ResetReason): void {
    this.historyResets.inc({ reason });
  }

  historyReadFailed(): void {
    this.historyReadFailures.inc();
  }

  replayPageRead(bytes: number): void {
    this.replayPages.inc();
    this.replayBytes.inc(bytes);
  }

  publishOverQuota(): void {
    this.quotaRefusals.inc();
  }

  publishRefused(reason: PublishForbiddenReason): void {
    this.publishForbidden.inc({ reason });
  }

  rowsRead(rows: number): void {
    this.outboxRowsRead.inc(rows);
  }

  wokeUp(source: WakeSource): void {
    this.outboxWakeups.inc({ source });
  }

  lag(seconds: number): void {
    this.outboxLag.set(seconds);
  }

  reconnected(): void {
    this.resubscribed();
  }

  messageReceived(channel: 'user' | 'kind'): void {
    this.redisMessages.inc({ channel });
  }

  userChannels(count: number): void {
    this.redisUserChannels.set(count);
  }

  selfCheckFailed(): void {
    this.redisSelfCheckFailures.inc();
  }

  observeDelivery(seconds: number): void {
    this.deliveryLatency.observe(seconds);
  }

  observeDeliveryLag(kind: EventKind, seconds: number): void {
    this.deliveryLag.get(kind)?.observe(seconds);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
