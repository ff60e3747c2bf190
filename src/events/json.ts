import type { JsonValue } from './types';

export type JsonObject = { [member: string]: JsonValue };

/** A parsed JSON object: not null, not an array. */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}
