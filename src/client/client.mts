import { isAtOrBefore } from './event-id.mjs';
import { Holder } from './holder.mjs';
import {
  type AuthFailure,
  isToHolder,
  type StreamConfig,
  type ToHolder,
  type ToTab,
  tabLockName,
  type WireEvent,
  type WorkerInit,
} from './protocol.mjs';
import type {
  ClientEvents,
  ClientListener,
  ConnectionInfo,
  ConnectionStatus,
  ConnectOptions,
  Credentials,
  CursorStorage,
  EventKind,
  EventMeta,
  ResetNotice,
  SseHubClient,
  ShareMode,
} from './types.mjs';

const DEFAULT_HEARTBEAT_MS = 15_000;
/** Long enough for followers to answer `who`, so a new leader starts from the oldest cursor. */
const ELECTION_GATHER_MS = 150;

type AnyListener = (payload: never, meta: never) => void;

/** Opens (or joins) the origin's one stream for these options. */
export function connect(options: ConnectOptions): SseHubClient {
  return new Client(options);
}

class Client implements SseHubClient {
  private readonly listeners = new Map<keyof ClientEvents, Set<AnyListener>>();
  private readonly tabId = randomId();
  private readonly key: string;
  private readonly config: StreamConfig;
  private readonly storage: CursorStorage | null;
  private readonly storageKey: string;
  private cursor: string | null;
  private statusValue: ConnectionStatus = { state: 'connecting', attempt: 0 };
  private info: ConnectionInfo;
  private closed = false;
  private readonly cleanups: Array<() => void> = [];
  private send: (message: ToHolder) => void = () => undefined;
  /** Set while this tab holds the stream (leader, or `none`). */
  private holder: Holder | null = null;

  constructor(private readonly options: ConnectOptions) {
    const kinds = options.kinds ? [...options.kinds] : null;
    const defaultKind = options.defaultKind ?? kinds?.[0] ?? 'agui';
    const credentials = options.credentials ?? 'same-origin';
    const url = new URL(options.url, location.href).href;
    this.config = {
      url,
      kinds,
      defaultKind,
      credentials,
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      initialBackoffMs: options.backoff?.initialMs ?? 1000,
      maxBackoffMs: options.backoff?.maxMs ?? 30_000,
      needsAuth: options.ticket !== undefined || options.headers !== undefined,
    };
    this.key = JSON.stringify([url, kinds, defaultKind, credentials]);
    this.storage = options.storage === undefined ? sessionStorageOrNull() : options.storage;
    this.storageKey = `ssehub:cursor:${this.key}`;
    this.cursor = readStorage(this.storage, this.storageKey) ?? options.lastEventId ?? null;
    const mode = pickMode(options.share ?? 'auto');
    this.info = { mode, role: mode === 'none' ? 'leader' : 'follower', tabs: 1 };
    this.listenToPage();
    void this.begin(mode);
  }

  get status(): ConnectionStatus {
    return this.statusValue;
  }

  get connection(): ConnectionInfo {
    return this.info;
  }

  get lastEventId(): string | null {
    return this.cursor;
  }

