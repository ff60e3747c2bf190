import { compareEventIds, isAtOrBefore } from './event-id.mjs';
import type { StreamConfig, ToTab, WireEvent } from './protocol.mjs';
import { tabLockName } from './protocol.mjs';
import type { SseFrame } from './sse-parser.mjs';
import { type NetworkScope, StreamConnection } from './stream-connection.mjs';
import { type Credentials, EVENT_KINDS, type EventKind } from './types.mjs';

/** How the holder reaches its tabs: MessagePorts in a SharedWorker, a BroadcastChannel for a leader tab. */
export interface TabLink {
  post(message: ToTab): void;
  credentials(): Promise<Credentials>;
}

export interface HolderScope extends NetworkScope {
  navigator: NetworkScope['navigator'] & { locks?: LockManager };
}

/** Enough recent events for a tab that reloads, or joins late, to catch up without a new request. */
const BUFFER_MAX = 2000;
/** Lets several tabs that join together (a restored session) share one catch-up restart. */
const RESTART_DELAY_MS = 50;

const NAMED_KINDS: ReadonlySet<string> = new Set(EVENT_KINDS);

/**
 * Holds the one stream of a browser origin and fans it out to the tabs. It keeps the events since
 * the stream's start (bounded) so a tab joining with an older cursor is caught up from memory; a
 * cursor older than that restarts the stream from it, and tabs that are ahead drop the repeats.
 */
export class Holder {
  private readonly tabs = new Map<string, { visible: boolean; cursor: string | null }>();
  private readonly connection: StreamConnection;
  private buffer: Array<WireEvent & { id: string }> = [];
  /** The position just before `buffer[0]`: every event after it is in the buffer. */
  private base: string | null = null;
  private started = false;
  private startTimer: ReturnType<typeof setTimeout> | undefined;
  private restartFrom: string | undefined;
  private restartTimer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private readonly watching = new AbortController();

  constructor(
    config: StreamConfig,
    private readonly link: TabLink,
    private readonly scope: HolderScope,
    /** Told when a tab leaves (closed, or its lock released): a SharedWorker forgets its port. */
    private readonly onLeave: (tabId: string, remaining: number) => void = () => undefined,
  ) {
    this.defaultKind = config.defaultKind;
    this.connection = new StreamConnection(
      config,
      {
        credentials: () => link.credentials(),
        frame: (frame) => this.onFrame(frame),
        // Closing hands the stream to the next holder: the tabs must not hear "stopped".
        status: (status) => {
          if (!this.closed) this.link.post({ t: 'status', status });
        },
      },
      scope,
    );
  }

  private readonly defaultKind: EventKind | 'contexts';

  get tabCount(): number {
    return this.tabs.size;
  }

  /**
   * A tab arrives with the id of the last event it delivered. Before the stream starts, cursors
   * are gathered for `startAfter` ms so that it starts from the oldest one.
   */
  join(tabId: string, cursor: string | null, visible: boolean, watch: boolean, startAfterMs = 0): void {
    const known = this.tabs.has(tabId);
    this.tabs.set(tabId, { visible, cursor });
    if (watch && !known) this.watch(tabId);
    this.link.post({ t: 'status', status: this.connection.status, to: tabId });
    this.link.post({ t: 'tabs', tabs: this.tabs.size });
    if (!this.started) {
      this.startTimer ??= setTimeout(() => this.start(), startAfterMs);
      return;
    }
    if (cursor === null) {
      const position = this.connection.cursor;
      if (position !== null) this.link.post({ t: 'position', id: position, to: tabId });
      return;
    }
    if (this.base !== null) {
      const order = compareEventIds(cursor, this.base);
      if (order !== null && order >= 0) {
        const events = this.buffer.filter((event) => !isAtOrBefore(event.id, cursor));
        if (events.length > 0) this.link.post({ t: 'events', events, to: tabId });
        return;
      }
    }
    this.scheduleRestart(cursor);
  }

