import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A host's own node:http server on a free port; returns its base URL and a close function. */
export async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; server: Server; close: () => Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** What a pino-compatible logger received, for assertions. */
export function recordingLogger(): {
  lines: Array<{ level: string; fields: object; message?: string }>;
  logger: import('../../src/log').HubLogger;
} {
  const lines: Array<{ level: string; fields: object; message?: string }> = [];
  const at =
    (level: string) =>
    (fields: object | string, message?: string): void => {
      lines.push(typeof fields === 'string' ? { level, fields: {}, message: fields } : { level, fields, message });
    };
  const logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => logger,
  };
  return { lines, logger };
}

/** A handler for a transport started on its own, whose deliveries the test does not look at. */
export function ignoringHandler(): import('../../src/transport/transport').TransportHandler {
  const ignore = (): void => undefined;
  return {
    event: ignore,
    rejected: ignore,
    holds: () => true,
    skipped: ignore,
    subscribing: ignore,
    subscribed: ignore,
    metrics: { rowsRead: ignore, wokeUp: ignore, lag: ignore, reconnected: ignore },
    log: recordingLogger().logger,
  };
}
