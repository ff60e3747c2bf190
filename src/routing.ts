/** Event kinds publishers address; each has its own transport channel. */
export const EVENT_KINDS = ['agui', 'a2a', 'system', 'analytics'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/**
 * Streams clients subscribe to: the seed's four, and the multiplexed stream, which carries the
 * kinds each client asks for on one connection.
 */
export const STREAM_KINDS = ['agui', 'a2a', 'contexts', 'analytics', 'multiplexed'] as const;
export type StreamKind = (typeof STREAM_KINDS)[number];

/**
 * How a stream shows an event: its bytes as published (`plain`), wrapped as
 * `{"protocol":<kind>,"event":…}` (the contexts stream), or as published in a frame named by its
 * kind, `event:<kind>` (the multiplexed stream).
 */
export type FrameStyle = 'plain' | 'protocol' | 'named';

export interface Route {
  stream: StreamKind;
  style: FrameStyle;
}

const MULTIPLEXED: Route = { stream: 'multiplexed', style: 'named' };

const ROUTES: Record<EventKind, readonly Route[]> = {
  agui: [{ stream: 'agui', style: 'plain' }, { stream: 'contexts', style: 'protocol' }, MULTIPLEXED],
  a2a: [{ stream: 'a2a', style: 'plain' }, { stream: 'contexts', style: 'protocol' }, MULTIPLEXED],
  system: [{ stream: 'contexts', style: 'protocol' }, MULTIPLEXED],
  analytics: [{ stream: 'analytics', style: 'plain' }, MULTIPLEXED],
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
