/** Event kinds publishers address; each has its own transport channel. */
export const EVENT_KINDS = ['agui', 'a2a', 'system', 'analytics'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/** Streams clients subscribe to. */
export const STREAM_KINDS = ['agui', 'a2a', 'contexts', 'analytics'] as const;
export type StreamKind = (typeof STREAM_KINDS)[number];

export interface Route {
  stream: StreamKind;
  /** The contexts stream tags each event with the protocol it came from. */
  wrapWithProtocol: boolean;
}

const ROUTES: Record<EventKind, readonly Route[]> = {
  agui: [
    { stream: 'agui', wrapWithProtocol: false },
    { stream: 'contexts', wrapWithProtocol: true },
  ],
  a2a: [
    { stream: 'a2a', wrapWithProtocol: false },
    { stream: 'contexts', wrapWithProtocol: true },
  ],
  system: [{ stream: 'contexts', wrapWithProtocol: true }],
  analytics: [{ stream: 'analytics', wrapWithProtocol: false }],
};

const streamsMissing = (kind: EventKind): StreamKind[] =>
  STREAM_KINDS.filter((stream) => !ROUTES[kind].some((route) => route.stream === stream));

const STREAMS_NOT_CARRYING: Record<EventKind, readonly StreamKind[]> = {
  agui: streamsMissing('agui'),
  a2a: streamsMissing('a2a'),
  system: streamsMissing('system'),
  analytics: streamsMissing('analytics'),
};

export function routesFor(kind: EventKind): readonly Route[] {
  return ROUTES[kind];
}

/** Streams that never show events of `kind` (their cursors still move past them). */
export function streamsNotCarrying(kind: EventKind): readonly StreamKind[] {
  return STREAMS_NOT_CARRYING[kind];
}

export function isEventKind(value: string): value is EventKind {
  return (EVENT_KINDS as readonly string[]).includes(value);
}

/** Kinds whose events appear on a stream (used to filter history replays). */
export function kindsForStream(stream: StreamKind): EventKind[] {
  return EVENT_KINDS.filter((kind) => ROUTES[kind].some((route) => route.stream === stream));
}
