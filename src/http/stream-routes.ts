import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticate } from '../auth/principal';
import { mayStreamKind, roleToStream, streamableKinds } from '../auth/permissions';
import type { StreamTickets } from '../auth/tickets';
import type { Principal } from '../auth/verifier';
import type { HubCore } from '../hub/core';
import type { HubLogger } from '../log';
import type { ConnectionRejectReason, HubMetrics } from '../metrics';
import { type EventKind, isEventKind, kindsForStream, type StreamKind } from '../routing';
import type { DisconnectReason, SseConnection } from '../sse/connection';
import { authenticateRequest } from './authenticate';
import type { CorsPolicy } from './cors';
import { HttpError, writeHttpError } from './errors';

/** The seed's stream routes; who may open each follows from the kinds it carries (auth/permissions). */
export const STREAM_ROUTES: ReadonlyArray<{ path: string; stream: StreamKind }> = [
  { path: '/api/v1/stream/agui', stream: 'agui' },
  { path: '/api/v1/stream/a2a', stream: 'a2a' },
  { path: '/api/v1/stream/contexts', stream: 'contexts' },
  { path: '/api/v1/analytics/stream', stream: 'analytics' },
  { path: '/api/v1/stream', stream: 'multiplexed' },
];

const STREAM_BY_PATH: ReadonlyMap<string, StreamKind> = new Map(STREAM_ROUTES.map((r) => [r.path, r.stream]));

export interface ServeStreamOptions {
  /** Where to resume from; by default the request's Last-Event-ID header, else its `last_event_id` query parameter. */
  lastEventId?: string;
  /** Aborting it closes the stream (reason `host_closed`). */
  signal?: AbortSignal;
  /** The kinds a multiplexed stream carries; by default every kind the principal may stream. */
  kinds?: readonly EventKind[];
}

/** An open stream, for the host that opened it. Disposing it (or `close()`) ends the stream and unregisters it. */
export interface StreamGuard extends Disposable {
  readonly id: string;
  readonly userId: string;
  readonly stream: StreamKind;
  /** Settles with the reason once the stream has closed, whoever closed it. */
  readonly closed: Promise<DisconnectReason>;
  readonly isClosed: boolean;
  close(): void;
}

/**
 * Browsers send Last-Event-ID when they reconnect; a page opening its first EventSource can
 * pass the id it rendered with as `last_event_id`.
 */
function requestedLastEventId(req: IncomingMessage): string | undefined {
  const header = req.headers['last-event-id'];
  if (typeof header === 'string' && header !== '') return header;
  const query = queryParameter(req, 'last_event_id');
  return query === '' ? undefined : query;
}

function queryParameter(req: IncomingMessage, name: string): string | undefined {
  const url = req.url ?? '';
  const query = url.indexOf('?');
  if (query === -1) return undefined;
  return new URLSearchParams(url.slice(query + 1)).get(name) ?? undefined;
}

/**
 * Serves one stream on a plain node:http response for an already authenticated principal:
 * the path Express, Fastify or a bare http.Server hands requests to. Refusals (405, 403, 429,
 * 503 draining or full) are answered here; the guard is returned only for a stream that opened.
 */
export function serveStream(
  core: HubCore,
  metrics: HubMetrics,
  req: IncomingMessage,
  res: ServerResponse,
  principal: Principal,
  stream: StreamKind,
  options: ServeStreamOptions = {},
): StreamGuard | undefined {
  const refuse = (reason: ConnectionRejectReason | undefined, error: HttpError): undefined => {
    if (reason) metrics.connectionRejected(reason);
    writeHttpError(res, error);
    return undefined;
  };
  if (req.method !== 'GET')
    return refuse(undefined, new HttpError(405, 'streams are opened with GET', { Allow: 'GET' }));
  const kinds = stream === 'multiplexed' ? (options.kinds ?? streamableKinds(principal)) : kindsForStream(stream);
  const forbidden = kinds.find((kind) => !mayStreamKind(principal, kind));
  if (forbidden !== undefined) {
    const role = roleToStream(forbidden);
    const what = stream === 'multiplexed' ? `${forbidden} events` : 'this stream';
    return refuse(
      'forbidden',
      new HttpError(403, `${what} require${stream === 'multiplexed' ? '' : 's'} the ${role} role`),
    );
  }
  const opened = core.streams.open(
    stream,
    principal.userId,
    principal.expiresAt,
    res,
    options.lastEventId ?? requestedLastEventId(req),
    stream === 'multiplexed' ? new Set(kinds) : undefined,
  );
  if (!opened.ok) {
    if (opened.reason === 'client_gone') return undefined;
    if (opened.reason === 'draining') {
      return refuse('draining', new HttpError(503, 'this replica is shutting down', { 'Retry-After': '1' }));
    }
    if (opened.reason === 'replica_full') {
      // Spread over a few seconds, so a full replica's refused clients do not all come back at once.
      const retryAfter = String(2 + Math.floor(Math.random() * 4));
      return refuse(
        'replica_full',
        new HttpError(503, 'this replica is at its connection limit', { 'Retry-After': retryAfter }),
      );
    }
    // Seed contract: 429 with an empty body.
    metrics.connectionRejected('over_cap');
    res.writeHead(429, { 'Content-Length': '0' });
    res.end();
    return undefined;
  }
  const guard = new StreamHandle(opened.subscriber.connection, stream);
  const { signal } = options;
  if (signal) {
    const close = (): void => guard.close();
    if (signal.aborted) close();
    else {
      signal.addEventListener('abort', close, { once: true });
      void guard.closed.then(() => signal.removeEventListener('abort', close));
    }
  }
  return guard;
}