  on<T extends keyof ClientEvents>(type: T, listener: ClientListener<T>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as AnyListener);
    return () => this.off(type, listener);
  }

  off<T extends keyof ClientEvents>(type: T, listener: ClientListener<T>): void {
    this.listeners.get(type)?.delete(listener as AnyListener);
  }

  reconnect(): void {
    this.send({ t: 'reconnect', tabId: this.tabId });
  }

  close(): void {
    if (this.closed) return;
    this.send({ t: 'bye', tabId: this.tabId });
    this.closed = true;
    this.holder?.close();
    this.holder = null;
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    this.setStatus({ state: 'stopped', reason: 'closed' });
  }

  private async begin(mode: ShareMode): Promise<void> {
    this.info = { ...this.info, mode, role: mode === 'none' ? 'leader' : 'follower' };
    this.emit('connection', this.info);
    // Held for the tab's life: whoever holds the stream watches it to learn when the tab is gone.
    await this.holdTabLock();
    if (this.closed) return;
    if (mode === 'shared-worker') this.joinWorker();
    else if (mode === 'leader-election') this.joinElection();
    else this.lead(null);
  }

  private joinWorker(): void {
    let worker: SharedWorker;
    try {
      const url = this.options.workerUrl ?? new URL('./worker.mjs', import.meta.url);
      worker = new SharedWorker(url, { type: 'module', name: 'ssehub' });
    } catch {
      void this.begin(canElect() ? 'leader-election' : 'none');
      return;
    }
    let heard = false;
    const port = worker.port;
    worker.addEventListener('error', () => {
      // The script did not load (blocked, wrong MIME type): share by election instead.
      if (heard || this.closed) return;
      port.close();
      void this.begin(canElect() ? 'leader-election' : 'none');
    });
    port.onmessage = (event: MessageEvent<ToTab>) => {
      heard = true;
      this.handle(event.data);
    };
    port.start();
    this.send = (message) => port.postMessage(message);
    this.cleanups.push(() => port.close());
    port.postMessage({ t: 'init', key: this.key, config: this.config, hello: this.hello() } satisfies WorkerInit);
  }

  private joinElection(): void {
    const channel = new BroadcastChannel(`ssehub:${this.key}`);
    channel.onmessage = (event: MessageEvent<ToTab | ToHolder>) => {
      const message = event.data;
      if (isToHolder(message)) {
        if (this.holder) this.toHolder(message);
      } else if (!this.holder) {
        this.handle(message);
      }
    };
    this.send = (message) => channel.postMessage(message);
    const abort = new AbortController();
    this.cleanups.push(() => {
      abort.abort();
      channel.close();
    });
    void navigator.locks
      .request(`ssehub:leader:${this.key}`, { signal: abort.signal }, () => {
        if (this.closed) return;
        this.lead(channel);
        // Held until this tab closes (or the page goes away, which releases it for the next tab).
        return new Promise<void>((release) => this.cleanups.push(release));
      })
      .catch(() => undefined);
    this.send(this.hello());
  }

  /** This tab holds the stream: for the others over `channel`, or for itself alone. */
  private lead(channel: BroadcastChannel | null): void {
    this.info = { ...this.info, role: 'leader' };
    this.emit('connection', this.info);
    const holder = new Holder(
      this.config,
      {
        post: (message) => {
          channel?.postMessage(message);
          this.handle(message);
        },
        credentials: () => this.credentials(),
      },
      window,
    );
    this.holder = holder;
    this.send = (message) => this.toHolder(message);
    holder.join(this.tabId, this.cursor, isVisible(), false, channel ? ELECTION_GATHER_MS : 0);
    channel?.postMessage({ t: 'who' } satisfies ToTab);
  }

  private toHolder(message: ToHolder): void {
    const holder = this.holder;
    if (!holder) return;
    switch (message.t) {
      case 'hello':
        holder.join(message.tabId, message.cursor, message.visible, message.tabId !== this.tabId);
        break;
      case 'bye':
        holder.leave(message.tabId);
        break;
      case 'visible':
        holder.setVisible(message.tabId, message.visible);
        break;
      case 'reconnect':
        holder.reconnect();
        break;
      case 'auth-reply':
        break;
    }
  }

  private handle(message: ToTab): void {
    if (this.closed) return;
    if ('to' in message && message.to !== undefined && message.to !== this.tabId) return;
    switch (message.t) {
      case 'events':
        for (const event of message.events) this.deliver(event);
        break;
      case 'position':
        // Only a tab with no cursor adopts a position: one with a cursor would skip what lies between.
        if (this.cursor === null) this.setCursor(message.id);
        break;
      case 'reset':
        this.onReset(message.id, message.data);
        break;
      case 'status':
        this.setStatus(message.status);
        break;
      case 'tabs':
        this.info = { ...this.info, tabs: message.tabs };
        this.emit('connection', this.info);
        break;
      case 'auth':
        void this.answerAuth(message.reqId);
        break;
      case 'who':
        if (!this.holder) this.send(this.hello());
        break;
    }
  }

  /** Every tab keeps the last id it delivered and drops anything at or before it: replays and handovers repeat events. */
  private deliver(event: WireEvent): void {
    if (event.id !== null && isAtOrBefore(event.id, this.cursor)) return;
    let payload: unknown;
    try {
      payload = JSON.parse(event.data);
    } catch {
      payload = undefined;
    }
    let kind: EventKind | undefined = event.kind === 'contexts' ? undefined : event.kind;
    if (event.kind === 'contexts' && isObject(payload) && typeof payload.protocol === 'string') {
      kind = payload.protocol as EventKind;
      payload = payload.event;
    }
    if (event.id !== null) this.setCursor(event.id);
    if (kind === undefined || payload === undefined) return;
    const meta: EventMeta = { kind, id: event.id, raw: event.data };
    this.emitRaw(kind, payload, meta);
  }

  private onReset(id: string | null, data: string): void {
    // A tab that already has everything up to the reset's position lost nothing (the reset was for another tab's cursor).
    if (id !== null && isAtOrBefore(id, this.cursor)) return;
    let body: unknown;
    try {
      body = JSON.parse(data);
    } catch {
      body = {};
    }
    const notice: ResetNotice = {
      reason: isObject(body) && typeof body.reason === 'string' ? body.reason : 'unknown',
      message: isObject(body) && typeof body.message === 'string' ? body.message : '',
      id,
    };
    if (id !== null) this.setCursor(id);
    this.emit('reset', notice);
  }

  private async answerAuth(reqId: number): Promise<void> {
    let reply: Extract<ToHolder, { t: 'auth-reply' }>;
    try {
      reply = { t: 'auth-reply', reqId, ...(await this.credentials()) };
    } catch (error) {
      const failure: AuthFailure = { message: error instanceof Error ? error.message : String(error) };
      const status = (error as { status?: unknown } | null)?.status;
      if (typeof status === 'number') failure.status = status;
      reply = { t: 'auth-reply', reqId, error: failure };
    }
    this.send(reply);
  }

  private async credentials(): Promise<Credentials> {
    const [ticket, headers] = await Promise.all([this.options.ticket?.(), this.options.headers?.()]);
    return { ...(ticket === undefined ? {} : { ticket }), ...(headers === undefined ? {} : { headers }) };
  }

  private hello(): Extract<ToHolder, { t: 'hello' }> {
    return { t: 'hello', tabId: this.tabId, cursor: this.cursor, visible: isVisible() };
  }

  private listenToPage(): void {
    const onVisibility = (): void => this.send({ t: 'visible', tabId: this.tabId, visible: isVisible() });
    // A page leaving says goodbye at once; its lock would tell the holder too, a little later.
    const onHide = (): void => {
      if (!this.holder) this.send({ t: 'bye', tabId: this.tabId });
    };
    // Back from the back/forward cache: the holder forgot this tab, so introduce it again.
    const onShow = (event: PageTransitionEvent): void => {
      if (event.persisted && !this.holder) this.send(this.hello());
    };
    document.addEventListener('visibilitychange', onVisibility);
    addEventListener('pagehide', onHide);
    addEventListener('pageshow', onShow);
    this.cleanups.push(() => {
      document.removeEventListener('visibilitychange', onVisibility);
      removeEventListener('pagehide', onHide);
      removeEventListener('pageshow', onShow);
    });
  }

  private holdTabLock(): Promise<void> {
    const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
    if (!locks) return Promise.resolve();
    return new Promise((acquired) => {
      void locks
        .request(tabLockName(this.tabId), () => {
          acquired();
          return new Promise<void>((release) => this.cleanups.push(release));
        })
        .catch(() => acquired());
    });
  }

  private setCursor(id: string): void {
    this.cursor = id;
    try {
      this.storage?.setItem(this.storageKey, id);
    } catch {
      // Storage full or denied: the cursor still lives in memory for this page.
    }
  }

  private setStatus(status: ConnectionStatus): void {
    this.statusValue = status;
    this.emit('status', status);
  }

  private emit<T extends 'reset' | 'status' | 'connection'>(type: T, payload: ClientEvents[T]): void {
    this.emitRaw(type, payload, undefined);
  }

  private emitRaw(type: keyof ClientEvents, payload: unknown, meta: EventMeta | undefined): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (payload: unknown, meta: EventMeta | undefined) => void)(payload, meta);
      } catch (error) {
        // One failing listener must not stop delivery to the others, nor hide its error.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

function pickMode(requested: 'auto' | ShareMode): ShareMode {
  if (requested === 'none') return 'none';
  if (requested !== 'leader-election' && typeof SharedWorker === 'function') return 'shared-worker';
  return canElect() ? 'leader-election' : 'none';
}

function canElect(): boolean {
  return typeof BroadcastChannel === 'function' && typeof navigator !== 'undefined' && navigator.locks !== undefined;
}

function isVisible(): boolean {
  return typeof document === 'undefined' || document.visibilityState === 'visible';
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function randomId(): string {
  return typeof crypto.randomUUID === 'function' ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

function sessionStorageOrNull(): CursorStorage | null {
  try {
    return typeof sessionStorage === 'undefined' ? null : sessionStorage;
  } catch {
    // Storage disabled by the browser's settings.
    return null;
  }
}

function readStorage(storage: CursorStorage | null, key: string): string | null {
  try {
    return storage?.getItem(key) ?? null;
  } catch {
    return null;
  }
}
