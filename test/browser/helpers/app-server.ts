import { readFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer, request } from 'node:http';
import type { Socket } from 'node:net';
import { extname, join, normalize } from 'node:path';

const ROOT = join(__dirname, '..', '..', '..');

/** What `/app/...` serves: the test page, the built client, the example. */
const STATIC: Array<[prefix: string, dir: string]> = [
  ['/app/client/', join(ROOT, 'dist', 'client')],
  ['/app/example/client/', join(ROOT, 'dist', 'client')],
  ['/app/example/', join(ROOT, 'examples', 'browser')],
  ['/app/', join(__dirname, '..', 'fixtures')],
];

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

/**
 * The page's origin: serves the app under `/app/` and proxies everything else to the first hub
 * replica that accepts the connection, the way a load balancer in front of ssehub would. It can
 * answer 502 with an HTML error page for a while, as a proxy does while its upstreams are away.
 */
export class AppServer {
  upstreams: string[];
  private failingUntil = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly streaming = new WeakSet<Socket>();
  url = '';

  constructor(upstreams: string[]) {
    this.upstreams = upstreams;
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    this.url = `http://127.0.0.1:${address.port}`;
    return this;
  }

  /** Answers 502 to every API request for `ms`, and cuts the streams open now. */
  failFor(ms: number): void {
    this.failingUntil = Date.now() + ms;
    this.cutStreams();
  }

  cutStreams(): void {
    for (const socket of this.sockets) if (this.streaming.has(socket)) socket.destroy();
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] as string;
    const mount = STATIC.find(([prefix]) => path.startsWith(prefix));
    if (mount) {
      const [prefix, dir] = mount;
      const file = normalize(join(dir, path.slice(prefix.length) || 'index.html'));
      if (!file.startsWith(dir)) return void res.writeHead(403).end();
      try {
        const body = await readFile(file);
        res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    if (Date.now() < this.failingUntil) {
      res.writeHead(502, { 'Content-Type': 'text/html' }).end('<html><body><h1>502 Bad Gateway</h1></body></html>');
      return;
    }
    // Buffered, as a load balancer does, so that a request can go to the next upstream whole.
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    this.proxy(req, Buffer.concat(chunks), res, [...this.upstreams]);
  }

  private proxy(req: IncomingMessage, body: Buffer, res: ServerResponse, candidates: string[]): void {
    const upstream = candidates.shift();
    if (upstream === undefined) {
      res.writeHead(502, { 'Content-Type': 'text/html' }).end('<html><body>no upstream</body></html>');
      return;
    }
    const target = new URL(req.url ?? '/', upstream);
    const outgoing = request(
      target,
      { method: req.method, headers: { ...req.headers, host: target.host, 'x-forwarded-host': req.headers.host } },
      (answer) => {
        if ((answer.headers['content-type'] ?? '').startsWith('text/event-stream')) this.streaming.add(req.socket);
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        // An upstream that dies mid-stream: the browser must see the stream break, as behind a real proxy.
        answer.on('error', () => res.destroy());
        answer.on('aborted', () => res.destroy());
      },
    );
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      if (!res.headersSent && error.code === 'ECONNREFUSED') return this.proxy(req, body, res, candidates);
      res.destroy();
    });
    res.on('close', () => outgoing.destroy());
    outgoing.end(body);
  }
}
