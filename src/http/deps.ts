import type { Context } from 'koa';
import type { Authenticate } from '../auth/principal';
import type { Hub, HubInternals } from '../create-hub';
import type { StreamRequestDeps } from './stream-routes';

/** What the Koa routes are given; they reach nothing else. */
export interface HttpDeps {
  hub: Hub;
  internals: HubInternals;
  authenticate: Authenticate<Context>;
  authenticateWebhook: Authenticate<Context>;
  streams: StreamRequestDeps;
}
