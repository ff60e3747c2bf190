import type { EventKind } from '../routing';

/**
 * Receives every message published on any replica, once, in the order the transport delivers
 * it. `kind` is whatever the publisher addressed; the hub rejects kinds it does not know.
 */
export type MessageSink = (kind: string, envelope: Buffer) => void;

/**
 * The seam between the hub and whatever carries events between replicas. Everything above it
 * (HTTP, auth, registry, routing, SSE encoding) is transport-agnostic.
 */
export interface Transport {
  readonly name: string;
  /** Begins receiving. Resolves once started; the subscription may come up later (see isListening). */
  start(sink: MessageSink): Promise<void>;
  /**
   * Hands an envelope to every replica, this one included, and resolves with the number of
   * subscribers (replicas) the transport handed it to. Rejects quickly when the transport is down.
   */
  publish(kind: EventKind, envelope: Buffer): Promise<number>;
  /** True while messages published now will reach this replica. */
  isListening(): boolean;
  /** Called after the subscription comes back from a loss (not on the first start). */
  onResubscribed(listener: () => void): void;
  close(): Promise<void>;
}

export class TransportUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransportUnavailableError';
  }
}
