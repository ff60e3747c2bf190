import type { ServerResponse } from 'node:http';
import type { CatchUp } from '../delivery/catch-up';
import { type HoldLimits, StreamSubscriber } from '../delivery/subscriber';
import type { EventId } from '../history/event-id';
import type { HubLogger } from '../log';
import type { HubMetrics } from '../metrics';
import type { EventKind, StreamKind } from '../routing';
import { type ConnectionTimers, type OutboundLimits, SseConnection, writeClock } from '../sse/connection';
import { OutboundBudget } from '../sse/outbound-budget';
import { hasLivePosition, hasUserSubscriptions, type Transport, type UserSubscriptions } from '../transport/transport';
import type { Registry } from './registry';
import { TimerWheel } from './timer-wheel';

export type OpenResult =
  | { ok: true; subscriber: StreamSubscriber }
  | { ok: false; reason: 'over_cap' | 'replica_full' | 'draining' | 'client_gone' };

export interface StreamLimits {
  heartbeatMs: number;
  /** Open streams on this replica, across users and streams. */
  maxConnections: number;
  outbound: OutboundLimits;
  hold: HoldLimits;
  /** Bytes queued towards all clients of the replica: backlogs and frames held behind replays. */
  outboundMaxBytes: number;
}

/** The timer's period: a quarter of the heartbeat interval, within 25 ms..1 s. */
function tickIntervalMs(heartbeatMs: number): number {
  return Math.min(1000, Math.max(25, Math.floor(heartbeatMs / 4)));
}

/**
 * The life of a stream: opened (registered, then caught up from history), kept alive by one
 * timer for every connection (heartbeats, stalls, token expiry, failed catch-ups' retries),
 * and closed (by the client, the host, a drain or a bound). Each connection is filed in a
 * timer wheel under its next deadline, so a tick visits only the connections that are due.
 */
export class Streams implements ConnectionTimers {
  private draining = false;
  private ticker: NodeJS.Timeout | undefined;
  private readonly wheel: TimerWheel<SseConnection>;
  /** Connection ids are this replica's count of streams opened: short, and unique for its lifetime (logs only). */
  private connectionsOpened = 0;
  private readonly countHistoryLost = (): void => this.metrics.historyReset('history_lost');
  /** Set for transports that route per user: streams watch their user before reading history. */
  private readonly userSubscriptions: UserSubscriptions | undefined;
  private readonly outboundBudget: OutboundBudget;

  constructor(
    private readonly limits: StreamLimits,
    private readonly registry: Registry<StreamSubscriber>,
    private readonly catchUp: CatchUp,
    private readonly transport: Pick<Transport, 'isListening'> & Partial<UserSubscriptions>,
    private readonly metrics: HubMetrics,
    private readonly log: HubLogger,
  ) {
    this.wheel = new TimerWheel(tickIntervalMs(limits.heartbeatMs), Date.now());
    this.userSubscriptions = hasUserSubscriptions(transport) ? transport : undefined;
    this.outboundBudget = new OutboundBudget(limits.outboundMaxBytes, () => metrics.outboundBudgetCut());
  }

  /** Bytes queued in user space towards this replica's clients now. */
  get outboundBytes(): number {
    return this.outboundBudget.bytes;
  }

  /** A connection's deadline moved as it became congested or caught up: filed anew, at once. */
  refile(connection: SseConnection): void {
    if (!connection.isClosed) this.wheel.file(connection, connection.nextDeadline(this.limits.heartbeatMs));
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /**
   * Opens an SSE response for an authenticated user, unless the hub is draining, the replica is
   * full or the user is at the cap. The stream is registered before history is read, so nothing published
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
    if (this.registry.total() >= this.limits.maxConnections) return { ok: false, reason: 'replica_full' };
    if (!this.registry.hasRoomFor(stream, userId)) return { ok: false, reason: 'over_cap' };
    const connection = new SseConnection(
      (++this.connectionsOpened).toString(36),
      userId,
      expiresAt,
      res,
      this.limits.outbound,
      (closed, reason) => {
        this.wheel.remove(closed);
        this.registry.remove(stream, subscriber);
        this.catchUp.forget(subscriber);
        if (this.userSubscriptions && !this.registry.holds(userId)) this.userSubscriptions.release(userId);
        this.metrics.disconnected(reason);
        this.log.debug({ connectionId: closed.id, stream, reason }, 'stream closed');
      },
      this,
      this.outboundBudget,
    );
    const subscriber = new StreamSubscriber(
      connection,
      stream,
      lastEventId,
      this.limits.hold,
      this.countHistoryLost,
      kinds,
    );
    connection.idleListener = subscriber;
    this.registry.add(stream, subscriber);
    const start = (): Promise<void> => {
      // The client may have gone while its user's channel was being subscribed.
      if (connection.isClosed) return Promise.resolve();
      connection.open();
      this.refile(connection);
      this.log.debug({ connectionId: connection.id, stream, resumeFrom: lastEventId }, 'stream opened');
      return this.catchUp.run(subscriber, 'connect');
    };
    if (this.userSubscriptions) {
      // The response starts once the user's events reach this replica, so every event published
      // after the client saw its stream open is delivered (and its history is read only then);
      // live events wait for the replay.
      subscriber.hold();
      this.userSubscriptions
        .watch(userId)
        .then(start)
        .catch((err: unknown) => this.catchUpCrashed(err));
    } else {
      start().catch((err: unknown) => this.catchUpCrashed(err));
    }
    return { ok: true, subscriber };
  }

  /** Holds every stream's live events while the transport resubscribes. */
  holdAll(): void {
    this.catchUp.holdAll(this.registry.all());
  }

  /** Fills every stream's gap once the transport's subscription is back. */
  recover(): void {
    this.catchUp.recoverAll(this.registry.all()).catch((err: unknown) => this.catchUpCrashed(err));
  }

  /** Heartbeats, stall detection, token expiry and catch-up retries for every connection, from one timer. */
  start(): void {
    const { heartbeatMs } = this.limits;
    writeClock.now = Date.now();
    this.ticker = setInterval(() => {
      const now = Date.now();
      writeClock.now = now;
      let livePosition: EventId | undefined;
      let positionRead = false;
      this.wheel.takeDue(now, (connection) => {
        if (connection.tick(now, heartbeatMs)) {
          // Read once per tick, and only when some stream went idle.
          if (!positionRead) {
            livePosition = this.livePosition();
            positionRead = true;
          }
          connection.idleListener?.refreshClientId(livePosition);
        }
        // A deadline that moved (the stream wrote since it was filed) is found here, not on every write.
        if (!connection.isClosed) this.wheel.file(connection, connection.nextDeadline(heartbeatMs));
      });
      if (this.transport.isListening()) this.catchUp.retryFailed(now).catch((err: unknown) => this.catchUpCrashed(err));
    }, this.wheel.resolutionMs);
  }

  private livePosition(): EventId | undefined {
    return hasLivePosition(this.transport) ? this.transport.livePosition() : undefined;
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

  private catchUpCrashed(err: unknown): void {
    this.log.error({ err }, 'catching a stream up failed');
  }
}
