import { comparePositions, originOf, type EventId } from './event-id';

export interface HistoryEntry {
  id: EventId;
  /** As published; the hub checks it like any other message. */
  kind: string;
  event: Buffer;
}

export const RESET_REASONS = ['history_lost', 'trimmed', 'unknown_id', 'replay_limit', 'history_unavailable'] as const;
export type ResetReason = (typeof RESET_REASONS)[number];

/**
 * What a client that resumes from an id gets: every later event of its user, or a reset when
 * that cannot be proven complete. `head` is the user's newest id (or the origin of the epoch):
 * the cursor to continue from either way.
 */
export type HistoryRead =
  | { ok: true; head: EventId; entries: HistoryEntry[] }
  | { ok: false; reason: ResetReason; head: EventId };

/** Where a transport keeps per-user history; transports implement it. */
export interface HistorySource {
  /**
   * The user's events after `after` (at most `limit`, else a `replay_limit` reset), or just
   * the head when `after` is undefined. Rejects when the store is unreachable.
   */
  readHistory(userId: string, after: EventId | undefined, limit: number): Promise<HistoryRead>;
}

/** A user's stored history as read in one atomic step. */
export interface StoredHistory {
  epoch: string;
  /** Newest id ever assigned to the user and still remembered; undefined when there is none. */
  last: EventId | undefined;
  /** Oldest retained entry. */
  first: EventId | undefined;
  /** Entries at or after the requested position, oldest first, at most `limit + 2` of them. */
  fromRequested: HistoryEntry[];
  /**
   * Retention. A user's sequence restarts at 1 after a silence this long (its counter expired),
   * so consecutive events of one sequence are always closer together than this.
   */
  ttlMs: number;
}

/**
 * Decides a replay for stores whose per-user sequence numbers count up by one: an entry whose
 * seq follows the requested id's, or the requested entry itself, proves nothing in between
 * was trimmed. Only the requesting user's own history is ever read, so an id copied from
 * another user can at worst earn a reset.
 */
export function planReplay(after: EventId | undefined, stored: StoredHistory, limit: number): HistoryRead {
  const head = stored.last ?? originOf(stored.epoch);
  if (after === undefined) return { ok: true, head, entries: [] };
  if (after.epoch !== stored.epoch) return { ok: false, reason: 'history_lost', head };
  const sinceOrigin = after.ms === 0 && after.seq === 0;
  if (comparePositions(after, head) > 0) return { ok: false, reason: 'unknown_id', head };
  if (comparePositions(after, head) === 0) return { ok: true, head, entries: [] };
  let entries = stored.fromRequested;
  const oldest = entries[0];
  if (oldest && comparePositions(oldest.id, after) === 0) {
    entries = entries.slice(1);
  } else if (
    !oldest ||
    oldest.id.seq !== (sinceOrigin ? 1 : after.seq + 1) ||
    (!sinceOrigin && oldest.id.ms - after.ms >= stored.ttlMs)
  ) {
    const trimmed = stored.first === undefined || comparePositions(stored.first, after) > 0;
    return { ok: false, reason: trimmed ? 'trimmed' : 'unknown_id', head };
  }
  if (entries.length > limit) return { ok: false, reason: 'replay_limit', head };
  return { ok: true, head, entries };
}
