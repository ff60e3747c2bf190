import type {
  Message as A2AMessage,
  Task as A2ATask,
  TaskArtifactUpdateEvent as A2ATaskArtifactUpdateEvent,
  TaskStatusUpdateEvent as A2ATaskStatusUpdateEvent,
} from '@a2a-js/sdk';
import type { Event as AgUiProtocolEvent, EventType as AgUiEventType } from '@ag-ui/core';
import type { EventKind } from '../routing';

/** Any value JSON can carry. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * An AG-UI protocol event (`@ag-ui/core`'s `Event` union). `type` also accepts the plain string,
 * `'TEXT_MESSAGE_CONTENT'` as well as `EventType.TEXT_MESSAGE_CONTENT`: the enum is a runtime
 * value, and importing it would load `@ag-ui/core` just to name a constant.
 */
export type AgUiEvent = WithPlainType<AgUiProtocolEvent>;

type WithPlainType<E> = E extends { type: infer T extends AgUiEventType }
  ? Omit<E, 'type'> & { type: T | `${T}` }
  : never;

/**
 * An A2A update, as the `@a2a-js/sdk` types it: a `Task`, `Message`, `TaskStatusUpdateEvent` or
 * `TaskArtifactUpdateEvent`. These are the SDK's in-memory objects (numeric enums, `$case`
 * unions), not A2A JSON, so a typed A2A event is encoded with the SDK's own codec and travels as
 * an A2A `StreamResponse`, e.g. `{"statusUpdate":{…}}` (see `serializeEvent`).
 */
export type A2AEvent = A2ATask | A2AMessage | A2ATaskStatusUpdateEvent | A2ATaskArtifactUpdateEvent;

/** RFC 3339 UTC time, e.g. `2026-05-04T10:00:00.000Z`. */
export type Timestamp = string;

/** A system or analytics event of a type of your own: any `type`, any further JSON members. */
export type OpenEvent = { type: string; timestamp?: Timestamp } & { [member: string]: JsonValue | undefined };

/** One entry of a `CONTEXTS_SNAPSHOT` (snake_case, unlike the event around it). */
export type ContextSummary = {
  context_id: string;
  name: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  message_count: number;
  task_count: number;
};

/** The system events a conversation UI understands; they reach the `contexts` stream only. */
export type KnownSystemEvent = { timestamp: Timestamp } & (
  | { type: 'CONTEXT_CREATED'; contextId: string; name: string }
  | { type: 'CONTEXT_UPDATED'; contextId: string; name?: string }
  | { type: 'CONTEXT_DELETED'; contextId: string }
  /** Sent first on a contexts stream so the client starts from the full list. */
  | { type: 'CONTEXTS_SNAPSHOT'; contexts: ContextSummary[] }
  | { type: 'CONNECTED'; connectionId: string }
  /** An application-level liveness event, unrelated to the stream's own `heartbeat` frames. */
  | { type: 'HEARTBEAT' }
);

/**
 * A `system` event: one of the known ones or an `OpenEvent`. The open form admits any `type`, so
 * write `event satisfies KnownSystemEvent` where the compiler should check a known one's fields.
 */
export type SystemEvent = KnownSystemEvent | OpenEvent;

/** The analytics events of a site dashboard. Members are snake_case; an unknown value is `null`, never omitted. */
export type KnownAnalyticsEvent = { timestamp: Timestamp } & (
  | {
      type: 'SESSION_STARTED';
      session_id: string;
      device_type: string | null;
      browser: string | null;
      os: string | null;
      country: string | null;
      referrer_source: string | null;
      is_bot: boolean;
    }
  | { type: 'SESSION_ENDED'; session_id: string; duration_ms: number; page_count: number; request_count: number }
  | {
      type: 'PAGE_VIEW';
      session_id: string;
      user_id: string | null;
      page_url: string;
      content_id: string | null;
      referrer: string | null;
    }
  | {
      type: 'ENGAGEMENT_UPDATE';
      session_id: string;
      page_url: string;
      scroll_depth: number;
      time_on_page_ms: number;
      click_count: number;
    }
  | {
      type: 'REAL_TIME_STATS';
      active_sessions: number;
      active_users: number;
      requests_per_minute: number;
      page_views_last_5m: number;
      bot_requests_last_5m: number;
    }
  | { type: 'HEARTBEAT' }
);

/** An `analytics` event: one of the known ones or an `OpenEvent` (see `SystemEvent` on checking known ones). */
export type AnalyticsEvent = KnownAnalyticsEvent | OpenEvent;

/** The event type of each kind. */
export interface EventMap {
  agui: AgUiEvent;
  a2a: A2AEvent;
  system: SystemEvent;
  analytics: AnalyticsEvent;
}

/** The event type publishers of `kind` pass, e.g. `publish<K>(kind: K, userId: string, event: EventOf<K>)`. */
export type EventOf<K extends EventKind> = EventMap[K];

/** What a publish of `kind` takes: a typed event, or its JSON bytes as a string or Buffer (delivered as they are). */
export type EventInput<K extends EventKind> = EventOf<K> | string | Buffer;
