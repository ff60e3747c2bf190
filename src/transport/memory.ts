import { formatEventId, type EventId } from '../history/event-id';
import type { HistoryQuery, HistoryRead } from '../history/history';
import { MemoryHistory, type HistoryLimits } from '../history/memory-history';
import type { EventKind } from '../routing';
import { buildEnvelope } from '../wire/envelope';
import { TransportUnavailableError, type MessageSink, type Published, type Transport } from './transport';

const SWEEP_INTERVAL_MS = 60_000;

/** In-process transport for a single replica: the embedded default, with in-memory history. */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  private readonly history: MemoryHistory;
  private sink: MessageSink | undefined;
  private closed = false;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(limits: HistoryLimits) {
    this.history = new MemoryHistory(limits);
  }

  async start(sink: MessageSink): Promise<void> {
    this.sink = sink;
    this.sweeper = setInterval(() => this.history.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  async publish(kind: EventKind, userId: string, event: Buffer): Promise<Published> {
    if (this.closed || !this.sink) throw new TransportUnavailableError('memory transport is not running');
    const sink = this.sink;
    const id = formatEventId(this.history.append(userId, kind, event));
    const envelope = buildEnvelope(userId, event, id);
    // Deliver on a later turn, as a networked transport would, never inside the publisher's call stack.
    setImmediate(() => sink(kind, envelope));
    return { id, receivers: 1 };
  }

  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    return this.history.read(userId, after, query);
  }

  isListening(): boolean {
    return this.sink !== undefined && !this.closed;
  }

  onSubscribe(): void {
    // An in-process subscription exists from start() on and is never lost.
  }

  async close(): Promise<void> {
    this.closed = true;
    this.sink = undefined;
    clearInterval(this.sweeper);
  }
}
