import type Router from '@koa/router';
import type { HttpDeps } from './deps';

export function mountOps(router: Router, deps: HttpDeps): void {
  const { hub, transport, metrics } = deps;

  // Seed-compatible shape: 200 either way, "degraded" while the transport subscription is down.
  router.get('/health', (ctx) => {
    const listening = transport.isListening();
    ctx.body = { status: listening ? 'ok' : 'degraded', events: { relay: listening ? 'listening' : 'not_listening' } };
  });

  router.get('/livez', (ctx) => {
    ctx.body = { status: 'ok' };
  });

  router.get('/readyz', (ctx) => {
    const reason = hub.isDraining ? 'draining' : transport.isListening() ? undefined : 'transport_not_listening';
    ctx.status = reason ? 503 : 200;
    ctx.body = reason ? { status: 'not_ready', reason } : { status: 'ready' };
  });

  router.get('/metrics', async (ctx) => {
    const { contentType, body } = await metrics.render();
    ctx.type = contentType;
    ctx.body = body;
  });
}
