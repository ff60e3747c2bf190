import { roleToStream } from '../auth/permissions';
import { comparePositions, formatEventId, type EventId } from '../history/event-id';
import type { ResetReason } from '../history/history';
import type { Subscriber } from '../hub/registry';
import { type EventKind, isEventKind, type StreamKind } from '../routing';
import type { SseConnection } from '../sse/connection';
import { encodeFrame, encodeIdOnly } from '../sse/frame';

const RESET_MESSAGES: Record<ResetReason, string> = {
  history_lost: 'the event history was lost (store restarted without persistence); refetch state',
  trimmed: 'events after your last id are no longer retained; refetch state',
  unknown_id: "your last id is not in this user's history; refetch state",
  replay_limit: 'more events were missed than one replay sends; refetch state',
  history_unavailable: 'the event history could not be read while the stream opened; refetch state',
};

export function encodeReset(reason: ResetReason, head: EventId | undefined): Buffer {
  const body = Buffer.from(JSON.stringify({ type: 'reset', reason, message: RESET_MESSAGES[reason] }));
  return encodeFrame(body, { event: 'reset', id: head === undefined ? undefined : formatEventId(head) });
}

function sameId(a: EventId | undefined, b: EventId): boolean {
  return a !== undefined && a.epoch === b.epoch && comparePositions(a, b) === 0;
}

interface HeldFrame {
  id: EventId | undefined;
  frame: Buffer;
}

/** What a stream may hold behind a replay before it is cut (the client then resumes). */
export interface HoldLimits {
  maxEvents: number;
  maxBytes: number;
}

/**
 * Whether the id of an event this stream does not show may still be told to its client: only for
 * kinds any user may stream. An id tells when an event happened, so the ids of a user's analytics
 * events never reach a stream that does not show them.
 */
function revealsId(kind: string): boolean {
  return isEventKind(kind) && roleToStream(kind) === undefined;
}

/**
 * One client stream with its position in the user's history. Live frames are held while a
 * replay is written, then released; any frame at or before the cursor is a duplicate of one
 * already sent (or skipped as not for this stream) and is dropped.
 */
export class StreamSubscriber implements Subscriber {
  /** Newest id of the user's history this stream has caught up to. */
  cursor: EventId | undefined;
  /**
   * Newest position the client may be told: the cursor, unless that moved over events whose ids
   * this stream must not reveal. A resume from it reads those again and skips them.
   */
  private shown: EventId | undefined;
  private held: HeldFrame[] | null = null;
  private heldBytes = 0;
  /** What the client's EventSource holds as its last event id: as it sent it, or as last written. */
  private clientLastId: EventId | string | undefined;

  constructor(
    readonly connection: SseConnection,
    readonly stream: StreamKind,
    /** The Last-Event-ID the client came with. */
    readonly resumeFrom: string | undefined,
    private readonly holdLimits: HoldLimits,
    private readonly onEpochChange: () => void,
    /** The kinds a multiplexed stream asked for; undefined for the seed's streams, which carry all their route gives them. */
    private readonly kinds?: ReadonlySet<EventKind>,
  ) {
    this.clientLastId = resumeFrom;
  }

  carries(kind: EventKind): boolean {
    return this.kinds === undefined || this.kinds.has(kind);
  }

  get id(): string {
    return this.connection.id;
  }

  get userId(): string {
    return this.connection.userId;
  }

  get isClosed(): boolean {
    return this.connection.isClosed;
  }

  /** Live delivery; frames arriving during a replay wait for it. */
  deliver(id: EventId | undefined, frame: Buffer): boolean {
    if (this.held === null) return this.write(id, frame);
    const { maxEvents, maxBytes } = this.holdLimits;
    // One frame is always admitted, as by the connection's own buffer, so one large event alone does not cut.
    if (this.held.length >= maxEvents || (this.held.length > 0 && this.heldBytes + frame.length > maxBytes)) {
      // Cut rather than grow without bound; the client resumes from its last id.
      this.connection.close('slow_consumer');
      return false;
    }
    this.held.push({ id, frame });
    this.heldBytes += frame.length;
    this.connection.holding(frame.length);
    // The replica's outbound budget may just have cut this stream, the furthest behind.
    return !this.isClosed;
  }

  hold(): void {
    this.held ??= [];
  }

