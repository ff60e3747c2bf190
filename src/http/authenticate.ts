import type { Context } from 'koa';
import { HttpError } from './errors';
import { AuthError, type Principal, type TokenVerifier } from '../auth/verifier';
import { extractToken } from '../auth/token';

/** Verifies the request's token or throws a 401 (503 when the key set cannot be fetched). */
export async function authenticate(ctx: Context, verifier: TokenVerifier): Promise<Principal> {
  const token = extractToken(ctx.req.headers);
  if (token === undefined) {
    throw new HttpError(401, 'missing bearer token or access_token cookie', { 'WWW-Authenticate': 'Bearer' });
  }
  try {
    return await verifier.verify(token);
  } catch (err) {
    if (err instanceof AuthError) {
      throw new HttpError(err.status, err.message, { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    }
    throw err;
  }
}
