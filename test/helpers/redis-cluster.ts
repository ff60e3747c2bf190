import { type ChildProcess, execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
import { freePort, infoField, killChild, redisCall, spawnOwned, waitForPing, waitUntil } from './redis-server';

export interface OwnRedisClusterOptions {
  /** At least 3: redis-cli refuses to create a cluster with fewer. */
  primaries?: number;
  replicasPerPrimary?: number;
  /** How long a node may be unreachable before it is flagged as failing; failover follows within about 2x. */
  nodeTimeoutMs?: number;
  /**
   * false (the default) keeps the slots of the healthy shards writable while one shard is down,
   * so a test sees a partial outage; true is Redis's default, where the whole cluster refuses.
   */
  requireFullCoverage?: boolean;
}

export interface ClusterNodeInfo {
  port: number;
  role: 'primary' | 'replica';
  id: string;
  /** Inclusive ranges; slots being imported or migrated are not listed. */
  slots: Array<[number, number]>;
  primaryId?: string;
  /** Flagged `fail` or `fail?` by the node that answered. */
  failed: boolean;
}

interface NodeProcess {
  readonly port: number;
  readonly conf: string;
  child: ChildProcess | undefined;
  stopped: boolean;
}

export const CLUSTER_SLOTS = 16384;

function parseClusterNodes(text: string): ClusterNodeInfo[] {
  const nodes: ClusterNodeInfo[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const [id, address, flagList, primaryId] = fields;
    if (!id || !address || !flagList || !primaryId) continue;
    const hostPort = address.split('@')[0] ?? '';
    const port = Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));
    const flags = flagList.split(',');
    const slots: Array<[number, number]> = [];
    // Fields 0..7 are id, address, flags, primary, ping-sent, pong-recv, config-epoch, link-state.
    for (const range of fields.slice(8)) {
      if (range.startsWith('[')) continue;
      const [from, to] = range.split('-');
      slots.push([Number(from), Number(to ?? from)]);
    }
    nodes.push({
      port,
      role: flags.includes('master') ? 'primary' : 'replica',
      id,
      slots,
      ...(primaryId === '-' ? {} : { primaryId }),
      failed: flags.includes('fail') || flags.includes('fail?'),
    });
  }
  return nodes.sort((a, b) => a.port - b.port);
}

function ownsSlot(node: ClusterNodeInfo, slot: number): boolean {
  return node.slots.some(([from, to]) => slot >= from && slot <= to);
}

/** Which primary each slot range belongs to, as one comparable string. */
function ownership(view: ClusterNodeInfo[]): string {
  return view
    .filter((n) => n.role === 'primary' && n.slots.length > 0)
    .map((n) => `${n.port}:${n.slots.map(([a, b]) => `${a}-${b}`).join(',')}`)
    .join(' ');
}

async function distinctFreePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

