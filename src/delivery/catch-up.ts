import { setImmediate as nextTurn } from 'node:timers/promises';
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
import { validateEvent } from '../wire/envelope';
import type { ReplayBudget } from './replay-budget';
import type { StreamSubscriber } from './subscriber';

/** Event bytes one replay checks and frames before it lets the event loop turn. */
const REPLAY_TURN_BYTES = 16 * 1024;

export type CatchUpPurpose = 'connect' | 'recover';

export interface CatchUpMetrics {
  historyDelivered(purpose: CatchUpPurpose, events: number): void;
  historyReset(reason: ResetReason): void;
  historyReadFailed(): void;
  /** One page read from the store for a replay, with its event bytes. */
  replayPageRead(bytes: number): void;
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
  /**
   * Ids count up by one per user (Redis, memory; not an outbox with one order for all users), so
   * the position just before an event is itself a valid id.
   */
  perUserSequence?: boolean;
}

/** Longest Last-Event-ID worth parsing; anything longer is not an id this hub issued. */
const MAX_RESUME_ID_LENGTH = 128;
/** Streams caught up at once after a subscription loss or for retries; the rest wait their turn. */
const CONCURRENCY = 32;

/** Where one stream's catch-up stands. Kept only while there is something to know: idle streams have none. */
interface CatchUpState {
  running: boolean;
  /** Another catch-up was asked for while one ran: the running one goes round again. */
  again: boolean;
  /** A history read failed; the stream stays held and is retried after its backoff. */
  failed: boolean;
  /** History reads that failed in a row; each retry waits longer. */
  readFailures: number;
  /** Epoch milliseconds before which a failed catch-up is not retried. */
  retryNotBefore: number;
  /** A read given up on that the store may still be running: this stream reads nothing else until it ends. */
  abandonedRead: Promise<void> | undefined;
}

/** What tests and metrics may see of a stream's catch-up. */
export type CatchUpStatus = Readonly<Pick<CatchUpState, 'failed' | 'readFailures' | 'retryNotBefore'>>;

/**
 * Brings streams up to date from their user's history: on connect (from the client's
 * Last-Event-ID, or just to learn the current position), after the transport lost its
 * subscription (from each stream's cursor), and again after a failed read. Live frames are held
 * meanwhile and released after. The history is read a page at a time, each page written before
 * the next is read. It is the one owner of every stream's catch-up state.
 */
export class CatchUp {
  private readonly failureLogLimiter = new LogRateLimiter();
  private readonly states = new Map<StreamSubscriber, CatchUpState>();
  /** Between the transport announcing a (re)subscription and the recovery that follows it. */
  private awaitingRecovery = false;
  private retrying = false;
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

  status(subscriber: StreamSubscriber): CatchUpStatus | undefined {
    return this.states.get(subscriber);
  }

  /**
   * Whether a stream whose history read failed may be retried now: its backoff has passed, and
   * no read of it that was given up on may still be running in the store.
   */
  retryDue(subscriber: StreamSubscriber, now: number): boolean {
    const state = this.states.get(subscriber);
    return state?.failed === true && !state.running && state.abandonedRead === undefined && now >= state.retryNotBefore;
  }

  /** Before the transport resubscribes: live events wait until each stream has caught up. */
  holdAll(subscribers: Iterable<StreamSubscriber>): void {
    this.awaitingRecovery = true;
    for (const subscriber of subscribers) subscriber.hold();
  }

  /**
   * After the transport's subscription came back, fills every stream's gap from its user's
   * history: events published while this replica was not listening.
   */
  async recoverAll(subscribers: Iterable<StreamSubscriber>): Promise<void> {
    const all = [...subscribers];
    this.holdAll(all);
    this.awaitingRecovery = false;
    await this.runAll(all, 'recover');
  }

