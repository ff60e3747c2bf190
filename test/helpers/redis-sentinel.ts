import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, infoField, killChild, redisCall, spawnOwned, waitForPing, waitUntil } from './redis-server';

export interface OwnRedisSentinelOptions {
  /** The monitored primary's name, as clients pass it (`new Redis({ sentinels, name })`). */
  name?: string;
  /** How long the primary may be silent before a sentinel considers it down. */
  downAfterMs?: number;
  /** Also how long sentinels wait before retrying an election that nobody won (twice this). */
  failoverTimeoutMs?: number;
}

interface OwnedProcess {
  readonly port: number;
  readonly args: string[];
  child: ChildProcess | undefined;
  stopped: boolean;
}

// The config path in the process title lets `pgrep -f <dir>` find every process.
const PROC_TITLE = 'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"';

/** SENTINEL REPLICAS/SENTINELS answer a list of flat [field, value, ...] arrays. */
function records(reply: unknown): Array<Map<string, string>> {
  if (!Array.isArray(reply)) return [];
  return reply.map((entry: unknown) => {
    const fields = Array.isArray(entry) ? entry.map(String) : [];
    const record = new Map<string, string>();
    for (let i = 0; i + 1 < fields.length; i += 2) record.set(fields[i] as string, fields[i + 1] as string);
    return record;
  });
}

/**
 * A private Sentinel setup on free ports of 127.0.0.1: a primary, one replica and three
 * sentinels (quorum 2), each with its own config file in a temp dir, for tests that fail the
 * primary over under live clients.
 */
export class OwnRedisSentinel {
  readonly dir = mkdtempSync(join(tmpdir(), 'ssehub-sentinel-'));
  private readonly servers = new Map<number, OwnedProcess>();
  private readonly sentinelProcesses = new Map<number, OwnedProcess>();

  private constructor(readonly name: string) {}

  static async start(options: OwnRedisSentinelOptions = {}): Promise<OwnRedisSentinel> {
    const setup = new OwnRedisSentinel(options.name ?? 'ssehub-test');
    const downAfterMs = options.downAfterMs ?? 1000;
    const failoverTimeoutMs = options.failoverTimeoutMs ?? 3000;
    try {
      const ports = new Set<number>();
      while (ports.size < 5) ports.add(await freePort());
      const [primaryPort, replicaPort, ...sentinelPorts] = [...ports] as [number, number, ...number[]];
      for (const port of [primaryPort, replicaPort]) {
        const conf = setup.writeConf(port, [
          'appendonly no',
          'save ""',
          // The 7.0 default waits 5 s for more replicas before a diskless full sync.
          'repl-diskless-sync-delay 0',
          ...(port === replicaPort ? [`replicaof 127.0.0.1 ${primaryPort}`] : []),
        ]);
        setup.servers.set(port, { port, args: [conf], child: undefined, stopped: false });
      }
      await Promise.all([primaryPort, replicaPort].map((port) => setup.spawn(port)));
      // A sentinel learns replicas from the primary's INFO, which it asks for at once and then
      // only every 10 s: the replica has to be attached before the sentinels start.
      await waitUntil(
        async () => {
          const info = String(await redisCall(replicaPort, ['INFO', 'replication']));
          const link = infoField(info, 'master_link_status');
          return link === 'up' ? undefined : `the replica's link is ${link}`;
        },
        10_000,
        'the replica did not attach',
      );
      for (const port of sentinelPorts) {
        const conf = setup.writeConf(port, [
          'sentinel resolve-hostnames no',
          `sentinel monitor ${setup.name} 127.0.0.1 ${primaryPort} 2`,
          `sentinel down-after-milliseconds ${setup.name} ${downAfterMs}`,
          `sentinel failover-timeout ${setup.name} ${failoverTimeoutMs}`,
        ]);
        setup.sentinelProcesses.set(port, { port, args: [conf, '--sentinel'], child: undefined, stopped: false });
      }
      await Promise.all(sentinelPorts.map((port) => setup.spawn(port)));
      await setup.waitUntilSettled(15_000);
    } catch (err) {
      await setup.close();
      throw err;
    }
    return setup;
  }

  /** Every sentinel as `127.0.0.1:port`, comma-separated. */
  get sentinels(): string {
    return [...this.sentinelProcesses.keys()].map((port) => `127.0.0.1:${port}`).join(',');
  }

  /** The sentinels as ioredis's `sentinels` option takes them. */
  get sentinelAddresses(): Array<{ host: string; port: number }> {
    return [...this.sentinelProcesses.keys()].map((port) => ({ host: '127.0.0.1', port }));
  }

