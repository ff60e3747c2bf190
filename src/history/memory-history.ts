import { randomBytes } from 'node:crypto';
import { comparePositions, type EventId } from './event-id';
import { fitsPage, planReplay, type HistoryEntry, type HistoryQuery, type HistoryRead } from './history';

export interface HistoryLimits {
  /** Entries kept per user. */
  maxEntries: number;
  /** Event bytes kept per user (the newest entry is kept whatever its size). */
  maxBytes: number;
  /** Entries older than this are dropped, and so is a user idle for as long. */
  ttlMs: number;
}

interface UserHistory {
  entries: HistoryEntry[];
  /** Event bytes of `entries`. */
  bytes: number;
  last: EventId;
}

/**
 * Per-user history for the in-process transport, with the same ids and retention rules as
 * the Redis one. A fresh epoch per process: ids from before a restart earn a reset.
 */
export class MemoryHistory {
  readonly epoch = randomBytes(6).readUIntBE(0, 6).toString(36);
  private readonly users = new Map<string, UserHistory>();

  constructor(private readonly limits: HistoryLimits) {}

  append(userId: string, kind: string, event: Buffer, now = Date.now()): EventId {
    let user = this.retained(userId, now);
    const id: EventId = user
      ? { epoch: this.epoch, ms: Math.max(now, user.last.ms), seq: user.last.seq + 1 }
      : { epoch: this.epoch, ms: now, seq: 1 };
    if (!user) {
      user = { entries: [], bytes: 0, last: id };
      this.users.set(userId, user);
    }
    user.last = id;
    user.entries.push({ id, kind, event });
    user.bytes += event.length;
    this.trim(user, now);
    return id;
  }

  read(userId: string, after: EventId | undefined, query: HistoryQuery, now = Date.now()): HistoryRead {
    const user = this.retained(userId, now);
    if (user) this.trim(user, now);
    const entries = user?.entries ?? [];
    const page: HistoryEntry[] = [];
    if (after !== undefined) {
      // Entries are in id order: binary search for the first one after the requested id.
      let low = 0;
      let start = entries.length;
      while (low < start) {
        const mid = (low + start) >>> 1;
        if (comparePositions((entries[mid] as HistoryEntry).id, after) <= 0) low = mid + 1;
        else start = mid;
      }
      let bytes = 0;
      for (let i = start; i < entries.length; i++) {
        const entry = entries[i] as HistoryEntry;
        if (!fitsPage(query, page.length, bytes, entry.event.length)) break;
        page.push(entry);
        bytes += entry.event.length;
      }
    }
    return planReplay(
      after,
      { epoch: this.epoch, last: user?.last, first: entries[0]?.id, page, ttlMs: this.limits.ttlMs },
      query.replayMax,
    );
  }

  /** Event bytes retained for a user (what the byte budget bounds). */
  retainedBytes(userId: string): number {
    return this.users.get(userId)?.bytes ?? 0;
  }

  /** Drops users whose newest event is past retention; called periodically. */
  sweep(now = Date.now()): void {
    for (const [userId, user] of this.users) if (now - user.last.ms >= this.limits.ttlMs) this.users.delete(userId);
  }

  /** The user's history, unless it expired (the user was silent for the whole retention). */
  private retained(userId: string, now: number): UserHistory | undefined {
    const user = this.users.get(userId);
    if (user && now - user.last.ms >= this.limits.ttlMs) {
      this.users.delete(userId);
      return undefined;
    }
    return user;
  }

  /** Drops the oldest entries past the count, the byte budget or retention; never the newest. */
  private trim(user: UserHistory, now: number): void {
    const entries = user.entries;
    let drop = 0;
    while (drop < entries.length - 1) {
      const oldest = entries[drop] as HistoryEntry;
      const over =
        entries.length - drop > this.limits.maxEntries ||
        user.bytes > this.limits.maxBytes ||
        now - oldest.id.ms >= this.limits.ttlMs;
      if (!over) break;
      user.bytes -= oldest.event.length;
      drop++;
    }
    if (drop > 0) entries.splice(0, drop);
  }
}
