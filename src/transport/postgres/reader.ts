import { Client } from 'pg';
import type { HubLogger } from '../../log';
import { isEventKind } from '../../routing';
import { validateEvent, validateUserId, type Rejected } from '../../wire/envelope';
import type { EventId } from '../../history/event-id';
import { comparePosition, eventIdAt, type OutboxPosition } from './outbox';
import { SESSION_OPTIONS, notifyChannel, quoteIdent } from './schema';
import type { TransportHandler, TransportMetrics, WakeSource } from '../transport';

/** What the reader tells the transport about its connection and about positions it had to skip. */
export interface ReaderEvents {
  /** Connected: `prepare` runs first (schema migration), once per process until it succeeds. */
  prepare(): Promise<void>;
  /**
   * Rows between this replica's position and `resumeAt` can no longer be read (pruned while
   * it was away, or the outbox was recreated). `skip` moves the reader past them; the
   * transport has the hub fill every stream's gap from history around it.
   */
  gap(skip: () => void): void;
  /** The first connection, with the reader's starting position settled. */
  started(begin: () => void): void;
}

export interface OutboxReaderOptions {
  connectionString: string;
  schema: string;
  pollMs: number;
  maxEventBytes: number;
  log: HubLogger;
  metrics: TransportMetrics;
  events: ReaderEvents;
}

const BATCH_ROWS = 500;
/** A query unanswered this long means a dead or black-holed connection: reconnect. */
const QUERY_TIMEOUT_MS = 15_000;
/** While rows wait behind a still-open transaction, re-read after 10 ms, doubling up to the poll interval. */
const FIRST_RETRY_MS = 10;

function reconnectDelay(attempt: number): number {
  return Math.min(100 * 2 ** Math.min(attempt, 10), 5000) + Math.floor(Math.random() * 100);
}

interface ReadRow {
  epoch: string;
  horizon: string;
  pruned_tx: string;
  pruned_id: string;
  blocked_age: number | null;
  trimmed_tx: string | null;
  trimmed_id: string | null;
  tx: string | null;
  id: string | null;
  kind: string | null;
  user_id: string | null;
  event: string | null;
  age: number | null;
}

/**
 * Follows the outbox on one dedicated connection: LISTEN for wake-ups, a low-rate poll in case
 * a notification is missed, and one read at a time from this replica's position.
 *
 * Row ids come from a sequence, so they commit out of order: reading "id > last" would skip a
 * row whose transaction commits late. Rows are read in (transaction id, row id) order and only
 * below the snapshot's xmin, the oldest transaction still running: every transaction below it
 * has finished, so no row can ever appear behind the position. The price is that one long
 * writing transaction anywhere in the cluster holds delivery back until it ends (the lag
 * metric shows it).
 */
export class OutboxReader {
  private client: Client | undefined;
  private listening = false;
  private closing = false;
  private prepared = false;
  private position: OutboxPosition | undefined;
  /** The newest per-user trim mark ahead of the position that was already handled as a gap. */
  private trimSeen: OutboxPosition = { tx: '0', id: '0' };
  private epoch: string | undefined;
  private reading = false;
  private readAgain = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay = FIRST_RETRY_MS;
  private pollTimer: NodeJS.Timeout | undefined;
  private connectedBefore = false;
  private readonly readSql: string;
  private readonly log: HubLogger;

