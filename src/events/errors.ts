import type { EventKind } from '../routing';
import { EventRejectedError } from '../transport/transport';

/** Thrown by an `EventValidator` for an event that does not match its kind's schema; a kind of rejection. */
export class EventValidationError extends EventRejectedError {
  override readonly name = 'EventValidationError';

  /**
   * @param path Where in the event the problem is, e.g. `delta` or `statusUpdate.status.state`;
   *   empty when it is the event as a whole.
   */
  constructor(
    readonly kind: EventKind,
    readonly path: string,
    readonly detail: string,
  ) {
    super(path === '' ? `invalid ${kind} event: ${detail}` : `invalid ${kind} event at "${path}": ${detail}`);
  }
}

/** `['delta', 0, 'op']` becomes `delta[0].op`. */
export function formatPath(segments: readonly PropertyKey[]): string {
  let path = '';
  for (const segment of segments) {
    if (typeof segment === 'number') path += `[${segment}]`;
    else path += path === '' ? String(segment) : `.${String(segment)}`;
  }
  return path;
}
