/**
 * A refused (401) or undecidable (503) authentication. `challenge` is the 401's WWW-Authenticate
 * value: a bearer-token error by default, null for none (a host's own sign-in).
 */
export class AuthError extends Error {
  constructor(
    readonly status: 401 | 503,
    message: string,
    readonly challenge: string | null = status === 401 ? 'Bearer error="invalid_token"' : null,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}
