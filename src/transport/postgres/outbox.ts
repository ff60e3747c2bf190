import type { Pool, PoolClient } from 'pg';
import type { EventId } from '../../history/event-id';
import type { HistoryEntry, HistoryQuery, HistoryRead } from '../../history/history';
import type { EventKind } from '../../routing';
import { quoteIdent } from './schema';
import {
  EventRejectedError,
  PublishOutcomeUnknownError,
  TransportUnavailableError,
  type Published,
} from '../transport';

/**
 * Positions in the outbox are (transaction id, row id): the order the reader delivers in.
 * They travel in event ids as `<epoch>:<xid>-<rowid>`, in the slots Redis fills with
 * `<ms>-<seq>`, so the hub orders and compares them the same way.
 */
export interface OutboxPosition {
  tx: string;
  id: string;
}

export function positionOf(id: EventId): OutboxPosition {
  return { tx: String(id.ms), id: String(id.seq) };
}

/** Undefined when a transaction id is too large to carry exactly in an id (not reached in practice). */
export function eventIdAt(epoch: string, tx: string, rowId: string): EventId | undefined {
  const ms = Number(tx);
  const seq = Number(rowId);
  return Number.isSafeInteger(ms) && Number.isSafeInteger(seq) ? { epoch, ms, seq } : undefined;
}

export function comparePosition(a: OutboxPosition, b: OutboxPosition): number {
  const tx = BigInt(a.tx) - BigInt(b.tx);
  if (tx !== 0n) return tx < 0n ? -1 : 1;
  const id = BigInt(a.id) - BigInt(b.id);
  return id === 0n ? 0 : id < 0n ? -1 : 1;
}

function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** The server refused the event itself: bad input, or a character its text type cannot hold. */
const REJECTED_EVENT_CODES = new Set(['22023', '22P02', '22021']);

/** Swallows a checked-out client's 'error' event: the failing query rejects with the same error. */
function ignoreClientError(): void {}

/**
 * Maps a failed publish. A server error (SQLSTATE) means the statement, and with it the
 * autocommitted transaction, did not complete: nothing was published. A connection that broke
 * or went silent after the statement was sent leaves the outcome unknown.
 */
export function publishFailure(err: unknown): Error {
  const message = `postgres: ${(err as Error).message}`;
  const code = sqlState(err);
  if (code !== undefined && REJECTED_EVENT_CODES.has(code)) return new EventRejectedError((err as Error).message);
  if (code !== undefined) return new TransportUnavailableError(message, { cause: err });
  if (/not queryable/i.test((err as Error).message ?? ''))
    return new TransportUnavailableError(message, { cause: err });
  return new PublishOutcomeUnknownError(message, { cause: err });
}

/**
 * Publishing and history reads over a connection pool. One `SELECT <schema>.publish(...)` per
 * event, the same statement publishers in other languages run inside their own transactions.
 */
export class Outbox {
  private readonly publishSql: string;
  private readonly historySql: string;
  private readonly pruneSql: string;
  private readonly trimSql: string;
  private readonly putTicketSql: string;
  private readonly takeTicketSql: string;

