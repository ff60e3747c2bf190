import Koa from 'koa';
import Router from '@koa/router';
import type { HttpDeps } from './deps';
import { errorResponses } from './errors';
import { mountOps } from './ops';
import { mountStreams } from './streams';
import { mountWebhooks } from './webhook';

export function createApp(deps: HttpDeps): Koa {
  const app = new Koa();
  app.proxy = true;
  app.silent = true;
  const router = new Router();
  mountStreams(router, deps);
  mountWebhooks(router, deps);
  mountOps(router, deps);
  app.use(async (ctx, next) => {
    // While draining, keep-alive connections end after their current request so shutdown is not held up.
    if (deps.hub.isDraining) ctx.set('Connection', 'close');
    await next();
  });
  app.use(errorResponses(deps.log));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
