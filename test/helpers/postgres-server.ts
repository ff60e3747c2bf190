import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from './redis-server';

/** The Postgres the suites share (each test works in a schema of its own). */
export const SHARED_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A schema name of its own per test: lowercase, a valid unquoted identifier. */
export function uniqueSchema(): string {
  return `ssehubtest_${randomBytes(6).toString('hex')}`;
}

/** Drops a test's schema and everything in it; never fails a test's cleanup. */
export async function dropSchema(url: string, schema: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`refusing to drop ${JSON.stringify(schema)}`);
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } catch {
    // Best effort: a schema left behind only costs disk.
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Where initdb, pg_ctl and postgres live: $PG_BIN, Debian's versioned directory, or PATH. */
function pgBinDir(): string | undefined {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base)
      .filter((v) => existsSync(join(base, v, 'bin', 'pg_ctl')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0] !== undefined) return join(base, versions[0], 'bin');
  }
  return undefined;
}

function pgBin(name: string): string {
  const dir = pgBinDir();
  return dir === undefined ? name : join(dir, name);
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Postgres refuses to run as root: as root, server commands run as the `postgres` user. */
function run(command: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
  return new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * A private Postgres cluster (initdb in a temp dir) on a free port of 127.0.0.1, for tests
 * that stop and restart the database under live hubs. fsync is off (the data only has to
 * survive a process stop, not a machine crash); synchronous_commit stays on, so a commit
 * acknowledged to a client is in the WAL and survives an `immediate` stop.
 */
export class OwnPostgres {
  readonly dir: string;
  private running = false;

  private constructor(readonly port: number) {
    this.dir = mkdtempSync(join(tmpdir(), 'ssehub-pg-'));
    if (asRoot) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      chownSync(this.dir, uid, gid);
    }
  }

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  get logFile(): string {
    return join(this.dir, 'server.log');
  }

  /** The `postgres` database of this cluster. */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** The same database, as another role (which the test creates). */
  urlAs(role: string, database = 'postgres'): string {
    return `postgres://${encodeURIComponent(role)}@127.0.0.1:${this.port}/${database}`;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** A fresh cluster, started and accepting connections. */
  static async start(): Promise<OwnPostgres> {
    const pg = new OwnPostgres(await freePort());
    try {
      await run(pgBin('initdb'), [
        '-D',
        pg.dataDir,
        '-U',
        'postgres',
        '-A',
        'trust',
        '-E',
        'UTF8',
        '--locale=C',
        '--no-sync',
      ]);
      await pg.start();
    } catch (err) {
      await pg.destroy();
      throw err;
    }
    return pg;
  }

  /** Starts the server (again) on the same port and data directory; resolves once it takes connections. */
  async start(): Promise<void> {
    const options = [
      `-p ${this.port}`,
      `-k ${this.dir}`,
      "-c listen_addresses='127.0.0.1'",
      '-c fsync=off',
      '-c full_page_writes=off',
      '-c max_connections=100',
    ].join(' ');
    await run(pgBin('pg_ctl'), ['-D', this.dataDir, '-l', this.logFile, '-o', options, '-w', '-t', '30', 'start']);
    this.running = true;
    await this.waitForConnections(15_000);
  }

  private async waitForConnections(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const client = new Client({ connectionString: this.url, connectionTimeoutMillis: 2000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        return;
      } catch (err) {
        await client.end().catch(() => undefined);
        if (Date.now() > deadline)
          throw new Error(`postgres did not accept connections: ${(err as Error).message}\n${this.log()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /**
   * `fast`: disconnects clients, rolls back their transactions and shuts down cleanly.
   * `immediate`: the postmaster kills every backend at once, without a checkpoint (a crash,
   * as far as clients can tell; the next start recovers from the WAL).
   */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!this.running) return;
    await run(pgBin('pg_ctl'), ['-D', this.dataDir, '-m', mode, '-w', '-t', '30', 'stop']);
    this.running = false;
  }

  /** The server's log, for failure messages. */
  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  }

  async destroy(): Promise<void> {
    try {
      await this.stop('immediate');
    } catch {
      // Already gone, or never started.
    }
    // Backends of an immediate stop may still be exiting: retry instead of failing the suite's cleanup.
    rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
}

/** A plain client whose connection errors never crash the test process (they surface on the next query). */
export async function connectPg(url: string, options: { queryTimeoutMs?: number } = {}): Promise<Client> {
  const client = new Client({
    connectionString: url,
    connectionTimeoutMillis: 3000,
    query_timeout: options.queryTimeoutMs ?? 15_000,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

/** `SELECT <schema>.publish(kind, user_id, event)`: the event's id. */
export async function sqlPublish(
  client: Client,
  schema: string,
  kind: string | null,
  userId: string | null,
  event: string | null,
): Promise<string> {
  const result = await client.query<{ id: string }>(`SELECT "${schema}".publish($1, $2, $3) AS id`, [
    kind,
    userId,
    event,
  ]);
  const id = result.rows[0]?.id;
  if (typeof id !== 'string') throw new Error(`publish returned ${JSON.stringify(id)}`);
  return id;
}

/** An outbox event id, `<epoch>:<xid>-<rowid>`, taken apart. */
export function parseOutboxId(id: string | undefined): { epoch: string; tx: bigint; row: bigint } {
  const match = /^([0-9a-z]{1,32}):(\d+)-(\d+)$/.exec(id ?? '');
  if (!match) throw new Error(`not an event id: ${JSON.stringify(id)}`);
  return { epoch: match[1] as string, tx: BigInt(match[2] as string), row: BigInt(match[3] as string) };
}

/** Orders two ids of one epoch by (transaction id, row id): the outbox's delivery order. */
export function compareOutboxIds(a: string, b: string): number {
  const x = parseOutboxId(a);
  const y = parseOutboxId(b);
  if (x.tx !== y.tx) return x.tx < y.tx ? -1 : 1;
  return x.row === y.row ? 0 : x.row < y.row ? -1 : 1;
}
