import { isUtf8 } from 'node:buffer';
import { formatEventId, parseEventId, type EventId } from '../history/event-id';
import { isEventKind } from '../routing';
import type { InboundEvent, RejectedMessage } from '../transport/transport';
import { nestsDeeperThan, scanObjectMembers, type JsonMember } from './json-members';

/**
 * The transport envelope:
 *   {"id":"<epoch>:<ms>-<seq>","user_id":"<id>","event":{...}}
 * "id" is set by ssehub's publish paths (the Redis function, the webhook, the publisher API);
 * a plain PUBLISH without it is delivered live, without an SSE id. The event's bytes are kept
 * exactly as published.
 */

export const REJECT_REASONS = [
  'too_large',
  'too_deep',
  'invalid_utf8',
  'malformed_json',
  'not_an_object',
  'invalid_user_id',
  'invalid_event',
  'invalid_id',
  'duplicate_member',
  'unknown_kind',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export const MAX_USER_ID_LENGTH = 512;
const LONE_SURROGATE_OR_NUL = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]|\0/;
/** Deepest bracket nesting accepted in an event (its envelope wraps it in one more level). */
export const MAX_JSON_DEPTH = 64;

export interface ParsedEnvelope {
  ok: true;
  userId: string;
  /** Absent for events published without history. */
  id: EventId | undefined;
  /** Raw bytes of the event object, a view into the received buffer. */
  event: Buffer;
}

export interface Rejected {
  ok: false;
  reason: RejectReason;
  detail: string;
}

function reject(reason: RejectReason, detail: string): Rejected {
  return { ok: false, reason, detail };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

interface DecodedObject {
  value: Record<string, unknown>;
  members: JsonMember[];
}

/** Size, UTF-8, depth and JSON syntax of one object: everything but its members. */
function checkObject(buf: Buffer, maxBytes: number, maxDepth: number): { value: Record<string, unknown> } | Rejected {
  if (buf.length > maxBytes) return reject('too_large', `${buf.length} bytes exceeds the ${maxBytes}-byte limit`);
  if (!isUtf8(buf)) return reject('invalid_utf8', 'payload is not valid UTF-8');
  if (nestsDeeperThan(buf, maxDepth)) return reject('too_deep', `JSON nests deeper than ${maxDepth} levels`);
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8'));
  } catch (err) {
    return reject('malformed_json', (err as Error).message);
  }
  if (!isPlainObject(value)) return reject('not_an_object', 'payload must be a JSON object');
  return { value };
}

function decodeObject(buf: Buffer, maxBytes: number, maxDepth = MAX_JSON_DEPTH): DecodedObject | Rejected {
  const checked = checkObject(buf, maxBytes, maxDepth);
  if ('ok' in checked) return checked;
  const { value } = checked;
  const members = scanObjectMembers(buf);
  const seen = new Set<string>();
  for (const member of members) {
    if (seen.has(member.key)) return reject('duplicate_member', `member "${member.key}" appears more than once`);
    seen.add(member.key);
  }
  return { value, members };
}

export function validateUserId(value: unknown): Rejected | undefined {
  if (typeof value !== 'string') return reject('invalid_user_id', '"user_id" must be a string');
  if (value.length === 0) return reject('invalid_user_id', '"user_id" must not be empty');
  if (value.length > MAX_USER_ID_LENGTH) {
    return reject('invalid_user_id', `"user_id" is longer than ${MAX_USER_ID_LENGTH} characters`);
  }
  // A lone surrogate cannot be stored as text: Postgres (and any UTF-8 encoder) would turn it
  // into U+FFFD, the id of another user. NUL cannot be stored in Postgres text at all.
  if (LONE_SURROGATE_OR_NUL.test(value)) {
    return reject('invalid_user_id', '"user_id" must be well-formed Unicode without NUL characters');
  }
  return undefined;
}

/** Room for the id and user id around an event of the maximum size (a 512-character id escapes to at most 3 KiB). */
export const ENVELOPE_OVERHEAD_BYTES = 4096;