  constructor(
    private readonly pool: Pool,
    readonly schema: string,
  ) {
    const s = quoteIdent(schema);
    this.publishSql = `SELECT ${s}.publish($1, $2, $3) AS id`;
    // Expired tickets nobody redeemed go with the next issue: the table holds about a TTL's worth.
    this.putTicketSql = `WITH expired AS (DELETE FROM ${s}.tickets WHERE expires_at < clock_timestamp())
      INSERT INTO ${s}.tickets (key, value, expires_at)
      VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')`;
    this.takeTicketSql = `DELETE FROM ${s}.tickets WHERE key = $1
      RETURNING value, expires_at > clock_timestamp() AS live`;
    // One statement, one snapshot: the horizon, retention marks, count and page agree with each
    // other. Only rows of transactions older than every running one are read, as the live reader
    // does. The count stops at the replay cap and reads only the index; the page stops at its
    // entry and byte bounds, and only its rows' events leave the server.
    this.historySql = `
      SELECT h.epoch, h.horizon::text AS horizon, h.pruned_tx::text AS pruned_tx, h.pruned_id::text AS pruned_id,
             t.tx::text AS trimmed_tx, t.id::text AS trimmed_id,
             (SELECT count(*) FROM (
                SELECT 1 FROM ${s}.outbox c
                WHERE c.user_id = $1 AND (c.tx, c.id) > ($2::xid8, $3::bigint) AND c.tx < h.horizon LIMIT $6) n
             )::int AS following,
             r.tx::text AS tx, r.id::text AS id, r.kind, r.event, r.fetched::int AS fetched
      FROM (SELECT m.epoch, m.pruned_tx, m.pruned_id, pg_snapshot_xmin(pg_current_snapshot()) AS horizon
            FROM ${s}.meta m) h
      LEFT JOIN ${s}.trims t ON t.user_id = $1
      LEFT JOIN LATERAL (
        SELECT w.tx, w.id, w.kind, w.event, w.fetched FROM (
          SELECT o.tx, o.id, o.kind, o.event, count(*) OVER () AS fetched,
                 row_number() OVER (ORDER BY o.tx, o.id) AS n,
                 sum(octet_length(o.event)) OVER (ORDER BY o.tx, o.id) AS upto
          FROM (SELECT o.tx, o.id, o.kind, o.event FROM ${s}.outbox o
                WHERE o.user_id = $1 AND (o.tx, o.id) > ($2::xid8, $3::bigint) AND o.tx < h.horizon
                ORDER BY o.tx, o.id LIMIT $4 + 1) o
        ) w WHERE w.n <= $4 AND (w.n = 1 OR w.upto <= $5)
      ) r ON true
      ORDER BY r.tx, r.id`;
    // Trims users who published since `$2` back to the byte budget, oldest rows first, and marks
    // each user's newest deleted row: a resume from before the mark is told it was trimmed.
    // Rows younger than the grace are left, so live readers have read them (a reader that has
    // not is told by the mark, see the reader). One replica trims at a time; the others skip.
    this.trimSql = `
      WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtext($1)) AS got),
      candidates AS (SELECT DISTINCT o.user_id FROM ${s}.outbox o, lock WHERE lock.got AND o.created_at >= $2::timestamptz),
      ranked AS (
        SELECT o.tx, o.id, o.user_id, o.created_at,
               sum(octet_length(o.event)) OVER (PARTITION BY o.user_id ORDER BY o.tx DESC, o.id DESC) AS newer
        FROM ${s}.outbox o JOIN candidates c ON c.user_id = o.user_id),
      doomed AS (
        SELECT r.tx, r.id FROM ranked r
        WHERE r.newer > $3 AND r.tx < pg_snapshot_xmin(pg_current_snapshot())
          AND r.created_at < clock_timestamp() - make_interval(secs => $4::float8 / 1000)),
      deleted AS (
        DELETE FROM ${s}.outbox o USING doomed d WHERE o.tx = d.tx AND o.id = d.id
        RETURNING o.user_id, o.tx, o.id),
      newest AS (SELECT DISTINCT ON (user_id) user_id, tx, id FROM deleted ORDER BY user_id, tx DESC, id DESC),
      marked AS (
        INSERT INTO ${s}.trims AS t (user_id, tx, id) SELECT user_id, tx, id FROM newest
        ON CONFLICT (user_id) DO UPDATE SET tx = excluded.tx, id = excluded.id
        WHERE (excluded.tx, excluded.id) > (t.tx, t.id)
        RETURNING 1)
      SELECT (SELECT count(*) FROM deleted)::int AS deleted`;
    // Deletes one batch of expired rows and raises the retention mark to the newest row deleted,
    // so "after the mark" means "nothing missing". Rows of unfinished transactions are left for
    // the readers. One replica prunes at a time; the others skip.
    this.pruneSql = `
      WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtext($2)) AS got),
      doomed AS (
        SELECT o.tx, o.id FROM ${s}.outbox o, lock
        WHERE lock.got AND o.created_at < clock_timestamp() - make_interval(secs => $1::float8 / 1000)
          AND o.tx < pg_snapshot_xmin(pg_current_snapshot())
        LIMIT $3),
      deleted AS (DELETE FROM ${s}.outbox o USING doomed d WHERE o.tx = d.tx AND o.id = d.id RETURNING o.tx, o.id),
      newest AS (SELECT tx, id FROM deleted ORDER BY tx DESC, id DESC LIMIT 1),
      marked AS (
        UPDATE ${s}.meta m SET pruned_tx = n.tx, pruned_id = n.id FROM newest n
        WHERE (n.tx, n.id) > (m.pruned_tx, m.pruned_id) RETURNING 1)
      SELECT (SELECT count(*) FROM deleted)::int AS deleted, (SELECT got FROM lock) AS got`;
  }