  constructor(
    private readonly handler: TransportHandler,
    private readonly options: OutboxReaderOptions,
  ) {
    this.log = options.log.child({ component: 'postgres-reader' });
    const s = quoteIdent(options.schema);
    this.readSql = `
      WITH h AS (
        SELECT m.epoch, m.pruned_tx, m.pruned_id, pg_snapshot_xmin(pg_current_snapshot()) AS horizon FROM ${s}.meta m),
      blocked AS (
        SELECT extract(epoch FROM clock_timestamp() - o.created_at)::float8 AS age FROM ${s}.outbox o, h
        WHERE (o.tx, o.id) > ($1::xid8, $2::bigint) AND o.tx >= h.horizon ORDER BY o.tx, o.id LIMIT 1)
      SELECT h.epoch, h.horizon::text AS horizon, h.pruned_tx::text AS pruned_tx, h.pruned_id::text AS pruned_id,
             (SELECT age FROM blocked) AS blocked_age,
             (SELECT t.tx::text FROM ${s}.trims t WHERE (t.tx, t.id) > ($1::xid8, $2::bigint)
                AND (t.tx, t.id) > ($4::xid8, $5::bigint) ORDER BY t.tx DESC, t.id DESC LIMIT 1) AS trimmed_tx,
             (SELECT t.id::text FROM ${s}.trims t WHERE (t.tx, t.id) > ($1::xid8, $2::bigint)
                AND (t.tx, t.id) > ($4::xid8, $5::bigint) ORDER BY t.tx DESC, t.id DESC LIMIT 1) AS trimmed_id,
             r.tx::text AS tx, r.id::text AS id, r.kind, r.user_id, r.event, r.age
      FROM h LEFT JOIN LATERAL (
        SELECT o.tx, o.id, o.kind, o.user_id, o.event,
               extract(epoch FROM clock_timestamp() - o.created_at)::float8 AS age
        FROM ${s}.outbox o
        WHERE (o.tx, o.id) > ($1::xid8, $2::bigint) AND o.tx < h.horizon
        ORDER BY o.tx, o.id LIMIT $3
      ) r ON true
      ORDER BY r.tx, r.id`;
  }

  start(): void {
    void this.connectLoop();
    this.pollTimer = setInterval(() => this.wake('poll'), this.options.pollMs);
    this.pollTimer.unref();
  }

  isListening(): boolean {
    return this.listening;
  }

  /** Every row up to here has been handed to the handler. */
  delivered(): EventId | undefined {
    return this.position && this.epoch !== undefined
      ? eventIdAt(this.epoch, this.position.tx, this.position.id)
      : undefined;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.listening = false;
    clearInterval(this.pollTimer);
    clearTimeout(this.retryTimer);
    await this.client?.end().catch(() => undefined);
  }

  private async connectLoop(): Promise<void> {
    let attempt = 0;
    while (!this.closing) {
      const client = new Client({
        connectionString: this.options.connectionString,
        application_name: 'ssehub-reader',
        options: SESSION_OPTIONS,
        keepAlive: true,
        connectionTimeoutMillis: 5000,
        query_timeout: QUERY_TIMEOUT_MS,
      });
      const ended = new Promise<Error | undefined>((resolve) => {
        client.on('error', (err) => resolve(err));
        client.on('end', () => resolve(undefined));
      });
      client.on('notification', () => this.wake('notify'));
      try {
        await client.connect();
        if (!this.prepared) {
          await this.options.events.prepare();
          this.prepared = true;
        }
        await client.query(`LISTEN ${quoteIdent(notifyChannel(this.options.schema))}`);
        await this.settlePosition(client);
        if (this.closing) break;
        this.client = client;
        this.listening = true;
        attempt = 0;
        this.log.info({ schema: this.options.schema, again: this.connectedBefore }, 'listening for outbox rows');
        if (this.connectedBefore) this.options.metrics.reconnected();
        this.connectedBefore = true;
        // Whatever committed while this replica was away is read now, from its position.
        this.wake('poll');
        const err = await ended;
        if (!this.closing) this.log.warn({ err }, 'postgres reader connection lost; reconnecting');
      } catch (err) {
        if (!this.closing) this.log.warn({ err, attempt }, 'postgres reader cannot connect');
      } finally {
        this.listening = false;
        if (this.client === client) this.client = undefined;
        await client.end().catch(() => undefined);
      }
      if (this.closing) break;
      await new Promise((resolve) => setTimeout(resolve, reconnectDelay(attempt++)));
    }
  }

  /** On the first connection, starts at the horizon; later reads check the outbox is still the one it was reading. */
  private async settlePosition(client: Client): Promise<void> {
    if (this.position !== undefined) return;
    const result = await client.query<{ epoch: string; horizon: string }>(
      `SELECT epoch, pg_snapshot_xmin(pg_current_snapshot())::text AS horizon FROM ${quoteIdent(this.options.schema)}.meta`,
    );
    const row = result.rows[0];
    if (!row) throw new Error(`${this.options.schema}.meta is empty`);
    this.options.events.started(() => this.startAt(row.epoch, row.horizon));
  }

  /** Below the horizon every transaction has finished: nothing can appear behind this position. */
  private startAt(epoch: string, horizon: string): void {
    this.epoch = epoch;
    this.position = { tx: horizon, id: '0' };
  }

