import { publishFailure } from '../../src/transport/postgres/outbox';
import {
  EventRejectedError,
  PublishOutcomeUnknownError,
  TransportUnavailableError,
} from '../../src/transport/transport';

const withCode = (message: string, code?: string): Error => Object.assign(new Error(message), code ? { code } : {});

describe('postgres publish failures', () => {
  it('rejects the event when the server refused its content', () => {
    for (const code of ['22023', '22P02', '22021'])
      expect(publishFailure(withCode('bad', code))).toBeInstanceOf(EventRejectedError);
  });

  it('reports "not published" for any other server error: the autocommitted statement did not complete', () => {
    for (const code of ['57014', '55P03', '25006', '40001', '40P01', '53300', '57P01', '42P01']) {
      const mapped = publishFailure(withCode('refused', code));
      expect([code, mapped instanceof TransportUnavailableError, mapped instanceof PublishOutcomeUnknownError]).toEqual(
        [code, true, false],
      );
    }
    const unsent = publishFailure(withCode('Client has encountered a connection error and is not queryable'));
    expect(unsent instanceof PublishOutcomeUnknownError).toBe(false);
  });

  it('reports an unknown outcome when the connection broke or went silent after the statement was sent', () => {
    for (const error of [
      withCode('Connection terminated unexpectedly'),
      withCode('read ECONNRESET', 'ECONNRESET'),
      withCode('Query read timeout'),
    ]) {
      expect(publishFailure(error)).toBeInstanceOf(PublishOutcomeUnknownError);
    }
  });
});
