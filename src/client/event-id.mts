/**
 * Orders the hub's event ids (`<epoch>:<ms>-<seq>`). A copy of the rule in
 * `src/history/event-id.ts`, kept here because the browser bundle must not load server modules.
 */
const EVENT_ID = /^([0-9a-z]{1,32}):(\d{1,16})-(\d{1,16})$/;

interface Position {
  epoch: string;
  ms: number;
  seq: number;
}

function parse(id: string): Position | undefined {
  const match = EVENT_ID.exec(id);
  if (!match) return undefined;
  return { epoch: match[1] as string, ms: Number(match[2]), seq: Number(match[3]) };
}

/**
 * Negative, zero or positive as `a` comes before, at or after `b`; `null` when the two cannot be
 * ordered (different epochs, or ids this hub did not issue), where callers must not drop anything.
 */
export function compareEventIds(a: string, b: string): number | null {
  if (a === b) return 0;
  const x = parse(a);
  const y = parse(b);
  if (!x || !y || x.epoch !== y.epoch) return null;
  return x.ms !== y.ms ? x.ms - y.ms : x.seq - y.seq;
}

/** True when `id` is at or before `cursor`, i.e. a tab at `cursor` already has it. */
export function isAtOrBefore(id: string, cursor: string | null): boolean {
  if (cursor === null) return false;
  const order = compareEventIds(id, cursor);
  return order !== null && order <= 0;
}
