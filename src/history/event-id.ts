/**
 * Event ids are `<epoch>:<ms>-<seq>`. The epoch names one incarnation of the history store
 * (it changes when the store loses its data); `<ms>-<seq>` orders a user's events, `seq`
 * counting up by one per event so a gap in the history is visible.
 */
export interface EventId {
  epoch: string;
  ms: number;
  seq: number;
}

const EVENT_ID_PATTERN = /^([0-9a-z]{1,32}):(\d{1,16})-(\d{1,16})$/;

export function formatEventId(id: EventId): string {
  return `${id.epoch}:${id.ms}-${id.seq}`;
}

/** Undefined for anything that is not an id this hub issued (ids come from clients and publishers). */
export function parseEventId(text: string): EventId | undefined {
  const match = EVENT_ID_PATTERN.exec(text);
  if (!match) return undefined;
  const ms = Number(match[2]);
  const seq = Number(match[3]);
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return undefined;
  return { epoch: match[1] as string, ms, seq };
}

/** Orders two ids of the same epoch. */
export function comparePositions(a: EventId, b: EventId): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}

/** The position before a user's first event: a cursor for a user with no history yet. */
export function originOf(epoch: string): EventId {
  return { epoch, ms: 0, seq: 0 };
}
