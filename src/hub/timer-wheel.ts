/** What the wheel keeps on an item, so filing and removal need no lookup of their own. */
export interface WheelItem {
  /** The slot the item is filed under; NOT_FILED while it is in none. */
  wheelSlot: number;
}

export const NOT_FILED = -1;

/**
 * Deadlines bucketed by slot (`resolutionMs` wide): filing, re-filing and removal are O(1), and
 * taking what is due visits only the buckets whose time has come, so a hub with many idle
 * streams pays per due stream, not per stream, on every tick. A deadline is honoured at the end
 * of its slot: an item is never taken early, and at most one resolution late.
 */
export class TimerWheel<T extends WheelItem> {
  private readonly buckets = new Map<number, Set<T>>();
  /** The next slot to take; anything filed for an earlier time goes here. */
  private cursor: number;
  private filed = 0;

  constructor(
    readonly resolutionMs: number,
    now: number,
  ) {
    this.cursor = Math.floor(now / resolutionMs);
  }

  get size(): number {
    return this.filed;
  }

  /** Files the item under its deadline (epoch ms), moving it if it was filed elsewhere. */
  file(item: T, deadline: number): void {
    const slot = Math.max(Math.ceil(deadline / this.resolutionMs), this.cursor);
    if (item.wheelSlot === slot) return;
    this.remove(item);
    let bucket = this.buckets.get(slot);
    if (bucket === undefined) {
      bucket = new Set();
      this.buckets.set(slot, bucket);
    }
    bucket.add(item);
    item.wheelSlot = slot;
    this.filed++;
  }

  remove(item: T): void {
    const slot = item.wheelSlot;
    if (slot === NOT_FILED) return;
    item.wheelSlot = NOT_FILED;
    const bucket = this.buckets.get(slot);
    if (bucket?.delete(item)) {
      this.filed--;
      if (bucket.size === 0) this.buckets.delete(slot);
    }
  }

  /**
   * Unfiles every item whose slot has ended by `now` and hands it to `visit`, earliest slot
   * first. What `visit` files again lands after `now`'s slot, so it is not visited twice.
   */
  takeDue(now: number, visit: (item: T) => void): void {
    const first = this.cursor;
    const last = Math.floor(now / this.resolutionMs);
    if (last < first) return;
    // Moved first: what visit files for an already passed time goes to the next slot, taken next time.
    this.cursor = last + 1;
    if (last - first < this.buckets.size) {
      for (let slot = first; slot <= last; slot++) this.take(slot, visit);
    } else {
      // After a long pause of the event loop, walking the (few) filled slots beats walking every slot.
      const filled = [...this.buckets.keys()].filter((slot) => slot <= last).sort((a, b) => a - b);
      for (const slot of filled) this.take(slot, visit);
    }
  }

  private take(slot: number, visit: (item: T) => void): void {
    const bucket = this.buckets.get(slot);
    if (bucket === undefined) return;
    this.buckets.delete(slot);
    this.filed -= bucket.size;
    for (const item of bucket) item.wheelSlot = NOT_FILED;
    for (const item of bucket) visit(item);
  }
}