  async publish(kind: EventKind, userId: string, event: Buffer): Promise<Published> {
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw new TransportUnavailableError(`postgres: ${(err as Error).message}`, { cause: err });
    }
    // A connection that breaks mid-query emits 'error' on the client as well as failing the
    // query; pg-pool listens only while the client is idle, and unheard it would end the process.
    client.on('error', ignoreClientError);
    let failure: Error | undefined;
    try {
      const result = await client.query<{ id: string }>(this.publishSql, [kind, userId, event.toString('utf8')]);
      const id = result.rows[0]?.id;
      if (id === undefined) throw new Error('postgres: publish returned no id');
      return { id, receivers: undefined };
    } catch (err) {
      failure = err as Error;
      throw publishFailure(err);
    } finally {
      client.off('error', ignoreClientError);
      // Only a rejected event leaves the session as it was. After anything else (the server ended
      // the session with 57P01 during a restart, a lost socket, a cancelled statement) the
      // connection may be dead without pg-pool knowing: it must not reach the next publisher.
      const sessionIntact = failure === undefined || REJECTED_EVENT_CODES.has(sqlState(failure) ?? '');
      client.release(sessionIntact ? undefined : failure);
    }
  }

  /**
   * Replays from the outbox table. The head is the horizon below which every transaction has
   * finished: no row can appear behind it later, so it is a safe cursor for any stream.
   */
  async readHistory(userId: string, after: EventId | undefined, query: HistoryQuery): Promise<HistoryRead> {
    // The epoch is checked below, once it is known; until then read no rows.
    const from = after === undefined ? { tx: '0', id: '0' } : positionOf(after);
    const reading = after !== undefined;
    const result = await this.pool.query<{
      epoch: string;
      horizon: string;
      pruned_tx: string;
      pruned_id: string;
      trimmed_tx: string | null;
      trimmed_id: string | null;
      following: number;
      tx: string | null;
      id: string | null;
      kind: string | null;
      event: string | null;
      fetched: number | null;
    }>(this.historySql, [
      userId,
      from.tx,
      from.id,
      reading ? query.maxEntries : 0,
      query.maxBytes,
      reading && query.replayMax !== undefined ? query.replayMax + 1 : 0,
    ]);
    const first = result.rows[0];
    if (!first) throw new Error(`postgres: ${this.schema}.meta is empty`);
    const epoch = first.epoch;
    const head = eventIdAt(epoch, first.horizon, '0');
    if (!head) throw new Error(`postgres: transaction horizon ${first.horizon} is beyond the id range`);
    if (after === undefined) return { ok: true, head, entries: [], more: false };
    if (after.epoch !== epoch) return { ok: false, reason: 'history_lost', head };
    if (comparePosition(from, { tx: first.horizon, id: '0' }) > 0) return { ok: false, reason: 'unknown_id', head };
    const trimmedTo =
      first.trimmed_tx === null || first.trimmed_id === null
        ? undefined
        : { tx: first.trimmed_tx, id: first.trimmed_id };
    if (
      comparePosition(from, { tx: first.pruned_tx, id: first.pruned_id }) < 0 ||
      (trimmedTo !== undefined && comparePosition(from, trimmedTo) < 0)
    ) {
      return { ok: false, reason: 'trimmed', head };
    }
    if (query.replayMax !== undefined && first.following > query.replayMax) {
      return { ok: false, reason: 'replay_limit', head };
    }
    const entries: HistoryEntry[] = [];
    for (const row of result.rows) {
      if (row.tx === null || row.id === null || row.kind === null || row.event === null) continue;
      const id = eventIdAt(epoch, row.tx, row.id);
      if (!id) continue;
      entries.push({ id, kind: row.kind, event: Buffer.from(row.event, 'utf8') });
    }
    return { ok: true, head, entries, more: (first.fetched ?? 0) > entries.length };
  }

  /**
   * Deletes the oldest rows of users past `maxBytes` who published since `since`, leaving rows
   * younger than `graceMs`; resolves with how many went.
   */
  async trimToBudget(maxBytes: number, since: Date, graceMs: number): Promise<number> {
    const result = await this.pool.query<{ deleted: number }>(this.trimSql, [
      `ssehub:trim:${this.schema}`,
      since.toISOString(),
      maxBytes,
      graceMs,
    ]);
    return result.rows[0]?.deleted ?? 0;
  }

  /** Deletes expired rows in batches; resolves with how many went. */
  async putTicket(key: string, value: string, ttlMs: number): Promise<void> {
    await this.pool.query(this.putTicketSql, [key, value, ttlMs]);
  }

  /** Deleted as it is read, so a second take of the same ticket finds nothing. */
  async takeTicket(key: string): Promise<string | undefined> {
    const result = await this.pool.query<{ value: string; live: boolean }>(this.takeTicketSql, [key]);
    const row = result.rows[0];
    return row?.live ? row.value : undefined;
  }

  async prune(ttlMs: number, batch = 5000): Promise<number> {
    let total = 0;
    for (;;) {
      const result = await this.pool.query<{ deleted: number; got: boolean }>(this.pruneSql, [
        ttlMs,
        `ssehub:prune:${this.schema}`,
        batch,
      ]);
      const row = result.rows[0];
      const deleted = row?.deleted ?? 0;
      total += deleted;
      if (!row?.got || deleted < batch) return total;
    }
  }
}