/** `maxEventBytes` limits the event itself; the envelope may be larger by its id and user id. */
export function parseEnvelope(buf: Buffer, maxEventBytes: number): ParsedEnvelope | Rejected {
  const decoded = decodeObject(buf, maxEventBytes + ENVELOPE_OVERHEAD_BYTES, MAX_JSON_DEPTH + 1);
  if ('ok' in decoded) return decoded;
  const userIdProblem = validateUserId(decoded.value.user_id);
  if (userIdProblem) return userIdProblem;
  if (!isPlainObject(decoded.value.event)) return reject('invalid_event', '"event" must be a JSON object');
  const member = decoded.members.find((m) => m.key === 'event');
  if (!member) return reject('invalid_event', '"event" is missing');
  const eventBytes = member.valueEnd - member.valueStart;
  if (eventBytes > maxEventBytes) {
    return reject('too_large', `event of ${eventBytes} bytes exceeds the ${maxEventBytes}-byte limit`);
  }
  let id: EventId | undefined;
  if (decoded.value.id !== undefined) {
    id = typeof decoded.value.id === 'string' ? parseEventId(decoded.value.id) : undefined;
    if (!id) return reject('invalid_id', '"id" is reserved for ids assigned by ssehub (<epoch>:<ms>-<seq>)');
  }
  return {
    ok: true,
    userId: decoded.value.user_id as string,
    id,
    event: buf.subarray(member.valueStart, member.valueEnd),
  };
}

/** Checks an event on its own (publisher API): a JSON object within the size limit. */
export function validateEvent(buf: Buffer, maxBytes: number): Rejected | undefined {
  const checked = checkObject(buf, maxBytes, MAX_JSON_DEPTH);
  return 'ok' in checked ? checked : undefined;
}

/**
 * Webhook bodies are the event itself with an extra top-level "user_id". The member is cut
 * out of the bytes (with its separating comma) so the delivered event is otherwise exact.
 */
export function parseWebhookBody(buf: Buffer, maxBytes: number): ParsedEnvelope | Rejected {
  const decoded = decodeObject(buf, maxBytes);
  if ('ok' in decoded) return decoded;
  const userIdProblem = validateUserId(decoded.value.user_id);
  if (userIdProblem) return userIdProblem;
  const { members } = decoded;
  const index = members.findIndex((m) => m.key === 'user_id');
  const member = members[index] as JsonMember;
  const next = members[index + 1];
  const previous = members[index - 1];
  let cutStart = member.start;
  let cutEnd = member.valueEnd;
  if (next) cutEnd = next.start;
  else if (previous) cutStart = previous.valueEnd;
  const objectStart = buf.indexOf(0x7b);
  const objectEnd = buf.lastIndexOf(0x7d) + 1;
  const event = Buffer.concat([buf.subarray(objectStart, cutStart), buf.subarray(cutEnd, objectEnd)]);
  return { ok: true, userId: decoded.value.user_id as string, id: undefined, event };
}

const ENVELOPE_EVENT = Buffer.from(',"event":');
const ENVELOPE_END = Buffer.from('}');

/** The envelope in the shape the Redis function publishes (and a plain PUBLISH may, without id). */
export function buildEnvelope(userId: string, event: Buffer, id?: string): Buffer {
  const head = id === undefined ? '{"user_id":' : `{"id":${JSON.stringify(id)},"user_id":`;
  return Buffer.concat([Buffer.from(head + JSON.stringify(userId)), ENVELOPE_EVENT, event, ENVELOPE_END]);
}

/** Ids from further ahead of this replica's clock are not the store's: they would silence later events. */
export const MAX_ID_CLOCK_LEAD_MS = 60 * 60_000;

/**
 * The entry check for a message taken off a shared channel: the kind it was addressed to, then
 * the envelope. What passes is an InboundEvent the hub trusts from there on.
 */
export function admitEnvelope(kind: string, envelope: Buffer, maxEventBytes: number): InboundEvent | RejectedMessage {
  if (!isEventKind(kind)) return { reason: 'unknown_kind', detail: `unknown event kind ${JSON.stringify(kind)}`, kind };
  const parsed = parseEnvelope(envelope, maxEventBytes);
  if (!parsed.ok) return { reason: parsed.reason, detail: parsed.detail, kind };
  const { id } = parsed;
  if (id !== undefined && id.ms > Date.now() + MAX_ID_CLOCK_LEAD_MS) {
    return { reason: 'invalid_id', detail: `id ${formatEventId(id)} is from the future`, kind };
  }
  return { kind, userId: parsed.userId, id, event: parsed.event };
}

export function isRejectedMessage(value: InboundEvent | RejectedMessage): value is RejectedMessage {
  return 'reason' in value;
}
