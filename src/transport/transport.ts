import type { EventId } from '../history/event-id';
import type { HistorySource } from '../history/history';
import type { EventKind } from '../routing';
import type { RejectReason } from '../wire/envelope';
import type { HubLogger } from '../log';
import type { PublishQuotaLimits } from '../limits';

/**
 * One event as it enters the hub: its kind known, its user id, id and event bytes checked at
 * the boundary where it entered (the transport's reader, the webhook), and trusted from there on.
 */
export interface InboundEvent {
  kind: EventKind;
  userId: string;
  /** Absent for events published without history (a plain PUBLISH). */
  id: EventId | undefined;
  /** The event object's bytes, exactly as published. */
  event: Buffer;
}

/** What a message that failed the entry checks was, for the hub to count and log once. */
export interface RejectedMessage {
  reason: RejectReason;
  detail: string;
  /** The kind it was addressed to, when known. */
  kind?: string;
}

/** What woke a polling reader: a notification, its fallback poll, or a retry. */
export const WAKE_SOURCES = ['notify', 'poll', 'retry'] as const;
export type WakeSource = (typeof WAKE_SOURCES)[number];

/** What a transport reports about itself; the outbox reader's rows, wake-ups and lag. */
export interface TransportMetrics {
  rowsRead(rows: number): void;
  wokeUp(source: WakeSource): void;
  /** Seconds the oldest committed row this replica has not delivered yet has waited; 0 when caught up. */
  lag(seconds: number): void;
  reconnected(): void;
  /** A message taken off a per-user channel, or off a kind channel every replica receives. */
  messageReceived?(channel: 'user' | 'kind'): void;
  /** Users whose channel this replica subscribes. */
  userChannels?(count: number): void;
  /** The subscription failed to deliver its own probe in time. */
  selfCheckFailed?(): void;
}

/** The one object a transport calls back into; it never throws. */
export interface TransportHandler {
  /** Every valid event published on any replica, once, in the order the transport delivers it. */
  event(event: InboundEvent): void;
  rejected(message: RejectedMessage): void;
  /**
   * Whether this replica has an open stream of the user. A transport that can read the user
   * before parsing a message drops what this answers false for, and says so through skipped().
   */
  holds(userId: string): boolean;
  /** A message dropped unparsed because holds() answered false for its user. */
  skipped(): void;
  /** Just before each (re)subscription, the first one included, while nothing can have arrived yet. */
  subscribing(): void;
  /** Once messages flow; `again` is false for the first subscription of this transport. */
  subscribed(again: boolean): void;
  /** Where a transport reports what only it sees (the hub's metrics implement it). */
  readonly metrics: TransportMetrics;
  /** The hub's logger, for transports constructed without one. */
  readonly log: HubLogger;
}

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
  /**
   * True when an id's `<ms>` is its publish time in epoch milliseconds (the store's clock), as
   * Redis's and memory's are; the hub's delivery lag is read from it. Absent: no lag is measured.
   */
  readonly idsCarryPublishTime?: boolean;
  /** Begins receiving. Resolves once started; the subscription may come up later (see isListening). */
  start(handler: TransportHandler): Promise<void>;
  /**
   * Assigns the event the user's next id, records it in the user's history and hands it to
   * every replica, this one included, as one step. Rejects quickly when the transport is down
   * (TransportUnavailableError) and never queues the event for later.
   */
  publish(kind: EventKind, userId: string, event: Buffer): Promise<Published>;
  /** True while messages published now will reach this replica, and it can publish and read history. */
  isListening(): boolean;
  close(): Promise<void>;
}

/**
 * A capability of stores with one order for all users (the Postgres outbox): the position up
 * to which every event has been handed to the handler. A stream caught up live is past it too,
 * even if none of those events were its user's, so an idle client can be moved there and does
 * not fall behind retention. Stores whose ids are per user (Redis, memory) lack it.
 */
export interface LivePosition {
  livePosition(): EventId | undefined;
}

/**
 * A capability of stores every replica shares: short-lived single-use records (stream tickets),
 * so that a ticket issued by one replica is redeemed on any other exactly once.
 */
export interface TicketStore {
  putTicket(key: string, value: string, ttlMs: number): Promise<void>;
  /** The value, removed in the same step so a second take finds nothing; undefined when absent or expired. */
  takeTicket(key: string): Promise<string | undefined>;
}

export function hasTicketStore<T extends object>(transport: T): transport is T & TicketStore {
  const candidate = transport as Partial<TicketStore>;
  return typeof candidate.putTicket === 'function' && typeof candidate.takeTicket === 'function';
}

/**
 * A capability of stores every replica shares: publish quota windows counted once for all
 * replicas. Answers 0 when a publish of `bytes` is admitted (and counted), else the milliseconds
 * until the principal's window ends.
 */
export interface QuotaStore {
  takeQuota(name: string, limits: PublishQuotaLimits, bytes: number): Promise<number>;
}

export function hasQuotaStore<T extends object>(transport: T): transport is T & QuotaStore {
  return typeof (transport as Partial<QuotaStore>).takeQuota === 'function';
}

/**
 * A capability of transports that route per user (Redis): a replica receives only the events of
 * users it holds. The hub watches a user before it reads the user's history for a new stream, so
 * nothing published meanwhile is missed, and releases the user when its last stream here closed.
 */
export interface UserSubscriptions {
  /** Resolves once events the user gets from now on reach this replica. */
  watch(userId: string): Promise<void>;
  release(userId: string): void;
}

export function hasUserSubscriptions<T extends object>(transport: T): transport is T & UserSubscriptions {
  const candidate = transport as Partial<UserSubscriptions>;
  return typeof candidate.watch === 'function' && typeof candidate.release === 'function';
}

/** A capability of transports that publish several events of one user in one step, with consecutive ids. */
export interface BatchPublisher {
  publishBatch(
    userId: string,
    items: ReadonlyArray<{ kind: EventKind; event: Buffer }>,
  ): Promise<{ ids: string[]; receivers: number }>;
}

export function hasBatchPublisher<T extends object>(transport: T): transport is T & BatchPublisher {
  return typeof (transport as Partial<BatchPublisher>).publishBatch === 'function';
}

export function hasLivePosition<T extends object>(transport: T): transport is T & LivePosition {
  return typeof (transport as Partial<LivePosition>).livePosition === 'function';
}

/**
 * The base of every error ssehub raises about an event (the seed's `EventError`): catch this
 * one to handle them all, or a subclass for one cause.
 */
export class EventError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EventError';
  }
}

/** The transport is down; the event was not published. Retry later. */
export class TransportUnavailableError extends EventError {
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

/**
 * The event was published (it is in the history and delivered) but fewer store replicas than
 * required confirmed it in time (`SSEHUB_PUBLISH_MIN_REPLICAS`): a failover could still lose it.
 */
export class ReplicationUnconfirmedError extends PublishOutcomeUnknownError {
  constructor(
    message: string,
    readonly confirmed: number,
    readonly required: number,
  ) {
    super(message);
    this.name = 'ReplicationUnconfirmedError';
  }
}

/** The store refused the event itself (size, shape); retrying will not help. */
export class EventRejectedError extends EventError {
  constructor(message: string) {
    super(message);
    this.name = 'EventRejectedError';
  }
}
