import { connect, type Socket } from 'node:net';
import { startReadyHub, type HubProcess } from '../helpers/hub-process';
import { openStream, sleep } from '../helpers/sse-client';
import { mintToken } from '../helpers/tokens';
import { uid } from '../helpers/wait';

/** A raw client that sends `chunks` one per `everyMs` and records what came back and when the hub hung up. */
interface Trickle {
  received(): string;
  /** Resolves with the milliseconds from the first byte sent to the socket's close. */
  closedAfterMs: Promise<number>;
  stop(): void;
}

function trickle(port: number, chunks: string[], everyMs: number): Trickle {
  const socket: Socket = connect(port, '127.0.0.1');
  let received = '';
  let timer: NodeJS.Timeout | undefined;
  const started = Date.now();
  socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
  socket.on('error', () => undefined);
  const closedAfterMs = new Promise<number>((resolve) =>
    socket.once('close', () => {
      clearInterval(timer);
      resolve(Date.now() - started);
    }),
  );
  let next = 0;
  timer = setInterval(() => {
    if (next < chunks.length && !socket.destroyed) socket.write(chunks[next++] as string);
  }, everyMs);
  return { received: () => received, closedAfterMs, stop: () => socket.destroy() };
}

const bytewise = (text: string): string[] => [...text];

function webhookHead(port: number, token: string, contentLength: number): string {
  return (
    `POST /api/v1/webhook/agui HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n`
  );
}

describe('request timeouts (SSEHUB_REQUEST_TIMEOUT_MS)', () => {
  const TIMEOUT_MS = 1000;
  // The timeout, Node's one-second check, and generous room for a loaded machine.
  const BOUND_MS = TIMEOUT_MS + 4000;
  let hub: HubProcess;

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_TRANSPORT: 'memory', SSEHUB_REQUEST_TIMEOUT_MS: String(TIMEOUT_MS) });
  });

  afterAll(async () => {
    await hub.stop();
  });

  it('closes a socket that sends its headers slower than the limit', async () => {
    const client = trickle(
      hub.port,
      bytewise('GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n'),
      200,
    );
    const ms = await client.closedAfterMs;
    console.log(`slow headers closed after ${ms} ms`);
    expect(ms).toBeLessThan(BOUND_MS);
    expect(client.received()).not.toContain('"status":"ok"');
  });

  it('closes a socket that never sends a request', async () => {
    const client = trickle(hub.port, [], 1000);
    const ms = await client.closedAfterMs;
    console.log(`idle socket closed after ${ms} ms`);
    expect(ms).toBeLessThan(BOUND_MS);
  });

  it('answers 408 to an authenticated webhook whose body trickles, and hangs up', async () => {
    const token = await mintToken('publisher', { roles: ['service'] });
    const body = JSON.stringify({ user_id: 'u', type: 'TEXT_MESSAGE_CONTENT', delta: 'x'.repeat(40) });
    const client = trickle(hub.port, [webhookHead(hub.port, token, body.length), ...bytewise(body)], 200);
    const ms = await client.closedAfterMs;
    console.log(`trickled webhook body closed after ${ms} ms`);
    expect(ms).toBeLessThan(BOUND_MS);
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('keeps a stream open far longer than the limit and delivers on it', async () => {
    const user = uid('long');
    const stream = await openStream(hub.url, '/api/v1/stream/agui', { token: await mintToken(user) });
    expect(stream.status).toBe(200);
    await sleep(TIMEOUT_MS * 3 + 1000);
    expect(stream.isEnded()).toBe(false);
    const published = await fetch(`${hub.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await mintToken(user)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'TEXT_MESSAGE_CONTENT', delta: 'late' }),
    });
    expect(published.status).toBe(202);
    const [event] = await stream.waitForEvents(1, 5000);
    expect(event?.data).toContain('"delta":"late"');
    stream.close();
  });
});

describe('a refused request with a trickled body', () => {
  // Far above the bound below: the hang-up must come from the refusal, not from the timeout.
  let hub: HubProcess;

  beforeAll(async () => {
    hub = await startReadyHub({ SSEHUB_TRANSPORT: 'memory', SSEHUB_REQUEST_TIMEOUT_MS: '60000' });
  });

  afterAll(async () => {
    await hub.stop();
  });

  it('gets 401 and its connection closed without the body being read', async () => {
    const body = JSON.stringify({ user_id: 'u', type: 'TEXT_MESSAGE_CONTENT', delta: 'x'.repeat(200) });
    const client = trickle(hub.port, [webhookHead(hub.port, 'not-a-token', body.length), ...bytewise(body)], 200);
    const ms = await client.closedAfterMs;
    console.log(`refused trickled webhook closed after ${ms} ms`);
    expect(client.received()).toMatch(/^HTTP\/1\.1 401 /);
    expect(client.received()).toMatch(/\r\nConnection: close\r\n/i);
    expect(ms).toBeLessThan(10_000);
  });
});
