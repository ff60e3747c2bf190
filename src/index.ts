// The library: a hub with no HTTP server of its own. Mounts live in `ssehub/koa` (Koa) and on
// the hub itself (`hub.serveStream`, for node:http, Express, Fastify); Redis and Postgres
// transports in `ssehub/redis` and `ssehub/postgres`; publishing from other processes in
// `ssehub/publisher`.
export {
  createHub,
  type Hub,
  type CreateHubOptions,
  type Broadcaster,
  type Readiness,
} from './create-hub';
export type { StreamGuard, ServeStreamOptions } from './http/stream-routes';
export { STREAM_ROUTES } from './http/stream-routes';
// Typed event families, validation and serialization: the events module's own public surface.
export * from './events';
export { MemoryTransport } from './transport/memory/transport';
export type { HistoryLimits as MemoryTransportOptions } from './history/memory-history';
export {
  EventError,
  EventRejectedError,
  TransportUnavailableError,
  PublishOutcomeUnknownError,
  ReplicationUnconfirmedError,
  hasLivePosition,
  hasTicketStore,
  hasQuotaStore,
  type Transport,
  type TransportHandler,
  type InboundEvent,
  type RejectedMessage,
  type Published,
  type LivePosition,
  type TicketStore,
  type QuotaStore,
  type TransportMetrics,
} from './transport/transport';
export {
  RESET_REASONS,
  HistoryReadAbandonedError,
  type ResetReason,
  type HistoryRead,
  type HistoryEntry,
  type HistorySource,
  type HistoryQuery,
  type PageBounds,
} from './history/history';
export { parseEventId, formatEventId, type EventId } from './history/event-id';
export {
  EVENT_KINDS,
  STREAM_KINDS,
  routesFor,
  kindsForStream,
  type EventKind,
  type StreamKind,
  type Route,
} from './routing';
export { HEARTBEAT_INTERVAL_MS, HEARTBEAT_JSON, standardKeepAlive } from './sse/frame';
export { DISCONNECT_REASONS, type DisconnectReason } from './sse/connection';
export { DEFAULT_LIMITS, LIMIT_SPECS, type HubLimits } from './limits';
export { AuthError, ROLE_ADMIN, ROLE_SERVICE, type Principal, type TokenVerifier } from './auth/verifier';
export { jwtAuthenticator, type Authenticate, type PrincipalInit } from './auth/principal';
export { jwtVerifier, type JwtOptions } from './auth/jwt';
export { MissingPeerDependencyError } from './optional-peer';
export type { HubLogger } from './log';
export type { MetricsOptions } from './metrics';
export type { PublishableEvent } from './wire/publishable';