function runCli(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * A private Redis Cluster of redis-server processes on free ports of 127.0.0.1, each with its
 * nodes.conf in a temp dir, for tests that fail nodes over and move slots under live clients.
 */
export class OwnRedisCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'ssehub-cluster-'));
  private readonly processes = new Map<number, NodeProcess>();
  /** The slots a primary held when it was killed or frozen, for waitForFailover to follow. */
  private readonly slotsWhenLost = new Map<number, Array<[number, number]>>();

  private constructor(readonly nodeTimeoutMs: number) {}

  static async start(options: OwnRedisClusterOptions = {}): Promise<OwnRedisCluster> {
    const primaries = options.primaries ?? 3;
    const replicas = options.replicasPerPrimary ?? 1;
    const cluster = new OwnRedisCluster(options.nodeTimeoutMs ?? 1500);
    try {
      const count = primaries * (1 + replicas);
      // The bus port defaults to port + 10000, which overflows for ephemeral ports: ask for one too.
      const ports = await distinctFreePorts(count * 2);
      for (let i = 0; i < count; i++) {
        cluster.configureNode(ports[i] as number, ports[count + i] as number, options.requireFullCoverage === true);
      }
      await Promise.all([...cluster.processes.keys()].map((port) => cluster.spawnNode(port)));
      const addresses = [...cluster.processes.keys()].map((port) => `127.0.0.1:${port}`);
      await runCli(
        ['--cluster', 'create', ...addresses, '--cluster-replicas', String(replicas), '--cluster-yes'],
        60_000,
      );
      await cluster.waitUntilHealthy(30_000);
      // `--cluster create` returns before every node has heard that the replicas are replicas.
      const expected = primaries * replicas;
      await waitUntil(
        async () => {
          for (const port of cluster.runningPorts()) {
            const seen = (await cluster.viewFrom(port)).filter((node) => node.role === 'replica').length;
            if (seen !== expected) return `${port} sees ${seen} replicas of ${expected}`;
          }
          return undefined;
        },
        30_000,
        'the replicas were not known to every node',
      );
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  /** Writes a node's config; it joins the cluster once spawned and met. */
  private configureNode(port: number, busPort: number, requireFullCoverage: boolean): void {
    const dir = join(this.dir, String(port));
    mkdirSync(dir);
    const conf = join(dir, 'redis.conf');
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `cluster-port ${busPort}`,
        `dir ${dir}`,
        'logfile redis.log',
        'cluster-enabled yes',
        'cluster-config-file nodes.conf',
        `cluster-node-timeout ${this.nodeTimeoutMs}`,
        `cluster-require-full-coverage ${requireFullCoverage ? 'yes' : 'no'}`,
        // Keeps the topology where a test put it: an emptied primary stays a primary.
        'cluster-allow-replica-migration no',
        // A replica cut off for longer than the node timeout (SIGSTOP, a slow machine) may still be promoted.
        'cluster-replica-validity-factor 0',
        'appendonly no',
        'save ""',
        // The 7.0 default waits 5 s for more replicas before a diskless full sync.
        'repl-diskless-sync yes',
        'repl-diskless-sync-delay 0',
        // The config path in the process title lets `pgrep -f <dir>` find every node.
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
        '',
      ].join('\n'),
    );
    this.processes.set(port, { port, conf, child: undefined, stopped: false });
  }

  /** A new, empty primary joins the cluster (it serves no slot until some move to it); its port. */
  async addPrimary(): Promise<number> {
    const [port, busPort] = (await distinctFreePorts(2)) as [number, number];
    this.configureNode(port, busPort, false);
    await this.spawnNode(port);
    const existing = (await this.nodes()).find((node) => node.role === 'primary' && !node.failed);
    if (!existing) throw new Error('no primary to join');
    await runCli(['--cluster', 'add-node', `127.0.0.1:${port}`, `127.0.0.1:${existing.port}`], 30_000);
    await this.waitUntilHealthy(30_000);
    return port;
  }

  /** Every node as `127.0.0.1:port`, comma-separated. */
  get seeds(): string {
    return [...this.processes.keys()].map((port) => `127.0.0.1:${port}`).join(',');
  }

  /** Every node's port, killed ones included. */
  get ports(): number[] {
    return [...this.processes.keys()];
  }

  /** The cluster as the first running node sees it (CLUSTER NODES). */
  async nodes(): Promise<ClusterNodeInfo[]> {
    let lastError: unknown = new Error('no node is running');
    for (const port of this.runningPorts()) {
      try {
        return await this.viewFrom(port);
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }

  async primaryForSlot(slot: number): Promise<number> {
    const owner = (await this.nodes()).find((n) => n.role === 'primary' && !n.failed && ownsSlot(n, slot));
    if (!owner) throw new Error(`no healthy primary owns slot ${slot}`);
    return owner.port;
  }

  async primaryForKey(key: string): Promise<number> {
    return this.primaryForSlot(calculateSlot(key));
  }

  /** SIGKILLs a node and waits for it to exit; its nodes.conf stays, so restart() brings it back as itself. */
  async kill(port: number): Promise<void> {
    const node = this.node(port);
    await this.rememberSlots(port);
    await killChild(node.child);
    node.stopped = false;
  }

  /** SIGSTOP freezes a node (its sockets stay open, nothing answers: a hung host); SIGCONT thaws it. */
  async signal(port: number, signal: 'SIGSTOP' | 'SIGCONT'): Promise<void> {
    const node = this.node(port);
    if (signal === 'SIGSTOP') await this.rememberSlots(port);
    node.child?.kill(signal);
    node.stopped = signal === 'SIGSTOP';
  }

  /** Starts a killed node again on its port; it rejoins with its old id (a former primary as a replica). */
  async restart(port: number): Promise<void> {
    const node = this.node(port);
    await killChild(node.child);
    await this.spawnNode(port);
  }

  /**
   * Waits until the slots the killed (or frozen) primary held belong to another running
   * primary in the view of every running node, and each of them reports cluster_state:ok.
   * Resolves to the new primary's port.
   */
  async waitForFailover(deadPrimaryPort: number, timeoutMs = 20_000): Promise<number> {
    const lost = this.slotsWhenLost.get(deadPrimaryPort);
    if (!lost || lost.length === 0) throw new Error(`${deadPrimaryPort} held no slots when it was killed or stopped`);
    const [firstSlot] = lost[0] as [number, number];
    let promoted = 0;
    await waitUntil(
      async () => {
        const running = this.runningPorts();
        const owners = new Set<number>();
        for (const port of running) {
          const info = String(await redisCall(port, ['CLUSTER', 'INFO']));
          if (infoField(info, 'cluster_state') !== 'ok')
            return `${port} reports cluster_state ${infoField(info, 'cluster_state')}`;
          const view = await this.viewFrom(port);
          const owner = view.find((n) => n.role === 'primary' && !n.failed && ownsSlot(n, firstSlot));
          if (!owner || owner.port === deadPrimaryPort) return `${port} still sees slot ${firstSlot} on ${owner?.port}`;
          if (!lost.every(([from, to]) => ownsSlot(owner, from) && ownsSlot(owner, to)))
            return `${port} sees ${owner.port} with only part of the lost slots`;
          owners.add(owner.port);
        }
        if (owners.size !== 1) return `nodes disagree on the new primary: ${[...owners].join(', ')}`;
        promoted = [...owners][0] as number;
        if (!running.includes(promoted)) return `the new primary ${promoted} is not running`;
        return undefined;
      },
      timeoutMs,
      `no replica of ${deadPrimaryPort} took over`,
    );
    this.slotsWhenLost.delete(deadPrimaryPort);
    return promoted;
  }

  /**
   * Moves one slot and its keys to the primary on toPort the way an operator does by hand:
   * IMPORTING/MIGRATING, MIGRATE in batches until the slot is empty on the source, then
   * SETSLOT NODE on the target, the source and every other primary. While it runs, clients
   * get ASK redirections for keys already moved, so a test can migrate under load.
   * Resolves once every running node sees the new owner.
   */
  async migrateSlot(slot: number, toPort: number, batchSize = 100): Promise<void> {
    const view = await this.nodes();
    const source = view.find((n) => n.role === 'primary' && !n.failed && ownsSlot(n, slot));
    const target = view.find((n) => n.port === toPort);
    if (!source) throw new Error(`no healthy primary owns slot ${slot}`);
    if (target?.role !== 'primary') throw new Error(`${toPort} is not a primary`);
    if (source.port === toPort) return;
    await redisCall(toPort, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', source.id]);
    await redisCall(source.port, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', target.id]);
    for (;;) {
      const keys = (await redisCall(source.port, ['CLUSTER', 'GETKEYSINSLOT', slot, batchSize])) as string[];
      if (keys.length === 0) break;
      await redisCall(source.port, ['MIGRATE', '127.0.0.1', toPort, '', 0, 5000, 'REPLACE', 'KEYS', ...keys], 10_000);
    }
    // The target first: it bumps its config epoch, so its claim wins over any stale gossip.
    await redisCall(toPort, ['CLUSTER', 'SETSLOT', slot, 'NODE', target.id]);
    await redisCall(source.port, ['CLUSTER', 'SETSLOT', slot, 'NODE', target.id]);
    for (const node of view) {
      if (node.role !== 'primary' || node.port === toPort || node.port === source.port) continue;
      if (!this.runningPorts().includes(node.port)) continue;
      // Only speeds up convergence; gossip gets there anyway.
      await redisCall(node.port, ['CLUSTER', 'SETSLOT', slot, 'NODE', target.id]).catch(() => undefined);
    }
    await waitUntil(
      async () => {
        for (const port of this.runningPorts()) {
          const owner = (await this.viewFrom(port)).find((n) => n.role === 'primary' && ownsSlot(n, slot));
          if (owner?.port !== toPort) return `${port} sees slot ${slot} on ${owner?.port}`;
        }
        return undefined;
      },
      10_000,
      `slot ${slot} did not settle on ${toPort}`,
    );
  }

  /** Moves slotCount slots (and their keys) from one primary to another with `redis-cli --cluster reshard`. */
  async reshard(fromPort: number, toPort: number, slotCount: number): Promise<void> {
    const view = await this.nodes();
    const from = view.find((n) => n.port === fromPort);
    const to = view.find((n) => n.port === toPort);
    if (!from || !to) throw new Error(`unknown node ${from ? toPort : fromPort}`);
    await runCli(
      [
        '--cluster',
        'reshard',
        `127.0.0.1:${fromPort}`,
        '--cluster-from',
        from.id,
        '--cluster-to',
        to.id,
        '--cluster-slots',
        String(slotCount),
        '--cluster-yes',
      ],
      60_000,
    );
    await this.waitUntilHealthy(15_000);
  }

  /**
   * Waits until every running node reports cluster_state:ok with all slots served, every
   * running node sees the same slot owners, and every running replica's link to its primary is up.
   */
  async waitUntilHealthy(timeoutMs = 20_000): Promise<void> {
    await waitUntil(() => this.unhealthyReason(), timeoutMs, 'the cluster did not become healthy');
  }

  /** Kills every node and removes the temp dir. */
  async close(): Promise<void> {
    await Promise.all([...this.processes.values()].map((node) => killChild(node.child)));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async unhealthyReason(): Promise<string | undefined> {
    const running = this.runningPorts();
    let agreed: string | undefined;
    for (const port of running) {
      const info = String(await redisCall(port, ['CLUSTER', 'INFO']));
      if (infoField(info, 'cluster_state') !== 'ok')
        return `${port} reports cluster_state ${infoField(info, 'cluster_state')}`;
      if (infoField(info, 'cluster_slots_ok') !== String(CLUSTER_SLOTS))
        return `${port} serves ${infoField(info, 'cluster_slots_ok')} slots`;
      const view = await this.viewFrom(port);
      if (view.length < this.processes.size) return `${port} knows ${view.length} nodes of ${this.processes.size}`;
      const owners = ownership(view);
      if (agreed === undefined) agreed = owners;
      else if (owners !== agreed) return `${port} sees slot owners ${owners}, others ${agreed}`;
      const replication = String(await redisCall(port, ['INFO', 'replication']));
      if (infoField(replication, 'role') === 'slave' && infoField(replication, 'master_link_status') !== 'up')
        return `${port} is a replica whose link is ${infoField(replication, 'master_link_status')}`;
    }
    return undefined;
  }

  private async rememberSlots(port: number): Promise<void> {
    const self = (await this.viewFrom(port).catch(() => this.nodes())).find((n) => n.port === port);
    if (self?.role === 'primary' && self.slots.length > 0) this.slotsWhenLost.set(port, self.slots);
  }

  private async viewFrom(port: number): Promise<ClusterNodeInfo[]> {
    return parseClusterNodes(String(await redisCall(port, ['CLUSTER', 'NODES'])));
  }

  private runningPorts(): number[] {
    return [...this.processes.values()]
      .filter((n) => n.child && n.child.exitCode === null && n.child.signalCode === null && !n.stopped)
      .map((n) => n.port);
  }

  private node(port: number): NodeProcess {
    const node = this.processes.get(port);
    if (!node) throw new Error(`${port} is not a node of this cluster`);
    return node;
  }

  private async spawnNode(port: number): Promise<void> {
    const node = this.node(port);
    node.child = spawnOwned('redis-server', [node.conf]);
    node.stopped = false;
    await waitForPing(port, 5000, `cluster node ${port} did not start`);
  }
}
