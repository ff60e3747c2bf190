import type { EventEmitter } from 'node:events';

/**
 * A command's answer, or a rejection once its connection closes without one. ioredis, told not to
 * resend after a reconnect (`autoResendUnfulfilledCommands: false`, as every ssehub connection
 * is), drops the commands a closed connection left unanswered without ever settling them: whoever
 * awaited one (a history read, a PING probe, an SSUBSCRIBE) would wait forever.
 */
export function answerOrClose<T>(connection: EventEmitter, command: Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const closed = (): void => reject(new Error('redis connection closed before answering'));
    connection.once('close', closed);
    command.then(
      (value) => {
        connection.off('close', closed);
        resolve(value);
      },
      (err: unknown) => {
        connection.off('close', closed);
        reject(err);
      },
    );
  });
}
