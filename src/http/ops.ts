import { createHash, timingSafeEqual } from 'node:crypto';
import type Router from '@koa/router';
import type { HubMetrics } from '../metrics';
import type { HttpDeps } from './deps';
import { HttpError } from './errors';

/** `/health`, `/livez` and `/readyz`. */
export function mountOps(router: Router, deps: HttpDeps): void {
  const { hub } = deps;

  // Seed-compatible shape: 200 either way, "degraded" while the transport subscription is down.
  router.get('/health', (ctx) => {
    const listening = hub.transport.isListening();
    ctx.body = { status: listening ? 'ok' : 'degraded', events: { relay: listening ? 'listening' : 'not_listening' } };
  });

  router.get('/livez', (ctx) => {
    ctx.body = { status: 'ok' };
  });

  router.get('/readyz', (ctx) => {
    const readiness = hub.readiness();
    ctx.status = readiness.ready ? 200 : 503;
    ctx.body = readiness.ready ? { status: 'ready' } : { status: 'not_ready', reason: readiness.reason };
  });
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest();

/** `/metrics`, behind `Authorization: Bearer <token>` when a token is given. */
export function mountMetrics(router: Router, metrics: HubMetrics, token?: string): void {
  // Compared as digests, in constant time: equal lengths, and nothing learnt from how long a comparison takes.
  const expected = token === undefined ? undefined : digest(`Bearer ${token}`);
  router.get('/metrics', async (ctx) => {
    if (expected !== undefined && !timingSafeEqual(digest(ctx.get('authorization')), expected)) {
      throw new HttpError(401, 'metrics need the metrics bearer token', { 'WWW-Authenticate': 'Bearer' });
    }
    const { contentType, body } = await metrics.render();
    ctx.type = contentType;
    ctx.body = body;
  });
}
