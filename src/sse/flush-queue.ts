/**
 * Frames written to a stream during one turn of the event loop go out in one socket write.
 *
 * A busy replica's transport socket delivers up to ~2 MB of messages per turn, one read
 * callback per 64 KB, and Node writes each response's frames at the end of every callback.
 * Waiting until every read callback of the turn has run (setImmediate: the check phase, right
 * after I/O) lets one write carry all of a stream's frames of the turn: fewer syscalls and
 * chunk headers per delivery. An idle replica flushes in the same turn, so latency is unchanged.
 */

export interface Flushable {
  flushPending(): void;
}

let queued: Flushable[] = [];
let scheduled = false;

function flushAll(): void {
  scheduled = false;
  const batch = queued;
  queued = [];
  for (const target of batch) target.flushPending();
}

/** Flushes `target` once the I/O callbacks of this turn have run. */
export function flushSoon(target: Flushable): void {
  queued.push(target);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushAll);
  }
}
