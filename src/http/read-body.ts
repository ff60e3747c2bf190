import type { IncomingMessage } from 'node:http';

export class BodyTooLargeError extends Error {
  readonly status = 413;
  readonly expose = true;
  constructor(limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

export class BodyTimeoutError extends Error {
  readonly status = 408;
  readonly expose = true;
  constructor(timeoutMs: number) {
    super(`request body not received within ${timeoutMs} ms`);
  }
}

/**
 * Reads the raw request body, refusing (without buffering it) anything over `limit` bytes or
 * still incomplete after `timeoutMs`: the deadline holds in any host, whatever its server's timeouts.
 */
export function readBody(req: IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLargeError(limit));
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => {
      cleanup();
      reject(new BodyTimeoutError(timeoutMs));
    }, timeoutMs);
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        // Keep reading (and discarding) so the 413 can still be written on this socket.
        req.resume();
        reject(new BodyTooLargeError(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      // A webhook's body nearly always arrives in one chunk: handed on as is, not copied.
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      clearTimeout(deadline);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}
