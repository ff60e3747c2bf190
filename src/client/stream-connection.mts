import type { AuthFailure, StreamConfig } from './protocol.mjs';
import { type SseFrame, SseParser } from './sse-parser.mjs';
import type { BackoffReason, ConnectionStatus, Credentials, StopReason } from './types.mjs';

/** What the holding context offers: `online`/`offline` events and `navigator.onLine` (a window or a worker). */
export interface NetworkScope {
  addEventListener(type: 'online' | 'offline', listener: () => void): void;
  removeEventListener(type: 'online' | 'offline', listener: () => void): void;
  navigator: { onLine: boolean };
}

export interface StreamHandlers {
  credentials(): Promise<Credentials>;
  frame(frame: SseFrame): void;
  status(status: ConnectionStatus): void;
}

type Outcome =
  | { kind: 'retry'; reason: BackoffReason; httpStatus?: number; retryAfterMs?: number }
  | { kind: 'ended'; reason: BackoffReason; livedMs: number }
  | { kind: 'refused'; httpStatus: number }
  | { kind: 'aborted' };

const STALL_FACTOR = 2.5;
/** A stream that lived this long was healthy: the next failure starts the backoff from the beginning. */
const HEALTHY_MS = 10_000;
/** A Retry-After beyond this is more likely a misconfigured proxy than a plan. */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * One SSE stream over `fetch`, reconnecting until closed. Unlike `EventSource` it keeps trying
 * through 5xx answers, 429, proxy error pages and network errors; it stops only when the hub
 * refuses the credentials twice in a row, the second time with fresh ones.
 */
export class StreamConnection {
  /** The last id the stream reported: sent as `Last-Event-ID` on the next attempt. */
  cursor: string | null = null;
  private running = false;
  private closed = false;
  private stopped = false;
  private controller: AbortController | null = null;
  private wake: (() => void) | null = null;
  private skipWait = false;
  private attempt = 0;
  private refusals = 0;
  private serverRetryMs: number | null = null;
  private lastStatus: ConnectionStatus = { state: 'connecting', attempt: 0 };

  private readonly onNetworkChange = (): void => {
    // Online: try at once rather than sit out a backoff computed while the network was down.
    // Offline: leave a live stream alone (it may survive a blip; stall detection ends a dead one)
    // but end a wait, so that the loop parks until `online` instead of burning attempts.
    if (this.scope.navigator.onLine) this.skipWait = true;
    this.wake?.();
  };

  constructor(
    private readonly config: StreamConfig,
    private readonly handlers: StreamHandlers,
    private readonly scope: NetworkScope,
  ) {
    scope.addEventListener('online', this.onNetworkChange);
    scope.addEventListener('offline', this.onNetworkChange);
  }

  get status(): ConnectionStatus {
    return this.lastStatus;
  }

  start(cursor: string | null): void {
    this.cursor = cursor;
    this.run();
  }

  /** Drops the current stream and opens a new one from `cursor` at once. */
  restart(cursor: string | null): void {
    this.cursor = cursor;
    this.skipWait = true;
    this.controller?.abort();
    this.wake?.();
    this.run();
  }

  /** Skips a backoff wait; after `stopped` (credentials refused) it starts over. */
  reconnectNow(): void {
    this.skipWait = true;
    this.wake?.();
    this.run();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.controller?.abort();
    this.wake?.();
    this.scope.removeEventListener('online', this.onNetworkChange);
    this.scope.removeEventListener('offline', this.onNetworkChange);
    this.setStatus({ state: 'stopped', reason: 'closed' });
  }

  private run(): void {
    if (this.running || this.closed) return;
    this.running = true;
    this.stopped = false;
    this.refusals = 0;
    void this.loop().finally(() => {
      this.running = false;
    });
  }

  private async loop(): Promise<void> {
    while (!this.closed && !this.stopped) {
      if (!this.scope.navigator.onLine && !this.skipWait) {
        this.setStatus({ state: 'backoff', reason: 'offline', retryInMs: null, attempt: this.attempt });
        await this.sleep(Number.POSITIVE_INFINITY);
        continue;
      }
      this.skipWait = false;
      this.setStatus({ state: 'connecting', attempt: this.attempt });
      const outcome = await this.connectOnce();
      if (this.closed) return;
      if (outcome.kind !== 'refused') this.refusals = 0;
      if (outcome.kind === 'refused') {
        this.refusals += 1;
        if (this.refusals >= 2) {
          const reason: StopReason = outcome.httpStatus === 403 ? 'forbidden' : 'unauthorized';
          this.stopped = true;
          this.setStatus({ state: 'stopped', reason, httpStatus: outcome.httpStatus });
          return;
        }
        // Once more at once: the next attempt fetches a fresh ticket or token.
        continue;
      }
      if (outcome.kind === 'aborted' || this.skipWait) continue;
      const delay = this.delayAfter(outcome);
      const reason = outcome.reason;
      const httpStatus = outcome.kind === 'retry' ? outcome.httpStatus : undefined;
      this.setStatus({
        state: 'backoff',
        reason,
        retryInMs: Math.round(delay),
        attempt: this.attempt,
        ...(httpStatus === undefined ? {} : { httpStatus }),
      });
      await this.sleep(delay);
    }
  }

