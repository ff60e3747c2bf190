import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';

/**
 * What one direction of a proxied connection has taken in and not yet passed on: chunks in
 * order, each with the time it may leave, and the peer's close at the end if it came.
 */
interface Direction {
  from: Socket;
  to: Socket;
  queue: Array<{ chunk: Buffer; due: number }>;
  ended: boolean;
  /** Silent for good: nothing more is passed on (a half-open connection). */
  silenced: boolean;
  timer: NodeJS.Timeout | undefined;
}

interface Link {
  client: Socket;
  upstream: Socket;
  directions: [Direction, Direction];
}

/**
 * A TCP proxy between the hubs and their store that the suite controls: it adds latency, black-
 * holes traffic, or resets connections, as a flaky network between a replica and Redis would.
 *
 * Bytes are never dropped: TCP either delivers them in order or breaks the connection, so a
 * black hole holds what it takes in and passes it on when it lifts, as retransmission would
 * after a partition that heals. A client that closes meanwhile has its close held as well.
 */
export class TcpProxy {
  private readonly links = new Set<Link>();
  private latencyMs = 0;
  private blackholed = false;
  /** Until then every connection is reset as it arrives: a link that keeps failing, not one blip. */
  private resettingUntil = 0;

  private constructor(
    private readonly server: Server,
    private readonly target: { host: string; port: number },
  ) {
    server.on('connection', (client) => this.accept(client));
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    // Half-open sockets: a client's FIN is passed on (or held) like its bytes, not answered at once.
    const server = createServer({ allowHalfOpen: true });
    const proxy = new TcpProxy(server, target);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Connections open through the proxy now. */
  get connections(): number {
    return this.links.size;
  }

  /** Every byte, both ways, leaves this much later than it arrived (bytes already held keep their time). */
  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  /** Stops forwarding both ways (connections stay open and new ones are accepted); `false` lets it all through. */
  setBlackhole(on: boolean): void {
    this.blackholed = on;
    if (!on) for (const link of this.links) for (const direction of link.directions) this.flush(direction);
  }

  /**
   * The connections open now go silent and stay so, both ways, while new ones work: what a
   * dropped NAT or conntrack entry does, and only a client that gives up on a socket recovers.
   */
  silenceOpenConnections(): void {
    for (const link of this.links) for (const direction of link.directions) direction.silenced = true;
  }

  /**
   * Resets every connection (RST to both ends), and for `forMs` every new one as soon as it is
   * accepted, so clients reconnecting meanwhile fail again.
   */
  reset(forMs = 0): void {
    this.resettingUntil = Date.now() + forMs;
    for (const link of [...this.links]) this.destroy(link);
  }

  async close(): Promise<void> {
    for (const link of [...this.links]) this.destroy(link);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    if (Date.now() < this.resettingUntil) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect({ port: this.target.port, host: this.target.host, allowHalfOpen: true });
    const direction = (from: Socket, to: Socket): Direction => ({
      from,
      to,
      queue: [],
      ended: false,
      silenced: false,
      timer: undefined,
    });
    const link: Link = { client, upstream, directions: [direction(client, upstream), direction(upstream, client)] };
    this.links.add(link);
    for (const d of link.directions) {
      d.from.setNoDelay(true);
      d.from.on('data', (chunk: Buffer) => {
        d.queue.push({ chunk, due: Date.now() + this.latencyMs });
        this.flush(d);
      });
      d.from.on('end', () => {
        d.ended = true;
        this.flush(d);
      });
      // A reset or error on one end: the other end sees the connection break, as it would without a proxy.
      d.from.on('error', () => this.destroy(link));
      d.from.on('close', () => {
        if (!d.ended) this.destroy(link);
        else if (client.destroyed && upstream.destroyed) this.links.delete(link);
      });
    }
  }

  /** Passes on what is due, in order; comes back when the next chunk is. */
  private flush(d: Direction): void {
    clearTimeout(d.timer);
    d.timer = undefined;
    if (this.blackholed || d.silenced || d.to.destroyed) return;
    const now = Date.now();
    while (d.queue.length > 0) {
      const next = d.queue[0] as { chunk: Buffer; due: number };
      if (next.due > now) {
        d.timer = setTimeout(() => this.flush(d), next.due - now);
        return;
      }
      d.queue.shift();
      d.to.write(next.chunk);
    }
    if (d.ended) d.to.end();
  }

  private destroy(link: Link): void {
    if (!this.links.delete(link)) return;
    for (const d of link.directions) {
      clearTimeout(d.timer);
      d.queue = [];
    }
    for (const socket of [link.client, link.upstream]) {
      if (socket.destroyed) continue;
      // RST where the socket is connected; one still connecting can only be destroyed.
      if (socket.readyState === 'open' || socket.readyState === 'readOnly' || socket.readyState === 'writeOnly')
        socket.resetAndDestroy();
      else socket.destroy();
    }
  }
}
