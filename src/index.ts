export { loadConfig, ConfigError, CONFIG_VARIABLES, type Config } from './config';
export { HubServer, type HubServerOptions } from './server';
export { createLogger } from './log';
export { EVENT_KINDS, STREAM_KINDS, type EventKind, type StreamKind } from './routing';
export type { Transport, MessageSink } from './transport/transport';
export { TransportUnavailableError } from './transport/transport';
export { MemoryTransport } from './transport/memory';
export { RedisTransport, type RedisTransportOptions } from './transport/redis';
export { buildEnvelope } from './wire/envelope';
