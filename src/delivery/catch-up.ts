import type { HubLogger } from '../log';
import { LogRateLimiter } from '../log';
import { formatEventId, parseEventId, type EventId } from '../history/event-id';
import type { HistoryRead, HistorySource, ResetReason } from '../history/history';
import { isEventKind, routesFor } from '../routing';
import { encodeEventFrame } from '../sse/frame';
import { validateEvent, type RejectReason } from '../wire/envelope';
import type { StreamSubscriber } from './subscriber';

export type CatchUpPurpose = 'connect' | 'recover';

export interface CatchUpMetrics {
  historyDelivered(purpose: CatchUpPurpose, events: number): void;
  historyReset(reason: ResetReason): void;
  historyReadFailed(): void;
  eventRejected(reason: RejectReason): void;
}

export interface CatchUpOptions {
  history: HistorySource;
  replayMax: number;
  maxEventBytes: number;
  metrics: CatchUpMetrics;
  log: HubLogger;
}

/** Longest Last-Event-ID worth parsing; anything longer is not an id this hub issued. */
const MAX_RESUME_ID_LENGTH = 128;

/**
 * Brings one stream up to date from the user's history: on connect (from the client's
 * Last-Event-ID, or just to learn the current position) and after the transport lost its
 * subscription (from the stream's cursor). Live frames are held meanwhile and released after.
 */
export class CatchUp {
  private readonly failureLogLimiter = new LogRateLimiter();

  constructor(private readonly options: CatchUpOptions) {}

  /** Where a newly opened stream starts: its Last-Event-ID, or 'invalid' when that is not one of ours. */
  static startingPoint(lastEventId: string | undefined): EventId | 'invalid' | undefined {
    if (lastEventId === undefined || lastEventId === '') return undefined;
    if (lastEventId.length > MAX_RESUME_ID_LENGTH) return 'invalid';
    return parseEventId(lastEventId) ?? 'invalid';
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
    const { history, replayMax, metrics, log } = this.options;
    const requested = subscriber.cursor ?? CatchUp.startingPoint(subscriber.resumeFrom);
    // A stream that never learnt its position cannot know what it missed while the store was away.
    const unprovable = requested === undefined && subscriber.needsCatchUp;
    let read: HistoryRead;
    try {
      read = await history.readHistory(subscriber.userId, requested === 'invalid' ? undefined : requested, replayMax);
    } catch (err) {
      subscriber.needsCatchUp = true;
      metrics.historyReadFailed();
      const admitted = this.failureLogLimiter.admit('read');
      if (admitted) {
        log.warn(
          { err: (err as Error).message, purpose, suppressedSinceLast: admitted.suppressed },
          'history read failed',
        );
      }
      return false;
    }
    if (subscriber.isClosed) return true;
    subscriber.needsCatchUp = false;
    if (read.ok && (requested === 'invalid' || unprovable)) {
      read = { ok: false, reason: requested === 'invalid' ? 'unknown_id' : 'history_unavailable', head: read.head };
    }
    if (!read.ok) {
      metrics.historyReset(read.reason);
      log.debug({ userId: subscriber.userId, reason: read.reason, requested: subscriber.resumeFrom }, 'history reset');
      subscriber.reset(read.reason, read.head);
      return true;
    }
    let delivered = 0;
    for (const entry of read.entries) {
      if (subscriber.isClosed) return true;
      const frame = this.frameFor(subscriber, entry.kind, entry.event, entry.id);
      if (frame === undefined) {
        subscriber.advanceTo(entry.id);
        continue;
      }
      await subscriber.connection.whenWritable();
      if (subscriber.replay(entry.id, frame)) delivered++;
    }
    subscriber.advanceTo(read.head);
    subscriber.announceCursor();
    metrics.historyDelivered(purpose, delivered);
    return true;
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
