import type { ServerResponse } from 'node:http';
import type { CatchUp } from '../delivery/catch-up';
import { type HoldLimits, StreamSubscriber } from '../delivery/subscriber';
import type { HubLogger } from '../log';
import type { HubMetrics } from '../metrics';
import type { EventKind, StreamKind } from '../routing';
import { type OutboundLimits, SseConnection } from '../sse/connection';
import { hasLivePosition, type Transport } from '../transport/transport';
import type { Registry } from './registry';

export type OpenResult =
  | { ok: true; subscriber: StreamSubscriber }
  | { ok: false; reason: 'over_cap' | 'replica_full' | 'draining' | 'client_gone' };

export interface StreamLimits {
  heartbeatMs: number;
  /** Open streams on this replica, across users and streams. */
  maxConnections: number;
  outbound: OutboundLimits;
  hold: HoldLimits;
}

/**
 * The life of a stream: opened (registered, then caught up from history), kept alive by one
 * timer for every connection (heartbeats, stalls, token expiry, failed catch-ups' retries),
 * and closed (by the client, the host, a drain or a bound).
 */
export class Streams {
  private draining = false;
  private ticker: NodeJS.Timeout | undefined;
  /** Connection ids are this replica's count of streams opened: short, and unique for its lifetime (logs only). */
  private connectionsOpened = 0;
  private readonly countHistoryLost = (): void => this.metrics.historyReset('history_lost');

  constructor(
    private readonly limits: StreamLimits,
    private readonly registry: Registry<StreamSubscriber>,
    private readonly catchUp: CatchUp,
    private readonly transport: Pick<Transport, 'isListening'>,
    private readonly metrics: HubMetrics,
    private readonly log: HubLogger,
  ) {}

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
        this.registry.remove(stream, subscriber);
        this.catchUp.forget(subscriber);
        this.metrics.disconnected(reason);
        this.log.debug({ connectionId: closed.id, stream, reason }, 'stream closed');
      },
    );
    const subscriber = new StreamSubscriber(
      connection,
      stream,
      lastEventId,
      this.limits.hold,
      this.countHistoryLost,
      kinds,
    );
    this.registry.add(stream, subscriber);
    connection.open();
    this.log.debug({ connectionId: connection.id, stream, resumeFrom: lastEventId }, 'stream opened');
    this.catchUp.run(subscriber, 'connect').catch((err: unknown) => this.catchUpCrashed(err));
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
    const interval = Math.min(1000, Math.max(25, Math.floor(heartbeatMs / 4)));
    this.ticker = setInterval(() => {
      const now = Date.now();
      const livePosition = hasLivePosition(this.transport) ? this.transport.livePosition() : undefined;
      for (const subscriber of this.registry.all()) {
        if (subscriber.connection.tick(now, heartbeatMs)) subscriber.refreshClientId(livePosition);
      }
      if (this.transport.isListening()) this.catchUp.retryFailed(now).catch((err: unknown) => this.catchUpCrashed(err));
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

  private catchUpCrashed(err: unknown): void {
    this.log.error({ err }, 'catching a stream up failed');
  }
}
