import type Router from '@koa/router';
import type { HttpDeps } from './deps';
import { HttpError } from './errors';
import { authenticateRequest } from './authenticate';
import { readBody } from './read-body';
import { ROLE_SERVICE } from '../auth/verifier';
import { isEventKind, type EventKind } from '../routing';
import {
  EventRejectedError,
  PublishOutcomeUnknownError,
  TransportUnavailableError,
  type Published,
} from '../transport/transport';
import { parseWebhookBody } from '../wire/envelope';

/** Kinds any user may publish to their own streams; the others need the service role. */
const USER_KINDS: ReadonlySet<EventKind> = new Set<EventKind>(['agui', 'a2a']);

/**
 * Seed-compatible publishing over HTTP: the body is the event with an extra top-level
 * "user_id". The event is published through the transport like any other publisher's, so
 * delivery (on this replica too) happens only from the subscription.
 */
export function mountWebhooks(router: Router, deps: HttpDeps): void {
  const { hub, internals, authenticateWebhook, streams } = deps;
  const { transport } = hub;
  const { core, metrics, quota } = internals;
  const { maxEventBytes, requestTimeoutMs } = hub.limits;
  router.post('/api/v1/webhook/:kind', async (ctx) => {
    const kind = ctx.params.kind ?? '';
    if (!isEventKind(kind)) throw new HttpError(404, `unknown event kind ${JSON.stringify(kind)}`);
    // A page of another site can make the browser send its cookies, never its bearer token.
    if (streams.cors.refusesCredentials(ctx.req)) throw new HttpError(403, 'cross-origin webhooks are refused');
    const principal = await authenticateRequest(authenticateWebhook, ctx);
    const body = await readBody(ctx.req, maxEventBytes, requestTimeoutMs);
    const parsed = parseWebhookBody(body, maxEventBytes);
    if (!parsed.ok) {
      metrics.eventRejected(parsed.reason);
      throw new HttpError(parsed.reason === 'too_large' ? 413 : 400, `${parsed.reason}: ${parsed.detail}`);
    }
    const service = principal.roles.has(ROLE_SERVICE);
    if (!service && principal.userId !== parsed.userId) {
      metrics.publishRefused('other_user');
      throw new HttpError(403, 'a token may publish only to its own user unless it has the service role');
    }
    if (!service && !USER_KINDS.has(kind)) {
      metrics.publishRefused('kind');
      throw new HttpError(403, `publishing ${kind} events needs the service role`);
    }
    let published: Published;
    try {
      if (!service) {
        const waitMs = await quota.take(principal.userId, parsed.event.length);
        if (waitMs > 0) {
          metrics.publishOverQuota();
          throw new HttpError(429, 'publish quota used up for this window; retry later', {
            'Retry-After': String(Math.max(1, Math.ceil(waitMs / 1000))),
          });
        }
      }
      published = await transport.publish(kind, parsed.userId, parsed.event);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      metrics.publishResult(kind, false);
      if (err instanceof PublishOutcomeUnknownError) {
        throw new HttpError(504, 'the event transport did not answer; the event may or may not have been published');
      }
      if (err instanceof TransportUnavailableError) {
        throw new HttpError(503, 'event transport unavailable; the event was not published', { 'Retry-After': '1' });
      }
      if (err instanceof EventRejectedError) throw new HttpError(400, err.message);
      throw err;
    }
    metrics.publishResult(kind, true);
    ctx.status = 202;
    // Seed-compatible "status" and "connection_count" (this replica's streams of the user that the
    // event reaches, as the seed counted them); delivery itself happens asynchronously on every replica.
    ctx.body = {
      status: 'broadcasted',
      id: published.id,
      connection_count: core.dispatcher.localConnections(kind, parsed.userId),
      replicas: published.receivers,
      kind,
      user_id: parsed.userId,
      transport: transport.name,
      bytes: parsed.event.length,
    };
  });
}
