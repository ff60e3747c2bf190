import type { StreamSubscriber } from '../delivery/subscriber';
import { formatEventId } from '../history/event-id';
import { type HubLogger, LogRateLimiter } from '../log';
import type { HubMetrics } from '../metrics';
import { type EventKind, routesFor, streamsNotCarrying } from '../routing';
import { encodeEventFrame } from '../sse/frame';
import type { InboundEvent, RejectedMessage } from '../transport/transport';
import type { Registry } from './registry';

/**
 * The hot path: an event from the transport goes to every open stream of its user that shows
 * its kind, encoded once per stream kind, never parsed again. Streams that do not show it only
 * move their cursor past its id.
 */
export class Dispatcher {
  private readonly rejectLogLimiter = new LogRateLimiter();

  constructor(
    private readonly registry: Registry<StreamSubscriber>,
    private readonly metrics: HubMetrics,
    private readonly log: HubLogger,
  ) {}

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
}
