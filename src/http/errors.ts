import type { ServerResponse } from 'node:http';
import type { Context, Next } from 'koa';
import type { HubLogger } from '../log';

interface HttpErrorLike {
  status?: number;
  expose?: boolean;
  message: string;
  headers?: Record<string, string>;
}

/** Turns thrown HTTP errors into `{"error": "..."}` bodies; anything unexpected becomes a logged 500. */
export function errorResponses(log: HubLogger) {
  return async (ctx: Context, next: Next): Promise<void> => {
    try {
      await next();
    } catch (caught) {
      const err = caught as HttpErrorLike;
      const status = typeof err.status === 'number' && err.status >= 400 && err.status < 600 ? err.status : 500;
      if (status >= 500 && !err.expose) log.error({ err, path: ctx.path }, 'request failed');
      if (hangsUpAfter(ctx.res)) ctx.set('Connection', 'close');
      ctx.status = status;
      if (err.headers) ctx.set(err.headers);
      ctx.body = { error: err.expose ? err.message : 'internal error' };
    }
  };
}

/** An error whose status and message are meant for the client. */
export class HttpError extends Error {
  readonly expose = true;
  constructor(
    readonly status: number,
    message: string,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/**
 * Whether a refused request's connection must close after the answer: Node would otherwise read
 * and discard the rest of its body to keep the connection, so a client refused (a 401 included)
 * could keep a socket busy by trickling a body it never finishes.
 */
function hangsUpAfter(res: ServerResponse): boolean {
  return !res.req.complete;
}

/** The `{"error": "..."}` answer every HTTP refusal of the hub has. */
export function writeHttpError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: error.message });
  res.writeHead(error.status, {
    ...error.headers,
    ...(hangsUpAfter(res) ? { Connection: 'close' } : {}),
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}
