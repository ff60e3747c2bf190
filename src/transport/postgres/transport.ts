import { Pool } from 'pg';
import type { HubLogger } from '../../log';
import type { EventId } from '../../history/event-id';
import type { HistoryQuery, HistoryRead } from '../../history/history';
import type { EventKind } from '../../routing';
import { Outbox } from './outbox';
import { OutboxReader } from './reader';
import { SESSION_OPTIONS, migrateOutbox } from './schema';
import {
  TransportUnavailableError,
  type Published,
  type TicketStore,
  type Transport,
  type TransportHandler,
} from '../transport';

export interface PostgresTransportOptions {
  /** postgres://user:password@host:5432/database */
  url: string;
  /** Schema holding the outbox table and the publish function. */
  schema: string;
  /** Fallback poll interval, for notifications that never arrive. */
  pollMs: number;
  /** Rows older than this are pruned; Last-Event-ID resume reaches back this far. */
  historyTtlMs: number;
  /** Event bytes kept per user; older rows past it are trimmed. */
  historyMaxBytes: number;
  maxEventBytes: number;
  logger: HubLogger;
}

/** Publishes and replays must fail fast when the database is away, not queue for a pool slot. */
const CONNECT_TIMEOUT_MS = 3000;
const PUBLISH_TIMEOUT_MS = 5000;
const MAX_PRUNE_INTERVAL_MS = 60_000;
/**
 * Users past the byte budget are trimmed this often, so one overshoots it by at most what they
 * publish in this time (bounded by the publish quota) plus the grace.
 */
const BUDGET_TRIM_INTERVAL_MS = 5000;
/** Rows this young are left to the live readers, who read within milliseconds. */
const BUDGET_TRIM_GRACE_MS = 5000;

/**
 * Transactional outbox on Postgres: an event is published if and only if the transaction that
 * inserted its row commits, and every replica reads every committed row exactly once, in one
 * order, from the table (NOTIFY only wakes them). Resume reads the same table.
 */
export class PostgresTransport implements Transport, TicketStore {
  readonly name = 'postgres';
  private readonly pool: Pool;
  private readonly outbox: Outbox;
  private readonly log: HubLogger;
  private reader: OutboxReader | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private trimTimer: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(private readonly options: PostgresTransportOptions) {
    this.log = options.logger.child({ component: 'postgres-transport' });
    this.pool = new Pool({
      connectionString: options.url,
      application_name: 'ssehub',
      options: SESSION_OPTIONS,
      max: 10,
      keepAlive: true,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: PUBLISH_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
    });
    // An idle pooled connection that dies (server restart) emits here; unhandled it would crash the process.
    this.pool.on('error', (err) => this.log.warn({ err }, 'idle postgres connection failed'));
    this.outbox = new Outbox(this.pool, options.schema);
  }

  async start(handler: TransportHandler): Promise<void> {
    const { options } = this;
    this.reader = new OutboxReader(handler, {
      connectionString: options.url,
      schema: options.schema,
      pollMs: options.pollMs,
      maxEventBytes: options.maxEventBytes,
      log: options.logger,
      metrics: handler.metrics,
      events: {
        prepare: async () => {
          await migrateOutbox(this.pool, options.schema, { maxEventBytes: options.maxEventBytes });
          this.schedulePruning();
        },
        started: (begin) => {
          handler.subscribing();
          begin();
          handler.subscribed(false);
        },
        gap: (skip) => {
          handler.subscribing();
          skip();
          handler.subscribed(true);
        },
      },
    });
    // Connection failures are retried in the background; readiness reports them meanwhile.
    this.reader.start();
  }

  async publish(kind: EventKind, userId: string, event: Buffer): Promise<Published> {
    if (this.closing) throw new TransportUnavailableError('postgres transport is closed');
    return this.outbox.publish(kind, userId, event);
  }

  putTicket(key: string, value: string, ttlMs: number): Promise<void> {
    return this.outbox.putTicket(key, value, ttlMs);
  }

  takeTicket(key: string): Promise<string | undefined> {
    return this.outbox.takeTicket(key);
  }

  readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    return this.outbox.readHistory(userId, after, query);
  }

  isListening(): boolean {
    return this.reader?.isListening() ?? false;
  }

  livePosition(): EventId | undefined {
    return this.reader?.delivered();
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.pruneTimer);
    clearInterval(this.trimTimer);
    await this.reader?.close();
    await this.pool.end().catch(() => undefined);
  }

  private schedulePruning(): void {
    if (this.pruneTimer !== undefined) return;
    const interval = Math.min(Math.floor(this.options.historyTtlMs / 2), MAX_PRUNE_INTERVAL_MS);
    this.pruneTimer = setInterval(() => {
      this.outbox
        .prune(this.options.historyTtlMs)
        .then((deleted) => {
          if (deleted > 0) this.log.debug({ deleted }, 'pruned expired outbox rows');
        })
        .catch((err: Error) => this.log.warn({ err }, 'pruning the outbox failed'));
    }, interval);
    this.pruneTimer.unref();
    // Users who published since the last trim (and the grace before it) are the only candidates.
    let since = new Date(Date.now() - this.options.historyTtlMs);
    let trimming = false;
    this.trimTimer = setInterval(() => {
      if (trimming) return;
      trimming = true;
      const startedAt = new Date(Date.now() - BUDGET_TRIM_GRACE_MS - BUDGET_TRIM_INTERVAL_MS);
      this.outbox
        .trimToBudget(this.options.historyMaxBytes, since, BUDGET_TRIM_GRACE_MS)
        .then((deleted) => {
          since = startedAt;
          if (deleted > 0) this.log.debug({ deleted }, 'trimmed outbox rows past the history byte budget');
        })
        .catch((err: Error) => this.log.warn({ err }, 'trimming the outbox to the byte budget failed'))
        .finally(() => {
          trimming = false;
        });
    }, BUDGET_TRIM_INTERVAL_MS);
    this.trimTimer.unref();
  }
}
