import type { StreamSubscriber } from '../delivery/subscriber';
import { formatEventId } from '../history/event-id';
import { type HubLogger, LogRateLimiter } from '../log';
import type { HubMetrics } from '../metrics';
import { type EventKind, routesFor, streamsNotCarrying } from '../routing';
import { type Flushable, flushSoon } from '../sse/flush-queue';
import { encodeEventFrame } from '../sse/frame';
import type { InboundEvent, RejectedMessage } from '../transport/transport';
import type { Registry } from './registry';

/**
 * The hot path: an event from the transport goes to every open stream of its user that shows
 * its kind, encoded once per stream kind, never parsed again. Streams that do not show it only
 * move their cursor past its id.
 */
export class Dispatcher implements Flushable {
  private readonly rejectLogLimiter = new LogRateLimiter();
  /** Kinds and publish times of this turn's delivered events, for the lag measured once their frames are out. */
  private lagKinds: EventKind[] = [];
  private lagPublishedMs: number[] = [];

  constructor(
    private readonly registry: Registry<StreamSubscriber>,
    private readonly metrics: HubMetrics,
    private readonly log: HubLogger,
    /** Whether an id's `<ms>` is its publish time, so the delivery lag can be read from it. */
    private readonly idsCarryPublishTime: boolean,
  ) {}

  /**
   * Observes this turn's delivery lags. The flush queue calls it after the connections queued
   * before it have written their frames (the ones queued later follow in the same loop), so the
   * figure ends where frames reach the sockets, not where they were encoded.
   */
  flushPending(): void {
    const now = Date.now();
    const kinds = this.lagKinds;
    const publishedMs = this.lagPublishedMs;
    this.lagKinds = [];
    this.lagPublishedMs = [];
    for (let i = 0; i < kinds.length; i++) {
      // The store's clock may run ahead of this replica's; a negative lag is skew, not speed.
      this.metrics.observeDeliveryLag(kinds[i] as EventKind, Math.max(0, now - (publishedMs[i] as number)) / 1000);
    }
  }

  /** Never throws: a bug here must not take the transport's reader (and every other user's stream) down. */
  event(inbound: InboundEvent): void {
    try {
      this.dispatch(inbound);
    } catch (err) {
      this.log.error({ err, kind: inbound.kind }, 'event dispatch failed');
    }
  }

  /** A message the transport refused at entry: counted and logged (rate-limited) once, here. */
  rejected({ reason, detail, kind }: RejectedMessage): void {
    this.metrics.eventRejected(reason);
    const admitted = this.rejectLogLimiter.admit(reason);
    if (admitted) {
      this.log.warn({ reason, kind, detail, suppressedSinceLast: admitted.suppressed }, 'dropped invalid event');
    }
  }

  /** This replica's open streams of a user that events of `kind` reach. */
  localConnections(kind: EventKind, userId: string): number {
    let count = 0;
    for (const route of routesFor(kind)) {
      const subscribers = this.registry.subscribers(route.stream, userId);
      if (subscribers !== undefined) for (const subscriber of subscribers) if (subscriber.carries(kind)) count++;
    }
    return count;
  }

  private dispatch({ kind, userId, id, event }: InboundEvent): void {
    const startedAt = performance.now();
    this.metrics.eventReceived(kind);
    const fields = id === undefined ? {} : { id: formatEventId(id) };
    let delivered = 0;
    for (const route of routesFor(kind)) {
      const subscribers = this.registry.subscribers(route.stream, userId);
      if (subscribers === undefined) continue;
      // Encoded once per stream kind, and only if some stream of the user shows it.
      let frame: Buffer | undefined;
      let written = 0;
      for (const subscriber of subscribers) {
        if (!subscriber.carries(kind)) {
          if (id !== undefined) subscriber.passOver(id, kind);
          continue;
        }
        frame ??= encodeEventFrame(kind, route.style, event, fields);
        if (subscriber.deliver(id, frame)) written++;
      }
      this.metrics.delivered(route.stream, written);
      delivered += written;
    }
    if (delivered > 0 && id !== undefined && this.idsCarryPublishTime) {
      if (this.lagKinds.length === 0) flushSoon(this);
      this.lagKinds.push(kind);
      this.lagPublishedMs.push(id.ms);
    }
    if (id !== undefined) {
      for (const stream of streamsNotCarrying(kind)) {
        const others = this.registry.subscribers(stream, userId);
        if (others !== undefined) for (const subscriber of others) subscriber.passOver(id, kind);
      }
    }
    this.metrics.observeDelivery((performance.now() - startedAt) / 1000);
  }
}
