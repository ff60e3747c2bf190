import type Router from '@koa/router';
import type { HttpDeps } from './deps';
import { authenticateRequest } from './authenticate';
import { HttpError } from './errors';
import { STREAM_ROUTES, serveStream } from './stream-routes';

export function mountStreams(router: Router, deps: HttpDeps): void {
  const { internals, authenticate } = deps;
  const { core, metrics } = internals;
  for (const { path, stream } of STREAM_ROUTES) {
    router.get(path, async (ctx) => {
      // The router answers HEAD on GET routes too; a HEAD "stream" would hold a slot and never read.
      if (ctx.method !== 'GET') throw new HttpError(405, 'streams are opened with GET', { Allow: 'GET' });
      try {
        const principal = await authenticateRequest(authenticate, ctx);
        // The stream (or its refusal) owns the response from here on.
        ctx.respond = false;
        serveStream(core, metrics, ctx.req, ctx.res, principal, stream);
      } catch (err) {
        if (err instanceof HttpError && err.status === 401) metrics.connectionRejected('unauthorized');
        throw err;
      }
    });
  }
}
