import { EVENT_KINDS, type EventKind, kindsForStream, type StreamKind } from '../routing';
import { ROLE_ADMIN, type Principal } from './verifier';

/** The role a kind's events need to be streamed: analytics are for admins. */
const STREAM_ROLE: Partial<Record<EventKind, string>> = { analytics: ROLE_ADMIN };

export function mayStreamKind(principal: Principal, kind: EventKind): boolean {
  const role = STREAM_ROLE[kind];
  return role === undefined || principal.roles.has(role);
}

/** Every kind the principal may stream. */
export function streamableKinds(principal: Principal): EventKind[] {
  return EVENT_KINDS.filter((kind) => mayStreamKind(principal, kind));
}

/** A stream is open to a principal who may see every kind it carries. */
export function mayOpenStream(principal: Principal, stream: StreamKind): boolean {
  return kindsForStream(stream).every((kind) => mayStreamKind(principal, kind));
}

/** The role a stream needs, for its refusal message; undefined when any user may open it. */
export function roleForStream(stream: StreamKind): string | undefined {
  for (const kind of kindsForStream(stream)) if (STREAM_ROLE[kind] !== undefined) return STREAM_ROLE[kind];
  return undefined;
}