/** The guard over one connection; it allocates nothing until a host waits on `closed`. */
class StreamHandle implements StreamGuard {
  constructor(
    private readonly connection: SseConnection,
    readonly stream: StreamKind,
  ) {}

  get id(): string {
    return this.connection.id;
  }

  get userId(): string {
    return this.connection.userId;
  }

  get closed(): Promise<DisconnectReason> {
    return this.connection.whenClosed();
  }

  get isClosed(): boolean {
    return this.connection.isClosed;
  }

  close(): void {
    this.connection.close('host_closed');
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** What serving stream requests (rather than streams for an authenticated principal) needs. */
export interface StreamRequestDeps {
  core: HubCore;
  metrics: HubMetrics;
  log: HubLogger;
  tickets: StreamTickets;
  cors: CorsPolicy;
}

/** The `kinds` a multiplexed stream request names, checked; undefined when it names none. */
function requestedKinds(req: IncomingMessage): EventKind[] | undefined {
  const list = queryParameter(req, 'kinds');
  if (list === undefined || list === '') return undefined;
  const kinds = list.split(',').map((kind) => kind.trim());
  const unknown = kinds.find((kind) => !isEventKind(kind));
  if (unknown !== undefined) throw new HttpError(400, `unknown event kind ${JSON.stringify(unknown)}`);
  return [...new Set(kinds as EventKind[])];
}

/**
 * Who a stream request speaks for, and the kinds it asked for: a `?ticket=` (redeemed once, and
 * only for the kinds it was issued for), else the host's authentication.
 */
async function streamGrant(
  deps: StreamRequestDeps,
  req: IncomingMessage,
  stream: StreamKind,
  authenticate: () => Promise<Principal>,
): Promise<{ principal: Principal; kinds: readonly EventKind[] | undefined }> {
  const asked = stream === 'multiplexed' ? requestedKinds(req) : undefined;
  const ticket = queryParameter(req, 'ticket');
  if (ticket === undefined) return { principal: await authenticate(), kinds: asked };
  const grant = await deps.tickets.redeem(ticket);
  if (grant === undefined) throw new HttpError(401, 'unknown, expired or already used ticket');
  const kinds = asked ?? (stream === 'multiplexed' ? grant.kinds : kindsForStream(stream));
  if (!kinds.every((kind) => grant.kinds.includes(kind))) {
    throw new HttpError(403, 'the ticket does not cover the kinds of this stream');
  }
  return { principal: grant.principal, kinds: stream === 'multiplexed' ? kinds : undefined };
}

/**
 * One stream request from start to end: CORS, the cross-site cookie refusal, a ticket or the
 * host's authentication, then the stream (or its refusal). Never rejects: every failure is answered.
 */
export async function handleStreamRequest(
  deps: StreamRequestDeps,
  req: IncomingMessage,
  res: ServerResponse,
  stream: StreamKind,
  authenticate: () => Promise<Principal>,
): Promise<void> {
  const { cors, metrics } = deps;
  if (req.method === 'OPTIONS') return cors.preflight(req, res, 'GET');
  // Refused before auth, as a router would: a HEAD "stream" would hold a slot and never read.
  if (req.method !== 'GET') {
    return writeHttpError(res, new HttpError(405, 'streams are opened with GET', { Allow: 'GET' }));
  }
  cors.apply(req, res);
  if (cors.refusesCredentials(req)) {
    metrics.connectionRejected('forbidden');
    return writeHttpError(res, new HttpError(403, 'cross-origin stream requests with cookies need an allowed origin'));
  }
  try {
    const { principal, kinds } = await streamGrant(deps, req, stream, authenticate);
    serveStream(deps.core, metrics, req, res, principal, stream, { kinds });
  } catch (err) {
    if (err instanceof HttpError) {
      if (err.status === 401) metrics.connectionRejected('unauthorized');
      if (err.status === 403) metrics.connectionRejected('forbidden');
      writeHttpError(res, err);
      return;
    }
    // The path only: a query string may hold a ticket, which must never reach a log.
    deps.log.error({ err, path: req.url?.split('?', 1)[0] }, 'request failed');
    writeHttpError(res, new HttpError(500, 'internal error'));
  }
}

/**
 * The stream routes as a node:http listener that authenticates each request itself. Answers
 * true for the requests it took (a stream path), false for the caller to route elsewhere.
 */
export function streamRequestListener(
  deps: StreamRequestDeps,
  authenticate: Authenticate<IncomingMessage>,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const stream = STREAM_BY_PATH.get(query === -1 ? url : url.slice(0, query));
    if (stream === undefined) return false;
    void handleStreamRequest(deps, req, res, stream, () => authenticateRequest(authenticate, req));
    return true;
  };
}
