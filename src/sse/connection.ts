import type { ServerResponse } from 'node:http';
import { flushSoon, type Flushable } from './flush-queue';
import { HEARTBEAT_FRAME, encodeRetry } from './frame';
import type { EventId } from '../history/event-id';
import { NOT_FILED, type WheelItem } from '../hub/timer-wheel';
import type { OutboundBudget, QueueingStream } from './outbound-budget';

export const DISCONNECT_REASONS = [
  'client_closed',
  'slow_consumer',
  'token_expired',
  'shutdown',
  'host_closed',
  'error',
] as const;
export type DisconnectReason = (typeof DISCONNECT_REASONS)[number];

export interface OutboundLimits {
  maxEvents: number;
  maxBytes: number;
  /** How long the socket may refuse writes before the client counts as stalled. */
  stallMs: number;
}

/** How long a politely ended stream may take to flush before its socket is dropped. */
const CLOSE_GRACE_MS = 5000;
/** Frames of one turn are written at once up to this size; a larger batch goes out right away. */
const MAX_BATCH_BYTES = 64 * 1024;

const CONNECTION = Symbol('ssehub.connection');
type OwnedResponse = ServerResponse & { [CONNECTION]?: SseConnection };

function onResponseClose(this: OwnedResponse): void {
  this[CONNECTION]?.close('client_closed');
}

function onResponseError(this: OwnedResponse): void {
  this[CONNECTION]?.close('error');
}

function onResponseDrain(this: OwnedResponse): void {
  this[CONNECTION]?.flushBacklog();
}

/**
 * The time of the hub's last tick, in epoch ms. Writes stamp themselves with it instead of
 * reading the clock on the fan-out path; a tick is at most one timer resolution old, which is
 * the precision heartbeats are scheduled with anyway.
 */
export const writeClock = { now: Date.now() };

/** The hub's side of a connection's deadlines. */
export interface ConnectionTimers {
  /** The connection's next deadline moved from where it is filed: it started or stopped queueing behind its socket. */
  refile(connection: SseConnection): void;
}

/** Told when a heartbeat went out: the stream is idle, a good time to refresh what the client holds. */
export interface IdleListener {
  refreshClientId(livePosition?: EventId): void;
}

export const SSE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache, no-transform',
  'X-Accel-Buffering': 'no',
  Connection: 'keep-alive',
};

/**
 * One open event stream. Frames go straight to the socket while it accepts them; once
 * `write()` reports back-pressure they queue up to the configured bound, and a client that
 * stays behind past it is disconnected so that it reconnects instead of pinning memory.
 */
export class SseConnection implements Flushable, WheelItem, QueueingStream {
  wheelSlot = NOT_FILED;
  idleListener: IdleListener | undefined;
  private closed = false;
  /** Only for hosts that wait on a stream's end; most connections never allocate it. */
  private closeWaiters: Array<(reason: DisconnectReason) => void> | undefined;
  private closeReason: DisconnectReason | undefined;
  /** Frames accepted this turn, written together by flushPending (see flush-queue). Only while backlog is null. */
  private pending: Buffer[] | null = null;
  private pendingBytes = 0;
  /** Frames waiting for 'drain'; null while the socket accepts writes. */
  private backlog: Buffer[] | null = null;
  private backlogHead = 0;
  private backlogBytes = 0;
  /** Bytes of live frames the stream's subscriber holds behind a replay; in the replica's budget with the backlog. */
  private heldBytes = 0;
  private congestedSince = 0;
  /** Stamped from writeClock, keeping clock reads off the fan-out path. */
  private lastWriteAt: number;
  private writableWaiters: Array<() => void> | undefined;