  private wake(source: WakeSource): void {
    if (!this.client || this.closing) return;
    this.options.metrics.wokeUp(source);
    if (source !== 'retry') this.retryDelay = FIRST_RETRY_MS;
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    void this.readAll();
  }

  private async readAll(): Promise<void> {
    this.reading = true;
    try {
      do {
        this.readAgain = false;
        const client = this.client;
        if (!client || this.position === undefined) return;
        await this.readBatch(client, this.position);
      } while (this.readAgain && !this.closing);
    } catch (err) {
      if (this.closing) return;
      this.log.warn({ err }, 'reading the outbox failed; reconnecting');
      // A timed-out query leaves its connection open, and a failed read on a healthy one (a
      // dropped table, say) deserves a fresh start too: the reconnect reads from the position.
      await this.client?.end().catch(() => undefined);
    } finally {
      this.reading = false;
    }
  }

  private async readBatch(client: Client, from: OutboxPosition): Promise<void> {
    const result = await client.query<ReadRow>(this.readSql, [
      from.tx,
      from.id,
      BATCH_ROWS,
      this.trimSeen.tx,
      this.trimSeen.id,
    ]);
    const head = result.rows[0];
    if (!head) throw new Error(`${this.options.schema}.meta is empty`);
    if (head.epoch !== this.epoch) {
      this.log.error({ was: this.epoch, now: head.epoch }, 'the outbox was recreated; open streams are reset');
      this.options.events.gap(() => this.startAt(head.epoch, head.horizon));
      this.readAgain = true;
      return;
    }
    const pruned = { tx: head.pruned_tx, id: head.pruned_id };
    if (comparePosition(from, pruned) < 0) {
      this.log.error(
        { position: from, pruned },
        'outbox rows were pruned before this replica read them; open streams catch up from history',
      );
      this.options.events.gap(() => {
        this.position = pruned;
      });
      this.readAgain = true;
      return;
    }
    if (head.trimmed_tx !== null && head.trimmed_id !== null) {
      // A user's rows were trimmed to the byte budget before this replica read them: their open
      // streams catch up from history, which tells them what is gone.
      this.log.warn({ position: from }, 'outbox rows were trimmed before this replica read them');
      const trimmed = { tx: head.trimmed_tx, id: head.trimmed_id };
      this.options.events.gap(() => {
        this.trimSeen = trimmed;
      });
      this.readAgain = true;
      return;
    }
    let read = 0;
    let lastAge = 0;
    for (const row of result.rows) {
      if (row.tx === null || row.id === null) break;
      // Moved row by row: a handler that throws must not make the next read deliver this row again.
      this.position = { tx: row.tx, id: row.id };
      read++;
      lastAge = row.age ?? 0;
      this.deliver(row, head.epoch);
    }
    this.options.metrics.rowsRead(read);
    const full = read === BATCH_ROWS;
    if (full) this.readAgain = true;
    const blocked = head.blocked_age !== null;
    this.options.metrics.lag(full ? lastAge : blocked ? (head.blocked_age as number) : 0);
    if (blocked && !full) this.retrySoon();
  }

  /** Rows wait behind a transaction still open; its end may bring no notification of its own. */
  private retrySoon(): void {
    if (this.retryTimer !== undefined) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, this.options.pollMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.wake('retry');
    }, delay);
    this.retryTimer.unref();
  }

  private deliver(row: ReadRow, epoch: string): void {
    const id = eventIdAt(epoch, row.tx as string, row.id as string);
    const kind = row.kind ?? '';
    const event = Buffer.from(row.event ?? '', 'utf8');
    const problem: Rejected | undefined = !isEventKind(kind)
      ? { ok: false, reason: 'unknown_kind', detail: `unknown event kind ${JSON.stringify(kind)}` }
      : id === undefined
        ? { ok: false, reason: 'invalid_id', detail: `position ${row.tx}-${row.id} is beyond the id range` }
        : (validateUserId(row.user_id) ?? validateEvent(event, this.options.maxEventBytes));
    if (problem || id === undefined || !isEventKind(kind)) {
      this.handler.rejected({
        reason: problem?.reason ?? 'invalid_id',
        detail: `outbox row ${row.tx}-${row.id}: ${problem?.detail ?? 'no id'}`,
        kind,
      });
      return;
    }
    this.handler.event({ kind, userId: row.user_id as string, id, event });
  }
}
