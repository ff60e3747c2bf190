import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '../../limits';
import { EVENT_KINDS } from '../../routing';

/**
 * The Redis Function library every replica loads when it connects: the `.lua` files beside this
 * one (functions/), each with a header for its keys, arguments, return value and errors, joined
 * into one library with this deployment's kinds and limits filled in.
 */
export const LIBRARY_NAME = 'ssehub';
/** Raised whenever a function's keys, arguments or results change; replicas never load an older one over it. */
export const LIBRARY_VERSION = 6;
export const PUBLISH_FUNCTION = 'ssehub_publish';
export const PUBLISH_COUNTED_FUNCTION = 'ssehub_publish_counted';
export const PUBLISH_BATCH_FUNCTION = 'ssehub_publish_batch';
export const READ_HISTORY_FUNCTION = 'ssehub_read_history';
export const QUOTA_FUNCTION = 'ssehub_take_quota';
export const VERSION_FUNCTION = 'ssehub_version';

/** The limits the library enforces, fixed when it is loaded. */
export interface HistorySettings {
  historyMax: number;
  historyMaxBytes: number;
  historyTtlMs: number;
  maxEventBytes: number;
}

export const DEFAULT_HISTORY_SETTINGS: HistorySettings = {
  historyMax: DEFAULT_LIMITS.historyMax,
  historyMaxBytes: DEFAULT_LIMITS.historyMaxBytes,
  historyTtlMs: DEFAULT_LIMITS.historyTtlMs,
  maxEventBytes: DEFAULT_LIMITS.maxEventBytes,
};

/** The prelude first: the functions after it use its helpers. */
const FILES = ['library.lua', 'publish.lua', 'publish_batch.lua', 'read_history.lua', 'take_quota.lua', 'version.lua'];
/** A user id of 512 characters, percent-encoded in the worst case, under the longest prefix. */
const MAX_KEY_BYTES = 8192;

let sources: string | undefined;

function readSources(): string {
  sources ??= FILES.map((file) => readFileSync(join(__dirname, 'functions', file), 'utf8')).join('\n');
  return sources;
}

/** The settings as the library reports them (ssehub_version), to tell whether a loaded one is ours. */
export function settingsDigest(settings: HistorySettings): string {
  const text = `kinds=${EVENT_KINDS.join(',')};max_event_bytes=${settings.maxEventBytes};history_max=${settings.historyMax};history_max_bytes=${settings.historyMaxBytes};history_ttl_ms=${settings.historyTtlMs}`;
  return `${createHash('sha256').update(text).digest('hex').slice(0, 16)} ${text}`;
}

/** The library's source with `settings` filled in, ready for FUNCTION LOAD. */
export function redisLibrary(settings: HistorySettings = DEFAULT_HISTORY_SETTINGS): string {
  const values: Record<string, string> = {
    LIBRARY_VERSION: String(LIBRARY_VERSION),
    SETTINGS: settingsDigest(settings),
    KINDS: EVENT_KINDS.map((kind) => `${kind} = true`).join(', '),
    KIND_LIST: EVENT_KINDS.join(', '),
    MAX_EVENT_BYTES: String(settings.maxEventBytes),
    HISTORY_MAX: String(settings.historyMax),
    HISTORY_MAX_BYTES: String(settings.historyMaxBytes),
    HISTORY_TTL_MS: String(settings.historyTtlMs),
    MAX_KEY_BYTES: String(MAX_KEY_BYTES),
  };
  const body = readSources().replace(/__([A-Z_]+)__/g, (token, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`redis library: no value for ${token}`);
    return value;
  });
  return `#!lua name=${LIBRARY_NAME}\n${body}`;
}

/** The library with the default settings (the configuration table's), for loading by hand. */
export const REDIS_LIBRARY = redisLibrary();

/**
 * A user's hash tag: the id with `%`, `{` and `}` percent-encoded, so every user id (braces
 * included) tags its own keys, and all of one user's keys and its channel share a cluster slot.
 */
export function userTag(userId: string): string {
  return userId.replace(/[%{}]/g, (char) => (char === '%' ? '%25' : char === '{' ? '%7B' : '%7D'));
}

/** A user's keys and channel under `prefix`. */
export function userKeys(prefix: string, userId: string): { meta: string; history: string; channel: string } {
  const channel = `${prefix}:{${userTag(userId)}}`;
  return { meta: `${channel}:m`, history: `${channel}:h`, channel };
}
