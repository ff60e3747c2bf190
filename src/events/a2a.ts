import type { StreamResponse } from '@a2a-js/sdk';
import { EventValidationError } from './errors';
import { isJsonObject } from './json';
import type { A2AEvent } from './types';

type A2ASdk = typeof import('@a2a-js/sdk');

let sdk: Promise<A2ASdk> | undefined;

/**
 * The SDK is loaded the first time an A2A event is encoded or validated, so a publisher that
 * sends only bytes never loads it.
 */
export function loadA2ASdk(): Promise<A2ASdk> {
  sdk ??= import('@a2a-js/sdk').catch((err: unknown) => {
    sdk = undefined;
    throw err;
  });
  return sdk;
}

/** The SDK's objects are told apart by the one field only each has (`TaskStatusUpdateEvent` is what is left). */
function toStreamResponse(event: A2AEvent): StreamResponse {
  if ('id' in event) return { payload: { $case: 'task', value: event } };
  if ('messageId' in event) return { payload: { $case: 'message', value: event } };
  if ('artifact' in event) return { payload: { $case: 'artifactUpdate', value: event } };
  return { payload: { $case: 'statusUpdate', value: event } };
}

/** A2A JSON of an SDK object, as the `StreamResponse` that A2A streams carry, e.g. `{"task":{…}}`. */
export async function encodeA2AEvent(event: A2AEvent): Promise<string> {
  const { StreamResponse } = await loadA2ASdk();
  return JSON.stringify(StreamResponse.toJSON(toStreamResponse(event)));
}

type FieldRule = 'id' | 'object' | 'parts' | 'taskState' | 'role';

const RULE_CHECKS: Record<FieldRule, { check: (value: unknown, sdk: A2ASdk) => boolean; expected: string }> = {
  id: { check: (v) => typeof v === 'string' && v !== '', expected: 'a non-empty string' },
  object: { check: isJsonObject, expected: 'an object' },
  parts: {
    check: (v) => Array.isArray(v) && v.length > 0 && v.every(isJsonObject),
    expected: 'a non-empty array of parts',
  },
  // The SDK's codecs read enum names and numbers alike; UNSPECIFIED (0) and unknown (-1) are not states.
  taskState: { check: (v, a2a) => a2a.taskStateFromJSON(v) > 0, expected: 'a task state such as "TASK_STATE_WORKING"' },
  role: { check: (v, a2a) => a2a.roleFromJSON(v) > 0, expected: '"ROLE_USER" or "ROLE_AGENT"' },
};

/**
 * The A2A v1 `StreamResponse` members and the fields the specification marks REQUIRED in each
 * (the SDK ships types and codecs, no schema). Parents come before their children so a missing
 * object is reported as itself. Other fields are not checked.
 */
const A2A_PAYLOADS: Record<NonNullable<StreamResponse['payload']>['$case'], Readonly<Record<string, FieldRule>>> = {
  task: { id: 'id', contextId: 'id', status: 'object', 'status.state': 'taskState' },
  message: { messageId: 'id', role: 'role', parts: 'parts' },
  statusUpdate: { taskId: 'id', contextId: 'id', status: 'object', 'status.state': 'taskState' },
  artifactUpdate: {
    taskId: 'id',
    contextId: 'id',
    artifact: 'object',
    'artifact.artifactId': 'id',
    'artifact.parts': 'parts',
  },
};
const MEMBERS = Object.keys(A2A_PAYLOADS) as (keyof typeof A2A_PAYLOADS)[];

function lookup(value: unknown, path: string): unknown {
  let current = value;
  for (const segment of path.split('.')) current = isJsonObject(current) ? current[segment] : undefined;
  return current;
}

/** Checks A2A JSON: a `StreamResponse` with exactly one payload whose REQUIRED fields are valid. */
export async function validateA2AEvent(value: unknown): Promise<void> {
  const a2a = await loadA2ASdk();
  if (!isJsonObject(value)) throw new EventValidationError('a2a', '', 'must be a JSON object');
  const present = MEMBERS.filter((member) => value[member] !== undefined);
  const [member] = present;
  if (member === undefined || present.length > 1) {
    throw new EventValidationError('a2a', '', `must have exactly one of ${MEMBERS.map((m) => `"${m}"`).join(', ')}`);
  }
  for (const [field, rule] of Object.entries(A2A_PAYLOADS[member])) {
    const { check, expected } = RULE_CHECKS[rule];
    if (!check(lookup(value[member], field), a2a)) {
      throw new EventValidationError('a2a', `${member}.${field}`, `must be ${expected}`);
    }
  }
}
