// The Redis transport and its function library; needs the optional peer `ioredis`.
import { loadOptional } from './optional-peer';

// Checked first, so that a missing ioredis fails with the package to install, not a bare MODULE_NOT_FOUND.
loadOptional('redis', () => require('ioredis'));

export { RedisTransport, type RedisTransportOptions } from './transport/redis/transport';
export type { HistorySettings } from './transport/redis/library';
export {
  REDIS_LIBRARY,
  PUBLISH_FUNCTION,
  PUBLISH_BATCH_FUNCTION,
  LIBRARY_VERSION,
  redisLibrary,
  userKeys,
  userTag,
} from './transport/redis/library';
