import type { Cluster, Redis, RedisOptions } from 'ioredis';
import type { PublishQuotaLimits } from '../../limits';
import type { HubLogger } from '../../log';
import { parseEventId, type EventId } from '../../history/event-id';
import { planReplay, type HistoryEntry, type HistoryQuery, type HistoryRead } from '../../history/history';
import {
  LIBRARY_VERSION,
  PUBLISH_BATCH_FUNCTION,
  PUBLISH_COUNTED_FUNCTION,
  QUOTA_FUNCTION,
  READ_HISTORY_FUNCTION,
  VERSION_FUNCTION,
  parseSettings,
  redisLibrary,
  sameSettings,
  userKeys,
  withSettings,
  type HistorySettings,
} from './library';
import { keySlot } from './slot';
import {
  EventRejectedError,
  PublishOutcomeUnknownError,
  ReplicationUnconfirmedError,
  TransportUnavailableError,
  type Published,
} from '../transport';

/**
 * For connections that publish and read history: never queue while disconnected, never
 * resend after a reconnect (a publish that reached Redis would run twice, with two ids), and
 * give up on a command Redis does not answer. A publish that timed out may or may not have
 * happened; the caller is told it failed.
 */
export const PUBLISHER_CONNECTION_OPTIONS: Pick<
  RedisOptions,
  'enableOfflineQueue' | 'autoResendUnfulfilledCommands' | 'maxRetriesPerRequest' | 'commandTimeout'
> = {
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 3000,
};

const EPOCH_PATTERN = /^[0-9a-z]{1,32}$/;
const JSON_WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

type Reply = Buffer | number | null | Reply[];

function text(reply: Reply | undefined): string {
  return Buffer.isBuffer(reply) ? reply.toString('utf8') : String(reply ?? '');
}

function streamPosition(epoch: string, streamId: string): EventId | undefined {
  return streamId === '' ? undefined : parseEventId(`${epoch}:${streamId}`);
}

/** The function stores an object from its `{` to its `}`: whitespace around a valid event is not part of it. */
function trimmed(event: Buffer): Buffer {
  let start = 0;
  let end = event.length;
  while (start < end && JSON_WHITESPACE.has(event[start] as number)) start++;
  while (end > start && JSON_WHITESPACE.has(event[end - 1] as number)) end--;
  return start === 0 && end === event.length ? event : event.subarray(start, end);
}

/**
 * The library is missing (Redis restarted without persistence, FUNCTION DELETE) or holds no
 * limits for this prefix (another deployment's replica loaded it at the same moment as ours).
 */
function isLibraryMissing(err: unknown): boolean {
  return /Function not found|no limits loaded for prefix/i.test((err as Error).message ?? '');
}

/**
 * How long a publisher without limits of its own waits for a replica to put the library back:
 * replicas check for it every second (the Redis transport's self-check).
 */
export const LIBRARY_WAIT_MS = 3000;

/** Redis errors that mean "not now" (connection, failover, memory) rather than "not this event". */
function classify(err: unknown): Error {
  const message = (err as Error).message ?? String(err);
  if (isLibraryMissing(err)) return new TransportUnavailableError(`redis: ${message}`, { cause: err });
  if (message.startsWith('ERR ssehub:')) return new EventRejectedError(message.slice('ERR ssehub: '.length));
  // Sent, but unanswered: unlike a refusal to send while disconnected, Redis may have run it.
  if (/timed out|Connection is closed/i.test(message)) {
    return new PublishOutcomeUnknownError(`redis: ${message}`, { cause: err });
  }
  return new TransportUnavailableError(`redis: ${message}`, { cause: err });
}

export interface BatchItem {
  kind: string;
  event: Buffer;
}

interface QueuedEvent extends BatchItem {
  resolve(published: Published): void;
  reject(err: unknown): void;
}

interface LoadedLibrary {
  version: number;
  settings: Map<string, HistorySettings>;
  own: HistorySettings | undefined;
}

/** A wait that does not keep the process alive. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)).unref());
}

/** Times a replica looks again, right after it loaded the library, for a simultaneous load that left it out. */
const RECHECKS_AFTER_LOAD = 3;

/** Most events one batch call carries; a longer queue goes in several, in order. */
const MAX_BATCH_EVENTS = 64;
/** And at most this many event bytes (one event always goes, however large). */
const MAX_BATCH_BYTES = 1024 * 1024;

