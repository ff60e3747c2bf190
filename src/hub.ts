import type { ServerResponse } from 'node:http';
import type { HubLogger } from './log';
import { CatchUp } from './delivery/catch-up';
import { ReplayBudget } from './delivery/replay-budget';
import { StreamSubscriber } from './delivery/subscriber';
import type { ReplayBounds } from './limits';
import { formatEventId } from './history/event-id';
import type { HistorySource } from './history/history';
import {
  hasLivePosition,
  type InboundEvent,
  type RejectedMessage,
  type Transport,
  type TransportHandler,
} from './transport/transport';
import { LogRateLimiter } from './log';
import type { HubMetrics } from './metrics';
import { Registry } from './registry';
import { routesFor, streamsNotCarrying, type EventKind, type StreamKind } from './routing';
import { SseConnection, type OutboundLimits } from './sse/connection';
import { encodeEventFrame } from './sse/frame';

export interface HubOptions {
  maxEventBytes: number;
  heartbeatMs: number;
  maxConnectionsPerUser: number;
  /** Most events one catch-up sends before it answers with a reset instead. */
  replayMax: number;
  replay: ReplayBounds;
  outbound: OutboundLimits;
}

export type OpenResult =
  | { ok: true; subscriber: StreamSubscriber }
  | { ok: false; reason: 'over_cap' | 'draining' | 'client_gone' };

/** Streams caught up at once after a subscription loss; the rest wait their turn. */
const RECOVERY_CONCURRENCY = 32;

/**
 * Local fan-out: takes envelopes from the transport, routes them by kind and writes one
 * encoded frame per stream to every matching connection of the addressed user. Streams
 * start (and recover) from the user's history, so a reconnecting client loses nothing.
 */
export class HubCore {
  readonly registry: Registry<StreamSubscriber>;
  private draining = false;
  private ticker: NodeJS.Timeout | undefined;
  private retryingCatchUps = false;
  /** Between the transport announcing a (re)subscription and the recovery that follows it. */
  private awaitingRecovery = false;
  private readonly rejectLogLimiter = new LogRateLimiter();
  private readonly catchUp: CatchUp;
  /** Connection ids are this replica's count of streams opened: short, and unique for its lifetime (logs only). */
  private connectionsOpened = 0;
  private readonly countHistoryLost = (): void => this.metrics.historyReset('history_lost');
  /** What a stream may hold behind its replay; one object shared by every stream. */
  private readonly hold: { maxEvents: number; maxBytes: number };
  /** What the transport calls back into. Never throws: a bug must not take the transport's reader down with it. */
  readonly transportHandler: TransportHandler;

  constructor(
    private readonly options: HubOptions,
    private readonly history: HistorySource & Pick<Transport, 'isListening'>,
    private readonly metrics: HubMetrics,
    private readonly log: HubLogger,
  ) {
    this.registry = new Registry(options.maxConnectionsPerUser);
    const { replay } = options;
    this.hold = { maxEvents: options.outbound.maxEvents, maxBytes: replay.holdMaxBytes };
    this.catchUp = new CatchUp({
      history,
      replayMax: options.replayMax,
      maxEventBytes: options.maxEventBytes,
      page: { maxEntries: replay.pageEvents, maxBytes: replay.pageBytes },
      budget: new ReplayBudget(replay.replicaBytes),
      retry: { minMs: replay.retryMinMs, maxMs: replay.retryMaxMs },
      metrics,
      log,
    });
    this.transportHandler = {
      event: (inbound) => {
        try {
          this.dispatch(inbound);
        } catch (err) {
          log.error({ err, kind: inbound.kind }, 'event dispatch failed');
        }
      },
      rejected: (message) => this.reject(message),
      subscribing: () => this.holdAll(),
      subscribed: (again) => {
        if (again) metrics.resubscribed();
        this.recover();
      },
      metrics,
      log,
    };
  }

  get isDraining(): boolean {
    return this.draining;
  }

  private dispatch({ kind, userId, id, event }: InboundEvent): void {
    const startedAt = performance.now();
    this.metrics.eventReceived(kind);
    const fields = id === undefined ? {} : { id: formatEventId(id) };
    for (const route of routesFor(kind)) {
      const subscribers = this.registry.subscribers(route.stream, userId);
      if (subscribers === undefined) continue;
      // Encoded once per stream kind, and only if some stream of the user shows it.
      let frame: Buffer | undefined;
      let written = 0;
      for (const subscriber of subscribers) {
        if (!subscriber.carries(kind)) {
          if (id !== undefined) subscriber.passOver(id);
          continue;
        }
        frame ??= encodeEventFrame(kind, route.style, event, fields);
        if (subscriber.deliver(id, frame)) written++;
      }
      this.metrics.delivered(route.stream, written);
    }
    if (id !== undefined) {
      for (const stream of streamsNotCarrying(kind)) {
        const others = this.registry.subscribers(stream, userId);
        if (others !== undefined) for (const subscriber of others) subscriber.passOver(id);
      }
    }
    this.metrics.observeDelivery((performance.now() - startedAt) / 1000);
  }

  /** This replica's open streams of a user that events of `kind` reach. */
  localConnections(kind: EventKind, userId: string): number {
    let count = 0;
    for (const route of routesFor(kind)) count += this.registry.subscribers(route.stream, userId)?.size ?? 0;
    return count;
  }

