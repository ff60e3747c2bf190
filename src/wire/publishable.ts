import { isEventKind } from '../routing';
import { EventRejectedError } from '../transport/transport';
import { validateEvent, validateUserId } from './envelope';

/** An event as publishers hand it over: a value to serialize, or its exact JSON as a string or Buffer. */
export type PublishableEvent = object | string | Buffer;

/**
 * The publish-side check shared by every in-process publisher (the hub's own `publish`, the
 * `Publisher`): the same rules the hub applies on delivery, so a refused event fails here, at
 * once, with EventRejectedError naming the problem.
 */
export function toEventBytes(kind: string, userId: string, event: PublishableEvent, maxEventBytes: number): Buffer {
  if (!isEventKind(kind)) throw new EventRejectedError(`unknown event kind ${JSON.stringify(kind)}`);
  const userProblem = validateUserId(userId);
  if (userProblem) throw new EventRejectedError(userProblem.detail);
  const bytes = Buffer.isBuffer(event) ? event : Buffer.from(typeof event === 'string' ? event : JSON.stringify(event));
  const problem = validateEvent(bytes, maxEventBytes);
  if (problem) throw new EventRejectedError(`${problem.reason}: ${problem.detail}`);
  return bytes;
}
