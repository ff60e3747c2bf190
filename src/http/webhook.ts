import type Router from '@koa/router';
import type { HttpDeps } from './deps';
import { HttpError } from './errors';
import { authenticateRequest } from './authenticate';
import { readBody } from './read-body';
import { ROLE_SERVICE, type Principal } from '../auth/verifier';
import { isEventKind, type EventKind } from '../routing';
import {
  EventRejectedError,
  PublishOutcomeUnknownError,
  ReplicationUnconfirmedError,
  TransportUnavailableError,
  type Published,
} from '../transport/transport';
import { ENVELOPE_OVERHEAD_BYTES, parseEnvelope, parseWebhookBody, type RejectReason } from '../wire/envelope';
import { splitJsonArray } from '../wire/json-array';

/** Kinds any user may publish to their own streams; the others need the service role. */
const USER_KINDS: ReadonlySet<EventKind> = new Set<EventKind>(['agui', 'a2a']);

/**
 * One event on its way from a webhook to the transport: authorized (own user and user kinds
 * unless the principal has the service role), counted against the principal's quota, published.
 * Refusals are HttpErrors, the same for the single webhook and for each item of a batch.
 */
async function authorizeAndPublish(
  deps: HttpDeps,
  principal: Principal,
  kind: EventKind,
  userId: string,
  event: Buffer,
): Promise<Published> {
  const { transport } = deps.hub;
  const { metrics, quota } = deps.internals;
  const service = principal.roles.has(ROLE_SERVICE);
  if (!service && principal.userId !== userId) {
    metrics.publishRefused('other_user');
    throw new HttpError(403, 'a token may publish only to its own user unless it has the service role');
  }
  if (!service && !USER_KINDS.has(kind)) {
    metrics.publishRefused('kind');
    throw new HttpError(403, `publishing ${kind} events needs the service role`);
  }
  try {
    if (!service) {
      const waitMs = await quota.take(principal.userId, event.length);
      if (waitMs > 0) {
        metrics.publishOverQuota();
        throw new HttpError(429, 'publish quota used up for this window; retry later', {
          'Retry-After': String(Math.max(1, Math.ceil(waitMs / 1000))),
        });
      }
    }
    const published = await transport.publish(kind, userId, event);
    metrics.publishResult(kind, true);
    return published;
  } catch (err) {
    if (err instanceof HttpError) throw err;
    metrics.publishResult(kind, false);
    if (err instanceof ReplicationUnconfirmedError) {
      throw new HttpError(
        504,
        `the event was published, but ${err.confirmed} of ${err.required} Redis replicas confirmed it in time; a failover could still lose it`,
      );
    }
    if (err instanceof PublishOutcomeUnknownError) {
      throw new HttpError(504, 'the event transport did not answer; the event may or may not have been published');
    }
    if (err instanceof TransportUnavailableError) {
      throw new HttpError(503, 'event transport unavailable; the event was not published', { 'Retry-After': '1' });
    }
    if (err instanceof EventRejectedError) throw new HttpError(400, err.message);
    throw err;
  }
}

function rejectedStatus(reason: RejectReason): number {
  return reason === 'too_large' ? 413 : 400;
}

/** One item's outcome in a batch answer, in the item's position. */
type BatchItemResult =
  | { status: 202; id: string; kind: EventKind; user_id: string; replicas: number | undefined }
  | { status: number; error: string };

/**
 * Seed-compatible publishing over HTTP: the body is the event with an extra top-level
 * "user_id". The event is published through the transport like any other publisher's, so
 * delivery (on this replica too) happens only from the subscription. The batch endpoint takes
 * many events, for one user or many, in one request.
 */
export function mountWebhooks(router: Router, deps: HttpDeps): void {
  const { hub, internals, authenticateWebhook, streams } = deps;
  const { transport } = hub;
  const { core, metrics } = internals;
  const { maxEventBytes, webhookBatchMaxEvents, requestTimeoutMs } = hub.limits;
  const batchMaxBytes = Math.max(hub.limits.webhookBatchMaxBytes, maxEventBytes + ENVELOPE_OVERHEAD_BYTES);

  // Before the single-event route, whose :kind would take "batch" for an unknown kind.
  router.post('/api/v1/webhook/batch', async (ctx) => {
    if (streams.cors.refusesCredentials(ctx.req)) throw new HttpError(403, 'cross-origin webhooks are refused');
    const principal = await authenticateRequest(authenticateWebhook, ctx);
    const body = await readBody(ctx.req, batchMaxBytes, requestTimeoutMs);
    const items = splitJsonArray(body);
    if (items === undefined) throw new HttpError(400, 'the body must be a JSON array of {"kind","user_id","event"}');
    if (items.slices.length === 0) throw new HttpError(400, 'the batch is empty');
    if (items.slices.length > webhookBatchMaxEvents) {
      throw new HttpError(413, `a batch holds at most ${webhookBatchMaxEvents} events, got ${items.slices.length}`);
    }
    // Every item is checked first, then all valid ones are published at once and awaited together.
    const results = await Promise.all(
      items.slices.map(async (item, index): Promise<BatchItemResult> => {
        const parsed = parseEnvelope(item, maxEventBytes);
        if (!parsed.ok) {
          metrics.eventRejected(parsed.reason);
          return { status: rejectedStatus(parsed.reason), error: `${parsed.reason}: ${parsed.detail}` };
        }
        if (parsed.id !== undefined) return { status: 400, error: '"id" is assigned by ssehub, not by publishers' };
        const kind = (items.values[index] as { kind?: unknown }).kind;
        if (typeof kind !== 'string' || !isEventKind(kind)) {
          return { status: 400, error: `unknown event kind ${JSON.stringify(kind ?? null)}` };
        }
        try {
          const published = await authorizeAndPublish(deps, principal, kind, parsed.userId, parsed.event);
          return { status: 202, id: published.id, kind, user_id: parsed.userId, replicas: published.receivers };
        } catch (err) {
          if (err instanceof HttpError) return { status: err.status, error: err.message };
          throw err;
        }
      }),
    );
    const published = results.filter((result) => result.status === 202).length;
    ctx.status = 207;
    ctx.body = { published, failed: results.length - published, transport: transport.name, results };
  });

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
      throw new HttpError(rejectedStatus(parsed.reason), `${parsed.reason}: ${parsed.detail}`);
    }
    const published = await authorizeAndPublish(deps, principal, kind, parsed.userId, parsed.event);
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
