import type Router from '@koa/router';
import type { HttpDeps } from './deps';
import { authenticateRequest } from './authenticate';
import { STREAM_ROUTES, handleStreamRequest } from './stream-routes';

export function mountStreams(router: Router, deps: HttpDeps): void {
  const { authenticate, streams } = deps;
  for (const { path, stream } of STREAM_ROUTES) {
    router.all(path, async (ctx) => {
      // The stream (or its refusal) owns the response from here on.
      ctx.respond = false;
      await handleStreamRequest(streams, ctx.req, ctx.res, stream, () => authenticateRequest(authenticate, ctx));
    });
  }
}
