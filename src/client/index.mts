/**
 * `ssehub/client`: one SSE connection per browser origin, shared by every tab, over `fetch`.
 * No dependencies; the family types come from ssehub itself.
 */
import type { EventKind } from './types.mjs';

export { connect } from './client.mjs';
export { compareEventIds } from './event-id.mjs';
export type {
  A2AEvent,
  AgUiEvent,
  AnalyticsEvent,
  BackoffReason,
  ClientEvents,
  ClientListener,
  ConnectionInfo,
  ConnectionStatus,
  ConnectOptions,
  Credentials,
  CursorStorage,
  EventKind,
  EventMap,
  EventMeta,
  ResetNotice,
  ResetReason,
  SseHubClient,
  ShareMode,
  StopReason,
  SystemEvent,
} from './types.mjs';
export { EVENT_KINDS } from './types.mjs';

/** A refused ticket request; a `status` of 401 or 403 stops the client instead of retrying. */
export class TicketError extends Error {
  override readonly name = 'TicketError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export interface TicketOptions {
  /** Default `/api/v1/stream/ticket`. */
  url?: string;
  /** Narrows the ticket to these families (`{"kinds": [...]}` in the request). */
  kinds?: readonly EventKind[];
  headers?: () => Record<string, string> | Promise<Record<string, string>>;
  credentials?: RequestCredentials;
  /** A ticket request that takes longer is given up and retried with the connection's backoff (default 10 s). */
  timeoutMs?: number;
}

/** A `ticket` function for `connect`: POSTs for a one-use stream ticket before every connect. */
export function ticketFetcher(options: TicketOptions = {}): () => Promise<string> {
  return async () => {
    const response = await fetch(options.url ?? '/api/v1/stream/ticket', {
      method: 'POST',
      credentials: options.credentials ?? 'same-origin',
      headers: { 'Content-Type': 'application/json', ...(await options.headers?.()) },
      body: JSON.stringify(options.kinds ? { kinds: options.kinds } : {}),
      // A request a proxy never answers must not hold every reconnect behind it.
      signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
    });
    if (!response.ok) throw new TicketError(`ticket request failed with ${response.status}`, response.status);
    const body = (await response.json()) as { ticket?: unknown };
    if (typeof body.ticket !== 'string') throw new TicketError('ticket response has no ticket', response.status);
    return body.ticket;
  };
}
