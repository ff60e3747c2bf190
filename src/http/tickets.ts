import type Router from '@koa/router';
import { mayStreamKind, streamableKinds } from '../auth/permissions';
import type { Principal } from '../auth/verifier';
import { isEventKind, type EventKind } from '../routing';
import { authenticateRequest } from './authenticate';
import type { HttpDeps } from './deps';
import { HttpError } from './errors';
import { readBody } from './read-body';

export const TICKET_PATH = '/api/v1/stream/ticket';

/** A ticket request's body is tiny: a list of kinds at most. */
const MAX_TICKET_BODY_BYTES = 1024;

/** The kinds a ticket is asked for (all the principal may stream when none are named), checked. */
function requestedKinds(principal: Principal, body: Buffer): EventKind[] {
  if (body.length === 0) return streamableKinds(principal);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'the body must be JSON: {"kinds": [...]}');
  }
  const kinds = (parsed as { kinds?: unknown } | null)?.kinds;
  if (kinds === undefined) return streamableKinds(principal);
  if (!Array.isArray(kinds) || kinds.length === 0 || !kinds.every((k): k is string => typeof k === 'string')) {
    throw new HttpError(400, '"kinds" must be a non-empty array of event kinds');
  }
  const unknown = kinds.find((kind) => !isEventKind(kind));
  if (unknown !== undefined) throw new HttpError(400, `unknown event kind ${JSON.stringify(unknown)}`);
  const forbidden = (kinds as EventKind[]).find((kind) => !mayStreamKind(principal, kind));
  if (forbidden !== undefined) throw new HttpError(403, `streaming ${forbidden} events needs another role`);
  return [...new Set(kinds as EventKind[])];
}

/**
 * `POST /api/v1/stream/ticket`: trades the request's credentials for a single-use ticket that
 * opens one stream with `?ticket=`, for pages whose EventSource cannot send headers.
 */
export function mountTickets(router: Router, deps: HttpDeps): void {
  const { authenticate, hub, internals, streams } = deps;
  router.all(TICKET_PATH, async (ctx) => {
    const { req, res } = ctx;
    if (req.method === 'OPTIONS') {
      ctx.respond = false;
      streams.cors.preflight(req, res, 'POST');
      return;
    }
    if (req.method !== 'POST') throw new HttpError(405, 'tickets are issued with POST', { Allow: 'POST' });
    streams.cors.apply(req, res);
    if (streams.cors.refusesCredentials(req)) {
      throw new HttpError(403, 'cross-origin ticket requests with cookies need an allowed origin');
    }
    const principal = await authenticateRequest(authenticate, ctx);
    const kinds = requestedKinds(principal, await readBody(req, MAX_TICKET_BODY_BYTES, hub.limits.requestTimeoutMs));
    const { ticket, ttlMs } = await internals.tickets.issue(principal, kinds);
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { ticket, expires_in: Math.ceil(ttlMs / 1000) };
  });
}