  constructor(
    readonly id: string,
    readonly userId: string,
    /** Epoch milliseconds after which the credentials that opened the stream are no longer valid. */
    readonly expiresAt: number,
    private readonly res: ServerResponse,
    private readonly limits: OutboundLimits,
    private readonly onClose: (connection: SseConnection, reason: DisconnectReason) => void,
    private readonly timers?: ConnectionTimers,
    /** Shared by the replica's streams; without one, only this stream's own bounds apply. */
    private readonly budget?: OutboundBudget,
  ) {
    this.lastWriteAt = Date.now();
    // Shared listeners find their connection on the response: no closures per connection.
    (res as OwnedResponse)[CONNECTION] = this;
    res.on('close', onResponseClose);
    res.on('error', onResponseError);
  }

  /** Starts the response; nothing else is written until the first frame or heartbeat. */
  open(): void {
    this.res.writeHead(200, SSE_HEADERS);
    this.res.flushHeaders();
    const socket = this.res.socket;
    if (socket) {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      socket.setTimeout(0);
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get queuedBytes(): number {
    return this.backlogBytes + this.heldBytes;
  }

  /** The subscriber started (positive) or stopped (negative) holding live frames of this many bytes. */
  holding(delta: number): void {
    if (this.closed) return;
    this.heldBytes += delta;
    this.budget?.changed(this, delta);
  }

  cutAsSlow(): void {
    this.close('slow_consumer');
  }

  /** Settles with the reason once the stream has closed. */
  whenClosed(): Promise<DisconnectReason> {
    if (this.closeReason !== undefined) return Promise.resolve(this.closeReason);
    return new Promise((resolve) => {
      this.closeWaiters ??= [];
      this.closeWaiters.push(resolve);
    });
  }

  /** Returns false when the frame was not accepted (connection closed or just dropped as too slow). */
  send(frame: Buffer): boolean {
    if (this.closed) return false;
    const backlog = this.backlog;
    if (backlog === null) {
      this.lastWriteAt = writeClock.now;
      const pending = this.pending;
      if (pending === null) {
        this.pending = [frame];
        this.pendingBytes = frame.length;
        flushSoon(this);
      } else {
        pending.push(frame);
        this.pendingBytes += frame.length;
        if (this.pendingBytes >= MAX_BATCH_BYTES) this.flushPending();
      }
      return true;
    }
    const queued = backlog.length - this.backlogHead;
    // One frame is always admitted, so a single event larger than the byte bound does not by itself cut a healthy client.
    if (queued >= this.limits.maxEvents || (queued > 0 && this.backlogBytes + frame.length > this.limits.maxBytes)) {
      this.close('slow_consumer');
      return false;
    }
    backlog.push(frame);
    this.backlogBytes += frame.length;
    this.budget?.changed(this, frame.length);
    // The replica's budget may just have cut this stream, the furthest behind.
    return !this.closed;
  }

  /** Writes the frames accepted this turn as one chunk; back-pressure from it starts the backlog. */
  flushPending(): void {
    const pending = this.pending;
    if (pending === null) return;
    this.pending = null;
    const bytes = this.pendingBytes;
    this.pendingBytes = 0;
    if (this.closed) return;
    const chunk = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, bytes);
    if (!this.res.write(chunk)) this.startBacklog();
  }

  /** Resolves once queued frames have reached the socket, or the stream is closed: replays pace themselves on it. */
  whenWritable(): Promise<void> {
    if (this.closed || this.backlog === null) return Promise.resolve();
    return new Promise((resolve) => {
      this.writableWaiters ??= [];
      this.writableWaiters.push(resolve);
    });
  }

  /**
   * Writes the frames accepted this turn now and resolves once the socket has room again (or
   * the stream is closed): a replay reads its next page only then.
   */
  whenDrained(): Promise<void> {
    this.flushPending();
    return this.whenWritable();
  }

  /**
   * Called by the hub when the connection's deadline (nextDeadline) has come: heartbeat for an
   * idle stream, stall and expiry checks. Returns true when it sent a heartbeat (the stream is idle).
   */
  tick(now: number, heartbeatMs: number): boolean {
    if (this.closed) return false;
    if (now >= this.expiresAt) {
      this.close('token_expired');
      return false;
    }
    if (this.backlog !== null) {
      if (now - this.congestedSince >= this.limits.stallMs) this.close('slow_consumer');
      return false;
    }
    if (now - this.lastWriteAt < heartbeatMs) return false;
    this.lastWriteAt = now;
    // The shared frame, written as it is: an idle stream costs no allocation of its own per heartbeat.
    if (this.pending !== null) this.send(HEARTBEAT_FRAME);
    else if (!this.res.write(HEARTBEAT_FRAME)) this.startBacklog();
    return true;
  }

  /** When tick has something to do next: expiry, then a stall check while congested, else the next heartbeat. */
  nextDeadline(heartbeatMs: number): number {
    const due = this.backlog !== null ? this.congestedSince + this.limits.stallMs : this.lastWriteAt + heartbeatMs;
    return Math.min(due, this.expiresAt);
  }

  /** Tells the client when to come back, then ends the stream (used while draining). */
  closeWithRetryHint(retryMs: number): void {
    if (this.closed) return;
    // A stream still waiting for its user's subscription has not started its response yet.
    if (!this.res.headersSent) this.open();
    this.flushPending();
    if (this.backlog === null) this.res.write(encodeRetry(retryMs));
    this.close('shutdown');
  }

  close(reason: DisconnectReason): void {
    if (this.closed) return;
    // A polite end still delivers what was accepted this turn; a gone or dropped client gets nothing more.
    if (reason === 'shutdown' || reason === 'token_expired' || reason === 'host_closed') this.flushPending();
    this.closed = true;
    this.pending = null;
    const congested = this.backlog !== null || this.res.writableNeedDrain;
    const queued = this.queuedBytes;
    this.backlog = null;
    this.backlogBytes = 0;
    this.heldBytes = 0;
    this.budget?.changed(this, -queued);
    // A stuck client would never take the rest of its buffer: drop the socket instead of ending politely.
    if (reason === 'slow_consumer' || reason === 'error' || congested) {
      this.res.destroy();
    } else if (!this.res.writableEnded) {
      this.res.end();
      // The kernel may still hold unread bytes for a client that stopped reading; do not wait on it forever.
      const timer = setTimeout(() => this.res.destroy(), CLOSE_GRACE_MS);
      timer.unref();
      this.res.once('close', () => clearTimeout(timer));
    }
    this.closeReason = reason;
    this.wakeWriters();
    this.onClose(this, reason);
    if (this.closeWaiters) for (const settle of this.closeWaiters) settle(reason);
    this.closeWaiters = undefined;
  }

  private wakeWriters(): void {
    const waiters = this.writableWaiters;
    if (waiters === undefined) return;
    this.writableWaiters = undefined;
    for (const wake of waiters) wake();
  }

  private startBacklog(): void {
    this.backlog = [];
    this.backlogHead = 0;
    this.congestedSince = Date.now();
    this.res.once('drain', onResponseDrain);
    this.timers?.refile(this);
  }

  /** Writes queued frames on the socket's 'drain', until it refuses again. */
  flushBacklog(): void {
    const backlog = this.backlog;
    if (this.closed || backlog === null) return;
    while (this.backlogHead < backlog.length) {
      const frame = backlog[this.backlogHead] as Buffer;
      this.backlogHead++;
      this.backlogBytes -= frame.length;
      this.budget?.changed(this, -frame.length);
      this.lastWriteAt = writeClock.now;
      if (!this.res.write(frame)) {
        this.compactBacklog();
        this.congestedSince = Date.now();
        this.res.once('drain', onResponseDrain);
        return;
      }
    }
    this.backlog = null;
    this.backlogHead = 0;
    this.backlogBytes = 0;
    // Filed for a stall check that may lie past the next heartbeat: back on the heartbeat's schedule.
    this.timers?.refile(this);
    this.wakeWriters();
  }

  private compactBacklog(): void {
    if (this.backlog !== null && this.backlogHead > 0) {
      this.backlog = this.backlog.slice(this.backlogHead);
      this.backlogHead = 0;
    }
  }
}
