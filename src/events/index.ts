export type {
  A2AEvent,
  AgUiEvent,
  AnalyticsEvent,
  ContextSummary,
  EventInput,
  EventMap,
  EventOf,
  JsonValue,
  KnownAnalyticsEvent,
  KnownSystemEvent,
  OpenEvent,
  SystemEvent,
  Timestamp,
} from './types';
export { EventValidationError } from './errors';
export { createEventValidator, type EventValidator, type ValidationSwitches } from './validate';
export { serializeEvent } from './serialize';
