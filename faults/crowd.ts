import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { transformFileSync } from '@swc/core';
import { Redis } from 'ioredis';
import type {
  CrowdCommand,
  CrowdReply,
  CrowdRequest,
  CrowdResponse,
  HammerResult,
  HammerSpec,
  StreamReport,
  StreamSpec,
} from './crowd-protocol';
import { sleep } from '../test/helpers/sse-client';

/**
 * Many streams and webhook hammering from a process of their own (crowd-worker.ts): thousands of
 * sockets and a flat-out publisher would otherwise share the event loop that times the suite's
 * measured publishes. The worker is TypeScript like the rest; it is compiled with swc (as jest
 * runs the suite) into a temporary file, since node cannot run TypeScript itself.
 */
export class Crowd {
  private seq = 0;
  private readonly waiting = new Map<number, (reply: CrowdReply) => void>();
  /** Streams in the order they were opened, which is the order of progress counts. */
  readonly specs: StreamSpec[] = [];

  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {
    child.on('message', ({ seq, reply }: CrowdResponse) => {
      this.waiting.get(seq)?.(reply);
      this.waiting.delete(seq);
    });
  }

  static start(): Crowd {
    const dir = mkdtempSync(join(tmpdir(), 'ssehub-crowd-'));
    const { code } = transformFileSync(join(__dirname, 'crowd-worker.ts'), {
      jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
      module: { type: 'commonjs' },
    });
    const file = join(dir, 'crowd-worker.js');
    writeFileSync(file, code);
    return new Crowd(fork(file, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), dir);
  }

  private async ask(command: CrowdCommand): Promise<CrowdReply> {
    const seq = ++this.seq;
    const reply = await new Promise<CrowdReply>((resolve, reject) => {
      this.waiting.set(seq, resolve);
      this.child.send({ seq, command } satisfies CrowdRequest, (err) => err && reject(err));
    });
    if (reply.type === 'error') throw new Error(`crowd: ${reply.message}`);
    return reply;
  }

  /** Opens the streams, `concurrency` connection attempts at a time; resolves with how many opened. */
  async open(streams: StreamSpec[], concurrency = 100): Promise<number> {
    this.specs.push(...streams);
    const reply = await this.ask({ cmd: 'open', streams, concurrency });
    if (reply.type !== 'opened') throw new Error(`crowd: unexpected ${reply.type}`);
    if (reply.opened !== streams.length) {
      throw new Error(`crowd: ${reply.opened} of ${streams.length} streams opened (${JSON.stringify(reply.statuses)})`);
    }
    return reply.opened;
  }

  async progress(): Promise<{ open: number; events: number[] }> {
    const reply = await this.ask({ cmd: 'progress' });
    if (reply.type !== 'progress') throw new Error(`crowd: unexpected ${reply.type}`);
    return reply;
  }

