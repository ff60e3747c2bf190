import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { LogRateLimiter } from './log';
import type { HubMetrics } from './metrics';
import { Registry } from './registry';
import { isEventKind, routesFor, type EventKind, type StreamKind } from './routing';
import { SseConnection, type OutboundLimits } from './sse/connection';
import { encodeFrame, wrapWithProtocol } from './sse/frame';
import { parseEnvelope, type Rejected } from './wire/envelope';

export interface HubOptions {
  maxEventBytes: number;
  heartbeatMs: number;
  maxConnectionsPerUser: number;
  outbound: OutboundLimits;
}

export type OpenResult =
  | { ok: true; connection: SseConnection }
  | { ok: false; reason: 'over_cap' | 'draining' | 'client_gone' };

/**
 * Local fan-out: takes envelopes from the transport, routes them by kind and writes one
 * encoded frame per stream to every matching connection of the addressed user.
 */
export class Hub {
  readonly registry: Registry<SseConnection>;
  private draining = false;
  private ticker: NodeJS.Timeout | undefined;
  private readonly rejectLogLimiter = new LogRateLimiter();

  constructor(
    private readonly options: HubOptions,
    private readonly metrics: HubMetrics,
    private readonly log: Logger,
  ) {
    this.registry = new Registry(options.maxConnectionsPerUser);
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** The transport's sink. Never throws: a bad message is counted and logged, and the replica keeps serving. */
  readonly receive = (kind: string, envelope: Buffer): void => {
    try {
      this.dispatch(kind, envelope);
    } catch (err) {
      // A bug here must not take the transport's reader (and every other user's stream) down with it.
      this.log.error({ err, kind }, 'event dispatch failed');
    }
  };

  private dispatch(kind: string, envelope: Buffer): void {
    const startedAt = performance.now();
    if (!isEventKind(kind)) {
      this.reject({ ok: false, reason: 'unknown_kind', detail: `unknown event kind ${JSON.stringify(kind)}` });
      return;
    }
    const parsed = parseEnvelope(envelope, this.options.maxEventBytes);
    if (!parsed.ok) {
      this.reject(parsed, kind);
      return;
    }
    this.metrics.eventReceived(kind);
    for (const route of routesFor(kind)) {
      const subscribers = this.registry.subscribers(route.stream, parsed.userId);
      if (subscribers === undefined) continue;
      const frame = encodeFrame(route.wrapWithProtocol ? wrapWithProtocol(kind, parsed.event) : parsed.event);
      let written = 0;
      for (const subscriber of subscribers) if (subscriber.send(frame)) written++;
      this.metrics.delivered(route.stream, written);
    }
    this.metrics.observeDelivery((performance.now() - startedAt) / 1000);
  }

  /** This replica's open streams of a user that events of `kind` reach. */
  localConnections(kind: EventKind, userId: string): number {
    let count = 0;
    for (const route of routesFor(kind)) count += this.registry.subscribers(route.stream, userId)?.size ?? 0;
    return count;
  }

  /** Opens an SSE response for an authenticated user, unless the hub is draining or the user is at the cap. */
  open(stream: StreamKind, userId: string, expiresAt: number, res: ServerResponse): OpenResult {
    // The client may have hung up while its token was being verified; its 'close' has fired already.
    if (res.destroyed || !res.socket || res.socket.destroyed) return { ok: false, reason: 'client_gone' };
    if (this.draining) return { ok: false, reason: 'draining' };
    if (!this.registry.hasRoomFor(stream, userId)) return { ok: false, reason: 'over_cap' };
    const connection = new SseConnection(
      randomUUID(),
      userId,
      expiresAt,
      res,
      this.options.outbound,
      (closed, reason) => {
        this.registry.remove(stream, closed);
        this.metrics.disconnected(reason);
        this.log.debug({ connectionId: closed.id, stream, reason }, 'stream closed');
      },
    );
    this.registry.add(stream, connection);
    connection.open();
    this.log.debug({ connectionId: connection.id, stream }, 'stream opened');
    return { ok: true, connection };
  }

  /** Heartbeats, stall detection and token expiry for every connection, from one timer. */
  start(): void {
    const interval = Math.min(1000, Math.max(25, Math.floor(this.options.heartbeatMs / 4)));
    this.ticker = setInterval(() => {
      const now = Date.now();
      for (const connection of this.registry.all()) connection.tick(now, this.options.heartbeatMs);
    }, interval);
  }

  /**
   * Stops taking streams and closes the open ones spread over `drainMs`, each with a
   * jittered `retry:` hint, so clients come back to other replicas without a stampede.
   */
  async drain(drainMs: number): Promise<void> {
    this.draining = true;
    const connections = [...this.registry.all()];
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
    for (const connection of [...this.registry.all()]) connection.close('shutdown');
  }

  private reject(rejected: Rejected, kind?: string): void {
    this.metrics.eventRejected(rejected.reason);
    const admitted = this.rejectLogLimiter.admit(rejected.reason);
    if (admitted) {
      this.log.warn(
        { reason: rejected.reason, kind, detail: rejected.detail, suppressedSinceLast: admitted.suppressed },
        'dropped invalid event',
      );
    }
  }
}
