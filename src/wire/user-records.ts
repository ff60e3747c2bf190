import { formatEventId, parseEventId } from '../history/event-id';
import { isEventKind } from '../routing';
import type { InboundEvent, RejectedMessage } from '../transport/transport';
import { MAX_ID_CLOCK_LEAD_MS, validateEvent } from './envelope';

const SPACE = 0x20;

/**
 * A message on a user's channel, as the Redis functions publish it: one or more records
 *   <kind> SP <id> SP <length> SP <event bytes>
 * back to back. The user is the channel's, never the message's, so nothing in a message can
 * address another user; each event is checked as JSON here, where it is delivered (the function
 * checks only its size and braces). A record that fails is reported and the rest still go; a
 * broken frame ends the message.
 */
export function admitUserRecords(
  userId: string,
  message: Buffer,
  maxEventBytes: number,
  admit: (event: InboundEvent) => void,
  reject: (rejected: RejectedMessage) => void,
): void {
  let at = 0;
  while (at < message.length) {
    const kindEnd = message.indexOf(SPACE, at);
    const idEnd = kindEnd < 0 ? -1 : message.indexOf(SPACE, kindEnd + 1);
    const lengthEnd = idEnd < 0 ? -1 : message.indexOf(SPACE, idEnd + 1);
    const length = lengthEnd < 0 ? Number.NaN : Number(message.toString('latin1', idEnd + 1, lengthEnd));
    if (lengthEnd < 0 || !Number.isSafeInteger(length) || length < 0 || lengthEnd + 1 + length > message.length) {
      reject({
        reason: 'invalid_event',
        detail: `user channel message is not <kind> <id> <length> <event> at byte ${at}`,
      });
      return;
    }
    const kind = message.toString('latin1', at, kindEnd);
    const event = message.subarray(lengthEnd + 1, lengthEnd + 1 + length);
    at = lengthEnd + 1 + length;
    if (!isEventKind(kind)) {
      reject({ reason: 'unknown_kind', detail: `unknown event kind ${JSON.stringify(kind)}`, kind });
      continue;
    }
    const id = parseEventId(message.toString('latin1', kindEnd + 1, idEnd));
    if (!id) {
      reject({ reason: 'invalid_id', detail: 'record id is not <epoch>:<ms>-<seq>', kind });
      continue;
    }
    if (id.ms > Date.now() + MAX_ID_CLOCK_LEAD_MS) {
      reject({ reason: 'invalid_id', detail: `id ${formatEventId(id)} is from the future`, kind });
      continue;
    }
    const problem = validateEvent(event, maxEventBytes);
    if (problem) {
      reject({ reason: problem.reason, detail: problem.detail, kind });
      continue;
    }
    admit({ kind, userId, id, event });
  }
}
