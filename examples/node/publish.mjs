// Publish an event to one user's ssehub streams through Redis, with ioredis.
//   npm install ioredis
//   node publish.mjs demo-user "hello from node"
//
// ssehub has no publisher API of its own yet; this is the envelope contract every publisher
// follows, whatever the language: PUBLISH <prefix>:<kind> {"user_id":"<id>","event":{...}}.
// REDIS_URL (default redis://localhost:6379) and SSEHUB_CHANNEL_PREFIX (default ssehub) must
// match the hub's settings.
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';

const KINDS = ['agui', 'a2a', 'system', 'analytics'];

/** Publishes one envelope; resolves to how many hub replicas received it (0: none listening). */
export async function publish(redis, kind, userId, event) {
  if (!KINDS.includes(kind)) throw new Error(`kind must be one of ${KINDS.join(', ')}`);
  const prefix = process.env.SSEHUB_CHANNEL_PREFIX ?? 'ssehub';
  return redis.publish(`${prefix}:${kind}`, JSON.stringify({ user_id: userId, event }));
}

async function main() {
  const [userId = 'demo-user', text = 'hello from node'] = process.argv.slice(2);
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://localhost:6379');
  try {
    const receivers = await publish(redis, 'agui', userId, {
      type: 'TEXT_MESSAGE_CONTENT',
      messageId: 'm1',
      delta: text,
    });
    console.log(`published to ${receivers} hub replica(s)`);
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
