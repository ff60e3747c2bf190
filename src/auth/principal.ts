import type { IncomingMessage } from 'node:http';
import { validateUserId } from '../wire/envelope';
import { extractToken } from './token';
import { AuthError, type Principal, type TokenVerifier } from './verifier';

/** What an authentication callback returns for a request it accepts. */
export interface PrincipalInit {
  userId: string;
  roles?: Iterable<string>;
  /** Epoch milliseconds after which streams this opened are closed; never when absent. */
  expiresAt?: number;
}

/**
 * Decides who a request speaks for. Return the principal, or null/undefined (or throw an
 * AuthError) to refuse it with 401; throw AuthError(503, …) when the decision cannot be made now.
 */
export type Authenticate<Request = IncomingMessage> = (
  request: Request,
) => PrincipalInit | null | undefined | Promise<PrincipalInit | null | undefined>;

/** The same user id rules as for publishers: a principal no event could be addressed to is refused. */
export function toPrincipal(init: PrincipalInit): Principal {
  const problem = validateUserId(init.userId);
  if (problem) throw new AuthError(401, `not a valid user id: ${problem.detail}`, null);
  return {
    userId: init.userId,
    roles: init.roles instanceof Set ? init.roles : new Set(init.roles ?? []),
    expiresAt: init.expiresAt ?? Number.POSITIVE_INFINITY,
  };
}

/** Runs a callback and normalizes its answer; every refusal surfaces as an AuthError. */
export async function authenticateWith<Request>(
  authenticate: Authenticate<Request>,
  request: Request,
): Promise<Principal> {
  const init = await authenticate(request);
  if (init === null || init === undefined) throw new AuthError(401, 'not authenticated', null);
  return toPrincipal(init);
}

/**
 * The default: a bearer token from the Authorization header, else (unless `cookie: false`, as
 * for webhooks, which a cross-site form must never be able to call) the `access_token` cookie,
 * verified as a JWT.
 */
export function jwtAuthenticator(
  verifier: TokenVerifier,
  options: { cookie?: boolean } = {},
): Authenticate<IncomingMessage> {
  const cookie = options.cookie ?? true;
  return (request) => {
    const token = extractToken(request.headers, { cookie });
    if (token === undefined) {
      throw new AuthError(
        401,
        cookie ? 'missing bearer token or access_token cookie' : 'missing bearer token',
        'Bearer',
      );
    }
    return verifier.verify(token);
  };
}
