import { comparePositions, originOf, type EventId } from './event-id';

export interface HistoryEntry {
  id: EventId;
  /** As published; the hub checks it like any other message. */
  kind: string;
  event: Buffer;
}

export const RESET_REASONS = ['history_lost', 'trimmed', 'unknown_id', 'replay_limit', 'history_unavailable'] as const;
export type ResetReason = (typeof RESET_REASONS)[number];

/** What one history read may return: a page, so no read copies a whole history at once. */
export interface PageBounds {
  /** Most entries in the page. */
  maxEntries: number;
  /** Entries stop before their event bytes would pass this; the first one is returned however large. */
  maxBytes: number;
}

export interface HistoryQuery extends PageBounds {
  /**
   * Resets with `replay_limit` when more than this many events follow the requested id. Set on
   * the first page of a replay; later pages continue a replay already admitted and leave it unset.
   */
  replayMax?: number;
}

/**
 * What a client that resumes from an id gets: the next page of its user's events, or a reset
 * when the history cannot prove it complete. `head` is the user's newest id (or the origin of
 * the epoch): the cursor to continue from once every page is read. `more` says events between
 * the page's last entry and `head` were left for the next page.
 */
export type HistoryRead =
  | { ok: true; head: EventId; entries: HistoryEntry[]; more: boolean }
  | { ok: false; reason: ResetReason; head: EventId };

/** Where a transport keeps per-user history; transports implement it. */
export interface HistorySource {
  /**
   * One page of the user's events after `after` (exclusive), or just the head when `after` is
   * undefined. Rejects when the store is unreachable.
   */
  readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead>;
}

/** A user's stored history as read in one atomic step. */
export interface StoredHistory {
  epoch: string;
  /** Newest id ever assigned to the user and still remembered; undefined when there is none. */
  last: EventId | undefined;
  /**
   * Oldest retained entry; stores may leave it unset when the page starts right after the
   * requested id (it only tells a trimmed id from an unknown one).
   */
  first: EventId | undefined;
  /** Entries after the requested position, oldest first, within the page bounds. */
  page: HistoryEntry[];
  /**
   * Retention. A user's sequence restarts at 1 after a silence this long (its counter expired),
   * so consecutive events of one sequence are always closer together than this.
   */
  ttlMs: number;
}

/** The page bounds a store applies: entries while they fit, and always the first one. */
export function fitsPage(bounds: PageBounds, entries: number, bytes: number, next: number): boolean {
  return entries < bounds.maxEntries && (entries === 0 || bytes + next <= bounds.maxBytes);
}

/**
 * Decides a replay for stores whose per-user sequence numbers count up by one: an entry whose
 * seq follows the requested id's proves nothing in between was trimmed, and the seqs tell how
 * many events follow it without reading them. Only the requesting user's own history is ever
 * read, so an id copied from another user can at worst earn a reset.
 */
export function planReplay(after: EventId | undefined, stored: StoredHistory, replayMax?: number): HistoryRead {
  const head = stored.last ?? originOf(stored.epoch);
  if (after === undefined) return { ok: true, head, entries: [], more: false };
  if (after.epoch !== stored.epoch) return { ok: false, reason: 'history_lost', head };
  const sinceOrigin = after.ms === 0 && after.seq === 0;
  if (comparePositions(after, head) > 0) return { ok: false, reason: 'unknown_id', head };
  if (comparePositions(after, head) === 0) return { ok: true, head, entries: [], more: false };
  const entries = stored.page;
  const oldest = entries[0];
  if (!oldest || oldest.id.seq !== after.seq + 1 || (!sinceOrigin && oldest.id.ms - after.ms >= stored.ttlMs)) {
    const trimmed = stored.first === undefined || comparePositions(stored.first, after) > 0;
    return { ok: false, reason: trimmed ? 'trimmed' : 'unknown_id', head };
  }
  if (replayMax !== undefined && head.seq - after.seq > replayMax) return { ok: false, reason: 'replay_limit', head };
  const newest = entries[entries.length - 1] as HistoryEntry;
  return { ok: true, head, entries, more: comparePositions(newest.id, head) < 0 };
}

/**
 * A read the hub stopped waiting for while the store may still be running it (a timeout).
 * `settled` resolves once the store is done with it, so no second read of the stream joins it.
 */
export class HistoryReadAbandonedError extends Error {
  constructor(
    message: string,
    readonly settled: Promise<void>,
  ) {
    super(message);
    this.name = 'HistoryReadAbandonedError';
  }
}