  /** The id of the oldest live frame held behind a catch-up, if any. */
  firstHeldId(): EventId | undefined {
    return this.held?.find((frame) => frame.id !== undefined)?.id;
  }

  /**
   * Lets held frames go at the pace the socket takes them, so a client that just took a replay
   * is not cut as slow for the burst that waited behind it; frames arriving meanwhile queue
   * behind. Stops early, still holding, when `stop()` says another catch-up needs the hold.
   */
  async releasePaced(stop: () => boolean): Promise<void> {
    while (this.held !== null && this.held.length > 0) {
      const batch = this.held;
      this.held = [];
      for (let i = 0; i < batch.length; i++) {
        if (this.isClosed) return;
        if (stop()) {
          this.held = batch.slice(i).concat(this.held);
          return;
        }
        await this.connection.whenWritable();
        const { id, frame } = batch[i] as HeldFrame;
        this.heldBytes -= frame.length;
        this.connection.holding(-frame.length);
        this.write(id, frame);
      }
    }
    if (!stop()) {
      this.held = null;
      this.heldBytes = 0;
    }
  }

  /** Writes a replayed frame, dropping it if already delivered. */
  replay(id: EventId, frame: Buffer): boolean {
    return this.write(id, frame);
  }

  /**
   * Moves the cursor to the end of a replay, over events that are not for this stream (or were
   * sent before a reset); false when it was there already.
   */
  advanceTo(id: EventId): boolean {
    if (this.cursor !== undefined && id.epoch === this.cursor.epoch && comparePositions(id, this.cursor) <= 0) {
      return false;
    }
    this.cursor = id;
    return true;
  }

  /** A replayed event of `kind` this stream does not show: passed over like a live one. */
  passOverReplayed(id: EventId, kind: string): void {
    if (this.advanceTo(id) && revealsId(kind)) this.shown = id;
  }

  /**
   * The position a stream that came without one starts from: the head of its user's history, an
   * id of whatever kind (the residual README "Security" states).
   */
  startAt(position: EventId): void {
    if (this.advanceTo(position)) this.shown = position;
  }

  reset(reason: ResetReason, head: EventId): void {
    this.cursor = head;
    this.shown = head;
    this.clientLastId = head;
    this.connection.send(encodeReset(reason, head));
  }

  /** Makes the client's last event id the newest position it may know, so a reconnect resumes from there. */
  announcePosition(): void {
    const shown = this.shown;
    if (shown === undefined) return;
    const clientHas = this.clientLastId;
    if (typeof clientHas === 'string' ? clientHas === formatEventId(shown) : sameId(clientHas, shown)) return;
    this.clientLastId = shown;
    this.connection.send(encodeIdOnly(formatEventId(shown)));
  }

  /**
   * A live event of the user that this stream does not carry: the stream is past it too, so a
   * recovery does not count it as missed. A running catch-up owns the cursor meanwhile.
   */
  passOver(id: EventId, kind: EventKind): void {
    if (this.held === null && this.moveLive(id) && revealsId(kind)) this.shown = id;
  }

  /**
   * Sends the newest position the client may know when its last event id lags behind it (called
   * when the stream idles), first moving to the transport's live position where there is one.
   */
  refreshClientId(livePosition?: EventId): void {
    if (this.held !== null) return;
    const cursor = this.cursor;
    if (livePosition && cursor && livePosition.epoch === cursor.epoch && comparePositions(livePosition, cursor) > 0) {
      // Every event of the user up to the live position has reached this stream, moving its
      // cursor: one past the cursor belongs to another user, and tells nothing of this one's.
      this.cursor = livePosition;
      this.shown = livePosition;
    }
    this.announcePosition();
  }

  private write(id: EventId | undefined, frame: Buffer): boolean {
    if (id !== undefined) {
      if (!this.moveLive(id)) return false;
      this.shown = id;
      this.clientLastId = id;
    }
    return this.connection.send(frame);
  }

  /** Moves the cursor to a live id; false when the id is at or behind it (already delivered). */
  private moveLive(id: EventId): boolean {
    const cursor = this.cursor;
    if (cursor !== undefined && id.epoch !== cursor.epoch) {
      // The store lost its history under a live stream: what came in between is unknowable.
      this.connection.send(encodeReset('history_lost', undefined));
      this.onEpochChange();
    } else if (cursor !== undefined && comparePositions(id, cursor) <= 0) {
      return false;
    }
    this.cursor = id;
    return true;
  }
}
