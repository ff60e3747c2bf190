/** What the budget needs of a stream: how much it queues, and a way to cut it. */
export interface QueueingStream {
  /** Bytes this stream queues in user space now. */
  readonly queuedBytes: number;
  /** Ends the stream as too slow; it reports its queued bytes gone through `changed`. */
  cutAsSlow(): void;
}

/**
 * Bytes a replica queues in user space towards all its clients: each stream's frames waiting for
 * its socket and the live frames held behind its replay. Streams report what they add and take
 * off, so the total is kept as they go; only when it passes the capacity are the queueing streams
 * looked at, and the furthest behind (most bytes queued) cut until the total is back under
 * seven eighths of it: the room left means the next frames do not each pass it again, and sort
 * the queueing streams again, while many readers stall. Their clients resume with Last-Event-ID.
 */
export class OutboundBudget {
  private total = 0;
  /** Streams with bytes queued now; the only ones a cut has to choose from. */
  private readonly queueing = new Set<QueueingStream>();
  private cutting = false;

  constructor(
    readonly capacity: number,
    /** Told of each stream cut, for the metrics. */
    private readonly onCut: () => void,
  ) {}

  get bytes(): number {
    return this.total;
  }

  /** A stream's queued bytes moved by `delta`; called after its own count (`queuedBytes`) moved. */
  changed(stream: QueueingStream, delta: number): void {
    if (delta === 0) return;
    this.total += delta;
    if (delta > 0) {
      if (stream.queuedBytes === delta) this.queueing.add(stream);
      if (this.total > this.capacity && !this.cutting) this.cutFurthestBehind();
    } else if (stream.queuedBytes === 0) {
      this.queueing.delete(stream);
    }
  }

  private cutFurthestBehind(): void {
    this.cutting = true;
    try {
      const lowWater = this.capacity - Math.floor(this.capacity / 8);
      const byBacklog = [...this.queueing].sort((a, b) => b.queuedBytes - a.queuedBytes);
      for (const stream of byBacklog) {
        if (this.total <= lowWater) return;
        stream.cutAsSlow();
        this.onCut();
      }
    } finally {
      this.cutting = false;
    }
  }
}
