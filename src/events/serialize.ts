import { encodeA2AEvent } from './a2a';
import type { EventKind } from '../routing';
import type { A2AEvent, EventInput } from './types';

/**
 * The bytes a publish of `event` sends. Strings and Buffers are taken as the event's JSON as it
 * is (not checked here). Typed A2A events go through the SDK's codec, because its objects are
 * not A2A JSON; every other typed event is `JSON.stringify(event)`.
 */
export async function serializeEvent<K extends EventKind>(kind: K, event: EventInput<K>): Promise<Buffer> {
  if (Buffer.isBuffer(event)) return event;
  if (typeof event === 'string') return Buffer.from(event);
  // Comparing `kind` does not narrow `K`, so the event's type is restated.
  if (kind === 'a2a') return Buffer.from(await encodeA2AEvent(event as A2AEvent));
  return Buffer.from(JSON.stringify(event));
}
