import { STREAM_KINDS, type StreamKind } from '../routing';

/** What the registry needs of a connection; the SSE details stay in the connection itself. */
export interface Subscriber {
  readonly id: string;
  readonly userId: string;
}

/**
 * This replica's open streams, per stream kind and per user. Lookups by user are O(1) and
 * the per-user cap is enforced here, so every path that adds a connection respects it.
 */
export class Registry<S extends Subscriber> {
  private readonly byStream = new Map<StreamKind, Map<string, Set<S>>>(
    STREAM_KINDS.map((stream) => [stream, new Map<string, Set<S>>()]),
  );
  private readonly sizes = new Map<StreamKind, number>(STREAM_KINDS.map((stream) => [stream, 0]));

  constructor(private readonly maxPerUser: number) {}

  private users(stream: StreamKind): Map<string, Set<S>> {
    return this.byStream.get(stream) as Map<string, Set<S>>;
  }

  hasRoomFor(stream: StreamKind, userId: string): boolean {
    return (this.users(stream).get(userId)?.size ?? 0) < this.maxPerUser;
  }

  /** Adds the subscriber unless the user is at the cap for this stream. */
  add(stream: StreamKind, subscriber: S): boolean {
    const users = this.users(stream);
    let set = users.get(subscriber.userId);
    if (!set) {
      set = new Set();
      users.set(subscriber.userId, set);
    }
    if (set.has(subscriber)) return true;
    if (set.size >= this.maxPerUser) return false;
    set.add(subscriber);
    this.sizes.set(stream, (this.sizes.get(stream) ?? 0) + 1);
    return true;
  }

  remove(stream: StreamKind, subscriber: S): void {
    const users = this.users(stream);
    const set = users.get(subscriber.userId);
    if (!set?.delete(subscriber)) return;
    if (set.size === 0) users.delete(subscriber.userId);
    this.sizes.set(stream, (this.sizes.get(stream) ?? 0) - 1);
  }

  /** The user's subscribers on a stream; undefined when there are none (the common case on a busy hub). */
  subscribers(stream: StreamKind, userId: string): ReadonlySet<S> | undefined {
    return this.users(stream).get(userId);
  }

  /** Whether the user has a subscriber on any stream: events for other users need not even be parsed. */
  holds(userId: string): boolean {
    for (const users of this.byStream.values()) if (users.has(userId)) return true;
    return false;
  }

  count(stream: StreamKind): number {
    return this.sizes.get(stream) ?? 0;
  }

  total(): number {
    let total = 0;
    for (const size of this.sizes.values()) total += size;
    return total;
  }

  /** Connected user ids on this replica, across streams. */
  userIds(): Set<string> {
    const ids = new Set<string>();
    for (const users of this.byStream.values()) for (const id of users.keys()) ids.add(id);
    return ids;
  }

  *all(): IterableIterator<S> {
    for (const users of this.byStream.values()) for (const set of users.values()) yield* set;
  }
}
