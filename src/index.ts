export { loadConfig, ConfigError, CONFIG_VARIABLES, type Config } from './config';
export { HubServer, type HubServerOptions } from './server';
export { createLogger } from './log';
export { EVENT_KINDS, STREAM_KINDS, type EventKind, type StreamKind } from './routing';
export type { Transport, MessageSink, Published } from './transport/transport';
export { TransportUnavailableError, PublishOutcomeUnknownError, EventRejectedError } from './transport/transport';
export { MemoryTransport } from './transport/memory';
export { RedisTransport, type RedisTransportOptions } from './transport/redis';
export { Publisher, type RedisPublisherOptions, type PostgresPublisherOptions, type PublishTarget } from './publisher';
export { PostgresTransport, type PostgresTransportOptions } from './transport/postgres';
export { REDIS_LIBRARY, PUBLISH_FUNCTION } from './transport/redis-library';
export { parseEventId, formatEventId, type EventId } from './history/event-id';
export {
  RESET_REASONS,
  HistoryReadAbandonedError,
  type ResetReason,
  type HistoryRead,
  type HistorySource,
  type HistoryQuery,
  type PageBounds,
} from './history/history';
export { buildEnvelope } from './wire/envelope';
