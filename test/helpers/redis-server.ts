import { spawn, type ChildProcess } from 'node:child_process';
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
    const deadline = Date.now() + (this.persistence === 'aof' ? 10_000 : 5000);
    for (;;) {
      const client = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      try {
        await client.connect();
        await client.ping();
        client.disconnect();
        return;
      } catch {
        client.disconnect();
        if (Date.now() > deadline) throw new Error('redis-server did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Sends the server a signal: SIGSTOP freezes it (connections stay open, nothing answers), SIGCONT thaws it. */
  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  async stop(): Promise<void> {
    const child = this.child;
    // A SIGKILLed child has a signalCode and no exitCode; waiting for its 'exit' again would hang.
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
