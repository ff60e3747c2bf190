import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once a server on 127.0.0.1:port answers PING; throws `message` after timeoutMs. */
export async function waitForPing(port: number, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new Redis(`redis://127.0.0.1:${port}`, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    try {
      await client.connect();
      await client.ping();
      client.disconnect();
      return;
    } catch {
      client.disconnect();
      if (Date.now() > deadline) throw new Error(message);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** SIGKILLs a child and resolves once it has exited; a child already gone resolves at once. */
export async function killChild(child: ChildProcess | undefined): Promise<void> {
  // A SIGKILLed child has a signalCode and no exitCode; waiting for its 'exit' again would hang.
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/**
 * One command on a fresh connection to 127.0.0.1:port. A connection per call keeps a killed or
 * SIGSTOPped node from wedging a shared client; the timeouts turn a frozen node into an error.
 */
export async function redisCall(port: number, args: Array<string | number>, timeoutMs = 2000): Promise<unknown> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const [command, ...rest] = args;
    return await client.call(String(command), rest);
  } finally {
    client.disconnect();
  }
}

/** Polls check every 100 ms until it returns undefined; on timeout throws with the last reason it gave. */
export async function waitUntil(
  check: () => Promise<string | undefined>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let reason: string | undefined = 'not checked';
  for (;;) {
    try {
      reason = await check();
    } catch (err) {
      reason = (err as Error).message;
    }
    if (reason === undefined) return;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms: ${reason}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One `field:value` line of an INFO reply. */
export function infoField(info: string, field: string): string | undefined {
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return match?.[1]?.trim();
}

const hasSetpriv = spawnSync('setpriv', ['--pdeathsig', 'KILL', 'true'], { stdio: 'ignore' }).status === 0;
const ownedChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Spawns a Redis process that cannot outlive the test process: where util-linux's setpriv is
 * present the kernel SIGKILLs it when its parent dies (even by SIGKILL, e.g. a jest worker
 * killed for running over time), and an 'exit' hook kills the rest on an ordinary exit.
 * setpriv execs the command, so the child's pid is the server's.
 */
export function spawnOwned(command: string, args: string[]): ChildProcess {
  const child = hasSetpriv
    ? spawn('setpriv', ['--pdeathsig', 'KILL', command, ...args], { stdio: 'ignore' })
    : spawn(command, args, { stdio: 'ignore' });
  ownedChildren.add(child);
  child.once('exit', () => ownedChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const owned of ownedChildren) owned.kill('SIGKILL');
    });
  }
  return child;
}

export interface OwnRedisOptions {
  /**
   * 'none' (the default): nothing survives a restart. 'aof': every write is appended and
   * fsynced before it is acknowledged (`--appendonly yes --appendfsync always`), in the same
   * directory across restarts, so a SIGKILL loses nothing that was acknowledged.
   */
  persistence?: 'none' | 'aof';
}

/** A private redis-server on a free port, for tests that stop and restart it. */
export class OwnRedis {
  private child: ChildProcess | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), 'ssehub-redis-'));

  private constructor(
    readonly port: number,
    readonly persistence: 'none' | 'aof',
  ) {}

  static async start(options: OwnRedisOptions = {}): Promise<OwnRedis> {
    const redis = new OwnRedis(await freePort(), options.persistence ?? 'none');
    await redis.restart();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again) on the same port and directory; with AOF it reloads what it had. */
  async restart(): Promise<void> {
    const persistenceArgs =
      this.persistence === 'aof' ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    this.child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', ...persistenceArgs, '--dir', this.dir],
      { stdio: 'ignore' },
    );
    // PING answers -LOADING until the AOF is replayed, so this also waits for the data to be back.
    await waitForPing(this.port, this.persistence === 'aof' ? 10_000 : 5000, 'redis-server did not start');
  }

  /** Sends the server a signal: SIGSTOP freezes it (connections stay open, nothing answers), SIGCONT thaws it. */
  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  async stop(): Promise<void> {
    await killChild(this.child);
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
