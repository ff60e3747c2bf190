/**
 * Bytes of replay pages a replica holds at once, across its streams: a page reserves its
 * bound before it is read and gives it back once written, so however many clients resume at
 * once, the replica (and the store answering it) handles at most this much replay at a time.
 * Waiters are served in order, so a large reservation is not starved by small ones.
 */
export class ReplayBudget {
  private used = 0;
  private readonly waiting: Array<{ bytes: number; grant: () => void }> = [];

  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Resolves once `bytes` (at most the capacity) are reserved. */
  reserve(bytes: number): Promise<void> {
    if (this.waiting.length === 0 && this.used + bytes <= this.capacity) {
      this.used += bytes;
      return Promise.resolve();
    }
    return new Promise((grant) => this.waiting.push({ bytes, grant }));
  }

  release(bytes: number): void {
    this.used -= bytes;
    for (;;) {
      const next = this.waiting[0];
      if (next === undefined || this.used + next.bytes > this.capacity) return;
      this.waiting.shift();
      this.used += next.bytes;
      next.grant();
    }
  }
}
