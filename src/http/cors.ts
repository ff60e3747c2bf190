import type { IncomingMessage, ServerResponse } from 'node:http';

/** Origins allowed to open streams and ask for tickets from another site; none by default. */
export interface CorsOptions {
  /** Exact origins, e.g. `https://app.example.com`. */
  origins?: readonly string[];
}

/** Headers a cross-origin page may read from a stream or ticket response. */
const EXPOSED_HEADERS = 'Retry-After, WWW-Authenticate';
const ALLOWED_HEADERS = 'Authorization, Content-Type, Last-Event-ID';
const PREFLIGHT_MAX_AGE_S = '600';

export class CorsPolicy {
  private readonly origins: ReadonlySet<string>;

  constructor(options: CorsOptions = {}) {
    this.origins = new Set(options.origins ?? []);
  }

  /**
   * The request comes from a page of another site: it names an Origin that is not this
   * server's own. Browsers send Origin on every cross-origin request (and on POSTs), which is
   * what a forged request from another site carries. Behind a proxy that rewrites Host, the
   * host the browser saw is in X-Forwarded-Host; a page of another site cannot set that header
   * without a preflight, which is refused.
   */
  isCrossOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    const forwarded = req.headers['x-forwarded-host'];
    const host = (typeof forwarded === 'string' ? forwarded.split(',')[0]?.trim() : undefined) || req.headers.host;
    if (host === undefined) return true;
    try {
      return new URL(origin).host !== host;
    } catch {
      return true;
    }
  }

  allows(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    return origin !== undefined && this.origins.has(origin);
  }

  /**
   * A cross-origin request that must not go on: from a site not on the list, riding on
   * the browser's cookie (a page elsewhere cannot read a bearer token, so only the ambient
   * cookie can be forged with). Refused before authentication, so it cannot use up the user's
   * connection cap either.
   */
  refusesCredentials(req: IncomingMessage): boolean {
    return this.isCrossOrigin(req) && !this.allows(req) && req.headers.cookie !== undefined;
  }

  /** Adds the CORS response headers for an allowed origin; nothing for any other. */
  apply(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('Vary', 'Origin');
    if (!this.allows(req)) return;
    res.setHeader('Access-Control-Allow-Origin', req.headers.origin as string);
    res.setHeader('Access-Control-Allow-Credentials', 'true');
    res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
  }

  /** Answers an OPTIONS preflight: 204 with the grants for an allowed origin, 403 for any other. */
  preflight(req: IncomingMessage, res: ServerResponse, methods: string): void {
    this.apply(req, res);
    if (!this.allows(req)) {
      res.writeHead(403, { 'Content-Length': '0' }).end();
      return;
    }
    res.writeHead(204, {
      'Access-Control-Allow-Methods': methods,
      'Access-Control-Allow-Headers': ALLOWED_HEADERS,
      'Access-Control-Max-Age': PREFLIGHT_MAX_AGE_S,
    });
    res.end();
  }
}