  /** The ports of the two data servers, the current primary among them. */
  get serverPorts(): number[] {
    return [...this.servers.keys()];
  }

  /** The primary's port, as the first answering sentinel reports it. */
  async primaryPort(): Promise<number> {
    let lastError: unknown = new Error('no sentinel is running');
    for (const port of this.running(this.sentinelProcesses)) {
      try {
        return await this.primaryPortFrom(port);
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }

  /** SIGKILLs a server or a sentinel and waits for it to exit. */
  async kill(port: number): Promise<void> {
    const owned = this.owned(port);
    await killChild(owned.child);
    owned.stopped = false;
  }

  /** SIGSTOP freezes a server or sentinel (its sockets stay open, nothing answers); SIGCONT thaws it. */
  signal(port: number, signal: 'SIGSTOP' | 'SIGCONT'): void {
    const owned = this.owned(port);
    owned.child?.kill(signal);
    owned.stopped = signal === 'SIGSTOP';
  }

  /** Starts a killed server or sentinel again; a former primary comes back and sentinels make it a replica. */
  async restart(port: number): Promise<void> {
    await killChild(this.owned(port).child);
    await this.spawn(port);
  }

  /**
   * SIGKILLs the current primary and waits until every running sentinel names another server
   * as the primary and that server's ROLE is master. Resolves to its port.
   */
  async failover(timeoutMs = 20_000): Promise<number> {
    const old = await this.primaryPort();
    await this.kill(old);
    let promoted = 0;
    await waitUntil(
      async () => {
        const named = new Set<number>();
        for (const port of this.running(this.sentinelProcesses)) named.add(await this.primaryPortFrom(port));
        if (named.size !== 1) return `sentinels disagree: ${[...named].join(', ')}`;
        const candidate = [...named][0];
        if (candidate === undefined || candidate === old) return `sentinels still name ${old}`;
        const role = await redisCall(candidate, ['ROLE']);
        if (!Array.isArray(role) || role[0] !== 'master') return `${candidate} is not a master yet`;
        promoted = candidate;
        return undefined;
      },
      timeoutMs,
      `no replica took over from ${old}`,
    );
    return promoted;
  }

  /** Kills every process and removes the temp dir. */
  async close(): Promise<void> {
    const all = [...this.sentinelProcesses.values(), ...this.servers.values()];
    await Promise.all(all.map((owned) => killChild(owned.child)));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async waitUntilSettled(timeoutMs: number): Promise<void> {
    const expectedSentinels = this.sentinelProcesses.size - 1;
    await waitUntil(
      async () => {
        for (const port of this.running(this.sentinelProcesses)) {
          const replicas = records(await redisCall(port, ['SENTINEL', 'REPLICAS', this.name]));
          const up = replicas.filter((r) => !(r.get('flags') ?? '').includes('down'));
          if (up.length < 1) return `sentinel ${port} knows ${up.length} live replicas`;
          const others = records(await redisCall(port, ['SENTINEL', 'SENTINELS', this.name]));
          if (others.length < expectedSentinels) return `sentinel ${port} knows ${others.length} other sentinels`;
        }
        return undefined;
      },
      timeoutMs,
      'the sentinels did not find the replica and each other',
    );
  }

  private async primaryPortFrom(sentinelPort: number): Promise<number> {
    const address = await redisCall(sentinelPort, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name]);
    if (!Array.isArray(address) || address.length < 2)
      throw new Error(`sentinel ${sentinelPort} knows no ${this.name}`);
    return Number(address[1]);
  }

  private writeConf(port: number, lines: string[]): string {
    const dir = join(this.dir, String(port));
    mkdirSync(dir);
    const conf = join(dir, 'redis.conf');
    // Sentinels rewrite their file as they learn the topology, so it lives in a writable dir of its own.
    const common = [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'logfile redis.log', PROC_TITLE];
    writeFileSync(conf, [...common, ...lines, ''].join('\n'));
    return conf;
  }

  private running(processes: Map<number, OwnedProcess>): number[] {
    return [...processes.values()]
      .filter((p) => p.child && p.child.exitCode === null && p.child.signalCode === null && !p.stopped)
      .map((p) => p.port);
  }

  private owned(port: number): OwnedProcess {
    const owned = this.servers.get(port) ?? this.sentinelProcesses.get(port);
    if (!owned) throw new Error(`${port} is not a process of this setup`);
    return owned;
  }

  private async spawn(port: number): Promise<void> {
    const owned = this.owned(port);
    // redis-server in sentinel mode is what the redis-sentinel binary is; not every install has the latter.
    owned.child = spawnOwned('redis-server', owned.args);
    owned.stopped = false;
    await waitForPing(port, 5000, `${port} did not start`);
  }
}
