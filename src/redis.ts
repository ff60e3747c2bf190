// The Redis transport and its function library; needs the optional peer `ioredis`.
export { RedisTransport, type RedisTransportOptions } from './transport/redis';
export { REDIS_LIBRARY, PUBLISH_FUNCTION } from './transport/redis-library';