  /** Resolves once every stream has received at least `counts[i]` events (or throws after timeoutMs). */
  async waitForEvents(counts: (i: number) => number, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { events } = await this.progress();
      const behind = events.filter((got, i) => got < counts(i)).length;
      if (behind === 0) return;
      if (Date.now() > deadline) throw new Error(`crowd: ${behind} streams still waiting for ${what}`);
      await sleep(50);
    }
  }

  async report(): Promise<StreamReport[]> {
    const reply = await this.ask({ cmd: 'report' });
    if (reply.type !== 'report') throw new Error(`crowd: unexpected ${reply.type}`);
    return reply.streams;
  }

  async hammer(spec: HammerSpec): Promise<HammerResult> {
    const reply = await this.ask({ cmd: 'hammer', spec });
    if (reply.type !== 'hammered') throw new Error(`crowd: unexpected ${reply.type}`);
    return reply.result;
  }

  async drop(users: string[]): Promise<void> {
    const reply = await this.ask({ cmd: 'drop', users });
    if (reply.type !== 'dropped') throw new Error(`crowd: unexpected ${reply.type}`);
  }

  async close(): Promise<void> {
    if (this.child.connected) await this.ask({ cmd: 'close' }).catch(() => undefined);
    this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Loss and duplication of streams measured against the ids acknowledged for their users. */
export interface Tally {
  acknowledged: number;
  delivered: number;
  lost: number;
  duplicated: number;
  resets: number;
}

export function tally(streams: StreamReport[], acknowledged: (user: string) => readonly string[]): Tally {
  const total: Tally = { acknowledged: 0, delivered: 0, lost: 0, duplicated: 0, resets: 0 };
  for (const stream of streams) {
    const expected = acknowledged(stream.user);
    const got = new Set(stream.ids);
    total.acknowledged += expected.length;
    total.delivered += stream.ids.length;
    total.duplicated += stream.ids.length - got.size;
    total.resets += stream.resets;
    total.lost += expected.filter((id) => !got.has(id)).length;
  }
  return total;
}

/** One event of a `POST /api/v1/webhook/batch`. */
export interface BatchItem {
  user: string;
  event: Record<string, unknown>;
}

/**
 * Publishes through the batch webhook, in requests of at most `perRequest` items; resolves with
 * the id of each item answered 202 (undefined for the others), in order.
 */
export async function publishBatch(
  replica: string,
  token: string,
  items: BatchItem[],
  perRequest = 1000,
): Promise<Array<string | undefined>> {
  const ids: Array<string | undefined> = [];
  for (let start = 0; start < items.length; start += perRequest) {
    const chunk = items.slice(start, start + perRequest);
    const res = await fetch(`${replica}/api/v1/webhook/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(chunk.map(({ user, event }) => ({ kind: 'agui', user_id: user, event }))),
      signal: AbortSignal.timeout(30_000),
    });
    if (res.status !== 207) throw new Error(`batch webhook answered ${res.status}: ${await res.text()}`);
    const { results } = (await res.json()) as { results: Array<{ status: number; id?: string }> };
    for (const result of results) ids.push(result.status === 202 ? result.id : undefined);
  }
  return ids;
}

/** The `q`-th quantile (0-1) of `values`; 0 for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

/** Samples a figure every 100 ms and keeps the highest (Redis's memory, the kernel's socket memory). */
export class PeakSampler {
  peak = 0;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    private readonly read: () => Promise<number>,
    private readonly stopped: () => void,
  ) {
    this.timer = setInterval(() => void this.sample(), 100);
  }

  static async start(read: () => Promise<number>, stopped: () => void = () => undefined): Promise<PeakSampler> {
    const sampler = new PeakSampler(read, stopped);
    await sampler.sample();
    return sampler;
  }

  /** Redis's `used_memory` (INFO memory), in bytes. */
  static redisMemory(url: string): Promise<PeakSampler> {
    const redis = new Redis(url, { maxRetriesPerRequest: 1 });
    const read = async (): Promise<number> => {
      const info = await redis.info('memory').catch(() => '');
      return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
    };
    return PeakSampler.start(read, () => redis.disconnect());
  }

  /**
   * Memory the kernel holds in TCP socket buffers, machine-wide, in bytes (/proc/net/sockstat
   * counts pages). A reader that stops reading fills its socket's buffers on both ends before the
   * hub ever queues a byte for it.
   */
  static kernelTcpMemory(): Promise<PeakSampler> {
    return PeakSampler.start(async () => {
      const stat = await readFile('/proc/net/sockstat', 'utf8').catch(() => '');
      return Number(/TCP: .* mem (\d+)/.exec(stat)?.[1] ?? 0) * 4096;
    });
  }

  async sample(): Promise<number> {
    const value = await this.read();
    this.peak = Math.max(this.peak, value);
    return value;
  }

  stop(): void {
    clearInterval(this.timer);
    this.stopped();
  }
}

/** Several hammers' results as one. */
export interface HammerResultSummary {
  calls: number;
  statuses: Record<string, number>;
  acceptedBytes: number;
}

export function summarize(results: HammerResult[]): HammerResultSummary {
  const summary: HammerResultSummary = { calls: 0, statuses: {}, acceptedBytes: 0 };
  for (const result of results) {
    summary.acceptedBytes += result.acceptedBytes;
    for (const [status, count] of Object.entries(result.statuses)) {
      summary.statuses[status] = (summary.statuses[status] ?? 0) + count;
      summary.calls += count;
    }
  }
  return summary;
}
