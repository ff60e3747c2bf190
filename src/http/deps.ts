import type { Logger } from 'pino';
import type { TokenVerifier } from '../auth/verifier';
import type { Config } from '../config';
import type { Hub } from '../hub';
import type { HubMetrics } from '../metrics';
import type { Transport } from '../transport/transport';
import type { PublishQuota } from './publish-quota';

/** What the HTTP layer is given; it reaches nothing else. */
export interface HttpDeps {
  config: Config;
  hub: Hub;
  transport: Transport;
  verifier: TokenVerifier;
  metrics: HubMetrics;
  /** Publish quota of principals without the service role. */
  quota: PublishQuota;
  log: Logger;
}
