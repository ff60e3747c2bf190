import { formatEventId, type EventId } from '../../history/event-id';
import type { HistoryQuery, HistoryRead } from '../../history/history';
import { MemoryHistory, type HistoryLimits } from '../../history/memory-history';
import type { EventKind } from '../../routing';
import { TransportUnavailableError, type Published, type Transport, type TransportHandler } from '../transport';

const SWEEP_INTERVAL_MS = 60_000;

/** In-process transport for a single replica: the embedded default, with in-memory history. */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly idsCarryPublishTime = true;
  private readonly history: MemoryHistory;
  private handler: TransportHandler | undefined;
  private closed = false;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(limits: HistoryLimits) {
    this.history = new MemoryHistory(limits);
  }

  async start(handler: TransportHandler): Promise<void> {
    this.handler = handler;
    this.sweeper = setInterval(() => this.history.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  async publish(kind: EventKind, userId: string, event: Buffer): Promise<Published> {
    const handler = this.handler;
    if (this.closed || !handler) throw new TransportUnavailableError('memory transport is not running');
    const id = this.history.append(userId, kind, event);
    // Deliver on a later turn, as a networked transport would, never inside the publisher's call stack.
    setImmediate(() => handler.event({ kind, userId, id, event }));
    return { id: formatEventId(id), receivers: 1 };
  }

  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    return this.history.read(userId, after, query);
  }

  isListening(): boolean {
    return this.handler !== undefined && !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handler = undefined;
    clearInterval(this.sweeper);
  }
}
