import Router, { type RouterOptions } from '@koa/router';
import type Koa from 'koa';
import type { Context } from 'koa';
import type { Authenticate } from './auth/principal';
import { type Hub, internalsOf } from './create-hub';
import type { HttpDeps } from './http/deps';
import { errorResponses } from './http/errors';
import { mountMetrics, mountOps } from './http/ops';
import { mountStreams } from './http/streams';
import { mountTickets } from './http/tickets';
import { CorsPolicy, type CorsOptions } from './http/cors';
import { mountWebhooks } from './http/webhook';

export interface KoaRoutesOptions {
  /** Who a request speaks for: the host's own sessions, or `(ctx) => jwt(ctx.req)` with `jwtAuthenticator`. */
  authenticate: Authenticate<Context>;
  /** Who a webhook speaks for, when it must differ from `authenticate` (the stand-alone server takes bearer tokens only). */
  authenticateWebhook?: Authenticate<Context>;
  /**
   * Which routes to mount: the streams (`/api/v1/stream/*`, `/api/v1/analytics/stream`), the
   * webhooks (`POST /api/v1/webhook/:kind`) and the operations endpoints (`/health`,
   * `/livez`, `/readyz`, `/metrics`). Streams and webhooks by default; ops only when asked,
   * since a host usually has its own. `metrics` (by default as `ops`) leaves `/metrics` out
   * when false, for a host that serves it elsewhere (`createMetricsApp`).
   */
  routes?: { streams?: boolean; webhooks?: boolean; ops?: boolean; metrics?: boolean };
  /** When set, `/metrics` answers only requests with `Authorization: Bearer <metricsToken>`. */
  metricsToken?: string;
  /** Passed to @koa/router, e.g. `{ prefix: '/events' }`. */
  router?: RouterOptions;
  /** Origins allowed to open streams and ask for tickets from another site (credentials included). */
  cors?: CorsOptions;
}

/**
 * The hub's routes as a @koa/router router, for `app.use(router.routes())` in the host's Koa
 * app. Errors answer as `{"error": "..."}` with the status the hub documents.
 */
export function createKoaRouter(hub: Hub, options: KoaRoutesOptions): Router {
  const internals = internalsOf(hub);
  const { core, metrics, log, tickets } = internals;
  const deps: HttpDeps = {
    hub,
    internals,
    authenticate: options.authenticate,
    authenticateWebhook: options.authenticateWebhook ?? options.authenticate,
    streams: { core, metrics, log, tickets, cors: new CorsPolicy(options.cors) },
  };
  const router = new Router(options.router);
  const routes = { streams: true, webhooks: true, ops: false, ...options.routes };
  router.use(errorResponses(internals.log));
  if (routes.streams) {
    mountStreams(router, deps);
    mountTickets(router, deps);
  }
  if (routes.webhooks) mountWebhooks(router, deps);
  if (routes.ops) mountOps(router, deps);
  if (routes.metrics ?? routes.ops) mountMetrics(router, metrics, options.metricsToken);
  return router;
}

/** An app serving `/metrics` alone, for a listener of its own off the public port. */
export function createMetricsApp(hub: Hub, options: { token?: string } = {}): Koa {
  const KoaApp = require('koa') as typeof Koa;
  const internals = internalsOf(hub);
  const router = new Router();
  router.use(errorResponses(internals.log));
  mountMetrics(router, internals.metrics, options.token);
  const app = new KoaApp();
  app.silent = true;
  app.use(router.routes());
  return app;
}

/** A whole Koa app serving the hub's routes, ops included: what the stand-alone server runs. */
export function createKoaApp(hub: Hub, options: KoaRoutesOptions): Koa {
  // Loaded here so that hosts mounting only the router never need Koa's constructor from us.
  const KoaApp = require('koa') as typeof Koa;
  const internals = internalsOf(hub);
  const app = new KoaApp();
  app.proxy = true;
  app.silent = true;
  const router = createKoaRouter(hub, {
    ...options,
    routes: { streams: true, webhooks: true, ops: true, ...options.routes },
  });
  app.use(async (ctx, next) => {
    // While draining, keep-alive connections end after their current request so shutdown is not held up.
    if (internals.core.streams.isDraining) ctx.set('Connection', 'close');
    await next();
  });
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
