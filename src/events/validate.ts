import { EVENT_KINDS, type EventKind } from '../routing';
import { validateA2AEvent } from './a2a';
import { EventValidationError, formatPath } from './errors';
import { isJsonObject } from './json';

/** Which kinds to validate; a kind left out or `false` is published unchecked. */
export type ValidationSwitches = Partial<Record<EventKind, boolean>>;

export interface EventValidator {
  /** Whether events of `kind` are checked (callers can skip parsing bytes when not). */
  validates(kind: EventKind): boolean;
  /**
   * Checks a parsed event (a JSON value, not its bytes) against its kind's schema and rejects
   * with `EventValidationError` when it does not match. The first check of a kind loads its
   * schema. Kinds not switched on resolve at once.
   */
  validate(kind: EventKind, value: unknown): Promise<void>;
}

type AgUiSchemas = typeof import('@ag-ui/core/schemas');

let agUiSchemas: Promise<AgUiSchemas> | undefined;

/** `@ag-ui/core/schemas` brings zod; it is imported only when an AG-UI event is first validated. */
function loadAgUiSchemas(): Promise<AgUiSchemas> {
  agUiSchemas ??= import('@ag-ui/core/schemas').catch((err: unknown) => {
    agUiSchemas = undefined;
    throw err;
  });
  return agUiSchemas;
}

async function validateAgUiEvent(value: unknown): Promise<void> {
  const { EventSchema } = await loadAgUiSchemas();
  const result = EventSchema.safeParse(value);
  if (result.success) return;
  const [issue] = result.error.issues;
  if (issue === undefined) throw new EventValidationError('agui', '', result.error.message);
  const path: PropertyKey[] = [...issue.path];
  // An unknown discriminator is reported at the object holding it; name the field itself.
  if (issue.code === 'invalid_union' && 'discriminator' in issue && typeof issue.discriminator === 'string') {
    if (path[path.length - 1] !== issue.discriminator) path.push(issue.discriminator);
  }
  throw new EventValidationError('agui', formatPath(path), issue.message);
}

/** System and analytics events have no schema beyond what routing a client relies on: an object with a `type`. */
function validateTypedObject(kind: EventKind, value: unknown): void {
  if (!isJsonObject(value)) throw new EventValidationError(kind, '', 'must be a JSON object');
  if (typeof value.type !== 'string' || value.type === '') {
    throw new EventValidationError(kind, 'type', 'must be a non-empty string');
  }
}

const VALIDATORS: Record<EventKind, (value: unknown) => Promise<void> | void> = {
  agui: validateAgUiEvent,
  a2a: validateA2AEvent,
  system: (value) => validateTypedObject('system', value),
  analytics: (value) => validateTypedObject('analytics', value),
};

/** A validator for the kinds switched on; nothing is loaded until one of them is first validated. */
export function createEventValidator(switches: ValidationSwitches): EventValidator {
  const enabled = new Set(EVENT_KINDS.filter((kind) => switches[kind] === true));
  return {
    validates: (kind) => enabled.has(kind),
    async validate(kind, value) {
      if (enabled.has(kind)) await VALIDATORS[kind](value);
    },
  };
}