  leave(tabId: string): void {
    if (!this.tabs.delete(tabId)) return;
    this.link.post({ t: 'tabs', tabs: this.tabs.size });
    this.onLeave(tabId, this.tabs.size);
  }

  /**
   * Visibility policy: the stream stays open while every tab is hidden (events keep their order
   * and nothing needs replaying later); a tab coming into view cuts a backoff wait short, since
   * someone is now looking at stale data.
   */
  setVisible(tabId: string, visible: boolean): void {
    const tab = this.tabs.get(tabId);
    if (tab) tab.visible = visible;
    const status = this.connection.status;
    if (visible && status.state === 'backoff' && status.reason !== 'offline') this.connection.reconnectNow();
  }

  reconnect(): void {
    this.connection.reconnectNow();
  }

  close(): void {
    this.closed = true;
    this.watching.abort();
    clearTimeout(this.startTimer);
    clearTimeout(this.restartTimer);
    this.connection.close();
  }

  private start(): void {
    if (this.closed || this.started) return;
    this.started = true;
    let from: string | null = null;
    for (const { cursor } of this.tabs.values()) {
      if (cursor === null) continue;
      if (from === null || (compareEventIds(cursor, from) ?? 0) < 0) from = cursor;
    }
    this.base = from;
    this.connection.start(from);
  }

  private scheduleRestart(cursor: string): void {
    if (this.restartFrom === undefined || (compareEventIds(cursor, this.restartFrom) ?? 0) < 0) {
      this.restartFrom = cursor;
    }
    this.restartTimer ??= setTimeout(() => {
      this.restartTimer = undefined;
      const from = this.restartFrom ?? null;
      this.restartFrom = undefined;
      if (this.closed) return;
      this.buffer = [];
      this.base = from;
      this.connection.restart(from);
    }, RESTART_DELAY_MS);
  }

  private onFrame(frame: SseFrame): void {
    if (frame.event === 'heartbeat') return;
    if (frame.event === 'reset') {
      this.buffer = [];
      this.base = frame.id;
      this.link.post({ t: 'reset', id: frame.id, data: frame.data ?? '{}' });
      return;
    }
    if (frame.data === null) {
      if (frame.id === null) return;
      this.base ??= frame.id;
      this.link.post({ t: 'position', id: frame.id });
      return;
    }
    const kind = frame.event === 'message' ? this.defaultKind : NAMED_KINDS.has(frame.event) ? frame.event : null;
    // A family this client does not know yet (a newer hub): not ours to deliver.
    if (kind === null) return;
    const event: WireEvent = { id: frame.id, kind: kind as EventKind | 'contexts', data: frame.data };
    if (frame.id !== null) this.remember({ ...event, id: frame.id });
    this.link.post({ t: 'events', events: [event] });
  }

  private remember(event: WireEvent & { id: string }): void {
    const last = this.buffer.at(-1);
    if (last !== undefined) {
      const order = compareEventIds(event.id, last.id);
      // Out of order or from another epoch: the buffer could no longer vouch for a gapless range.
      if (order === null || order <= 0) {
        this.buffer = [];
        this.base = null;
        return;
      }
    } else if (this.base === null) {
      return;
    }
    this.buffer.push(event);
    if (this.buffer.length > BUFFER_MAX) {
      const dropped = this.buffer.splice(0, this.buffer.length - BUFFER_MAX);
      this.base = dropped.at(-1)?.id ?? this.base;
    }
  }

  /** Learns of a tab's end through its lock, which the browser releases even when the tab crashes. */
  private watch(tabId: string): void {
    const locks = this.scope.navigator.locks;
    if (!locks) return;
    void locks
      .request(tabLockName(tabId), { signal: this.watching.signal }, () => {
        if (!this.closed) this.leave(tabId);
      })
      .catch(() => undefined);
  }
}
