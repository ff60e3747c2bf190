import type { EventKind } from '../routing';
import { TransportUnavailableError, type MessageSink, type Transport } from './transport';

/** In-process transport for a single replica: the embedded default. */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  private sink: MessageSink | undefined;
  private closed = false;

  async start(sink: MessageSink): Promise<void> {
    this.sink = sink;
  }

  async publish(kind: EventKind, envelope: Buffer): Promise<number> {
    if (this.closed || !this.sink) throw new TransportUnavailableError('memory transport is not running');
    const sink = this.sink;
    // Deliver on a later turn, as a networked transport would, never inside the publisher's call stack.
    setImmediate(() => sink(kind, envelope));
    return 1;
  }

  isListening(): boolean {
    return this.sink !== undefined && !this.closed;
  }

  onResubscribed(): void {
    // An in-process subscription is never lost.
  }

  async close(): Promise<void> {
    this.closed = true;
    this.sink = undefined;
  }
}
