import type { ConnectionStatus, EventKind } from './types.mjs';

/** The parts of the options that travel to whichever context holds the stream. */
export interface StreamConfig {
  url: string;
  kinds: readonly EventKind[] | null;
  defaultKind: EventKind | 'contexts';
  credentials: RequestCredentials;
  heartbeatMs: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** Whether each attempt must ask a tab for credentials (the functions stay in the tabs). */
  needsAuth: boolean;
}

export interface WireEvent {
  id: string | null;
  kind: EventKind | 'contexts';
  data: string;
}

/** Holder to tabs. `to` addresses one tab; without it every tab takes the message. */
export type ToTab =
  | { t: 'events'; events: WireEvent[]; to?: string }
  | { t: 'position'; id: string; to?: string }
  | { t: 'reset'; id: string | null; data: string }
  | { t: 'status'; status: ConnectionStatus; to?: string }
  | { t: 'tabs'; tabs: number }
  | { t: 'auth'; reqId: number; to: string }
  | { t: 'who' };

/** Tabs to holder. */
export type ToHolder =
  | { t: 'hello'; tabId: string; cursor: string | null; visible: boolean }
  | { t: 'bye'; tabId: string }
  | { t: 'visible'; tabId: string; visible: boolean }
  | { t: 'reconnect'; tabId: string }
  | { t: 'auth-reply'; reqId: number; ticket?: string; headers?: Record<string, string>; error?: AuthFailure };

/** A SharedWorker port's first message: which stream it wants. */
export interface WorkerInit {
  t: 'init';
  key: string;
  config: StreamConfig;
  hello: Extract<ToHolder, { t: 'hello' }>;
}

export interface AuthFailure {
  message: string;
  status?: number;
}

const TO_HOLDER = new Set<string>(['hello', 'bye', 'visible', 'reconnect', 'auth-reply']);

export function isToHolder(message: ToTab | ToHolder): message is ToHolder {
  return TO_HOLDER.has(message.t);
}

/** Names a lock that a live tab holds, so that the holder learns of its end even when it crashes. */
export function tabLockName(tabId: string): string {
  return `ssehub:tab:${tabId}`;
}
