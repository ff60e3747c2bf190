import type Router from '@koa/router';
import type { HttpDeps } from './deps';

export function mountOps(router: Router, deps: HttpDeps): void {
  const { hub, internals } = deps;

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

  router.get('/metrics', async (ctx) => {
    const { contentType, body } = await internals.metrics.render();
    ctx.type = contentType;
    ctx.body = body;
  });
}
