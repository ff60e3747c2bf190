import type { HubLogger } from '../log';
import { LogRateLimiter } from '../log';
import { comparePositions, formatEventId, parseEventId, type EventId } from '../history/event-id';
import {
  HistoryReadAbandonedError,
  type HistoryEntry,
  type HistoryQuery,
  type HistoryRead,
  type HistorySource,
  type PageBounds,
  type ResetReason,
} from '../history/history';
import { isEventKind, routesFor } from '../routing';
import { encodeEventFrame } from '../sse/frame';
import { validateEvent, type RejectReason } from '../wire/envelope';
import type { ReplayBudget } from './replay-budget';
import type { StreamSubscriber } from './subscriber';

export type CatchUpPurpose = 'connect' | 'recover';

export interface CatchUpMetrics {
  historyDelivered(purpose: CatchUpPurpose, events: number): void;
  historyReset(reason: ResetReason): void;
  historyReadFailed(): void;
  /** One page read from the store for a replay, with its event bytes. */
  replayPageRead(bytes: number): void;
  eventRejected(reason: RejectReason): void;
}

/** Waits between failed history reads of a stream: doubling from `minMs`, capped at `maxMs`, jittered. */
export interface RetryBackoff {
  minMs: number;
  maxMs: number;
}

export interface CatchUpOptions {
  history: HistorySource;
  replayMax: number;
  maxEventBytes: number;
  page: PageBounds;
  /** Shared by every stream of the replica. */
  budget: ReplayBudget;
  retry: RetryBackoff;
  metrics: CatchUpMetrics;
  log: HubLogger;
}

/** Longest Last-Event-ID worth parsing; anything longer is not an id this hub issued. */
const MAX_RESUME_ID_LENGTH = 128;

/**
 * Brings one stream up to date from the user's history: on connect (from the client's
 * Last-Event-ID, or just to learn the current position) and after the transport lost its
 * subscription (from the stream's cursor). Live frames are held meanwhile and released after.
 * The history is read a page at a time, each page written before the next is read.
 */
export class CatchUp {
  private readonly failureLogLimiter = new LogRateLimiter();
  /** What one page may hold: its byte bound, or one event larger than that. */
  private readonly pageReservation: number;

  constructor(private readonly options: CatchUpOptions) {
    this.pageReservation = Math.max(options.page.maxBytes, options.maxEventBytes);
  }

  /** Where a newly opened stream starts: its Last-Event-ID, or 'invalid' when that is not one of ours. */
  static startingPoint(lastEventId: string | undefined): EventId | 'invalid' | undefined {
    if (lastEventId === undefined || lastEventId === '') return undefined;
    if (lastEventId.length > MAX_RESUME_ID_LENGTH) return 'invalid';
    return parseEventId(lastEventId) ?? 'invalid';
  }

  /**
   * Whether a stream whose history read failed may be retried now: its backoff has passed, and
   * no read of it that was given up on may still be running in the store.
   */
  retryDue(subscriber: StreamSubscriber, now: number): boolean {
    return (
      subscriber.needsCatchUp &&
      !subscriber.catchingUp &&
      subscriber.abandonedRead === undefined &&
      now >= subscriber.retryNotBefore
    );
  }

  async run(subscriber: StreamSubscriber, purpose: CatchUpPurpose): Promise<void> {
    if (subscriber.catchingUp) {
      subscriber.catchUpAgain = true;
      return;
    }
    subscriber.catchingUp = true;
    subscriber.hold();
    const anotherCatchUpDue = (): boolean => subscriber.catchUpAgain || subscriber.awaitingRecovery;
    try {
      for (;;) {
        subscriber.catchUpAgain = false;
        const caughtUp = await this.once(subscriber, purpose);
        // A closed stream's held frames go nowhere; they are dropped with it.
        if (subscriber.isClosed) return;
        // Until its start is known, a stream keeps holding live events: releasing them would move
        // its cursor past the gap. A hold that overflows cuts the stream, and the client resumes.
        // While the transport resubscribes, the recovery that follows takes over the hold.
        if (!caughtUp || subscriber.awaitingRecovery) return;
        if (subscriber.catchUpAgain) continue;
        await subscriber.releasePaced(anotherCatchUpDue);
        if (!subscriber.catchUpAgain) return;
      }
    } finally {
      subscriber.catchingUp = false;
    }
  }

