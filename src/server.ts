import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { jwtAuthenticator } from './auth/principal';
import { createVerifier } from './auth/verifier';
import type { Config } from './config';
import { createHub, internalsOf, type Hub } from './create-hub';
import { CorsPolicy } from './http/cors';
import { streamRequestListener } from './http/stream-routes';
import { createKoaApp, createMetricsApp } from './koa';
import type { HubLogger } from './log';
import { loadOptional } from './optional-peer';
import type { Transport } from './transport/transport';

export interface HubServerOptions {
  config: Config;
  log: HubLogger;
  /** Development-mode HS256 key, used only when the config names no key. */
  fallbackSecret?: Uint8Array;
  /** Overrides the transport the config selects. */
  transport?: Transport;
}

/** The configured transport; Redis and Postgres support (and their client packages) load only when chosen. */
function createTransport(config: Config, log: HubLogger): Transport | undefined {
  if (config.transport === 'postgres') {
    const { PostgresTransport } = loadOptional(
      'postgres',
      () => require('./transport/postgres/transport') as typeof import('./transport/postgres/transport'),
    );
    return new PostgresTransport({
      url: config.databaseUrl as string,
      schema: config.pgSchema,
      pollMs: config.pgPollMs,
      historyTtlMs: config.historyTtlMs,
      historyMaxBytes: config.historyMaxBytes,
      maxEventBytes: config.maxEventBytes,
      logger: log,
    });
  }
  if (config.transport === 'redis') {
    const { RedisTransport } = loadOptional(
      'redis',
      () => require('./transport/redis/transport') as typeof import('./transport/redis/transport'),
    );
    return new RedisTransport({
      url: config.redisUrl,
      sentinels: config.redisSentinels,
      sentinelName: config.redisSentinelName,
      clusterNodes: config.redisClusterNodes,
      kindChannels: config.redisKindChannels,
      releaseDelayMs: config.redisReleaseDelayMs,
      minReplicas: config.publishMinReplicas,
      minReplicasTimeoutMs: config.publishMinReplicasTimeoutMs,
      channelPrefix: config.channelPrefix,
      logger: log,
      history: {
        historyMax: config.historyMax,
        historyMaxBytes: config.historyMaxBytes,
        historyTtlMs: config.historyTtlMs,
        maxEventBytes: config.maxEventBytes,
      },
    });
  }
  return undefined;
}

/**
 * The stand-alone server: a hub from the library, its stream routes on node:http directly
 * (no per-request Koa context for long-lived streams), and the Koa app for everything else.
 */
export class HubServer {
  readonly hub: Hub;
  private readonly server: Server;
  /** The `/metrics` listener when `SSEHUB_METRICS_PORT` is set. */
  private readonly metricsServer: Server | undefined;
  private readonly log: HubLogger;

  constructor(private readonly options: HubServerOptions) {
    const { config } = options;
    this.log = options.log;
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    this.hub = createHub({
      transport: options.transport ?? createTransport(config, this.log),
      limits: config,
      logger: this.log,
      metrics: { registry },
    });
    const verifier = createVerifier(config.jwt, options.fallbackSecret);
    const authenticate = jwtAuthenticator(verifier);
    const cors = { origins: config.corsOrigins };
    const { core, metrics, tickets } = internalsOf(this.hub);
    const streams = streamRequestListener(
      { core, metrics, log: this.log, tickets, cors: new CorsPolicy(cors) },
      authenticate,
    );
    const bearerOnly = jwtAuthenticator(verifier, { cookie: false });
    const koa = createKoaApp(this.hub, {
      authenticate: (ctx) => authenticate(ctx.req),
      authenticateWebhook: (ctx) => bearerOnly(ctx.req),
      cors,
      routes: { metrics: config.metricsPort === undefined },
      metricsToken: config.metricsToken,
    }).callback();
    if (config.metricsPort !== undefined) {
      const metricsApp = createMetricsApp(this.hub, { token: config.metricsToken }).callback();
      this.metricsServer = createServer(
        { requestTimeout: config.requestTimeoutMs, headersTimeout: config.requestTimeoutMs },
        (req, res) => void metricsApp(req, res),
      );
    }
    this.server = createServer(
      {
        // Node counts both from a request's start (for a new connection, its accept) until the
        // request is in, so a stream's long response is not cut, and a socket that never sends
        // a request is closed too. Checked every second: Node's default is every 30 s.
        requestTimeout: config.requestTimeoutMs,
        headersTimeout: config.requestTimeoutMs,
        connectionsCheckingInterval: 1000,
      },
      (req, res) => {
        if (!streams(req, res)) void koa(req, res);
      },
    );
    // Above typical load-balancer idle timeouts, so pooled publisher connections are not cut mid-request.
    this.server.keepAliveTimeout = 65_000;
  }

  async listen(): Promise<AddressInfo> {
    await this.hub.start();
    const { port, host, metricsPort } = this.options.config;
    if (this.metricsServer !== undefined) {
      const metrics = await listenOn(this.metricsServer, metricsPort ?? 0, host);
      this.log.info({ port: metrics.port }, 'metrics listening');
    }
    const address = await listenOn(this.server, port, host);
    this.log.info({ port: address.port, transport: this.hub.transport.name }, 'ssehub listening');
    return address;
  }

  /** Graceful stop: readiness fails at once, streams are closed over the drain window, then everything closes. */
  async shutdown(drainMs = this.options.config.drainMs): Promise<void> {
    this.log.info({ drainMs, openStreams: this.hub.totalConnections() }, 'draining');
    await this.hub.drain(drainMs);
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      // Requests in flight got `Connection: close` (see the app); anything still open after a
      // moment would otherwise hold the exit for the whole keep-alive timeout.
      setTimeout(() => this.server.closeAllConnections(), 1000).unref();
    });
    if (this.metricsServer !== undefined) {
      const metricsServer = this.metricsServer;
      await new Promise<void>((resolve) => {
        metricsServer.close(() => resolve());
        metricsServer.closeAllConnections();
      });
    }
    await this.hub.close();
    this.log.info('stopped');
  }
}

function listenOn(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
