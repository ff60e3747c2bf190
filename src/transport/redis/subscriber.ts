import type { Redis } from 'ioredis';
import type { HubLogger } from '../../log';
import { keySlot } from './slot';
import { answerOrClose } from './unanswered';

/** Channels per SSUBSCRIBE / SUNSUBSCRIBE: a reconnect with many users is sent in a few commands, not one each. */
const BATCH_CHANNELS = 500;

/**
 * One subscriber connection and the shard channels wanted on it. Channels asked for in the same
 * tick go out as one SSUBSCRIBE; `add` resolves once Redis has confirmed it, so a stream reads its
 * history only after its live events can arrive. After every (re)connect the owner calls
 * `subscribeAll`, which sends every wanted channel again.
 */
export class ChannelSubscriber {
  /** Channels this connection should hold. */
  readonly wanted = new Set<string>();
  /** Channels Redis confirmed on the current connection. */
  private readonly active = new Set<string>();
  private toSubscribe = new Set<string>();
  private toUnsubscribe = new Set<string>();
  private flushing: Promise<void> | undefined;
  private flushScheduled = false;
  private scheduled: Promise<void> = Promise.resolve();
  private resolveScheduled: (() => void) | undefined;

  constructor(
    readonly connection: Redis,
    private readonly log: HubLogger,
    /** In a Cluster one SSUBSCRIBE may only name channels of one slot. */
    private readonly sameSlotBatches = false,
  ) {
    connection.on('close', () => this.active.clear());
  }

  get isReady(): boolean {
    return this.connection.status === 'ready';
  }

  has(channel: string): boolean {
    return this.active.has(channel);
  }

  /** Shard channels Redis confirmed on this connection (the probe's included). */
  get confirmedCount(): number {
    return this.active.size;
  }

  /** Resolves once the channel is subscribed, or at once while disconnected (the next subscribeAll takes it). */
  add(channel: string): Promise<void> {
    this.wanted.add(channel);
    this.toUnsubscribe.delete(channel);
    if (this.active.has(channel) || !this.isReady) return Promise.resolve();
    this.toSubscribe.add(channel);
    return this.schedule();
  }

  remove(channel: string): void {
    this.wanted.delete(channel);
    this.toSubscribe.delete(channel);
    if (this.active.has(channel)) {
      this.toUnsubscribe.add(channel);
      void this.schedule();
    }
  }

  /** Every wanted channel again, on a fresh connection, in batches. */
  async subscribeAll(extra: readonly string[]): Promise<void> {
    const kept = new Set(extra);
    for (const batch of this.batches([...extra, ...this.wanted])) {
      await this.connection.ssubscribe(...batch);
      this.confirm(batch, kept);
    }
  }

  /**
   * Records channels Redis confirmed. One released while its SSUBSCRIBE was on the way is held by
   * Redis now all the same: it is unsubscribed again, or it would stay subscribed for good.
   */
  private confirm(batch: readonly string[], kept?: ReadonlySet<string>): void {
    for (const channel of batch) {
      this.active.add(channel);
      if (!this.wanted.has(channel) && !kept?.has(channel)) {
        this.toUnsubscribe.add(channel);
        void this.schedule();
      }
    }
  }

  /** Resolves once the subscribes and unsubscribes asked for so far were sent and answered. */
  async flushed(): Promise<void> {
    if (this.flushScheduled) await this.scheduled;
    await this.flushing;
  }

  private batches(channels: string[]): string[][] {
    if (!this.sameSlotBatches) {
      const batches: string[][] = [];
      for (let i = 0; i < channels.length; i += BATCH_CHANNELS) batches.push(channels.slice(i, i + BATCH_CHANNELS));
      return batches;
    }
    const bySlot = new Map<number, string[]>();
    for (const channel of channels) {
      const slot = keySlot(channel);
      const batch = bySlot.get(slot);
      if (batch) batch.push(channel);
      else bySlot.set(slot, [channel]);
    }
    return [...bySlot.values()];
  }

  private schedule(): Promise<void> {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.scheduled = new Promise((resolve) => {
        this.resolveScheduled = resolve;
      });
      setImmediate(() => void this.flush());
    }
    return this.scheduled;
  }

  private async flush(): Promise<void> {
    // One flush at a time, so an SUNSUBSCRIBE never overtakes the SSUBSCRIBE of the same channel.
    await this.flushing;
    const done = this.resolveScheduled;
    this.flushScheduled = false;
    const subscribe = [...this.toSubscribe];
    const unsubscribe = [...this.toUnsubscribe];
    this.toSubscribe.clear();
    this.toUnsubscribe.clear();
    this.flushing = this.send(subscribe, unsubscribe);
    await this.flushing;
    done?.();
  }

  private async send(subscribe: string[], unsubscribe: string[]): Promise<void> {
    try {
      for (const batch of this.batches(unsubscribe)) {
        for (const channel of batch) this.active.delete(channel);
        await answerOrClose(this.connection, this.connection.sunsubscribe(...batch));
      }
      // A batch its connection dropped unanswered must fail, or every later flush waits behind it.
      for (const batch of this.batches(subscribe.filter((channel) => this.wanted.has(channel)))) {
        await answerOrClose(this.connection, this.connection.ssubscribe(...batch));
        this.confirm(batch);
      }
    } catch (err) {
      // A channel that is not subscribed now must not look subscribed: a fresh connection sends
      // every wanted channel again, and the owner catches every stream up once it is back.
      this.log.warn({ err }, 'redis subscribe batch failed; reconnecting to resubscribe');
      if (this.connection.status === 'ready') this.connection.disconnect(true);
    }
  }
}
