import { randomBytes } from 'node:crypto';
import type { Pool, QueryConfig, QueryResult, QueryResultRow } from 'pg';
import { EVENT_KINDS } from '../../routing';
import { MAX_JSON_DEPTH, MAX_USER_ID_LENGTH } from '../../wire/envelope';

/** Bumped whenever the objects below change; replicas only ever migrate forward. */
export const OUTBOX_SCHEMA_VERSION = 3;

/**
 * For the hub's own sessions. The outbox queries are small index scans, but on a young table
 * the planner's estimates can pass jit_above_cost, and compiling each read with LLVM then costs
 * milliseconds of CPU per wake-up: the reader alone used most of a core at 500 events/s.
 */
export const SESSION_OPTIONS = '-c jit=off';

/** The config admits only plain lowercase schema names; quoting keeps them exact anyway. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** NOTIFY channel the outbox trigger wakes replicas on; LISTEN takes it as a quoted identifier. */
export function notifyChannel(schema: string): string {
  return `${schema}.outbox`;
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * The objects, in dependency order. `event` is text, not jsonb: jsonb would reorder keys and
 * drop duplicates, and clients must receive exactly the bytes that were published. Rows are
 * read in (tx, id) order, never past a transaction that may still commit (see the reader).
 */
function objects(schema: string, serverVersion: number): string[] {
  const s = quoteIdent(schema);
  const kinds = EVENT_KINDS.map(literal).join(', ');
  // An EXCEPTION block would open a subtransaction per publish; PG 16 can test JSON without one.
  const jsonCheck =
    serverVersion >= 160000
      ? `IF NOT pg_input_is_valid(event, 'json') THEN
      RAISE EXCEPTION 'ssehub: event is not valid JSON' USING ERRCODE = '22023';
    END IF;
    parsed := event::json;`
      : 'parsed := event::json;';
  return [
    `CREATE TABLE IF NOT EXISTS ${s}.outbox (
      id bigint GENERATED ALWAYS AS IDENTITY,
      tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
      kind text NOT NULL,
      user_id text NOT NULL,
      event text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      PRIMARY KEY (tx, id)
    )`,
    `CREATE INDEX IF NOT EXISTS outbox_user_position ON ${s}.outbox (user_id, tx, id)`,
    // Rows arrive in time order, so a BRIN index finds old ones for pruning at almost no insert cost.
    `CREATE INDEX IF NOT EXISTS outbox_created_at ON ${s}.outbox USING brin (created_at)`,
    // Per user, the newest row deleted to keep the user within the history byte budget.
    `CREATE TABLE IF NOT EXISTS ${s}.trims (
      user_id text PRIMARY KEY,
      tx xid8 NOT NULL,
      id bigint NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS trims_position ON ${s}.trims (tx, id)`,
    // Stream tickets (a hash of each, never the ticket): issued by one replica, redeemed once on any.
    `CREATE TABLE IF NOT EXISTS ${s}.tickets (
      key text PRIMARY KEY,
      value text NOT NULL,
      expires_at timestamptz NOT NULL
    )`,
    `CREATE OR REPLACE FUNCTION ${s}.publish(kind text, user_id text, event text) RETURNS text
    LANGUAGE plpgsql VOLATILE AS $fn$
    #variable_conflict use_variable
    DECLARE
      settings ${s}.meta%ROWTYPE;
      parsed json;
      shape text;
      new_id bigint;
      new_tx xid8;
    BEGIN
      IF kind IS NULL OR NOT (kind = ANY (ARRAY[${kinds}])) THEN
        RAISE EXCEPTION 'ssehub: unknown event kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
      END IF;
      IF user_id IS NULL OR user_id = '' THEN
        RAISE EXCEPTION 'ssehub: user_id must not be empty' USING ERRCODE = '22023';
      END IF;
      -- The hub counts UTF-16 code units: characters outside the BMP count twice.
      IF length(user_id) > ${MAX_USER_ID_LENGTH / 2}
         AND length(user_id) + length(regexp_replace(user_id, '[^\\U00010000-\\U0010FFFF]', '', 'g')) > ${MAX_USER_ID_LENGTH} THEN
        RAISE EXCEPTION 'ssehub: user_id is longer than ${MAX_USER_ID_LENGTH} characters' USING ERRCODE = '22023';
      END IF;
      IF event IS NULL THEN
        RAISE EXCEPTION 'ssehub: event must not be NULL' USING ERRCODE = '22023';
      END IF;
      SELECT * INTO settings FROM ${s}.meta;
      IF octet_length(event) > settings.max_event_bytes THEN
        RAISE EXCEPTION 'ssehub: event of % bytes exceeds the %-byte limit', octet_length(event), settings.max_event_bytes
          USING ERRCODE = '22023';
      END IF;
      ${jsonCheck}
      IF json_typeof(parsed) <> 'object' THEN
        RAISE EXCEPTION 'ssehub: event must be a JSON object' USING ERRCODE = '22023';
      END IF;
      -- Nesting as the hub measures it. Only events with enough brackets to be that deep pay for
      -- the check: strings out, then innermost bracket pairs peeled off one level per pass.
      IF length(event) - length(translate(event, '{[', '')) > ${MAX_JSON_DEPTH} THEN
        shape := regexp_replace(regexp_replace(event, '"([^"\\\\]|\\\\.)*"', '', 'g'), '[^][{}]', '', 'g');
        FOR level IN 1..${MAX_JSON_DEPTH} LOOP
          EXIT WHEN shape = '';
          shape := regexp_replace(shape, '\\{\\}|\\[\\]', '', 'g');
        END LOOP;
        IF shape <> '' THEN
          RAISE EXCEPTION 'ssehub: event nests deeper than ${MAX_JSON_DEPTH} levels' USING ERRCODE = '22023';
        END IF;
      END IF;
      INSERT INTO ${s}.outbox (kind, user_id, event) VALUES (kind, user_id, event)
        RETURNING outbox.id, outbox.tx INTO new_id, new_tx;
      RETURN settings.epoch || ':' || new_tx::text || '-' || new_id::text;
    END
    $fn$`,
    // A wake-up only: NOTIFY payloads are capped at 8000 bytes, and identical ones in one
    // transaction fold into one, so a transaction that publishes many events wakes readers once.
    `CREATE OR REPLACE FUNCTION ${s}.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
      PERFORM pg_notify(${literal(notifyChannel(schema))}, '');
      RETURN NULL;
    END
    $fn$`,
    `DROP TRIGGER IF EXISTS outbox_notify ON ${s}.outbox`,
    `CREATE TRIGGER outbox_notify AFTER INSERT ON ${s}.outbox FOR EACH STATEMENT EXECUTE FUNCTION ${s}.notify_outbox()`,
  ];
}

export interface OutboxSettings {
  maxEventBytes: number;
}

interface MetaRow {
  epoch: string;
  version: number;
  max_event_bytes: number;
}

/** Longer than the lock timeout, so a migration waiting for its locks fails on the server's terms. */
const MIGRATION_QUERY_TIMEOUT_MS = 30_000;

function noop(): void {}

/**
 * Creates or upgrades the schema. Safe with many replicas starting at once: one migrates under
 * an advisory lock while the others wait, then find it done. A schema already at this version
 * is only read: no DDL, so no lock a publisher's transaction could queue behind, and no CREATE
 * privilege needed after the first start.
 * Returns the epoch: the name of this incarnation of the outbox, part of every event id.
 */
export async function migrateOutbox(pool: Pool, schema: string, settings: OutboxSettings): Promise<string> {
  const s = quoteIdent(schema);
  const client = await pool.connect();
  client.on('error', noop);
  const query = <R extends QueryResultRow>(text: string, values?: unknown[]): Promise<QueryResult<R>> =>
    client.query<R>({ text, values, query_timeout: MIGRATION_QUERY_TIMEOUT_MS } as QueryConfig);
  let failure: Error | undefined;
  try {
    const exists = await query<{ meta: string | null }>('SELECT to_regclass($1)::text AS meta', [`${s}.meta`]);
    if (exists.rows[0]?.meta) {
      const meta = await query<MetaRow>(`SELECT epoch, version, max_event_bytes FROM ${s}.meta`);
      const row = meta.rows[0];
      if (row && row.version >= OUTBOX_SCHEMA_VERSION) {
        if (row.max_event_bytes !== settings.maxEventBytes) {
          await query(`UPDATE ${s}.meta SET max_event_bytes = $1`, [settings.maxEventBytes]);
        }
        return row.epoch;
      }
    }
    await query('BEGIN');
    try {
      await query("SET LOCAL lock_timeout = '15s'");
      await query('SELECT pg_advisory_xact_lock(hashtext($1))', [`ssehub:migrate:${schema}`]);
      await query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await query(`CREATE TABLE IF NOT EXISTS ${s}.meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        epoch text NOT NULL,
        version integer NOT NULL,
        max_event_bytes integer NOT NULL,
        pruned_tx xid8 NOT NULL DEFAULT '0',
        pruned_id bigint NOT NULL DEFAULT 0
      )`);
      const epoch = randomBytes(6).readUIntBE(0, 6).toString(36);
      await query(
        `INSERT INTO ${s}.meta (epoch, version, max_event_bytes) VALUES ($1, 0, $2) ON CONFLICT (singleton) DO NOTHING`,
        [epoch, settings.maxEventBytes],
      );
      const row = (await query<MetaRow>(`SELECT epoch, version, max_event_bytes FROM ${s}.meta`)).rows[0] as MetaRow;
      if (row.version < OUTBOX_SCHEMA_VERSION) {
        const version = await query<{ server_version_num: string }>('SHOW server_version_num');
        const serverVersion = Number(version.rows[0]?.server_version_num ?? 0);
        for (const statement of objects(schema, serverVersion)) await query(statement);
        await query(`UPDATE ${s}.meta SET version = $1`, [OUTBOX_SCHEMA_VERSION]);
      }
      if (row.max_event_bytes !== settings.maxEventBytes) {
        await query(`UPDATE ${s}.meta SET max_event_bytes = $1`, [settings.maxEventBytes]);
      }
      await query('COMMIT');
      return row.epoch;
    } catch (err) {
      await query('ROLLBACK').catch(noop);
      throw err;
    }
  } catch (err) {
    failure = err as Error;
    throw err;
  } finally {
    client.off('error', noop);
    // Never hand a connection that may sit inside a transaction to a publisher.
    client.release(failure);
  }
}
