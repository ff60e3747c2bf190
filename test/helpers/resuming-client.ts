import { EventSource, type EventSourceFetchInit, type FetchLikeResponse, type ReaderLike } from 'eventsource';

/**
 * A browser-like client that follows a user's stream across replica failures, built on the
 * `eventsource` package (the WHATWG EventSource for Node): it reconnects by itself and sends
 * the `Last-Event-ID` it holds, as a browser does. Its custom fetch plays the load balancer:
 * each (re)connection goes to the first replica of `replicas()` that answers 200, skipping
 * replicas that refuse the connection or answer 503 (draining), as a balancer with health
 * checks would.
 *
 * Two things differ from a browser and are worth knowing when reading results:
 * - `eventsource` has no option for the reconnect delay (3 s until a `retry:` field says
 *   otherwise), so every response body handed to it is prefixed with `retry:<reconnectMs>`.
 *   A later `retry:` from the hub (the drain's hint) still overrides it, as it would in a browser.
 * - `eventsource` (through eventsource-parser 3) only takes an id from frames that carry data:
 *   an `id:` alone (the hub's stream position) does not move its last event id, unlike a
 *   browser's EventSource. A stream that saw no event before failing reconnects without
 *   Last-Event-ID. `connections[i].lastEventId` shows what each reconnect actually sent.
 */

export interface ReceivedMessage {
  /** The event type: "message" for plain events, else the `event:` name (e.g. "reset"). */
  type: string;
  id: string;
  data: string;
  /** Index into `connections` of the connection that delivered it. */
  connection: number;
}

export interface ConnectionRecord {
  /** Base URL of the replica that accepted the stream. */
  replica: string;
  /** The Last-Event-ID header the client sent, if any. */
  lastEventId: string | undefined;
  at: number;
}

export interface ResumingClientOptions {
  /** e.g. `/api/v1/stream/contexts`. */
  path: string;
  token: string;
  /** Replica base URLs to try, in order, for each (re)connection. Read at every attempt. */
  replicas: () => string[];
  /** Reconnect delay until the hub sends its own `retry:`; default 100 ms. */
  reconnectMs?: number;
  /** Shown in failure messages. */
  name?: string;
  /** Event names to record besides "message" and "reset". */
  extraEventTypes?: string[];
}

function prefixedReader(prefix: Uint8Array, inner: ReaderLike): ReaderLike {
  let sentPrefix = false;
  return {
    read: async () => {
      if (!sentPrefix) {
        sentPrefix = true;
        return { done: false, value: prefix };
      }
      return inner.read();
    },
    cancel: () => inner.cancel(),
  };
}

export class ResumingClient {
  readonly name: string;
  /** Every message event received, in order, across all connections. */
  readonly messages: ReceivedMessage[] = [];
  /** Every stream the client got (status 200), in order. */
  readonly connections: ConnectionRecord[] = [];
  /** Connection attempts, including refused ones and 503s. */
  attempts = 0;
  /** Errors the EventSource reported (each stream end or failed attempt is one). */
  readonly errors: string[] = [];
  private readonly source: EventSource;
  private closed = false;

  constructor(private readonly options: ResumingClientOptions) {
    this.name = options.name ?? options.path;
    const base = options.replicas()[0];
    if (base === undefined) throw new Error('no replica to connect to');
    this.source = new EventSource(new URL(options.path, base), { fetch: this.balancedFetch });
    const record = (type: string) => (event: MessageEvent) => {
      this.messages.push({
        type,
        id: event.lastEventId,
        data: String(event.data),
        connection: this.connections.length - 1,
      });
    };
    for (const type of ['message', 'reset', ...(options.extraEventTypes ?? [])]) {
      this.source.addEventListener(type, record(type));
    }
    this.source.addEventListener('error', (event) => {
      const detail = event as unknown as { message?: string; code?: number };
      this.errors.push(`${detail.code ?? ''} ${detail.message ?? 'error'}`.trim());
    });
  }

  /** The load balancer: first replica that takes the stream wins. */
  private readonly balancedFetch = async (
    url: string | URL,
    init: EventSourceFetchInit,
  ): Promise<FetchLikeResponse> => {
    const requested = new URL(url);
    const lastEventId = init.headers['Last-Event-ID'];
    let lastError: unknown = new Error('no replica available');
    for (const base of this.options.replicas()) {
      if (this.closed) break;
      this.attempts++;
      const target = new URL(requested.pathname + requested.search, base);
      let res: Response;
      try {
        res = await fetch(target, {
          ...init,
          headers: { ...init.headers, Authorization: `Bearer ${this.options.token}` },
        } as RequestInit);
      } catch (err) {
        if ((init.signal as AbortSignal | undefined)?.aborted) throw err;
        lastError = err; // refused or reset: the replica is gone, try the next
        continue;
      }
      if (res.status === 503) {
        await res.body?.cancel().catch(() => undefined);
        lastError = new Error(`${base} answered 503`);
        continue;
      }
      if (res.status !== 200 || res.body === null) return res;
      this.connections.push({ replica: base, lastEventId, at: Date.now() });
      const prefix = new TextEncoder().encode(`retry:${this.options.reconnectMs ?? 100}\n\n`);
      const body = { getReader: () => prefixedReader(prefix, res.body?.getReader() as ReaderLike) };
      return { body, url: res.url, status: res.status, redirected: res.redirected, headers: res.headers };
    }
    // A TypeError is what a failed network fetch throws; EventSource schedules a reconnect on it.
    throw new TypeError(`no replica took the stream: ${(lastError as Error).message ?? String(lastError)}`);
  };

  /** 0 connecting, 1 open, 2 closed for good (a non-200 answer, or close()). */
  get readyState(): number {
    return this.source.readyState;
  }

  /** Plain message events (what the application handles). */
  events(): ReceivedMessage[] {
    return this.messages.filter((m) => m.type === 'message');
  }

  resets(): ReceivedMessage[] {
    return this.messages.filter((m) => m.type === 'reset');
  }

  /** Reconnections after the first stream. */
  get reconnects(): number {
    return Math.max(0, this.connections.length - 1);
  }

  async waitFor(predicate: (client: ResumingClient) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this)) {
      if (Date.now() > deadline) throw new Error(`${this.name}: timed out waiting for ${what}; ${this.describe()}`);
      if (this.source.readyState === this.source.CLOSED) {
        throw new Error(`${this.name}: EventSource closed for good while waiting for ${what}; ${this.describe()}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Resolves once the first stream is open. */
  opened(timeoutMs = 10_000): Promise<void> {
    return this.waitFor((c) => c.connections.length > 0 && c.readyState === 1, timeoutMs, 'the first stream');
  }

  describe(): string {
    const last = this.messages[this.messages.length - 1];
    return (
      `${this.messages.length} messages (last id ${last?.id ?? 'none'}), ` +
      `${this.connections.length} connections ${JSON.stringify(this.connections.map((c) => [c.replica, c.lastEventId ?? null]))}, ` +
      `${this.attempts} attempts, errors: ${JSON.stringify(this.errors.slice(-5))}`
    );
  }

  close(): void {
    this.closed = true;
    this.source.close();
  }
}