  /** Streams whose history read failed, each once its own backoff has passed; one round at a time. */
  async retryFailed(now: number): Promise<void> {
    if (this.retrying) return;
    const due = [...this.states.keys()].filter((subscriber) => this.retryDue(subscriber, now));
    if (due.length === 0) return;
    this.retrying = true;
    try {
      await this.runAll(due, 'recover');
    } finally {
      this.retrying = false;
    }
  }

  /** A closed stream's state goes with it. */
  forget(subscriber: StreamSubscriber): void {
    const state = this.states.get(subscriber);
    if (state !== undefined && !state.running) this.states.delete(subscriber);
  }

  private async runAll(subscribers: StreamSubscriber[], purpose: CatchUpPurpose): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < subscribers.length) {
        const subscriber = subscribers[next++] as StreamSubscriber;
        if (!subscriber.isClosed) await this.run(subscriber, purpose);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, subscribers.length) }, worker));
  }

  private stateOf(subscriber: StreamSubscriber): CatchUpState {
    let state = this.states.get(subscriber);
    if (state === undefined) {
      state = {
        running: false,
        again: false,
        failed: false,
        readFailures: 0,
        retryNotBefore: 0,
        abandonedRead: undefined,
      };
      this.states.set(subscriber, state);
    }
    return state;
  }

  /** Drops the state of a stream with nothing left to remember: caught up, or closed. */
  private settle(subscriber: StreamSubscriber, state: CatchUpState): void {
    const idle = !state.running && !state.failed && state.abandonedRead === undefined;
    if (subscriber.isClosed ? !state.running : idle) this.states.delete(subscriber);
  }

  async run(subscriber: StreamSubscriber, purpose: CatchUpPurpose): Promise<void> {
    const state = this.stateOf(subscriber);
    if (state.running) {
      state.again = true;
      return;
    }
    state.running = true;
    subscriber.hold();
    const anotherCatchUpDue = (): boolean => state.again || this.awaitingRecovery;
    try {
      for (;;) {
        state.again = false;
        const caughtUp = await this.once(subscriber, state, purpose);
        // A closed stream's held frames go nowhere; they are dropped with it.
        if (subscriber.isClosed) return;
        // Until its start is known, a stream keeps holding live events: releasing them would move
        // its cursor past the gap. A hold that overflows cuts the stream, and the client resumes.
        // While the transport resubscribes, the recovery that follows takes over the hold.
        if (!caughtUp || this.awaitingRecovery) return;
        if (state.again) continue;
        await subscriber.releasePaced(anotherCatchUpDue);
        if (!state.again) return;
      }
    } finally {
      state.running = false;
      this.settle(subscriber, state);
    }
  }

  /** False when the history could not be read (the stream stays held and is retried). */
  private async once(subscriber: StreamSubscriber, state: CatchUpState, purpose: CatchUpPurpose): Promise<boolean> {
    const { replayMax, metrics } = this.options;
    const requested = subscriber.cursor ?? CatchUp.startingPoint(subscriber.resumeFrom);
    // A stream that never learnt its position cannot know what it missed while the store was away.
    const unprovable = requested === undefined && state.failed;
    const after = requested === 'invalid' ? undefined : requested;
    let page = await this.readPage(subscriber, state, after, { ...this.options.page, replayMax }, purpose);
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
    let target = read.head;
    const firstHeld = subscriber.firstHeldId();
    if (
      requested === undefined &&
      this.options.perUserSequence === true &&
      firstHeld !== undefined &&
      firstHeld.seq > 0 &&
      firstHeld.epoch === target.epoch &&
      comparePositions(firstHeld, target) <= 0
    ) {
      // A new stream starts where its live events do: those held arrived after it was registered
      // (and subscribed), so the client, whose stream had opened, must get them even if the head
      // was read after they were published.
      target = { epoch: firstHeld.epoch, ms: firstHeld.ms, seq: firstHeld.seq - 1 };
    }
    let delivered = 0;
    for (;;) {
      delivered += await this.writePage(subscriber, read.entries, page.bytes);
      if (subscriber.isClosed) return true;
      const newest = read.entries[read.entries.length - 1];
      if (!read.more || newest === undefined || comparePositions(newest.id, target) >= 0) break;
      await subscriber.connection.whenDrained();
      if (subscriber.isClosed) return true;
      page = await this.readPage(subscriber, state, newest.id, this.options.page, purpose);
      if (page === undefined) return false;
      if (subscriber.isClosed) return true;
      if (!page.read.ok) {
        // Trimmed while it was being replayed: what was sent stays, and the client refetches.
        this.resetStream(subscriber, page.read.reason, page.read.head);
        return true;
      }
      read = page.read;
    }
    if (requested === undefined) subscriber.startAt(target);
    else subscriber.advanceTo(target);
    subscriber.announcePosition();
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
    state: CatchUpState,
    after: EventId | undefined,
    query: HistoryQuery,
    purpose: CatchUpPurpose,
  ): Promise<{ read: HistoryRead; bytes: number } | undefined> {
    const { history, budget, metrics, log } = this.options;
    // A read the store may still be running is waited out: a retry must not pile onto it.
    await state.abandonedRead;
    await budget.reserve(this.pageReservation);
    let read: HistoryRead;
    try {
      read = await history.readHistory(subscriber.userId, after, query);
    } catch (err) {
      budget.release(this.pageReservation);
      this.readFailed(state, err);
      const admitted = this.failureLogLimiter.admit('read');
      if (admitted) {
        log.warn({ err, purpose, suppressedSinceLast: admitted.suppressed }, 'history read failed');
      }
      return undefined;
    }
    state.failed = false;
    state.readFailures = 0;
    const bytes = read.ok ? read.entries.reduce((sum, entry) => sum + entry.event.length, 0) : 0;
    if (after !== undefined) metrics.replayPageRead(bytes);
    const held = read.ok && !subscriber.isClosed ? bytes : 0;
    budget.release(this.pageReservation - held);
    return { read, bytes: held };
  }

  private readFailed(state: CatchUpState, err: unknown): void {
    const { retry, metrics } = this.options;
    state.failed = true;
    state.readFailures++;
    const ceiling = Math.min(retry.maxMs, retry.minMs * 2 ** Math.min(state.readFailures - 1, 30));
    // Half fixed, half random: streams that failed together do not retry together.
    state.retryNotBefore = Date.now() + ceiling / 2 + Math.random() * (ceiling / 2);
    if (err instanceof HistoryReadAbandonedError) {
      const settled: Promise<void> = err.settled.then(() => {
        if (state.abandonedRead === settled) state.abandonedRead = undefined;
      });
      state.abandonedRead = settled;
    }
    metrics.historyReadFailed();
  }

  /**
   * Writes a page's frames at the pace the socket takes them, then frees its bytes; returns how many
   * were sent. A socket that takes everything never makes it wait, so it lets the event loop turn
   * every REPLAY_TURN_BYTES: streams replaying pages of large events would otherwise check and frame
   * a megabyte in one turn, and every webhook and live event on the replica would wait for it.
   */
  private async writePage(
    subscriber: StreamSubscriber,
    entries: readonly HistoryEntry[],
    bytes: number,
  ): Promise<number> {
    let delivered = 0;
    let thisTurn = 0;
    try {
      for (const entry of entries) {
        if (thisTurn >= REPLAY_TURN_BYTES) {
          thisTurn = 0;
          await nextTurn();
        }
        thisTurn += entry.event.length;
        if (subscriber.isClosed) break;
        const frame = this.frameFor(subscriber, entry.kind, entry.event, entry.id);
        if (frame === undefined) {
          subscriber.passOverReplayed(entry.id, entry.kind);
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
    // A bad entry is counted as rejected where it arrives live (replicas holding a stream of its
    // user); replays drop it again uncounted, or each resume would count it once more.
    if (validateEvent(event, this.options.maxEventBytes)) return undefined;
    return encodeEventFrame(kind, route.style, event, { id: formatEventId(id) });
  }
}
