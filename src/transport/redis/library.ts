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

/** Each deployment's limits by key prefix, in the order they were loaded (the oldest is dropped first). */
export type LibrarySettings = ReadonlyMap<string, HistorySettings>;

/** Deployments one Redis keeps limits for; one more drops the longest-loaded (it reloads on its next call). */
export const MAX_DEPLOYMENTS = 64;

/** The limits as the library carries them: `<prefix>=<max event bytes>,<history max>,<history max bytes>,<ttl ms>;...`. */
export function formatSettings(settings: LibrarySettings): string {
  return [...settings]
    .map(([prefix, s]) => `${prefix}=${s.maxEventBytes},${s.historyMax},${s.historyMaxBytes},${s.historyTtlMs}`)
    .join(';');
}

export function parseSettings(text: string): Map<string, HistorySettings> {
  const settings = new Map<string, HistorySettings>();
  for (const entry of text.split(';')) {
    const match = /^([A-Za-z0-9_.:-]+)=(\d+),(\d+),(\d+),(\d+)$/.exec(entry);
    if (!match) continue;
    const [maxEventBytes, historyMax, historyMaxBytes, historyTtlMs] = match.slice(2).map(Number) as number[];
    settings.set(match[1] as string, {
      maxEventBytes: maxEventBytes as number,
      historyMax: historyMax as number,
      historyMaxBytes: historyMaxBytes as number,
      historyTtlMs: historyTtlMs as number,
    });
  }
  return settings;
}

/** `loaded` with `prefix` set to `own`, moved to the end, within MAX_DEPLOYMENTS. */
export function withSettings(
  loaded: LibrarySettings,
  prefix: string,
  own: HistorySettings,
): Map<string, HistorySettings> {
  const merged = new Map(loaded);
  merged.delete(prefix);
  merged.set(prefix, own);
  for (const key of merged.keys()) {
    if (merged.size <= MAX_DEPLOYMENTS) break;
    merged.delete(key);
  }
  return merged;
}

export function sameSettings(a: HistorySettings | undefined, b: HistorySettings): boolean {
  return (
    a !== undefined &&
    a.maxEventBytes === b.maxEventBytes &&
    a.historyMax === b.historyMax &&
    a.historyMaxBytes === b.historyMaxBytes &&
    a.historyTtlMs === b.historyTtlMs
  );
}

/** The library's source with each deployment's limits filled in, ready for FUNCTION LOAD. */
export function redisLibrary(settings: LibrarySettings = new Map([['ssehub', DEFAULT_HISTORY_SETTINGS]])): string {
  const values: Record<string, string> = {
    LIBRARY_VERSION: String(LIBRARY_VERSION),
    SETTINGS: formatSettings(settings),
    KINDS: EVENT_KINDS.map((kind) => `${kind} = true`).join(', '),
    KIND_LIST: EVENT_KINDS.join(', '),
    MAX_KEY_BYTES: String(MAX_KEY_BYTES),
  };
  const body = readSources().replace(/__([A-Z_]+)__/g, (token, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`redis library: no value for ${token}`);
    return value;
  });
  return `#!lua name=${LIBRARY_NAME}\n${body}`;
}

/**
 * The library with the default limits for the default prefix (`ssehub`) only. Loading it by hand
 * drops every other deployment's limits from that Redis until their replicas' next check (1 s).
 */
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
