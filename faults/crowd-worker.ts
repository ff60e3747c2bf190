/**
 * The crowd: a process of its own, forked by the fault suite (crowd.ts), that holds thousands of
 * SSE streams and hammers webhooks, so that the suite's own process (the measured publisher, the
 * browser-like clients, the readiness sampler) keeps its event loop to itself. Streams are raw
 * http.request responses parsed here: an EventSource per stream would cost more than the hub.
 *
 * Compiled on its own (only node: imports and type imports), so keep it self-contained.
 */
import { request } from 'node:http';
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

class Stream {
  readonly ids: string[] = [];
  resets = 0;
  connections = 0;
  lastConnectedAt = 0;
  isOpen = false;
  private lastEventId: string | undefined;
  private tail = '';
  private closing = false;
  private current: ReturnType<typeof request> | undefined;

  constructor(readonly spec: StreamSpec) {
    this.lastEventId = spec.lastEventId;
  }

  /** Tries each replica in turn; resolves with the status of the last answer (0: none answered). */
  async connect(): Promise<number> {
    let status = 0;
    for (const replica of this.spec.replicas) {
      if (this.closing) return status;
      status = await this.connectTo(replica);
      if (status === 200) return status;
    }
    return status;
  }

  private connectTo(replica: string): Promise<number> {
    return new Promise((resolve) => {
      const url = new URL(this.spec.path, replica);
      const headers: Record<string, string> = {
        accept: 'text/event-stream',
        authorization: `Bearer ${this.spec.token}`,
      };
      if (this.lastEventId !== undefined) headers['last-event-id'] = this.lastEventId;
      let settled = false;
      const req = request(url, { headers, agent: false });
      this.current = req;
      req.on('response', (res) => {
        settled = true;
        if (res.statusCode !== 200) {
          res.resume();
          req.destroy();
          resolve(res.statusCode ?? 0);
          return;
        }
        this.isOpen = true;
        this.connections++;
        this.lastConnectedAt = Date.now();
        this.tail = '';
        resolve(200);
        res.on('close', () => this.ended());
        if (this.spec.stall) {
          res.pause();
          return;
        }
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => this.parse(chunk));
      });
      req.on('error', () => {
        if (settled) return;
        settled = true;
        resolve(0);
      });
      req.end();
    });
  }

  private ended(): void {
    this.isOpen = false;
    if (this.closing || !this.spec.reconnect) return;
    const again = async (): Promise<void> => {
      if ((await this.connect()) !== 200 && !this.closing) setTimeout(() => void again(), 200);
    };
    void again();
  }

  private parse(chunk: string): void {
    const text = this.tail + chunk;
    let start = 0;
    for (;;) {
      const end = text.indexOf('\n\n', start);
      if (end === -1) break;
      this.dispatch(text.slice(start, end));
      start = end + 2;
    }
    this.tail = text.slice(start);
  }

  /** One block, as an EventSource reads it: an `id:` alone still moves the last event id. */
  private dispatch(block: string): void {
    let event = '';
    let id: string | undefined;
    let hasData = false;
    for (const line of block.split('\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const field = line.slice(0, colon);
      const value = line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'event') event = value;
      else if (field === 'data') hasData = true;
    }
    if (id !== undefined) this.lastEventId = id;
    if (!hasData) return;
    if (event === 'reset') this.resets++;
    else if ((event === '' || event === 'message') && id !== undefined) this.ids.push(id);
  }

  report(): StreamReport {
    return {
      user: this.spec.user,
      ids: this.ids,
      resets: this.resets,
      connections: this.connections,
      lastConnectedAt: this.lastConnectedAt,
    };
  }

  close(): void {
    this.closing = true;
    this.current?.destroy();
  }
}

const streams: Stream[] = [];

async function open(specs: StreamSpec[], concurrency: number): Promise<CrowdReply> {
  const fresh = specs.map((spec) => new Stream(spec));
  streams.push(...fresh);
  const statuses: Record<string, number> = {};
  let next = 0;
  let opened = 0;
  const lane = async (): Promise<void> => {
    for (let stream = fresh[next++]; stream !== undefined; stream = fresh[next++]) {
      const status = await stream.connect();
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === 200) opened++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  return { type: 'opened', opened, statuses };
}

/** An event body of exactly `bytes` bytes once the hub has taken `user_id` out of it. */
function eventOf(n: number, bytes: number): string {
  const head = `{"type":"LOAD","n":${n},"pad":"`;
  return `${head}${'x'.repeat(Math.max(0, bytes - head.length - 2))}"}`;
}

async function hammer(spec: HammerSpec): Promise<HammerResult> {
  const started = Date.now();
  const stopAt = spec.durationMs === undefined ? Number.POSITIVE_INFINITY : started + spec.durationMs;
  const limit = spec.count ?? Number.POSITIVE_INFINITY;
  const result: HammerResult = { statuses: {}, acceptedBytes: 0, ids: {}, elapsedMs: 0 };
  let sent = 0;
  const lane = async (): Promise<void> => {
    while (sent < limit && Date.now() < stopAt) {
      const n = sent++;
      const user = spec.users[n % spec.users.length] as string;
      const event = eventOf(n, spec.eventBytes);
      let status = 'error';
      try {
        const res = await fetch(`${spec.replica}/api/v1/webhook/${spec.kind}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${spec.token}`, 'content-type': 'application/json' },
          body: `{"user_id":${JSON.stringify(user)},${event.slice(1)}`,
          signal: AbortSignal.timeout(10_000),
        });
        status = String(res.status);
        if (res.status === 202) {
          const { id } = (await res.json()) as { id: string };
          const ids = result.ids[user] ?? [];
          ids.push(id);
          result.ids[user] = ids;
          result.acceptedBytes += Buffer.byteLength(event);
        } else {
          await res.body?.cancel();
        }
      } catch {
        // Counted as 'error': a hammer that cannot reach the replica is a finding, not a crash.
      }
      result.statuses[status] = (result.statuses[status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, spec.concurrency) }, lane));
  result.elapsedMs = Date.now() - started;
  return result;
}

async function handle(command: CrowdCommand): Promise<CrowdReply> {
  switch (command.cmd) {
    case 'open':
      return open(command.streams, command.concurrency);
    case 'progress':
      return {
        type: 'progress',
        open: streams.filter((stream) => stream.isOpen).length,
        events: streams.map((stream) => stream.ids.length),
      };
    case 'report':
      return { type: 'report', streams: streams.map((stream) => stream.report()) };
    case 'hammer':
      return { type: 'hammered', result: await hammer(command.spec) };
    case 'drop': {
      const users = new Set(command.users);
      const dropped = streams.filter((stream) => users.has(stream.spec.user));
      for (const stream of dropped) stream.close();
      return { type: 'dropped', streams: dropped.length };
    }
    case 'close':
      for (const stream of streams) stream.close();
      return { type: 'closed' };
  }
}

process.on('message', ({ seq, command }: CrowdRequest) => {
  const answer = (reply: CrowdReply): void => {
    process.send?.({ seq, reply } satisfies CrowdResponse);
  };
  handle(command).then(answer, (err: unknown) => answer({ type: 'error', message: String(err) }));
});
process.on('disconnect', () => process.exit(0));