  /**
   * Opens an SSE response for an authenticated user, unless the hub is draining or the user is
   * at the cap. The stream is registered before history is read, so nothing published
   * meanwhile slips between the replay and live delivery.
   */
  open(
    stream: StreamKind,
    userId: string,
    expiresAt: number,
    res: ServerResponse,
    lastEventId?: string,
    kinds?: ReadonlySet<EventKind>,
  ): OpenResult {
    // The client may have hung up while its token was being verified; its 'close' has fired already.
    if (res.destroyed || !res.socket || res.socket.destroyed) return { ok: false, reason: 'client_gone' };
    if (this.draining) return { ok: false, reason: 'draining' };
    if (!this.registry.hasRoomFor(stream, userId)) return { ok: false, reason: 'over_cap' };
    const connection = new SseConnection(
      (++this.connectionsOpened).toString(36),
      userId,
      expiresAt,
      res,
      this.options.outbound,
      (closed, reason) => {
        this.registry.remove(stream, subscriber);
        this.metrics.disconnected(reason);
        this.log.debug({ connectionId: closed.id, stream, reason }, 'stream closed');
      },
    );
    const subscriber = new StreamSubscriber(connection, stream, lastEventId, this.hold, this.countHistoryLost, kinds);
    subscriber.awaitingRecovery = this.awaitingRecovery;
    this.registry.add(stream, subscriber);
    connection.open();
    this.log.debug({ connectionId: connection.id, stream, resumeFrom: lastEventId }, 'stream opened');
    this.catchUp.run(subscriber, 'connect').catch((err: unknown) => this.catchUpCrashed(err));
    return { ok: true, subscriber };
  }

  /** Before the transport resubscribes: live events wait until each stream has caught up. */
  holdAll(): void {
    this.awaitingRecovery = true;
    for (const subscriber of this.registry.all()) {
      subscriber.awaitingRecovery = true;
      subscriber.hold();
    }
  }

  /**
   * After the transport's subscription came back, fills every local stream's gap from the
   * user's history: events published while this replica was not listening.
   */
  recover(): void {
    this.holdAll();
    this.awaitingRecovery = false;
    for (const subscriber of this.registry.all()) subscriber.awaitingRecovery = false;
    this.catchUpAll([...this.registry.all()], 'recover').catch((err: unknown) => this.catchUpCrashed(err));
  }

  private catchUpCrashed(err: unknown): void {
    this.log.error({ err }, 'catching a stream up failed');
  }

  private async catchUpAll(subscribers: StreamSubscriber[], purpose: 'recover'): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < subscribers.length) {
        const subscriber = subscribers[next++] as StreamSubscriber;
        if (!subscriber.isClosed) await this.catchUp.run(subscriber, purpose);
      }
    };
    await Promise.all(Array.from({ length: Math.min(RECOVERY_CONCURRENCY, subscribers.length) }, worker));
  }

  /** Streams whose history read failed, each once its own backoff has passed (see CatchUp). */
  private retryFailedCatchUps(now: number): void {
    if (this.retryingCatchUps || !this.history.isListening()) return;
    const waiting = [...this.registry.all()].filter((s) => this.catchUp.retryDue(s, now));
    if (waiting.length === 0) return;
    this.retryingCatchUps = true;
    this.catchUpAll(waiting, 'recover')
      .catch((err: unknown) => this.catchUpCrashed(err))
      .finally(() => {
        this.retryingCatchUps = false;
      });
  }

  /** Heartbeats, stall detection and token expiry for every connection, from one timer. */
  start(): void {
    const interval = Math.min(1000, Math.max(25, Math.floor(this.options.heartbeatMs / 4)));
    this.ticker = setInterval(() => {
      const now = Date.now();
      const livePosition = hasLivePosition(this.history) ? this.history.livePosition() : undefined;
      for (const subscriber of this.registry.all()) {
        if (subscriber.connection.tick(now, this.options.heartbeatMs)) subscriber.refreshClientId(livePosition);
      }
      this.retryFailedCatchUps(now);
    }, interval);
  }

  /**
   * Stops taking streams and closes the open ones spread over `drainMs`, each with a
   * jittered `retry:` hint, so clients come back to other replicas without a stampede.
   */
  async drain(drainMs: number): Promise<void> {
    this.draining = true;
    const connections = [...this.registry.all()].map((subscriber) => subscriber.connection);
    if (connections.length === 0) return;
    await new Promise<void>((resolve) => {
      let closed = 0;
      connections.forEach((connection, index) => {
        const delay = Math.floor((drainMs * index) / connections.length);
        setTimeout(() => {
          connection.closeWithRetryHint(500 + Math.floor(Math.random() * 2500));
          if (++closed === connections.length) resolve();
        }, delay);
      });
    });
  }

  stop(): void {
    clearInterval(this.ticker);
    for (const subscriber of [...this.registry.all()]) subscriber.connection.close('shutdown');
  }

  private reject({ reason, detail, kind }: RejectedMessage): void {
    this.metrics.eventRejected(reason);
    const admitted = this.rejectLogLimiter.admit(reason);
    if (admitted) {
      this.log.warn({ reason, kind, detail, suppressedSinceLast: admitted.suppressed }, 'dropped invalid event');
    }
  }
}
