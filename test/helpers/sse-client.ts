import { request, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface SseFrame {
  event?: string;
  id?: string;
  retry?: string;
  data: string;
  /** False for frames without data lines (e.g. an `id:` alone), which EventSource does not dispatch. */
  hasData: boolean;
}

export interface SseStream {
  status: number;
  headers: IncomingHttpHeaders;
  /** Everything received so far, byte for byte. */
  raw(): string;
  /** Complete frames received so far. */
  frames(): SseFrame[];
  /** Complete frames an EventSource would dispatch, other than heartbeats. */
  events(): SseFrame[];
  /** The last event id an EventSource would hold now (the last `id:` field received). */
  lastEventId(): string | undefined;
  waitFor(predicate: (stream: SseStream) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  waitForEvents(count: number, timeoutMs?: number): Promise<SseFrame[]>;
  /** Resolves once the stream has sent its opening position (its first `id:`). */
  waitForPosition(timeoutMs?: number, what?: string): Promise<void>;
  /** Resolves when the server ends the response or the socket closes. */
  ended: Promise<void>;
  isEnded(): boolean;
  close(): void;
}

/** One SSE block parsed as the WHATWG algorithm does (one leading space stripped; CR, LF, CRLF). */
function parseBlock(block: string): SseFrame | undefined {
  const frame: SseFrame = { data: '', hasData: false };
  const dataLines: string[] = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') dataLines.push(value);
    else if (name === 'event') frame.event = value;
    else if (name === 'id') frame.id = value;
    else if (name === 'retry') frame.retry = value;
  }
  frame.data = dataLines.join('\n');
  frame.hasData = dataLines.length > 0;
  return dataLines.length > 0 || frame.retry !== undefined || frame.id !== undefined ? frame : undefined;
}

const BLOCK_END = /\r\n\r\n|\n\n|\r\r/;

/** Parses the complete blocks of `text` and returns the incomplete tail. */
function parseInto(frames: SseFrame[], text: string): string {
  let rest = text;
  for (;;) {
    const match = BLOCK_END.exec(rest);
    if (!match) return rest;
    const frame = parseBlock(rest.slice(0, match.index));
    if (frame) frames.push(frame);
    rest = rest.slice(match.index + match[0].length);
  }
}

export function parseFrames(text: string): SseFrame[] {
  const frames: SseFrame[] = [];
  parseInto(frames, text);
  return frames;
}

const isEvent = (f: SseFrame): boolean => f.hasData && f.event !== 'heartbeat';

export interface OpenOptions {
  token?: string;
  cookie?: string;
  headers?: Record<string, string>;
}

export function openStream(baseUrl: string, path: string, options: OpenOptions = {}): Promise<SseStream> {
  const url = new URL(path, baseUrl);
  const headers: Record<string, string> = { Accept: 'text/event-stream', ...options.headers };
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  if (options.cookie) headers.Cookie = options.cookie;
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', headers, agent: false }, (res) => {
      let text = '';
      let tail = '';
      const parsed: SseFrame[] = [];
      const events: SseFrame[] = [];
      let lastId: string | undefined;
      let ended = false;
      let endedResolve: () => void = () => undefined;
      const endedPromise = new Promise<void>((r) => (endedResolve = r));
      const markEnded = (): void => {
        ended = true;
        endedResolve();
      };
      res.setEncoding('utf8');
      // Parsed as it arrives, so a fast stream is read at socket speed however large it grows.
      res.on('data', (chunk: string) => {
        text += chunk;
        const before = parsed.length;
        tail = parseInto(parsed, tail + chunk);
        for (let i = before; i < parsed.length; i++) {
          const frame = parsed[i] as SseFrame;
          if (frame.id !== undefined) lastId = frame.id;
          if (isEvent(frame)) events.push(frame);
        }
      });
      res.on('end', markEnded);
      res.on('close', markEnded);
      res.on('error', markEnded);
      const stream: SseStream = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        raw: () => text,
        frames: () => parsed,
        events: () => events,
        lastEventId: () => lastId,
        ended: endedPromise,
        isEnded: () => ended,
        close: () => {
          req.destroy();
          markEnded();
        },
        async waitFor(predicate, timeoutMs = 5000, what = 'condition') {
          const deadline = Date.now() + timeoutMs;
          while (!predicate(stream)) {
            if (Date.now() > deadline) {
              throw new Error(`timed out waiting for ${what}; received so far:\n${text.slice(-2000)}`);
            }
            await new Promise((r) => setTimeout(r, 10));
          }
        },
        async waitForEvents(count, timeoutMs = 5000) {
          await stream.waitFor((s) => s.events().length >= count, timeoutMs, `${count} events`);
          return [...events];
        },
        waitForPosition(timeoutMs = 10_000, what = 'the opening position') {
          return stream.waitFor((s) => s.lastEventId() !== undefined, timeoutMs, what);
        },
      };
      resolve(stream);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A stream request from a client that stops reading once the stream has opened (its first `id:`
 * line; or at once, without `untilOpened`): the kernel's buffers fill, then the hub queues what it
 * cannot write. Resume the socket to read what got through.
 */
export async function openStalledStream(
  port: number,
  path: string,
  token: string,
  untilOpened = false,
): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  if (untilOpened) {
    let received = '';
    await new Promise<void>((resolve) => {
      const read = (chunk: Buffer): void => {
        received += chunk.toString('latin1');
        if (!received.includes('\nid:')) return;
        socket.off('data', read);
        resolve();
      };
      socket.on('data', read);
    });
  }
  socket.pause();
  return socket;
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

export type StreamName = 'agui' | 'a2a' | 'contexts' | 'analytics';

/** The streams an event of `kind` is delivered on (the README's table, written out independently of src/routing). */
export function streamsFor(kind: string): StreamName[] {
  if (kind === 'agui') return ['agui', 'contexts'];
  if (kind === 'a2a') return ['a2a', 'contexts'];
  if (kind === 'system') return ['contexts'];
  if (kind === 'analytics') return ['analytics'];
  return [];
}

/** The exact data a stream shows for an event published as `bytes`. */
export function shownAs(stream: StreamName, kind: string, bytes: string): string {
  return stream === 'contexts' ? `{"protocol":"${kind}","event":${bytes}}` : bytes;
}