  private delayAfter(outcome: Exclude<Outcome, { kind: 'refused' } | { kind: 'aborted' }>): number {
    if (outcome.kind === 'ended') {
      if (outcome.livedMs >= HEALTHY_MS) this.attempt = 0;
      // `retry:` comes with a polite close (a drain): the hub has said when to come back.
      const retry = this.serverRetryMs;
      this.serverRetryMs = null;
      if (retry !== null) {
        this.attempt = 0;
        return retry * (1 + Math.random() * 0.2);
      }
    }
    if (outcome.kind === 'retry' && outcome.retryAfterMs !== undefined) {
      this.attempt += 1;
      // A little jitter on top, so that every tab of a fleet told "1 s" does not return in the same millisecond.
      return outcome.retryAfterMs * (1 + Math.random() * 0.2);
    }
    const ceiling = Math.min(this.config.maxBackoffMs, this.config.initialBackoffMs * 2 ** this.attempt);
    this.attempt += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  private async connectOnce(): Promise<Outcome> {
    const controller = new AbortController();
    this.controller = controller;
    const stallMs = this.config.heartbeatMs * STALL_FACTOR;
    let stalled = false;
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    const armStall = (): void => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stalled = true;
        controller.abort();
      }, stallMs);
    };
    let openedAt = 0;
    try {
      let credentials: Credentials;
      try {
        credentials = await this.handlers.credentials();
      } catch (error) {
        // A credentials source that knows the user is logged out says so with a `status` of 401 or 403.
        const status = (error as Partial<AuthFailure> | null)?.status;
        if (status === 401 || status === 403) return { kind: 'refused', httpStatus: status };
        return { kind: 'retry', reason: 'auth_unavailable' };
      }
      if (controller.signal.aborted) return { kind: 'aborted' };

      const url = new URL(this.config.url);
      if (this.config.kinds) url.searchParams.set('kinds', this.config.kinds.join(','));
      if (credentials.ticket !== undefined) url.searchParams.set('ticket', credentials.ticket);
      const headers: Record<string, string> = { ...credentials.headers, Accept: 'text/event-stream' };
      if (this.cursor !== null) headers['Last-Event-ID'] = this.cursor;

      armStall();
      let response: Response;
      try {
        response = await fetch(url, {
          headers,
          credentials: this.config.credentials,
          cache: 'no-store',
          signal: controller.signal,
        });
      } catch {
        if (stalled) return { kind: 'retry', reason: 'stalled' };
        if (controller.signal.aborted) return { kind: 'aborted' };
        return { kind: 'retry', reason: 'network_error' };
      }
      if (response.status === 401 || response.status === 403) {
        void response.body?.cancel().catch(() => undefined);
        return { kind: 'refused', httpStatus: response.status };
      }
      if (!response.ok) {
        void response.body?.cancel().catch(() => undefined);
        const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
        const status = response.status;
        const reason: BackoffReason =
          status === 429
            ? 'rate_limited'
            : status === 503
              ? 'unavailable'
              : status >= 500
                ? 'server_error'
                : 'http_error';
        return { kind: 'retry', reason, httpStatus: status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
      }
      const type = (response.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'text/event-stream' || !response.body) {
        // A proxy's or captive portal's page answered in the hub's place.
        void response.body?.cancel().catch(() => undefined);
        return { kind: 'retry', reason: 'not_event_stream', httpStatus: response.status };
      }

      this.refusals = 0;
      openedAt = Date.now();
      this.setStatus({ state: 'open' });
      const parser = new SseParser(
        (frame) => {
          // A restart aborted this stream: what it still had buffered belongs to the old position.
          if (controller.signal.aborted) return;
          if (frame.id !== null) this.cursor = frame.id;
          this.handlers.frame(frame);
        },
        (ms) => {
          this.serverRetryMs = ms;
        },
      );
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          armStall();
          parser.push(value);
        }
      } catch {
        if (stalled) return { kind: 'ended', reason: 'stalled', livedMs: Date.now() - openedAt };
        if (controller.signal.aborted) return { kind: 'aborted' };
        return { kind: 'ended', reason: 'network_error', livedMs: Date.now() - openedAt };
      }
      return { kind: 'ended', reason: 'stream_ended', livedMs: Date.now() - openedAt };
    } finally {
      clearTimeout(stallTimer);
      if (this.controller === controller) this.controller = null;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
      this.wake = done;
    });
  }

  private setStatus(status: ConnectionStatus): void {
    this.lastStatus = status;
    this.handlers.status(status);
  }
}

function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const seconds = Number(value);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - Date.now();
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}
