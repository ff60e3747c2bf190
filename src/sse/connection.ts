import type { ServerResponse } from 'node:http';
import { flushSoon, type Flushable } from './flush-queue';
import { HEARTBEAT_FRAME, encodeRetry } from './frame';

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
export class SseConnection implements Flushable {
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
  private congestedSince = 0;
  /** Set on every write; the hub's tick folds it into lastWriteAt, keeping clock reads off the fan-out path. */
  private wroteSinceTick = false;
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
      this.wroteSinceTick = true;
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
    return true;
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
   * Called periodically by the hub: heartbeats for idle streams, stall and expiry checks.
   * Returns true when it sent a heartbeat (the stream is idle).
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
    if (this.wroteSinceTick) {
      this.wroteSinceTick = false;
      this.lastWriteAt = now;
    } else if (now - this.lastWriteAt >= heartbeatMs) {
      return this.send(HEARTBEAT_FRAME);
    }
    return false;
  }

  /** Tells the client when to come back, then ends the stream (used while draining). */
  closeWithRetryHint(retryMs: number): void {
    if (this.closed) return;
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
    this.backlog = null;
    this.backlogBytes = 0;
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
  }

  /** Writes queued frames on the socket's 'drain', until it refuses again. */
  flushBacklog(): void {
    const backlog = this.backlog;
    if (this.closed || backlog === null) return;
    while (this.backlogHead < backlog.length) {
      const frame = backlog[this.backlogHead] as Buffer;
      this.backlogHead++;
      this.backlogBytes -= frame.length;
      this.wroteSinceTick = true;
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
    this.wakeWriters();
  }

  private compactBacklog(): void {
    if (this.backlog !== null && this.backlogHead > 0) {
      this.backlog = this.backlog.slice(this.backlogHead);
      this.backlogHead = 0;
    }
  }
}
