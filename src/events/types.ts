import type { EventKind } from '../routing';

/** The event type each kind carries. */
export type EventOf<K extends EventKind> = K extends EventKind ? Record<string, unknown> : never;
