import type Router from '@koa/router';
import type { Context } from 'koa';
import type { HttpDeps } from './deps';
import { HttpError } from './errors';
import { authenticate } from './authenticate';
import { ROLE_ADMIN, type Principal } from '../auth/verifier';
import type { StreamKind } from '../routing';

const STREAM_PATHS: ReadonlyArray<{ path: string; stream: StreamKind; adminOnly: boolean }> = [
  { path: '/api/v1/stream/agui', stream: 'agui', adminOnly: false },
  { path: '/api/v1/stream/a2a', stream: 'a2a', adminOnly: false },
  { path: '/api/v1/stream/contexts', stream: 'contexts', adminOnly: false },
  { path: '/api/v1/analytics/stream', stream: 'analytics', adminOnly: true },
];

/**
 * Browsers send Last-Event-ID when they reconnect; a page opening its first EventSource can
 * pass the id it rendered with as `last_event_id`.
 */
function lastEventId(ctx: Context): string | undefined {
  const header = ctx.get('Last-Event-ID');
  if (header !== '') return header;
  const query = ctx.query.last_event_id;
  return typeof query === 'string' && query !== '' ? query : undefined;
}

export function mountStreams(router: Router, deps: HttpDeps): void {
  const { hub, verifier, metrics } = deps;
  for (const { path, stream, adminOnly } of STREAM_PATHS) {
    router.get(path, async (ctx) => {
      // The router answers HEAD on GET routes too; a HEAD "stream" would hold a slot and never read.
      if (ctx.method !== 'GET') throw new HttpError(405, 'streams are opened with GET', { Allow: 'GET' });
      let principal: Principal;
      try {
        principal = await authenticate(ctx, verifier);
      } catch (err) {
        if (err instanceof HttpError && err.status === 401) metrics.connectionRejected('unauthorized');
        throw err;
      }
      if (adminOnly && !principal.roles.has(ROLE_ADMIN)) {
        metrics.connectionRejected('forbidden');
        throw new HttpError(403, 'this stream requires the admin role');
      }
      const opened = hub.open(stream, principal.userId, principal.expiresAt, ctx.res, lastEventId(ctx));
      if (opened.ok || opened.reason === 'client_gone') {
        // The connection owns the response from here on (or there is no one left to answer).
        ctx.respond = false;
        return;
      }
      metrics.connectionRejected(opened.reason);
      if (opened.reason === 'draining') {
        throw new HttpError(503, 'this replica is shutting down', { 'Retry-After': '1' });
      }
      // Seed contract: 429 with an empty body (Koa would turn a null body into 204).
      ctx.respond = false;
      ctx.res.writeHead(429, { 'Content-Length': '0' });
      ctx.res.end();
    });
  }
}
