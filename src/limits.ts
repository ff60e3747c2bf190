import { HEARTBEAT_INTERVAL_MS } from './sse/frame';

/**
 * The one statement of the hub's limits: their defaults and accepted ranges. The stand-alone
 * server reads them from the environment variables named here, the library takes them as
 * options, and the README's configuration table is checked against this list.
 */
export const LIMIT_SPECS = {
  /** A heartbeat frame goes out after this long without a frame. */
  heartbeatMs: { env: 'SSEHUB_HEARTBEAT_MS', default: HEARTBEAT_INTERVAL_MS, min: 100, max: 3_600_000 },
  /** Open streams per user, per stream kind and replica. */
  maxConnectionsPerUser: { env: 'SSEHUB_MAX_CONNECTIONS_PER_USER', default: 10, min: 1, max: 100_000 },
  /** Frames one stream may queue behind a socket that refuses writes. */
  bufferMaxEvents: { env: 'SSEHUB_BUFFER_MAX_EVENTS', default: 1024, min: 1, max: 1_000_000 },
  /** Bytes one stream may queue behind a socket that refuses writes. */
  bufferMaxBytes: { env: 'SSEHUB_BUFFER_MAX_BYTES', default: 1024 * 1024, min: 1024, max: 1024 * 1024 * 1024 },
  /** How long a socket may refuse writes before its client counts as stalled. */
  writeStallMs: { env: 'SSEHUB_WRITE_STALL_MS', default: 30_000, min: 100, max: 3_600_000 },
  /** Largest event, in bytes of its JSON. */
  maxEventBytes: { env: 'SSEHUB_MAX_EVENT_BYTES', default: 1024 * 1024, min: 64, max: 64 * 1024 * 1024 },
  /** Newest events kept per user for resume. */
  historyMax: { env: 'SSEHUB_HISTORY_MAX', default: 1000, min: 1, max: 1_000_000 },
  /** How long events stay in a user's history. */
  historyTtlMs: { env: 'SSEHUB_HISTORY_TTL_MS', default: 3_600_000, min: 1000, max: 7 * 24 * 3_600_000 },
  /** Most events one resume replays before it answers with a reset instead. */
  replayMax: { env: 'SSEHUB_REPLAY_MAX', default: 1000, min: 0, max: 100_000 },
  /** How long a stream ticket may wait to be redeemed. */
  ticketTtlMs: { env: 'SSEHUB_TICKET_TTL_MS', default: 30_000, min: 1000, max: 600_000 },
} as const satisfies Record<string, LimitSpec>;

export interface LimitSpec {
  env: string;
  default: number;
  min: number;
  max: number;
}

export type LimitName = keyof typeof LIMIT_SPECS;
export type HubLimits = Record<LimitName, number>;

export const LIMIT_NAMES = Object.keys(LIMIT_SPECS) as LimitName[];

export const DEFAULT_LIMITS: Readonly<HubLimits> = Object.freeze(
  Object.fromEntries(LIMIT_NAMES.map((name) => [name, LIMIT_SPECS[name].default])) as HubLimits,
);

/** A problem with one limit, in words that name it; undefined when the value is acceptable. */
export function checkLimit(name: LimitName, value: number, label: string = name): string | undefined {
  const { min, max } = LIMIT_SPECS[name];
  if (!Number.isInteger(value)) return `${label} must be a whole number, got ${value}`;
  if (value < min || value > max) return `${label} must be between ${min} and ${max}, got ${value}`;
  return undefined;
}

/** The defaults with `overrides` applied; throws a RangeError naming every limit out of range. */
export function resolveLimits(overrides: Partial<HubLimits> = {}): HubLimits {
  const limits = { ...DEFAULT_LIMITS };
  const problems: string[] = [];
  for (const name of LIMIT_NAMES) {
    const value = overrides[name];
    if (value === undefined) continue;
    const problem = checkLimit(name, value);
    if (problem) problems.push(problem);
    else limits[name] = value;
  }
  if (problems.length > 0) throw new RangeError(`invalid hub limits: ${problems.join('; ')}`);
  return limits;
}
