import { HEARTBEAT_INTERVAL_MS } from './sse/frame';

const MIB = 1024 * 1024;

/**
 * The one statement of the hub's limits: their defaults and accepted ranges. The stand-alone
 * server reads them from the environment variables named here, the library takes them as
 * options, and the README's configuration table is checked against this list.
 */
export const LIMIT_SPECS = {
  /** A heartbeat frame goes out after this long without a frame. */
  heartbeatMs: { env: 'SSEHUB_HEARTBEAT_MS', default: HEARTBEAT_INTERVAL_MS, min: 100, max: 3_600_000 },
  /** Open streams on this replica, all users and streams together; past it a stream is refused with 503. */
  maxConnections: { env: 'SSEHUB_MAX_CONNECTIONS', default: 50_000, min: 1, max: 10_000_000 },
  /** Open streams per user, per stream kind and replica. */
  maxConnectionsPerUser: { env: 'SSEHUB_MAX_CONNECTIONS_PER_USER', default: 10, min: 1, max: 100_000 },
  /** Frames one stream may queue behind a socket that refuses writes. */
  bufferMaxEvents: { env: 'SSEHUB_BUFFER_MAX_EVENTS', default: 1024, min: 1, max: 1_000_000 },
  /** Bytes one stream may queue behind a socket that refuses writes. */
  bufferMaxBytes: { env: 'SSEHUB_BUFFER_MAX_BYTES', default: 1024 * 1024, min: 1024, max: 1024 * 1024 * 1024 },
  /**
   * Bytes queued in this replica towards all its clients together: every stream's frames waiting
   * for its socket, and the live frames held behind its replay. Past it the streams furthest behind
   * are cut first.
   */
  outboundMaxBytes: { env: 'SSEHUB_OUTBOUND_MAX_BYTES', default: 256 * MIB, min: 64 * 1024, max: 64 * 1024 * MIB },
  /** How long a socket may refuse writes before its client counts as stalled. */
  writeStallMs: { env: 'SSEHUB_WRITE_STALL_MS', default: 30_000, min: 100, max: 3_600_000 },
  /** Largest event, in bytes of its JSON. */
  maxEventBytes: { env: 'SSEHUB_MAX_EVENT_BYTES', default: 1024 * 1024, min: 64, max: 64 * 1024 * 1024 },
  /** Newest events kept per user for resume. */
  historyMax: { env: 'SSEHUB_HISTORY_MAX', default: 1000, min: 1, max: 1_000_000 },
  /** Event bytes kept per user; the oldest entries go past it. */
  historyMaxBytes: { env: 'SSEHUB_HISTORY_MAX_BYTES', default: 16 * MIB, min: 64, max: 16 * 1024 * MIB },
  /** How long events stay in a user's history. */
  historyTtlMs: { env: 'SSEHUB_HISTORY_TTL_MS', default: 3_600_000, min: 1000, max: 7 * 24 * 3_600_000 },
  /** Most events one resume replays before it answers with a reset instead. */
  replayMax: { env: 'SSEHUB_REPLAY_MAX', default: 1000, min: 0, max: 100_000 },
  /** Most entries one history read returns. */
  replayPageEvents: { env: 'SSEHUB_REPLAY_PAGE_EVENTS', default: 100, min: 1, max: 10_000 },
  /** Event bytes one history read returns (one entry is always returned, however large). */
  replayPageBytes: { env: 'SSEHUB_REPLAY_PAGE_BYTES', default: 256 * 1024, min: 1024, max: 64 * MIB },
  /** Event bytes of replay pages read but not yet written, across this replica's streams. */
  replayReplicaBytes: { env: 'SSEHUB_REPLAY_REPLICA_BYTES', default: 64 * MIB, min: 1024, max: 16 * 1024 * MIB },
  /** Bytes of live frames a stream holds while its replay is written; past it the stream is cut. */
  holdMaxBytes: { env: 'SSEHUB_HOLD_MAX_BYTES', default: 4 * MIB, min: 1024, max: 1024 * MIB },
  /** First wait before a failed history read is retried; doubled per failure, with jitter. */
  historyRetryMinMs: { env: 'SSEHUB_HISTORY_RETRY_MIN_MS', default: 500, min: 10, max: 60_000 },
  historyRetryMaxMs: { env: 'SSEHUB_HISTORY_RETRY_MAX_MS', default: 30_000, min: 10, max: 3_600_000 },
  /** Events one principal without the service role may publish per quota window. */
  publishQuotaEvents: { env: 'SSEHUB_PUBLISH_QUOTA_EVENTS', default: 6000, min: 1, max: 100_000_000 },
  /** Event bytes one principal without the service role may publish per quota window. */
  publishQuotaBytes: { env: 'SSEHUB_PUBLISH_QUOTA_BYTES', default: 64 * MIB, min: 64, max: 1024 * 1024 * MIB },
  publishQuotaWindowMs: { env: 'SSEHUB_PUBLISH_QUOTA_WINDOW_MS', default: 60_000, min: 1000, max: 86_400_000 },
  /** Most events in one webhook batch request. */
  webhookBatchMaxEvents: { env: 'SSEHUB_WEBHOOK_BATCH_MAX_EVENTS', default: 1000, min: 1, max: 100_000 },
  /** Largest webhook batch request body, in bytes; a batch of one event of the largest size is always accepted. */
  webhookBatchMaxBytes: {
    env: 'SSEHUB_WEBHOOK_BATCH_MAX_BYTES',
    default: 16 * MIB,
    min: 1024,
    max: 1024 * MIB,
  },
  /** How long a stream ticket may wait to be redeemed. */
  ticketTtlMs: { env: 'SSEHUB_TICKET_TTL_MS', default: 30_000, min: 1000, max: 600_000 },
  /**
   * How long a client may take to send a request's headers and body. Seconds, not minutes: each
   * slow request holds a socket and its buffers. Streams are not affected once their request is in.
   */
  requestTimeoutMs: { env: 'SSEHUB_REQUEST_TIMEOUT_MS', default: 10_000, min: 1000, max: 600_000 },
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

/**
 * Rules between limits, named as `label` names them (option or variable names): a single event
 * must fit everywhere an event is bounded, or it could never be kept or replayed.
 */
export function crossLimitProblems(limits: HubLimits, label: (name: LimitName) => string = (name) => name): string[] {
  const problems: string[] = [];
  if (limits.historyMaxBytes < limits.maxEventBytes) {
    problems.push(`${label('historyMaxBytes')} must be at least ${label('maxEventBytes')}`);
  }
  if (limits.replayReplicaBytes < Math.max(limits.replayPageBytes, limits.maxEventBytes)) {
    problems.push(
      `${label('replayReplicaBytes')} must be at least ${label('replayPageBytes')} and ${label('maxEventBytes')}`,
    );
  }
  // One stream at its own bounds (either of which admits one event however large) must fit the replica's budget.
  const oneStream =
    Math.max(limits.bufferMaxBytes, limits.maxEventBytes) + Math.max(limits.holdMaxBytes, limits.maxEventBytes);
  if (limits.outboundMaxBytes < oneStream) {
    problems.push(
      `${label('outboundMaxBytes')} must be at least ${label('bufferMaxBytes')} plus ${label('holdMaxBytes')} (each at least ${label('maxEventBytes')})`,
    );
  }
  if (limits.historyRetryMaxMs < limits.historyRetryMinMs) {
    problems.push(`${label('historyRetryMaxMs')} must be at least ${label('historyRetryMinMs')}`);
  }
  if (limits.publishQuotaBytes < limits.maxEventBytes) {
    problems.push(`${label('publishQuotaBytes')} must be at least ${label('maxEventBytes')}`);
  }
  return problems;
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
  if (problems.length === 0) problems.push(...crossLimitProblems(limits));
  if (problems.length > 0) throw new RangeError(`invalid hub limits: ${problems.join('; ')}`);
  return limits;
}

/** How much of a replay may be read from the store and held in the hub at once. */
export interface ReplayBounds {
  /** Most entries one history read returns. */
  pageEvents: number;
  /** Event bytes one history read returns (one entry is always returned, however large). */
  pageBytes: number;
  /** Event bytes of replay pages read but not yet written, across this replica's streams. */
  replicaBytes: number;
  /** Bytes of live frames a stream holds while its replay is written; past it the stream is cut. */
  holdMaxBytes: number;
  retryMinMs: number;
  retryMaxMs: number;
}

export function replayBounds(limits: HubLimits): ReplayBounds {
  return {
    pageEvents: limits.replayPageEvents,
    pageBytes: limits.replayPageBytes,
    replicaBytes: limits.replayReplicaBytes,
    holdMaxBytes: limits.holdMaxBytes,
    retryMinMs: limits.historyRetryMinMs,
    retryMaxMs: limits.historyRetryMaxMs,
  };
}

/** Per principal, for tokens without the service role. */
export interface PublishQuotaLimits {
  events: number;
  bytes: number;
  windowMs: number;
}

export function publishQuotaLimits(limits: HubLimits): PublishQuotaLimits {
  return { events: limits.publishQuotaEvents, bytes: limits.publishQuotaBytes, windowMs: limits.publishQuotaWindowMs };
}
