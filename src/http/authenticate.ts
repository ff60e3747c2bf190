import { authenticateWith, type Authenticate } from '../auth/principal';
import { AuthError, type Principal } from '../auth/verifier';
import { HttpError } from './errors';

/** Authenticates a request, or throws the HttpError to answer it with (401, or 503 while auth is unavailable). */
export async function authenticateRequest<Request>(
  authenticate: Authenticate<Request>,
  request: Request,
): Promise<Principal> {
  try {
    return await authenticateWith(authenticate, request);
  } catch (err) {
    if (err instanceof AuthError) {
      const headers: Record<string, string> =
        err.status === 401 && err.challenge !== null ? { 'WWW-Authenticate': err.challenge } : {};
      if (err.status === 503) headers['Retry-After'] = '1';
      throw new HttpError(err.status, err.message, headers);
    }
    throw err;
  }
}
