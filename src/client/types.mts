import type { EventMap } from '../events/types.js';

export type { A2AEvent, AgUiEvent, AnalyticsEvent, EventMap, SystemEvent } from '../events/types.js';

/** An event family: the `event:` name of a frame on the multiplexed stream. */
export type EventKind = keyof EventMap;

export const EVENT_KINDS = ['agui', 'a2a', 'system', 'analytics'] as const satisfies readonly EventKind[];

/** Why the hub could not prove a resumed stream complete (README, "Resume"). */
export type ResetReason =
  | 'trimmed'
  | 'unknown_id'
  | 'history_lost'
  | 'replay_limit'
  | 'history_unavailable'
  // A newer hub may name reasons this client does not know yet.
  | (string & {});

export interface ResetNotice {
  reason: ResetReason;
  message: string;
  /** The user's newest id: the cursor now stands here. */
  id: string | null;
}

/** Why the client is waiting before the next attempt. */
export type BackoffReason =
  | 'network_error'
  | 'server_error'
  | 'rate_limited'
  | 'unavailable'
  | 'http_error'
  | 'not_event_stream'
  | 'stream_ended'
  | 'stalled'
  | 'auth_unavailable'
  | 'offline';

export type StopReason = 'unauthorized' | 'forbidden' | 'closed';

export type ConnectionStatus =
  | { state: 'connecting'; attempt: number }
  | { state: 'open' }
  | {
      state: 'backoff';
      reason: BackoffReason;
      /** Milliseconds until the next attempt; `null` while offline (it waits for `online`). */
      retryInMs: number | null;
      attempt: number;
      httpStatus?: number;
    }
  | { state: 'stopped'; reason: StopReason; httpStatus?: number };

/** How tabs share the stream. */
export type ShareMode = 'shared-worker' | 'leader-election' | 'none';

export interface ConnectionInfo {
  mode: ShareMode;
  /** `leader` when this tab holds the stream; with a SharedWorker the worker holds it and every tab is a follower. */
  role: 'leader' | 'follower';
  /** Tabs (clients) of this origin sharing the one stream, this one included. */
  tabs: number;
}

export interface EventMeta {
  kind: EventKind;
  /** The hub's id, `null` for an event published without one (a plain Redis `PUBLISH`). */
  id: string | null;
  /** The frame's data exactly as the hub sent it (for integers beyond 2^53, say). */
  raw: string;
}

/** What `client.on` listens to: the event families, plus the client's own notices. */
export interface ClientEvents extends EventMap {
  reset: ResetNotice;
  status: ConnectionStatus;
  connection: ConnectionInfo;
}

export type ClientListener<T extends keyof ClientEvents> = T extends EventKind
  ? (event: EventMap[T], meta: EventMeta) => void
  : (payload: ClientEvents[T]) => void;

/** Credentials for one connection attempt. */
export interface Credentials {
  /** Appended as `?ticket=`; used once by the hub. */
  ticket?: string;
  headers?: Record<string, string>;
}

export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ConnectOptions {
  /** The stream: `/api/v1/stream` (multiplexed) or a per-family route such as `/api/v1/stream/agui`. */
  url: string;
  /** Sent as `?kinds=a,b`; leave out for a per-family route. */
  kinds?: readonly EventKind[];
  /**
   * The family of unnamed (`message`) frames, which is what the per-family routes send;
   * `contexts` unwraps the contexts stream's `{"protocol","event"}`. Default: `kinds[0]`, else `agui`.
   */
  defaultKind?: EventKind | 'contexts';
  /** Called before every (re)connect; a ticket works once. */
  ticket?: () => Promise<string>;
  /** Called before every (re)connect, e.g. `() => ({ Authorization: \`Bearer ${token}\` })`. */
  headers?: () => Record<string, string> | Promise<Record<string, string>>;
  /** `fetch`'s credentials: `include` for a cross-origin hub that reads the `access_token` cookie. */
  credentials?: RequestCredentials;
  /** The hub's `SSEHUB_HEARTBEAT_MS`: a stream silent for 2.5 times this long is reconnected. */
  heartbeatMs?: number;
  backoff?: { initialMs?: number; maxMs?: number };
  /** `auto` (the default) picks a SharedWorker, else Web Locks leader election, else `none`. */
  share?: 'auto' | ShareMode;
  /** The worker script; by default `worker.mjs` next to this module. */
  workerUrl?: string | URL;
  /** Where this tab keeps its cursor across reloads; `sessionStorage` by default, `null` for nowhere. */
  storage?: CursorStorage | null;
  /** A cursor to start from when storage has none (an id rendered into the page). */
  lastEventId?: string;
}

export interface SseHubClient {
  on<T extends keyof ClientEvents>(type: T, listener: ClientListener<T>): () => void;
  off<T extends keyof ClientEvents>(type: T, listener: ClientListener<T>): void;
  readonly status: ConnectionStatus;
  readonly connection: ConnectionInfo;
  /** The id of the last event this tab delivered (or the stream's position before any). */
  readonly lastEventId: string | null;
  /** Connect now: skips a backoff wait, and starts again after `stopped` (say, after a new login). */
  reconnect(): void;
  close(): void;
}