  /** False when the history could not be read (the stream stays held and is retried). */
  private async once(subscriber: StreamSubscriber, purpose: CatchUpPurpose): Promise<boolean> {
    const { replayMax, metrics } = this.options;
    const requested = subscriber.cursor ?? CatchUp.startingPoint(subscriber.resumeFrom);
    // A stream that never learnt its position cannot know what it missed while the store was away.
    const unprovable = requested === undefined && subscriber.needsCatchUp;
    const after = requested === 'invalid' ? undefined : requested;
    let page = await this.readPage(subscriber, after, { ...this.options.page, replayMax }, purpose);
    if (page === undefined) return false;
    if (subscriber.isClosed) return true;
    let read = page.read;
    // Without a requested id the read holds no entries, so nothing is held for it either.
    if (read.ok && (requested === 'invalid' || unprovable)) {
      read = { ok: false, reason: requested === 'invalid' ? 'unknown_id' : 'history_unavailable', head: read.head };
    }
    if (!read.ok) {
      this.resetStream(subscriber, read.reason, read.head);
      return true;
    }
    // The replay ends at the head of its first page: anything newer reaches the stream live, held.
    const target = read.head;
    let delivered = 0;
    for (;;) {
      delivered += await this.writePage(subscriber, read.entries, page.bytes);
      if (subscriber.isClosed) return true;
      const newest = read.entries[read.entries.length - 1];
      if (!read.more || newest === undefined || comparePositions(newest.id, target) >= 0) break;
      await subscriber.connection.whenDrained();
      if (subscriber.isClosed) return true;
      page = await this.readPage(subscriber, newest.id, this.options.page, purpose);
      if (page === undefined) return false;
      if (subscriber.isClosed) return true;
      if (!page.read.ok) {
        // Trimmed while it was being replayed: what was sent stays, and the client refetches.
        this.resetStream(subscriber, page.read.reason, page.read.head);
        return true;
      }
      read = page.read;
    }
    subscriber.advanceTo(target);
    subscriber.announceCursor();
    metrics.historyDelivered(purpose, delivered);
    return true;
  }

  /**
   * Reads one page within the replica's replay budget; undefined when the read failed (the
   * stream is marked for a retry after its backoff). The page's bytes stay reserved until
   * `writePage` has written it; a reset or a closed stream holds nothing.
   */
  private async readPage(
    subscriber: StreamSubscriber,
    after: EventId | undefined,
    query: HistoryQuery,
    purpose: CatchUpPurpose,
  ): Promise<{ read: HistoryRead; bytes: number } | undefined> {
    const { history, budget, metrics, log } = this.options;
    // A read the store may still be running is waited out: a retry must not pile onto it.
    await subscriber.abandonedRead;
    await budget.reserve(this.pageReservation);
    let read: HistoryRead;
    try {
      read = await history.readHistory(subscriber.userId, after, query);
    } catch (err) {
      budget.release(this.pageReservation);
      this.readFailed(subscriber, err);
      const admitted = this.failureLogLimiter.admit('read');
      if (admitted) {
        log.warn(
          { err: (err as Error).message, purpose, suppressedSinceLast: admitted.suppressed },
          'history read failed',
        );
      }
      return undefined;
    }
    subscriber.needsCatchUp = false;
    subscriber.readFailures = 0;
    const bytes = read.ok ? read.entries.reduce((sum, entry) => sum + entry.event.length, 0) : 0;
    if (after !== undefined) metrics.replayPageRead(bytes);
    const held = read.ok && !subscriber.isClosed ? bytes : 0;
    budget.release(this.pageReservation - held);
    return { read, bytes: held };
  }

  private readFailed(subscriber: StreamSubscriber, err: unknown): void {
    const { retry, metrics } = this.options;
    subscriber.needsCatchUp = true;
    subscriber.readFailures++;
    const ceiling = Math.min(retry.maxMs, retry.minMs * 2 ** Math.min(subscriber.readFailures - 1, 30));
    // Half fixed, half random: streams that failed together do not retry together.
    subscriber.retryNotBefore = Date.now() + ceiling / 2 + Math.random() * (ceiling / 2);
    if (err instanceof HistoryReadAbandonedError) {
      const settled: Promise<void> = err.settled.then(() => {
        if (subscriber.abandonedRead === settled) subscriber.abandonedRead = undefined;
      });
      subscriber.abandonedRead = settled;
    }
    metrics.historyReadFailed();
  }

  /** Writes a page's frames at the pace the socket takes them, then frees its bytes; returns how many were sent. */
  private async writePage(
    subscriber: StreamSubscriber,
    entries: readonly HistoryEntry[],
    bytes: number,
  ): Promise<number> {
    let delivered = 0;
    try {
      for (const entry of entries) {
        if (subscriber.isClosed) break;
        const frame = this.frameFor(subscriber, entry.kind, entry.event, entry.id);
        if (frame === undefined) {
          subscriber.advanceTo(entry.id);
          continue;
        }
        await subscriber.connection.whenWritable();
        if (subscriber.replay(entry.id, frame)) delivered++;
      }
    } finally {
      this.options.budget.release(bytes);
    }
    return delivered;
  }

  private resetStream(subscriber: StreamSubscriber, reason: ResetReason, head: EventId): void {
    this.options.metrics.historyReset(reason);
    this.options.log.debug({ userId: subscriber.userId, reason, requested: subscriber.resumeFrom }, 'history reset');
    subscriber.reset(reason, head);
  }

  /** The frame this stream shows for a stored event; undefined when the stream does not carry it. */
  private frameFor(subscriber: StreamSubscriber, kind: string, event: Buffer, id: EventId): Buffer | undefined {
    if (!isEventKind(kind)) return undefined;
    const route = routesFor(kind).find((candidate) => candidate.stream === subscriber.stream);
    if (!route || !subscriber.carries(kind)) return undefined;
    const problem = validateEvent(event, this.options.maxEventBytes);
    if (problem) {
      this.options.metrics.eventRejected(problem.reason);
      return undefined;
    }
    return encodeEventFrame(kind, route.style, event, { id: formatEventId(id) });
  }
}
