import { EVENT_KINDS, type EventKind } from '../routing';
import { ROLE_ADMIN, type Principal } from './verifier';

/** The role a kind's events need to be streamed: analytics are for admins. */
const STREAM_ROLE: Partial<Record<EventKind, string>> = { analytics: ROLE_ADMIN };

export function mayStreamKind(principal: Principal, kind: EventKind): boolean {
  const role = STREAM_ROLE[kind];
  return role === undefined || principal.roles.has(role);
}

/** The role streaming `kind` needs; undefined when any user may. */
export function roleToStream(kind: EventKind): string | undefined {
  return STREAM_ROLE[kind];
}

/** Every kind the principal may stream. */
export function streamableKinds(principal: Principal): EventKind[] {
  return EVENT_KINDS.filter((kind) => mayStreamKind(principal, kind));
}
