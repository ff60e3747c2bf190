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

export function routesFor(kind: EventKind): readonly Route[] {
  return ROUTES[kind];
}

export function isEventKind(value: string): value is EventKind {
  return (EVENT_KINDS as readonly string[]).includes(value);
}

/** Kinds whose events appear on a stream (used to filter history replays). */
export function kindsForStream(stream: StreamKind): EventKind[] {
  return EVENT_KINDS.filter((kind) => ROUTES[kind].some((route) => route.stream === stream));
}
