import type { EventId } from '../history/event-id';
import type { HistorySource } from '../history/history';
import type { EventKind } from '../routing';

/**
 * Receives every message published on any replica, once, in the order the transport delivers
 * it. `kind` is whatever the publisher addressed; the hub rejects kinds it does not know.
 */
export type MessageSink = (kind: string, envelope: Buffer) => void;

export interface Published {
  /** The event's id (`<epoch>:<ms>-<seq>`), also sent to clients as the SSE `id:`. */
  id: string;
  /**
   * Subscribers (replicas) the transport handed the event to; undefined where the transport
   * cannot know (the Postgres outbox: every replica reads every committed row, later).
   */
  receivers: number | undefined;
}

/**
 * The seam between the hub and whatever carries events between replicas and keeps their
 * per-user history. Everything above it (HTTP, auth, registry, routing, SSE encoding) is
 * transport-agnostic.
 */
export interface Transport extends HistorySource {
  readonly name: string;
  /** Begins receiving. Resolves once started; the subscription may come up later (see isListening). */
  start(sink: MessageSink): Promise<void>;
  /**
   * Assigns the event the user's next id, records it in the user's history and hands it to
   * every replica, this one included, as one step. Rejects quickly when the transport is down
   * (TransportUnavailableError) and never queues the event for later.
   */
  publish(kind: EventKind, userId: string, event: Buffer): Promise<Published>;
  /** True while messages published now will reach this replica, and it can publish and read history. */
  isListening(): boolean;
  /**
   * Follows every (re)establishment of the subscription, the first one included: `subscribing`
   * runs just before it, while nothing can have arrived yet; `subscribed` once messages flow.
   */
  onSubscribe(listener: SubscriptionListener): void;
  /**
   * For stores with one order for all users (the Postgres outbox): the position up to which
   * every event has been handed to the sink. A stream caught up live is past it too, even if
   * none of those events were its user's, so an idle client can be moved there and does not
   * fall behind retention. Undefined where ids are per user (Redis, memory).
   */
  livePosition?(): EventId | undefined;
  close(): Promise<void>;
}

export interface SubscriptionListener {
  subscribing(): void;
  /** `again` is false for the first subscription of this transport. */
  subscribed(again: boolean): void;
}

export class TransportUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransportUnavailableError';
  }
}

/**
 * The request reached the store but no answer came back (timeout, connection lost mid-call):
 * the event may have been published. Retrying may deliver it twice, under two ids.
 */
export class PublishOutcomeUnknownError extends TransportUnavailableError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PublishOutcomeUnknownError';
  }
}

/** The store refused the event itself (size, shape); retrying will not help. */
export class EventRejectedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EventRejectedError';
  }
}
