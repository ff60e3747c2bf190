// Publish an event to one user's ssehub streams through Redis (7.0 or later), with ioredis.
//   npm install ioredis
//   node publish.mjs demo-user "hello from node"
//
// One call, whatever the language (single Redis, Sentinel or Cluster):
//   FCALL ssehub_publish 2 <prefix>:{<tag>}:m <prefix>:{<tag>}:h <kind> <event-json>
// where <tag> is the user id with %, { and } percent-encoded. The hub loads that function into
// Redis when it connects. It gives the event the user's next id, keeps it in the user's history
// (browsers that reconnect with Last-Event-ID get what they missed) and delivers it, in one step,
// and returns the id.
// REDIS_URL (default redis://localhost:6379) and SSEHUB_CHANNEL_PREFIX (default ssehub) must
// match the hub's settings.
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';

const KINDS = ['agui', 'a2a', 'system', 'analytics'];

/** The user's two keys: one hash tag per user, so both live in the user's cluster slot. */
export function userKeys(userId, prefix = process.env.SSEHUB_CHANNEL_PREFIX ?? 'ssehub') {
  const tag = userId.replace(/[%{}]/g, (char) => ({ '%': '%25', '{': '%7B', '}': '%7D' })[char]);
  return [`${prefix}:{${tag}}:m`, `${prefix}:{${tag}}:h`];
}

/** Publishes one event; resolves to its id, <epoch>:<ms>-<seq>. Redis refuses bad events (ERR ssehub: ...). */
export async function publish(redis, kind, userId, event) {
  if (!KINDS.includes(kind)) throw new Error(`kind must be one of ${KINDS.join(', ')}`);
  return redis.fcall('ssehub_publish', 2, ...userKeys(userId), kind, JSON.stringify(event));
}

async function main() {
  const [userId = 'demo-user', text = 'hello from node'] = process.argv.slice(2);
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://localhost:6379');
  try {
    const id = await publish(redis, 'agui', userId, {
      type: 'TEXT_MESSAGE_CONTENT',
      messageId: 'm1',
      delta: text,
    });
    console.log(`published ${id}`);
  } finally {
    redis.disconnect();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