export interface RedisEventsOptions {
  /**
   * Replicas own the library's settings and load their own over an older or differently set one;
   * external publishers never load it (they would write the defaults over the deployment's limits).
   */
  settings?: HistorySettings;
  /** Replicas that must hear back from this many Redis replicas before a publish counts (WAIT). */
  minReplicas?: number;
  /** How long that wait lasts before the publish is answered as not confirmed. */
  minReplicasTimeoutMs?: number;
  log?: HubLogger;
}

/**
 * Publishing with history, and history reads, over one ioredis connection (or cluster) through
 * the ssehub function library. A replica's (one given `settings`) checks the library with
 * `prepare()` on every connect and loads it when missing, older or without its limits; a call
 * that finds it missing (Redis restarted without persistence) loads it and retries once. A
 * publisher's (no `settings`) never loads it and waits for a replica instead.
 */
export class RedisEvents {
  /** Users with a publish on its way, and the events queued behind it. */
  private readonly queues = new Map<string, QueuedEvent[]>();
  private holding = false;
  /** One reload for every call that found the library missing at once. */
  private reloading: Promise<void> | undefined;
  /** A publisher's one wait for a replica to put the library back, shared by every call that found it missing. */
  private libraryWait: Promise<boolean> | undefined;
  /** When a publisher last gave up waiting: calls fail at once for LIBRARY_WAIT_MS after it. */
  private gaveUpWaitingAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly options: RedisEventsOptions = {},
  ) {}

  /**
   * Loads the library unless one as new, with this deployment's limits, is loaded already. The
   * limits of other deployments on the same Redis (other prefixes) are kept.
   */
  async prepare(): Promise<void> {
    await this.load(false);
  }

  /**
   * Loads the library only where it is missing, older, or without this deployment: what the
   * periodic check asks, so replicas that disagree on limits do not take turns replacing it.
   */
  async ensureLoaded(): Promise<void> {
    await this.load(true);
  }

  /** Whether the library held this deployment's limits when last looked at (or loaded) since `forgetLibrary()`. */
  holdsLimits(): boolean {
    return this.holding;
  }

  /** The connection went: whatever it held, a Redis that restarted without persistence comes back without it. */
  forgetLibrary(): void {
    this.holding = false;
  }

  private async load(onlyIfMissing: boolean): Promise<void> {
    if (!(await this.loadOnce(onlyIfMissing))) return;
    // FUNCTION LOAD replaces the whole library: a replica of another deployment that read it just
    // before this load wrote its own copy without this deployment. Looking again a moment later
    // (jittered, so two such replicas do not meet again) puts it back before backends notice.
    for (let round = 1; round <= RECHECKS_AFTER_LOAD; round++) {
      await pause((10 + Math.random() * 40) * round);
      if (!(await this.loadOnce(true))) return;
    }
  }

  /** Whether it loaded the library. */
  private async loadOnce(onlyIfMissing: boolean): Promise<boolean> {
    const own = this.options.settings;
    // Only a replica knows its deployment's limits; anything else loading would write the defaults in their place.
    if (own === undefined) return false;
    const loaded = await this.loadedLibrary();
    const present = loaded.own;
    this.holding = present !== undefined;
    // A newer library is a rolling upgrade's: the replica that loaded it answers for it.
    if (onlyIfMissing && (loaded.version > LIBRARY_VERSION || present !== undefined)) return false;
    if (loaded.version > LIBRARY_VERSION) {
      // A newer replica of a rolling upgrade loaded it; its functions keep this version's forms.
      if (present === undefined)
        this.options.log?.error({ prefix: this.prefix }, 'a newer ssehub library is loaded without this deployment');
      return false;
    }
    if (loaded.version === LIBRARY_VERSION && present !== undefined && sameSettings(present, own)) return false;
    if (present !== undefined && !sameSettings(present, own)) {
      this.options.log?.warn(
        { prefix: this.prefix, loaded: present, own },
        'the ssehub library held other limits for this prefix; loading this replica’s (every replica of a deployment must share one configuration)',
      );
    }
    // Every deployment any primary knows of stays, whatever version it was loaded with.
    await this.loadLibrary(redisLibrary(withSettings(loaded.settings, this.prefix, own)));
    this.holding = true;
    return true;
  }

  private async loadLibrary(source: string): Promise<void> {
    if (isCluster(this.redis)) {
      // A function library is per node: every primary needs it, replicas get it by replication.
      await Promise.all(this.redis.nodes('master').map((node) => node.call('FUNCTION', 'LOAD', 'REPLACE', source)));
    } else {
      await this.redis.call('FUNCTION', 'LOAD', 'REPLACE', source);
    }
  }

  /**
   * The library as the primaries hold it: the oldest version (0 where a primary has none), every
   * deployment's limits found on any of them, and this deployment's where every one holds them.
   */
  private async loadedLibrary(): Promise<LoadedLibrary> {
    const nodes = isCluster(this.redis) ? this.redis.nodes('master') : [this.redis];
    let version = Number.POSITIVE_INFINITY;
    let everywhere = true;
    const settings = new Map<string, HistorySettings>();
    for (const node of nodes) {
      let reply: [number, string];
      try {
        reply = (await node.call('FCALL_RO', VERSION_FUNCTION, '0')) as [number, string];
      } catch (err) {
        if (!/Function not found/i.test((err as Error).message ?? '')) throw err;
        version = 0;
        everywhere = false;
        continue;
      }
      version = Math.min(version, Number(reply[0]));
      const found = parseSettings(String(reply[1]));
      if (!found.has(this.prefix)) everywhere = false;
      for (const [prefix, limits] of found) if (!settings.has(prefix)) settings.set(prefix, limits);
    }
    return {
      version: Number.isFinite(version) ? version : 0,
      settings,
      own: everywhere ? settings.get(this.prefix) : undefined,
    };
  }

  /**
   * Publishes one event. While a publish of the same user is on its way, further events of that
   * user queue and then go together in one batch call (bursts of AG-UI token deltas), in order.
   */
  publish(kind: string, userId: string, event: Buffer): Promise<Published> {
    const queue = this.queues.get(userId);
    if (queue) {
      return new Promise((resolve, reject) => queue.push({ kind, event, resolve, reject }));
    }
    this.queues.set(userId, []);
    return this.publishOne(kind, userId, event).finally(() => this.drainQueue(userId));
  }

  private async publishOne(kind: string, userId: string, event: Buffer): Promise<Published> {
    const { meta, history } = userKeys(this.prefix, userId);
    const reply = (await this.fcall(PUBLISH_COUNTED_FUNCTION, [meta, history], [kind, trimmed(event)])) as Reply[];
    await this.awaitReplicas(meta);
    return { id: text(reply[0]), receivers: Number(reply[1]) };
  }

  private drainQueue(userId: string): void {
    const queued = this.queues.get(userId) ?? [];
    if (queued.length === 0) {
      this.queues.delete(userId);
      return;
    }
    let count = 0;
    let bytes = 0;
    while (count < queued.length && count < MAX_BATCH_EVENTS) {
      bytes += (queued[count] as QueuedEvent).event.length;
      if (count > 0 && bytes > MAX_BATCH_BYTES) break;
      count++;
    }
    const batch = queued.splice(0, count);
    this.publishBatch(userId, batch)
      .then(
        ({ ids, receivers }) => {
          for (const [i, item] of batch.entries()) item.resolve({ id: ids[i] as string, receivers });
        },
        (err: unknown) => this.publishEach(userId, batch, err),
      )
      .finally(() => this.drainQueue(userId));
  }

  /** A refused batch names one event: the others go one by one, so each caller gets its own answer. */
  private async publishEach(userId: string, batch: QueuedEvent[], err: unknown): Promise<void> {
    if (!(err instanceof EventRejectedError)) {
      for (const item of batch) item.reject(err);
      return;
    }
    for (const item of batch) {
      await this.publishOne(item.kind, userId, item.event).then(item.resolve, item.reject);
    }
  }

  /** Several events of one user in one call, with consecutive ids; all or none are published. */
  async publishBatch(userId: string, items: readonly BatchItem[]): Promise<{ ids: string[]; receivers: number }> {
    const { meta, history } = userKeys(this.prefix, userId);
    const args = items.flatMap((item) => [item.kind, trimmed(item.event)]);
    const reply = (await this.fcall(PUBLISH_BATCH_FUNCTION, [meta, history], args)) as Reply[];
    await this.awaitReplicas(meta);
    return { receivers: Number(reply[0]), ids: reply.slice(1).map((id) => text(id)) };
  }

  /**
   * With a replica count set, a publish counts only once that many Redis replicas have it, so
   * a failover cannot take it back. Short of that it was published but may still be lost.
   */
  private async awaitReplicas(key: string): Promise<void> {
    const { minReplicas = 0, minReplicasTimeoutMs = 1000 } = this.options;
    if (minReplicas === 0) return;
    let acknowledged: number;
    try {
      const node = isCluster(this.redis) ? this.nodeOf(this.redis, key) : this.redis;
      acknowledged = Number(await node.call('WAIT', String(minReplicas), String(minReplicasTimeoutMs)));
    } catch (err) {
      throw new PublishOutcomeUnknownError(`redis: waiting for replicas failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (acknowledged < minReplicas) {
      throw new ReplicationUnconfirmedError(
        `redis: published, but ${acknowledged} of ${minReplicas} replicas confirmed it within ${minReplicasTimeoutMs} ms`,
        acknowledged,
        minReplicas,
      );
    }
  }

  private nodeOf(cluster: Cluster, key: string): Redis {
    // WAIT has no key: it must go to the primary that just ran the publish, found by the key's slot.
    const address = (cluster.slots[keySlot(key)] ?? [])[0];
    const node = cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === address);
    if (!node) throw new Error(`no primary known for ${key}`);
    return node;
  }

  /**
   * Counts one publish of `bytes` against the quota `name` for the current window; the
   * milliseconds until the window ends when it does not fit (nothing is counted then), else 0.
   */
  async takeQuota(name: string, limits: PublishQuotaLimits, bytes: number): Promise<number> {
    const args = [limits.events, limits.bytes, limits.windowMs, bytes].map(String);
    return Number(await this.fcall(QUOTA_FUNCTION, [`${this.prefix}:q:${name}`], args));
  }

  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    const { meta, history } = userKeys(this.prefix, userId);
    const from = after === undefined ? '' : `${after.ms}-${after.seq}`;
    const args = [from, String(query.maxEntries), String(query.maxBytes)];
    const reply = (await this.fcall(READ_HISTORY_FUNCTION, [meta, history], args)) as Reply[];
    const epoch = text(reply[0]);
    // It goes into every id this replica writes; anything else in that field was not put there by ssehub.
    if (!EPOCH_PATTERN.test(epoch)) throw new TransportUnavailableError(`redis: ${meta} holds an invalid epoch`);
    const page: HistoryEntry[] = [];
    for (const raw of (reply[3] as Reply[] | null) ?? []) {
      const [streamId, fields] = raw as [Buffer, Reply[]];
      const id = streamPosition(epoch, streamId.toString('utf8'));
      if (!id) continue;
      let kind = '';
      let event: Buffer = Buffer.alloc(0);
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const name = text(fields[i]);
        if (name === 'k') kind = text(fields[i + 1]);
        else if (name === 'e') event = fields[i + 1] as Buffer;
      }
      page.push({ id, kind, event });
    }
    return planReplay(
      after,
      {
        epoch,
        last: streamPosition(epoch, text(reply[1])),
        first: streamPosition(epoch, text(reply[2])),
        page,
        ttlMs: Number(text(reply[4])),
      },
      query.replayMax,
    );
  }

  private async fcall(name: string, keys: string[], args: Array<string | Buffer>): Promise<Reply> {
    const call = (): Promise<Reply> =>
      this.redis.callBuffer('FCALL', name, String(keys.length), ...keys, ...args) as Promise<Reply>;
    try {
      return await call();
    } catch (err) {
      if (!isLibraryMissing(err)) throw classify(err);
      // The function refused the call before touching anything: it may run again once the library is back.
      if (this.options.settings === undefined && !(await this.replicaPutLibraryBack())) throw classify(err);
    }
    try {
      if (this.options.settings !== undefined) {
        this.reloading ??= this.prepare().finally(() => {
          this.reloading = undefined;
        });
        await this.reloading;
      }
      return await call();
    } catch (err) {
      throw classify(err);
    }
  }

  /**
   * A publisher does not know the deployment's limits: loading the library itself would write
   * the defaults in their place. It waits for a replica to put them back instead, once for all the
   * calls that found them missing, and not again for LIBRARY_WAIT_MS after it gave up.
   */
  private async replicaPutLibraryBack(): Promise<boolean> {
    if (Date.now() - this.gaveUpWaitingAt < LIBRARY_WAIT_MS) return false;
    this.libraryWait ??= this.waitForLibrary().finally(() => {
      this.libraryWait = undefined;
    });
    return this.libraryWait;
  }

  private async waitForLibrary(): Promise<boolean> {
    const deadline = Date.now() + LIBRARY_WAIT_MS;
    for (
      let delayMs = 100;
      Date.now() < deadline && this.redis.status !== 'end';
      delayMs = Math.min(delayMs * 2, 500)
    ) {
      await pause(Math.min(delayMs, deadline - Date.now()));
      try {
        if ((await this.loadedLibrary()).own !== undefined) return true;
      } catch {
        // Unreachable for now: the deadline decides.
      }
    }
    this.gaveUpWaitingAt = Date.now();
    return false;
  }
}

function isCluster(redis: Redis | Cluster): redis is Cluster {
  return (redis as Cluster).isCluster === true;
}
